// The artist's page. Everything the server returns is inserted as text, never as HTML:
// captions come from the open web.

import { $, el, fetchJSON as fetchAPI, ServerError, showError } from "./common.js";

const PAGE_SIZE = 24;
const KIND_LABEL = {
  exact_copy: "Exact copy",
  near_copy: "Near copy",
  likely_copy: "Likely copy",
  name_match: "Name match",
  site_match: "From this site",
  similar: "Similar",
};
const OPT_OUT_LABEL = {
  unverified: "Opted out (unverified)",
  verified: "Opted out (verified domain)",
  pending: "Opt-out pending",
};

const state = {
  mode: null, // "text" | "image"
  query: "",
  file: null,
  previewUrl: null,
  results: [],
  nextOffset: null,
  selected: new Map(), // id -> result: the opt-out selection
  viewerIndex: -1,
  generation: 0, // ignores answers to searches that were replaced by a newer one
  safe: true, // safe mode asked for: the toggle on the page, on at every visit
  answerSafe: true, // whether the answer shown was made in safe mode
  revealed: new Set(), // ids of flagged results the user chose to see
};

function plural(n, one, many) {
  return `${n} ${n === 1 ? one : many}`;
}

function setStatus(message) {
  $("status").textContent = message;
}

// The server's refusals, prefixed with what they mean to someone searching.
async function fetchJSON(url, options = {}) {
  try {
    return await fetchAPI(url, options);
  } catch (error) {
    if (!(error instanceof ServerError)) throw error;
    const prefix = { 413: "Too large", 415: "Not an image", 400: "Cannot use this", 422: "Invalid search" }[error.status];
    throw new Error(prefix ? `${prefix}: ${error.message}` : `The server answered ${error.status}: ${error.message}`);
  }
}

async function loadStats() {
  try {
    const stats = await fetchJSON("/api/stats");
    $("dataset-line").textContent =
      `Searching ${stats.items.toLocaleString()} images of the dataset “${stats.dataset}”.`;
    if (!stats.model.semantic) {
      const warning = $("model-warning");
      warning.textContent =
        `This index was built with “${stats.model.name}”, a test model with random weights: ` +
        "results marked “Similar” are not meaningful. Exact copies and name matches are " +
        "found without the model and are reliable.";
      warning.hidden = false;
    }
    $("safety-line").hidden = stats.safety_scored > 0;
  } catch (error) {
    $("dataset-line").textContent = "";
    showError(error.message);
  }
}

// --- searching ------------------------------------------------------------------------

// A query that is a site (a domain, maybe with a path: "artstation.com/janedoe") lists what
// the dataset holds from it; anything else is a name or words.
const SITE = /^(https?:\/\/)?[a-z0-9-]+(\.[a-z0-9-]+)+(:\d+)?(\/\S*)?$/i;

// Safe mode is the server's default; only turning it off is said.
function safeParam() {
  return state.safe ? {} : { safe: "false" };
}

function searchUrl(offset) {
  if (SITE.test(state.query)) {
    const params = new URLSearchParams({ site: state.query, k: PAGE_SIZE, offset, ...safeParam() });
    return `/api/search/site?${params}`;
  }
  const params = new URLSearchParams({ q: state.query, k: PAGE_SIZE, offset, ...safeParam() });
  return `/api/search?${params}`;
}

async function imageRequest(offset) {
  const form = new FormData();
  form.append("image", state.file, state.file.name || "pasted-image");
  const params = new URLSearchParams({ k: PAGE_SIZE, offset, ...safeParam() });
  return fetchJSON(`/api/search/image?${params}`, { method: "POST", body: form });
}

async function run(offset = 0) {
  const generation = ++state.generation;
  showError("");
  setStatus(offset ? "Loading more results…" : "Searching…");
  $("more").disabled = true;
  try {
    const response = state.mode === "image" ? await imageRequest(offset) : await fetchJSON(searchUrl(offset));
    if (generation !== state.generation) return;
    render(response, offset > 0);
  } catch (error) {
    if (generation !== state.generation) return;
    setStatus("");
    showError(error.message);
    if (!offset) clearResults();
  } finally {
    $("more").disabled = false;
  }
}

function searchText(query, { push = true } = {}) {
  const q = query.trim();
  $("q").value = query;
  updateClear();
  if (!q) {
    showError("Type a name or some words to search for.");
    return;
  }
  state.mode = "text";
  state.query = q;
  clearImage();
  if (push) history.pushState({ q }, "", `?${new URLSearchParams({ q })}`);
  run(0);
}

