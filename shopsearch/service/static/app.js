// shopsearch search page: plain JavaScript, no build step. Talks to POST /search and, as the
// shopper types, POST /suggest (the shopper id travels in the body, not the URL).
"use strict";

const SEARCH_PATH = "search";
const SUGGEST_PATH = "suggest";
// Wait this long after the last keystroke before asking for suggestions (one request per pause,
// not per key); ask again this long later while the service is still building them.
const SUGGEST_DELAY_MS = 120;
const SUGGEST_RETRY_MS = 1000;
const SUGGESTIONS = 8;
const MAX_PREFIX_CHARS = 100;
const PAGE_SIZE = 20;
// Facets the page asks for (the index's default facetable fields); ?facets=voltage,color adds a
// catalog's own declared ones.
const DEFAULT_FACETS = ["brand", "category", "price", "in_stock"];
const $ = (id) => document.getElementById(id);

// What the shopper narrowed by: field -> the filter expressions of the values ticked. Values of
// one field are alternatives (OR), fields narrow together (AND); the service counts a field's
// facet without its own selection (disjunctive faceting), so the other values stay offered.
const selected = new Map();
let offset = 0;
let facetNames = DEFAULT_FACETS;

function selectionFilter() {
  const parts = [];
  for (const exprs of selected.values()) {
    if (!exprs.size) continue;
    const alternatives = [...exprs].map((e) => `(${e})`);
    parts.push(alternatives.length === 1 ? alternatives[0] : `(${alternatives.join(" OR ")})`);
  }
  return parts.join(" AND ");
}

function request() {
  const body = { q: $("q").value.trim(), k: PAGE_SIZE, offset, explain: true, facets: facetNames };
  const sort = $("sort").value;
  if (sort) body.sort = sort;
  const filter = selectionFilter();
  if (filter) body.filter = filter;
  const category = $("category").value.trim();
  const brand = $("brand").value.trim();
  const minPrice = $("min_price").value;
  const maxPrice = $("max_price").value;
  const user = $("user_id").value.trim();
  if (category) body.category = category;
  if (brand) body.brands = [brand];
  if (minPrice !== "") body.min_price = Number(minPrice);
  if (maxPrice !== "") body.max_price = Number(maxPrice);
  if ($("in_stock").checked) body.in_stock = true;
  if (user) body.user_id = user;
  return body;
}

function text(tag, cls, value) {
  const el = document.createElement(tag);
  if (cls) el.className = cls;
  el.textContent = value;
  return el;
}

function bar(scores) {
  // widths: each part's magnitude against the larger of the two (relevance is standardised)
  const rel = Math.abs(scores.relevance ?? scores.retrieval ?? 0);
  const per = Math.abs(scores.personal ?? 0);
  const total = rel + per || 1;
  const el = document.createElement("div");
  el.className = "bar";
  el.title = `relevance ${(scores.relevance ?? 0).toFixed(3)}, personal ${(scores.personal ?? 0).toFixed(3)}`;
  const r = document.createElement("span");
  r.className = "relevance";
  r.style.width = `${(100 * rel) / total}%`;
  const p = document.createElement("span");
  p.className = "personal" + ((scores.personal ?? 0) < 0 ? " negative" : "");
  p.style.width = `${(100 * per) / total}%`;
  el.append(r, p);
  return el;
}

const MARKS = { pin: "pinned", boost: "boosted", bury: "buried" };

function renderFacets(facets) {
  const aside = $("facets");
  aside.replaceChildren();
  for (const [field, values] of Object.entries(facets || {})) {
    if (!values.length) continue;
    const section = document.createElement("section");
    section.className = "facet";
    section.dataset.field = field;
    section.append(text("h3", "", field.replace(/_/g, " ")));
    const list = document.createElement("ul");
    const ticked = selected.get(field) || new Set();
    for (const value of values) {
      const li = document.createElement("li");
      const label = document.createElement("label");
      const box = document.createElement("input");
      box.type = "checkbox";
      box.className = "facet-value";
      box.dataset.field = field;
      box.dataset.filter = value.filter;
      box.checked = ticked.has(value.filter);
      box.addEventListener("change", () => {
        const set = selected.get(field) || new Set();
        if (box.checked) set.add(value.filter);
        else set.delete(value.filter);
        selected.set(field, set);
        offset = 0;
        search();
      });
      label.append(box, ` ${value.label} `, text("span", "count", `(${value.count})`));
      li.append(label);
      list.append(li);
    }
    section.append(list);
    aside.append(section);
  }
}

