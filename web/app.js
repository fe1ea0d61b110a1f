// The artist's page. Everything the server returns is inserted as text, never as HTML:
// captions come from the open web.

import { $, el, fetchJSON as fetchAPI, ServerError, showError } from "./common.js";

const PAGE_SIZE = 24;
const PER_DATASET = 8; // results shown per dataset when searching several at once
const KIND_LABEL = {
  exact_copy: "Exact copy",
  near_copy: "Near copy",
  edited_copy: "Edited copy",
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
  indices: [], // the server's indexes (/api/indices); several: the page searches them all
  index: "", // the one index to search, or "" for all of them
  generation: 0, // ignores answers to searches that were replaced by a newer one
  safe: true, // safe mode asked for: the toggle on the page, on at every visit
  answerSafe: true, // whether the answer shown was made in safe mode
  revealed: new Set(), // keys (keyOf) of flagged results the user chose to see
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

// Several indexes: a selector, "all of them" first; one: the page as it always was.
async function loadIndices() {
  try {
    state.indices = (await fetchJSON("/api/indices")).indices;
  } catch {
    state.indices = [];
  }
  if (state.indices.length < 2) {
    state.index = "";
    return loadStats();
  }
  const select = $("index-select");
  const total = state.indices.reduce((n, i) => n + i.items, 0);
  select.replaceChildren(
    el("option", { value: "", text: `All ${state.indices.length} datasets` }),
    ...state.indices.map((i) => el("option", { value: i.name, text: `${i.name} (${i.items.toLocaleString()} images)` })),
  );
  if (!state.indices.some((i) => i.name === state.index)) state.index = "";
  select.value = state.index;
  $("index-picker").hidden = false;
  $("dataset-line").textContent = `Searching ${total.toLocaleString()} images in ${state.indices.length} datasets: ` +
    state.indices.map((i) => i.name).join(", ") + ".";
  const untrained = state.indices.filter((i) => !i.model.semantic);
  if (untrained.length) {
    const warning = $("model-warning");
    warning.textContent = `${untrained.map((i) => `“${i.name}” (${i.model.name})`).join(", ")} ` +
      `${untrained.length === 1 ? "was" : "were"} built with a model with random weights: results marked ` +
      "“Similar” there are not meaningful. Exact copies and name matches are found without the " +
      "model and are reliable.";
    warning.hidden = false;
  }
}

function searchingAll() {
  return state.indices.length > 1 && !state.index;
}

function indexParam() {
  return state.index ? { index: state.index } : {};
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
    if (stats.fingerprint.startsWith("none")) {
      $("how-copies").textContent =
        "This index holds links and published CLIP embeddings, not the images: an upload is " +
        "matched by embedding similarity (a likely copy, not a verified one), and names with " +
        "full-text search.";
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
    const params = new URLSearchParams({ site: state.query, k: PAGE_SIZE, offset, ...indexParam(), ...safeParam() });
    return `/api/search/site?${params}`;
  }
  const params = new URLSearchParams({ q: state.query, k: PAGE_SIZE, offset, ...indexParam(), ...safeParam() });
  return `/api/search?${params}`;
}

async function imageRequest(offset) {
  const form = new FormData();
  form.append("image", state.file, state.file.name || "pasted-image");
  const params = new URLSearchParams({ k: PAGE_SIZE, offset, ...indexParam(), ...safeParam() });
  return fetchJSON(`/api/search/image?${params}`, { method: "POST", body: form });
}

// Every dataset at once: the server's answer per dataset (a site query is asked of each).
async function allRequest() {
  if (state.mode === "image") {
    const form = new FormData();
    form.append("image", state.file, state.file.name || "pasted-image");
    return fetchJSON(`/api/search/image/all?${new URLSearchParams({ k: PER_DATASET, ...safeParam() })}`, { method: "POST", body: form });
  }
  if (!SITE.test(state.query)) {
    return fetchJSON(`/api/search/all?${new URLSearchParams({ q: state.query, k: PER_DATASET, ...safeParam() })}`);
  }
  const answers = await Promise.all(state.indices.map(async (i) => ({
    index: i.name,
    found_copy: false,
    response: await fetchJSON(`/api/search/site?${new URLSearchParams({ site: state.query, k: PER_DATASET, index: i.name, ...safeParam() })}`),
  })));
  const found = answers.filter((a) => a.response.counts.site_match);
  const summary = found.length
    ? `images from ${state.query} are in ${found.length} of ${answers.length} datasets: ${found.map((a) => a.index).join(", ")}`
    : `nothing from ${state.query} in any of the ${answers.length} datasets`;
  return { summary, answers, took_ms: Math.max(...answers.map((a) => a.response.took_ms)) };
}

async function run(offset = 0) {
  const generation = ++state.generation;
  showError("");
  setStatus(offset ? "Loading more results…" : "Searching…");
  $("more").disabled = true;
  try {
    if (searchingAll()) {
      const answer = await allRequest();
      if (generation !== state.generation) return;
      renderAll(answer);
      return;
    }
    const response = state.mode === "image" ? await imageRequest(offset) : await fetchJSON(searchUrl(offset));
    if (generation !== state.generation) return;
    for (const result of response.results) result.index = state.index || undefined;
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
  if (push) history.pushState({ q }, "", `?${new URLSearchParams({ q, ...indexParam() })}`);
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
  $("datasets").replaceChildren();
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

// One section per dataset: its verdict and its best results, and a way to search it alone.
function renderAll(answer) {
  clearResults();
  $("verdict").textContent = capitalise(answer.summary) + ".";
  $("verdict").hidden = false;
  $("counts").textContent = "";
  $("summary").hidden = false;
  const sections = answer.answers.map((a) => {
    const start = state.results.length;
    for (const result of a.response.results) result.index = a.index;
    state.results.push(...a.response.results);
    const found = a.found_copy || a.response.counts.name_match > 0 || a.response.counts.site_match > 0;
    const only = el("button", { type: "button", class: "only", text: `Search only ${a.index}`,
      onclick: () => chooseIndex(a.index) });
    return el("section", { class: "dataset", "data-index": a.index, "aria-label": `Dataset ${a.index}` },
      el("h2", {}, el("span", { text: a.index }), found ? el("span", { class: "found", text: " — found" }) : null),
      el("p", { class: "dataset-verdict", text: datasetLine(a.response) }),
      el("ul", { class: "grid" }, ...a.response.results.map((r, i) => card(r, start + i))),
      a.response.results.length ? only : null);
  });
  $("datasets").append(...sections);
  setStatus(`Searched ${plural(answer.answers.length, "dataset", "datasets")} (${Math.round(answer.took_ms)} ms).`);
  updateSelection();
}

function datasetLine(response) {
  const c = response.counts;
  if (response.copy_verdict) return capitalise(response.copy_verdict) + ".";
  if (response.query_type === "site") return `${plural(c.site_match, "image", "images")} from ${response.query}.`;
  if (c.name_match) return `${plural(c.name_match, "image credits", "images credit")} “${response.query}”.`;
  return `Nothing names “${response.query}”; the closest images by content:`;
}

function chooseIndex(name) {
  state.index = name;
  $("index-select").value = name;
  if (state.mode) run(0);
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
    const copies = c.exact_copy + c.near_copy + c.edited_copy;
    if (copies) parts.push(`${plural(c.copy_pictures, "picture", "distinct pictures")} ` +
      `(${plural(copies, "file", "files")}: ${c.exact_copy} exact, ${c.near_copy} near, ` +
      `${c.edited_copy} edited) look like copies of your image.`);
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

// A result's key in the selection: ids are unique within one dataset only.
function keyOf(result) {
  return result.index ? `${result.index}/${result.id}` : result.id;
}

function isCopy(result) {
  return ["exact_copy", "near_copy", "edited_copy", "likely_copy"].includes(result.match);
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
  return result.unsafe && state.answerSafe && !state.revealed.has(keyOf(result));
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
  state.revealed.add(keyOf(result));
  // one grid, or one per dataset when every dataset was searched
  const old = document.querySelector(`li.card[data-id="${CSS.escape(keyOf(result))}"]`);
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
  checkbox.checked = state.selected.has(keyOf(result));
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
  const classes = `card${state.selected.has(keyOf(result)) ? " selected" : ""}${result.unsafe ? " unsafe" : ""}`;
  return el("li", { class: classes, "data-id": keyOf(result), "data-match": result.match },
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
  if (on) state.selected.set(keyOf(result), result);
  else state.selected.delete(keyOf(result));
  updateSelection();
}

function selectWhere(predicate) {
  for (const result of state.results) if (predicate(result)) state.selected.set(keyOf(result), result);
  updateSelection();
}

function updateSelection() {
  $("selected-count").textContent = `${state.selected.size} selected`;
  $("optout-open").disabled = state.selected.size === 0;
  $("select-copies").hidden = !state.results.some((r) => isCopy(r));
  $("select-names").hidden = !state.results.some((r) => r.match === "name_match");
  for (const li of document.querySelectorAll("#results li.card")) {
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
    // One request per dataset the selection spans (item ids are each dataset's own).
    const byIndex = new Map();
    for (const result of state.selected.values()) {
      const ids = byIndex.get(result.index) || [];
      ids.push(result.id);
      byIndex.set(result.index, ids);
    }
    const receipts = [];
    for (const [index, ids] of byIndex) {
      const body = {
        item_ids: ids, ...(index ? { index } : {}),
        name: $("optout-name").value, contact: $("optout-contact").value, note: $("optout-note").value,
      };
      receipts.push(await fetchJSON("/api/optouts", {
        method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
      }));
    }
    const receipt = receipts[0];
    const added = receipts.reduce((n, r) => n + r.added.length, 0);
    const already = receipts.reduce((n, r) => n + r.already.length, 0);
    $("optout-receipt").textContent = receipts.map((r) => r.receipt).join(", ");
    $("optout-result").textContent = `${plural(added, "image", "images")} opted out` +
      (already ? `, ${already} already were.` : ".");
    const link = new URL(receipt.manage_url, location.origin).href;
    $("optout-link").href = link;
    $("optout-link").textContent = link;
    $("optout-form").hidden = true;
    $("optout-done").hidden = false;
    for (const result of state.results) if (state.selected.has(keyOf(result)) && !result.opt_out) result.opt_out = "unverified";
    const marked = [...state.selected.keys()];
    for (const li of document.querySelectorAll("#results li.card")) {
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
  const card = document.querySelectorAll("#results li.card")[state.viewerIndex];
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
  $("index-select").addEventListener("change", () => chooseIndex($("index-select").value));
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
  const params = new URLSearchParams(location.search);
  if (state.indices.length > 1) {
    state.index = state.indices.some((i) => i.name === params.get("index")) ? params.get("index") : "";
    $("index-select").value = state.index;
  }
  const q = params.get("q");
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
state.index = new URLSearchParams(location.search).get("index") || "";
loadIndices().then(fromUrl);