function searchImage(file) {
  if (!file) return;
  state.mode = "image";
  state.file = file;
  if (state.previewUrl) URL.revokeObjectURL(state.previewUrl);
  state.previewUrl = URL.createObjectURL(file);
  $("preview-img").src = state.previewUrl;
  $("preview-name").textContent = `${file.name || "pasted image"} (${Math.ceil(file.size / 1024)} KB)`;
  $("preview").hidden = false;
  $("q").value = "";
  updateClear();
  if (location.search) history.pushState({ image: true }, "", location.pathname);
  run(0);
}

function clearImage() {
  state.file = null;
  if (state.previewUrl) URL.revokeObjectURL(state.previewUrl);
  state.previewUrl = null;
  $("preview").hidden = true;
  $("preview-img").removeAttribute("src");
  $("file").value = "";
}

function clearResults() {
  state.results = [];
  state.revealed.clear();
  state.nextOffset = null;
  $("grid").replaceChildren();
  $("summary").hidden = true;
  $("more").hidden = true;
}

// --- rendering ------------------------------------------------------------------------

function render(response, append) {
  if (!append) {
    clearResults();
    state.answerSafe = response.safe;
    renderSummary(response);
  }
  const start = state.results.length;
  state.results.push(...response.results);
  renderSafety();
  const cards = response.results.map((result, i) => card(result, start + i));
  $("grid").append(...cards);
  state.nextOffset = response.next_offset;
  $("more").hidden = response.next_offset === null;
  const shown = state.results.length;
  setStatus(shown
    ? `Showing ${plural(shown, "result", "results")} (${Math.round(response.took_ms)} ms).`
    : "No results.");
  updateSelection();
}

function renderSummary(response) {
  const c = response.counts;
  const parts = [];
  if (response.query_type === "site") {
    const atLeast = c.site_match_capped ? "At least " : "";
    parts.push(c.site_match
      ? `${atLeast}${plural(c.site_match, "image", "images")} in this dataset came from ${response.query}.`
      : `Nothing in this dataset came from ${response.query}.`);
  } else if (response.query_type === "text") {
    const atLeast = c.name_match_capped ? "At least " : "";
    parts.push(c.name_match
      ? `${atLeast}${plural(c.name_match, "image credits", "images credit")} “${response.query}” in its caption or metadata.`
      : `No caption or metadata names “${response.query}”; below are the closest images by content.`);
    if (response.sites.length) {
      parts.push("Most come from " + response.sites.slice(0, 3)
        .map((s) => `${s.site} (${s.count})`).join(", ") + ".");
    }
  } else {
    const copies = c.exact_copy + c.near_copy;
    if (copies) parts.push(`${plural(copies, "image looks", "images look")} like copies of your image ` +
      `(${c.exact_copy} exact, ${c.near_copy} near).`);
    if (c.likely_copy) parts.push(`${plural(c.likely_copy, "image known only by its URL looks", "images known only by their URLs look")} ` +
      "like your image by CLIP embedding.");
  }
  $("verdict").textContent = response.copy_verdict
    ? capitalise(response.copy_verdict) + "."
    : "";
  $("verdict").hidden = !response.copy_verdict;
  $("counts").textContent = parts.join(" ");
  $("summary").hidden = false;
}

function isCopy(result) {
  return ["exact_copy", "near_copy", "likely_copy"].includes(result.match);
}

function capitalise(text) {
  return text.charAt(0).toUpperCase() + text.slice(1);
}

function safeLink(url) {
  try {
    const parsed = new URL(url);
    return parsed.protocol === "http:" || parsed.protocol === "https:" ? parsed.href : null;
  } catch {
    return null;
  }
}

function placeholder(alt, text = "Image unavailable — the item is still in the dataset") {
  return el("div", { class: "placeholder", role: "img", "aria-label": `${text}: ${alt}`, text });
}

function imageOrPlaceholder(src, alt, fallback = null) {
  if (!src) return fallback ? imageOrPlaceholder(fallback, alt) : placeholder(alt);
  const img = el("img", { src, alt, loading: "lazy", decoding: "async" });
  img.addEventListener("error", function onError() {
    if (fallback && img.getAttribute("src") !== fallback) {
      img.src = fallback; // the original is gone: show the index's thumbnail instead
      return;
    }
    img.removeEventListener("error", onError);
    img.replaceWith(placeholder(alt));
  });
  return img;
}

// --- safe mode: flagged results stay listed, but their pictures wait for the user ---------