function renderPages(data) {
  const total = data.total_candidates ?? data.results.length;
  const nav = $("pages");
  nav.hidden = total <= data.k && data.offset === 0;
  $("prev").disabled = data.offset === 0;
  $("next").disabled = data.offset + data.results.length >= total;
  const page = Math.floor(data.offset / data.k) + 1;
  $("page-of").textContent = `page ${page} of ${Math.max(1, Math.ceil(total / data.k))}`;
}

function render(data) {
  const list = $("results");
  list.replaceChildren();
  for (const hit of data.results) {
    const product = hit.product || {};
    const li = document.createElement("li");
    li.className = "result";
    li.dataset.productId = hit.product_id;
    const left = document.createElement("div");
    const title = text("div", "title", product.title || hit.product_id);
    for (const m of hit.merchandising || []) {
      const mark = text("span", `merch ${m.action}`, MARKS[m.action] || m.action);
      mark.title = `rule ${m.rule}`;
      title.append(mark);
    }
    left.append(title);
    const meta = document.createElement("div");
    meta.className = "meta";
    if (product.price !== undefined && product.price !== null) {
      meta.append(text("span", "price", `$${Number(product.price).toFixed(2)}`), " · ");
    }
    meta.append(text("span", "brand", product.brand || "no brand"), " · ");
    meta.append(text("span", "category", product.category || "uncategorised"));
    if (product.in_stock === false) meta.append(" · out of stock");
    left.append(meta);
    if (hit.because && hit.because.length) {
      left.append(text("div", "why", "because: " + hit.because.map((b) => b.feature).join(", ")));
    }
    const right = document.createElement("div");
    right.append(bar(hit.scores), text("div", "why", `score ${hit.score.toFixed(3)}`));
    li.append(left, right);
    list.append(li);
  }
  const stages = Object.entries(data.stage_ms || {})
    .map(([k, v]) => `${k} ${v.toFixed(1)} ms`)
    .join(", ");
  $("status").className = "";
  $("status").textContent =
    (data.corrected ? `showing results for "${data.corrected}" · ` : "") +
    (data.suggestion ? `did you mean "${data.suggestion}"? · ` : "") +
    `${data.results.length} results` + (data.personalized ? " (personalized)" : "") + ` · ${stages}`;
  // why the page is empty (the filters match no product): what the service says, as said
  const note = $("note");
  note.textContent = data.note || "";
  note.hidden = !data.note;
  renderFacets(data.facets);
  renderPages(data);
  // how many answers the page has shown (what a browser test waits on)
  document.body.dataset.answers = String(Number(document.body.dataset.answers || 0) + 1);
}

function jsonHeaders() {
  const headers = { "Content-Type": "application/json" };
  const key = $("api_key").value || sessionStorage.getItem("shopsearch-key");
  if (key) {
    headers["X-API-Key"] = key;
    sessionStorage.setItem("shopsearch-key", key);
  }
  return headers;
}

// -- suggestions: a listbox under the search box (ARIA combobox), chosen by click or keys ------

let suggestTimer = null;
let suggestAsked = 0; // the latest request: an older answer arriving later is dropped
let activeSuggestion = -1;

function suggestionItems() {
  return [...$("suggestions").querySelectorAll("li")];
}

function closeSuggestions() {
  clearTimeout(suggestTimer);
  suggestAsked += 1;
  const list = $("suggestions");
  list.hidden = true;
  list.replaceChildren();
  activeSuggestion = -1;
  $("q").setAttribute("aria-expanded", "false");
  $("q").removeAttribute("aria-activedescendant");
}

function setActiveSuggestion(index) {
  const items = suggestionItems();
  activeSuggestion = index;
  items.forEach((li, i) => li.setAttribute("aria-selected", String(i === index)));
  if (items[index]) {
    $("q").setAttribute("aria-activedescendant", items[index].id);
    items[index].scrollIntoView({ block: "nearest" });
  }
}

function chooseSuggestion(text) {
  $("q").value = text;
  closeSuggestions();
  offset = 0;
  search();
}

