// The private page of one opt-out claim. The receipt and token travel in the URL fragment,
// which browsers never send to the server; the token goes only in an Authorization header.

import { $, el, fetchJSON, showError } from "./common.js";

function secret() {
  const params = new URLSearchParams(location.hash.slice(1));
  return { receipt: params.get("receipt"), token: params.get("token") };
}

function call(url, { method = "GET", body, token } = {}) {
  const headers = { "Content-Type": "application/json" };
  if (token) headers.Authorization = `Bearer ${token}`;
  return fetchJSON(url, { method, headers, body: body && JSON.stringify(body) });
}

async function load() {
  const { receipt, token } = secret();
  if (!receipt || !token) return;
  try {
    const claim = await call(`/api/optouts/${encodeURIComponent(receipt)}`, { token });
    render(claim);
  } catch (error) {
    showError(`Cannot open this claim: ${error.message}`);
  }
}

function render(claim) {
  $("claim").hidden = false;
  $("domain").hidden = true;
  $("claim-line").textContent = `Receipt ${claim.receipt}, registered ${claim.created_at}` +
    (claim.name ? ` by ${claim.name}` : "") + ".";
  const rows = [...claim.items.map((i) => [i.source || i.item_id, i.status, i.created_at, i.withdrawn_at]),
    ...claim.domains.map((d) => [`domain ${d.domain}`, d.status, d.created_at, d.withdrawn_at])];
  $("claim-rows").replaceChildren(
    ...rows.map((cells) => el("tr", {}, ...cells.map((c) => el("td", { text: c || "" })))));
  const open = claim.domains.find((d) => !d.withdrawn_at && d.status === "pending");
  $("verify-box").hidden = !open;
  if (open) {
    $("verify-domain").textContent = open.domain;
    $("verify-url").textContent = `https://${open.domain}/.well-known/hibt-optout.txt`;
    $("verify-dns").textContent = `_hibt-optout.${open.domain.split(":")[0]}`;
    $("verify-challenge").textContent = open.challenge;
    $("verify").dataset.domain = open.domain;
  }
  const active = claim.items.some((i) => !i.withdrawn_at) || claim.domains.some((d) => !d.withdrawn_at);
  $("withdraw-all").disabled = !active;
}

async function withdrawAll() {
  const { receipt, token } = secret();
  showError("");
  try {
    await call(`/api/optouts/${encodeURIComponent(receipt)}/withdraw`, { method: "POST", body: {}, token });
    $("status").textContent = "Withdrawn.";
    await load();
  } catch (error) {
    showError(error.message);
  }
}

async function verify() {
  const { receipt, token } = secret();
  showError("");
  try {
    const domain = $("verify").dataset.domain;
    await call(`/api/domains/${encodeURIComponent(domain)}/verify`, { method: "POST", body: { receipt }, token });
    $("status").textContent = `${domain} is verified: every image from it is opted out.`;
    await load();
  } catch (error) {
    showError(error.message);
  }
}

async function claimDomain(event) {
  event.preventDefault();
  showError("");
  try {
    const claim = await call("/api/domains", {
      method: "POST", body: { domain: $("domain-name").value, contact: $("domain-contact").value },
    });
    location.hash = new URLSearchParams({ receipt: claim.receipt, token: claim.token }).toString();
    $("status").textContent = "Claim recorded as pending. Keep this page's address: it is your private link.";
    await load();
  } catch (error) {
    showError(error.message);
  }
}

$("withdraw-all").addEventListener("click", withdrawAll);
$("verify").addEventListener("click", verify);
$("domain-form").addEventListener("submit", claimDomain);
window.addEventListener("hashchange", load);
load();