// A flagged result of a safe-mode answer that the user has not chosen to see: its thumbnail
// is the server's blurred one (or nothing, for an item known only by URL) and its image is
// not requested.
function isVeiled(result) {
  return result.unsafe && state.answerSafe && !state.revealed.has(result.id);
}

function thumbnailSrc(result) {
  if (!result.unsafe || !state.answerSafe) return result.thumbnail_url;
  return result.url_only ? result.url : `${result.thumbnail_url}?safe=false`;
}

function imageSrc(result) {
  if (!result.unsafe || !state.answerSafe) return result.image_url;
  return result.url_only ? result.url : `/api/items/${encodeURIComponent(result.id)}/image?safe=false`;
}

function veiledPicture(result, caption) {
  if (!result.thumbnail_url) {
    const empty = placeholder(caption, "");
    empty.setAttribute("aria-label", `Not loaded, may be explicit: ${caption}`);
    return empty;
  }
  const img = imageOrPlaceholder(result.thumbnail_url, `Blurred: ${caption}`);
  img.classList.add("veiled");
  return img;
}

function unsafeCover(index) {
  const how = state.results[index].thumbnail_url ? "Blurred" : "Not loaded";
  return el("div", { class: "unsafe-cover" },
    el("p", { text: `May be explicit (nudity or sexual content). ${how} until you choose to see it.` }),
    el("button", { type: "button", class: "reveal", text: "Show image", onclick: () => reveal(index) }));
}

function reveal(index) {
  const result = state.results[index];
  state.revealed.add(result.id);
  const old = $("grid").children[index];
  if (old) {
    const fresh = card(result, index);
    old.replaceWith(fresh);
    if (!$("viewer").open) fresh.querySelector(".open").focus();
  }
  if ($("viewer").open && state.viewerIndex === index) openViewer(index);
}

function renderSafety() {
  const flagged = state.results.filter((r) => r.unsafe).length;
  const note = $("safety-note");
  if (state.answerSafe) {
    const [they, them] = flagged === 1 ? ["It is", "it"] : ["They are", "them"];
    note.textContent = `${plural(flagged, "result may be explicit", "results may be explicit")}: ` +
      `${they.toLowerCase()} covered until you choose to see ${them}. ${they} still listed, and you ` +
      `can select ${them} for opt-out.`;
  } else {
    note.textContent = `Safe mode is off: ${plural(flagged, "result", "results")} that may be explicit ` +
      `${flagged === 1 ? "is" : "are"} shown unblurred.`;
  }
  note.hidden = flagged === 0;
}

function changeSafeMode() {
  state.safe = $("safe-mode").checked;
  if ((state.mode === "text" && state.query) || (state.mode === "image" && state.file)) run(0);
}

function card(result, index) {
  const caption = result.caption || result.title || "(no caption)";
  const veiled = isVeiled(result);
  const open = el("button", { type: "button", class: "open", "aria-label": `Open: ${caption}`,
    onclick: () => openViewer(index) },
  veiled ? veiledPicture(result, caption) : imageOrPlaceholder(thumbnailSrc(result), caption));
  const checkbox = el("input", { type: "checkbox", "aria-label": `Select for opt-out: ${caption}`,
    onchange: (event) => toggleSelected(result, event.target.checked) });
  checkbox.checked = state.selected.has(result.id);
  const link = safeLink(result.url);
  const meta = el("div", { class: "meta" },
    el("span", {}, el("span", { class: `badge ${result.match}`, text: KIND_LABEL[result.match] }),
      result.opt_out ? " " : null,
      result.opt_out ? el("span", { class: "badge optout", text: OPT_OUT_LABEL[result.opt_out] }) : null,
      result.unsafe ? " " : null,
      result.unsafe ? el("span", { class: "badge unsafe", text: "May be explicit" }) : null),
    el("span", { class: "caption", text: caption }),
    el("span", { text: `by ${result.artist || "unknown artist"}` }),
    el("span", { class: "muted", text: `Licence: ${result.license || "unknown"}` }),
    link ? el("a", { href: link, rel: "noopener noreferrer nofollow", target: "_blank",
      text: result.unsafe ? "Source (may be explicit)" : "Source" })
      : el("span", { class: "muted", text: `Source: ${result.source}` }),
    el("span", { class: "muted", text: scoreLine(result) }),
  );
  const classes = `card${state.selected.has(result.id) ? " selected" : ""}${result.unsafe ? " unsafe" : ""}`;
  return el("li", { class: classes, "data-id": result.id, "data-match": result.match },
    open, veiled ? unsafeCover(index) : null, el("label", { class: "pick" }, checkbox, " select"), meta);
}

