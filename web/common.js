// Helpers both pages share. Everything the server returns is inserted as text, never as HTML:
// captions come from the open web.

export const $ = (id) => document.getElementById(id);

export function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value);
  }
  for (const child of children) if (child) node.append(child);
  return node;
}

export function showError(message) {
  $("error").textContent = message;
  $("error").hidden = !message;
}

// An answer the server refused: `status` is its HTTP status, the message its explanation.
export class ServerError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

// The JSON answer to a request; a ServerError with the server's explanation when refused,
// a plain Error when the server cannot be reached.
export async function fetchJSON(url, options = {}) {
  let response;
  try {
    response = await fetch(url, options);
  } catch {
    throw new Error("The server cannot be reached. Check your connection and try again.");
  }
  const body = await response.json().catch(() => null);
  if (!response.ok) {
    const detail = body && body.detail;
    const text = typeof detail === "string" ? detail
      : Array.isArray(detail) ? detail.map((d) => d.msg).join("; ") : response.statusText;
    throw new ServerError(response.status, text);
  }
  return body;
}