function showSuggestions(suggestions) {
  const list = $("suggestions");
  list.replaceChildren();
  activeSuggestion = -1;
  suggestions.forEach((s, i) => {
    const li = document.createElement("li");
    li.id = `suggestion-${i}`;
    li.className = "suggestion";
    li.setAttribute("role", "option");
    li.setAttribute("aria-selected", "false");
    li.dataset.text = s.text;
    li.append(text("span", "text", s.text), text("span", "source", s.source === "log" ? "searched" : ""));
    // mousedown, not click: it comes before the box loses focus (which closes the list)
    li.addEventListener("mousedown", (event) => {
      event.preventDefault();
      chooseSuggestion(s.text);
    });
    list.append(li);
  });
  list.hidden = suggestions.length === 0;
  $("q").setAttribute("aria-expanded", String(suggestions.length > 0));
}

async function askSuggestions() {
  const q = $("q").value;
  if (!q.trim()) {
    closeSuggestions();
    return;
  }
  const asked = ++suggestAsked;
  const body = { q: q.slice(0, MAX_PREFIX_CHARS), k: SUGGESTIONS };
  const user = $("user_id").value.trim();
  if (user) body.user_id = user;
  let data = null;
  try {
    const response = await fetch(SUGGEST_PATH, { method: "POST", headers: jsonHeaders(), body: JSON.stringify(body) });
    if (response.ok) data = await response.json();
  } catch (err) {
    data = null; // suggestions are a help: a failed one leaves the box as it is
  }
  if (asked !== suggestAsked) return;
  // how many answers the box has had (what a browser test waits on)
  document.body.dataset.suggested = String(Number(document.body.dataset.suggested || 0) + 1);
  if (!data) {
    showSuggestions([]);
    return;
  }
  showSuggestions(data.suggestions || []);
  if (data.ready === false) suggestTimer = setTimeout(askSuggestions, SUGGEST_RETRY_MS);
}

$("q").addEventListener("input", () => {
  clearTimeout(suggestTimer);
  suggestTimer = setTimeout(askSuggestions, SUGGEST_DELAY_MS);
});
$("q").addEventListener("keydown", (event) => {
  const items = suggestionItems();
  if ($("suggestions").hidden || !items.length) {
    if (event.key === "ArrowDown" && $("q").value.trim()) askSuggestions();
    return;
  }
  if (event.key === "ArrowDown") {
    event.preventDefault();
    setActiveSuggestion((activeSuggestion + 1) % items.length);
  } else if (event.key === "ArrowUp") {
    event.preventDefault();
    setActiveSuggestion(activeSuggestion <= 0 ? items.length - 1 : activeSuggestion - 1);
  } else if (event.key === "Enter" && activeSuggestion >= 0) {
    event.preventDefault();
    chooseSuggestion(items[activeSuggestion].dataset.text);
  } else if (event.key === "Escape") {
    event.preventDefault();
    closeSuggestions();
  }
});
$("q").addEventListener("blur", closeSuggestions);

async function search(event) {
  if (event) event.preventDefault();
  const body = request();
  if (!body.q) return;
  closeSuggestions();
  const headers = jsonHeaders();
  $("status").className = "";
  $("status").textContent = "searching...";
  try {
    const response = await fetch(SEARCH_PATH, { method: "POST", headers, body: JSON.stringify(body) });
    const data = await response.json();
    if (!response.ok) {
      const detail = data.message || (typeof data.detail === "string" ? data.detail : JSON.stringify(data.detail));
      throw new Error(`${response.status}: ${detail}`);
    }
    render(data);
  } catch (err) {
    $("results").replaceChildren();
    $("note").hidden = true;
    $("status").className = "error";
    $("status").textContent = String(err.message || err);
  }
}

$("search-form").addEventListener("submit", (event) => {
  offset = 0;
  search(event);
});
$("sort").addEventListener("change", () => {
  offset = 0;
  search();
});
$("prev").addEventListener("click", () => {
  offset = Math.max(0, offset - PAGE_SIZE);
  search();
});
$("next").addEventListener("click", () => {
  offset += PAGE_SIZE;
  search();
});
// a shareable link: /?q=drill&user_id=... fills the form and searches
const params = new URLSearchParams(window.location.search);
for (const name of ["q", "category", "brand", "min_price", "max_price", "user_id"]) {
  if (params.has(name)) $(name).value = params.get(name);
}
if (params.get("in_stock") === "true") $("in_stock").checked = true;
if (params.has("sort")) $("sort").value = params.get("sort");
if (params.has("facets")) {
  const extra = params.get("facets").split(",").map((f) => f.trim()).filter(Boolean);
  facetNames = [...new Set([...DEFAULT_FACETS, ...extra])];
}
if ($("q").value) search();