function scoreLine(result) {
  const parts = result.score === null ? [] : [`score ${result.score.toFixed(3)}`];
  if (result.copy_similarity !== null && result.copy_similarity !== undefined) {
    const what = result.url_only ? "embedding similarity" : "fingerprint similarity";
    parts.push(`${what} ${result.copy_similarity.toFixed(3)}`);
  }
  if (result.duplicates > 1) parts.push(`${result.duplicates} copies in dataset`);
  return parts.join(" · ");
}

// --- selection (the opt-out registry acts on it) ---------------------------------------

function toggleSelected(result, on) {
  if (on) state.selected.set(result.id, result);
  else state.selected.delete(result.id);
  updateSelection();
}

function selectWhere(predicate) {
  for (const result of state.results) if (predicate(result)) state.selected.set(result.id, result);
  updateSelection();
}

function updateSelection() {
  $("selected-count").textContent = `${state.selected.size} selected`;
  $("optout-open").disabled = state.selected.size === 0;
  $("select-copies").hidden = !state.results.some((r) => isCopy(r));
  $("select-names").hidden = !state.results.some((r) => r.match === "name_match");
  for (const li of $("grid").children) {
    const on = state.selected.has(li.dataset.id);
    li.classList.toggle("selected", on);
    li.querySelector("input[type=checkbox]").checked = on;
  }
  document.dispatchEvent(new CustomEvent("selectionchange-hibt", { detail: [...state.selected.values()] }));
}

// --- opt-out ------------------------------------------------------------------------

function openOptOut() {
  $("optout-summary").textContent = `${plural(state.selected.size, "image", "images")} selected.`;
  $("optout-form").hidden = false;
  $("optout-done").hidden = true;
  $("optout-error").hidden = true;
  $("optout-dialog").showModal();
  $("optout-name").focus();
}

async function submitOptOut(event) {
  event.preventDefault();
  $("optout-submit").disabled = true;
  try {
    const body = {
      item_ids: [...state.selected.keys()],
      name: $("optout-name").value, contact: $("optout-contact").value, note: $("optout-note").value,
    };
    const receipt = await fetchJSON("/api/optouts", {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
    });
    $("optout-receipt").textContent = receipt.receipt;
    $("optout-result").textContent = `${plural(receipt.added.length, "image", "images")} opted out` +
      (receipt.already.length ? `, ${receipt.already.length} already were.` : ".");
    const link = new URL(receipt.manage_url, location.origin).href;
    $("optout-link").href = link;
    $("optout-link").textContent = link;
    $("optout-form").hidden = true;
    $("optout-done").hidden = false;
    for (const result of state.results) if (state.selected.has(result.id) && !result.opt_out) result.opt_out = "unverified";
    const marked = [...state.selected.keys()];
    for (const li of $("grid").children) {
      if (marked.includes(li.dataset.id) && !li.querySelector(".badge.optout")) {
        li.querySelector(".meta .badge").after(" ", el("span", { class: "badge optout", text: OPT_OUT_LABEL.unverified }));
      }
    }
    state.selected.clear();
    updateSelection();
  } catch (error) {
    $("optout-error").textContent = error.message;
    $("optout-error").hidden = false;
  } finally {
    $("optout-submit").disabled = false;
  }
}

// --- viewer ---------------------------------------------------------------------------

function openViewer(index) {
  const result = state.results[index];
  if (!result) return;
  state.viewerIndex = index;
  const caption = result.caption || result.title || "(no caption)";
  const holder = document.querySelector(".viewer-image");
  if (isVeiled(result)) holder.replaceChildren(veiledPicture(result, caption), unsafeCover(index));
  else holder.replaceChildren(imageOrPlaceholder(imageSrc(result), caption, thumbnailSrc(result)));
  $("viewer-badge").className = `badge ${result.match}`;
  $("viewer-badge").textContent = KIND_LABEL[result.match];
  $("viewer-title").textContent = caption;
  const fields = [
    ["Artist", result.artist || "unknown"], ["Title", result.title], ["Licence", result.license || "unknown"],
    ["Source", result.source], ["URL", result.url], ["Size", `${result.width} × ${result.height}`],
    ["Score", result.score?.toFixed(4) ?? ""],
    ["Fingerprint similarity", result.copy_similarity?.toFixed(4) ?? ""],
    ["Hash distance", result.hash_distance ?? ""],
    ["Matched fields", (result.matched_fields || []).join(", ")],
    ["Copies in dataset", result.duplicates > 1 ? String(result.duplicates) : ""],
    ["Opt-out", result.opt_out ? OPT_OUT_LABEL[result.opt_out] : ""],
    ["Safety score", result.nsfw_score === null || result.nsfw_score === undefined ? ""
      : `${result.nsfw_score.toFixed(3)} (${result.nsfw_source})${result.unsafe ? ": may be explicit" : ""}`],
    ["Id", result.id],
  ];
  $("viewer-fields").replaceChildren(...fields.filter(([, v]) => v !== "" && v !== null && v !== undefined)
    .flatMap(([k, v]) => [el("dt", { text: k }), el("dd", { text: String(v) })]));
  $("viewer-position").textContent = `${index + 1} of ${state.results.length}`;
  $("prev").disabled = index === 0;
  $("next").disabled = index === state.results.length - 1 && state.nextOffset === null;
  if (!$("viewer").open) $("viewer").showModal();
}

async function step(delta) {
  const target = state.viewerIndex + delta;
  if (target < 0) return;
  if (target >= state.results.length && state.nextOffset !== null) await run(state.nextOffset);
  if (target < state.results.length) openViewer(target);
}

function closeViewer() {
  $("viewer").close();
}

function returnFocus() {
  const card = $("grid").children[state.viewerIndex];
  if (card) card.querySelector(".open").focus();
}

// --- wiring ---------------------------------------------------------------------------

function updateClear() {
  $("clear").hidden = !$("q").value;
}

function firstImage(items) {
  for (const item of items || []) {
    const file = item instanceof File ? item : item.kind === "file" ? item.getAsFile() : null;
    if (file) return file;
  }
  return null;
}

function wire() {
  $("text-form").addEventListener("submit", (event) => {
    event.preventDefault();
    searchText($("q").value);
  });
  $("q").addEventListener("input", updateClear);
  $("clear").addEventListener("click", () => {
    $("q").value = "";
    updateClear();
    $("q").focus();
  });
  $("file").addEventListener("change", () => searchImage($("file").files[0]));
  $("cancel-image").addEventListener("click", () => {
    clearImage();
    clearResults();
    state.mode = null;
    setStatus("Image search cancelled.");
  });
  const zone = $("dropzone");
  zone.addEventListener("keydown", (event) => {
    if (event.key === "Enter" || event.key === " ") {
      event.preventDefault();
      $("file").click();
    }
  });
  for (const type of ["dragenter", "dragover"]) {
    zone.addEventListener(type, (event) => {
      event.preventDefault();
      zone.classList.add("dragging");
    });
  }
  zone.addEventListener("dragleave", () => zone.classList.remove("dragging"));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("dragging");
    const file = firstImage(event.dataTransfer && event.dataTransfer.files);
    if (file) searchImage(file);
    else showError("Drop an image file to search with it.");
  });
  document.addEventListener("paste", (event) => {
    const data = event.clipboardData;
    const file = data && (firstImage(data.files) || firstImage(data.items));
    if (file) {
      event.preventDefault();
      searchImage(file);
    }
  });
  $("more").addEventListener("click", () => run(state.nextOffset));
  $("safe-mode").addEventListener("change", changeSafeMode);
  $("select-copies").addEventListener("click", () => selectWhere(isCopy));
  $("select-names").addEventListener("click", () => selectWhere((r) => r.match === "name_match"));
  $("select-none").addEventListener("click", () => {
    state.selected.clear();
    updateSelection();
  });
  $("optout-open").addEventListener("click", openOptOut);
  $("optout-form").addEventListener("submit", submitOptOut);
  $("optout-cancel").addEventListener("click", () => $("optout-dialog").close());
  $("optout-close").addEventListener("click", () => $("optout-dialog").close());
  $("prev").addEventListener("click", () => step(-1));
  $("next").addEventListener("click", () => step(1));
  $("close-viewer").addEventListener("click", closeViewer);
  $("viewer").addEventListener("close", returnFocus);
  $("viewer").addEventListener("keydown", (event) => {
    if (event.key === "ArrowRight") step(1);
    else if (event.key === "ArrowLeft") step(-1);
  });
  $("viewer").addEventListener("click", (event) => {
    if (event.target === $("viewer")) closeViewer();
  });
  window.addEventListener("popstate", fromUrl);
}

function fromUrl() {
  const q = new URLSearchParams(location.search).get("q");
  if (q) searchText(q, { push: false });
  else if (state.mode === "text") {
    $("q").value = "";
    updateClear();
    clearResults();
    setStatus("");
  }
}

export const hibt = { state, searchImage, searchText };
window.hibt = hibt;

wire();
loadStats();
fromUrl();
