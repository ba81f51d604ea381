// shopsearch search page: plain JavaScript, no build step. Talks to POST /search (the shopper id
// travels in the body, not the URL).
"use strict";

const SEARCH_PATH = "search";
const $ = (id) => document.getElementById(id);

function request() {
  const body = { q: $("q").value.trim(), k: 20, explain: true };
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

function render(data) {
  const list = $("results");
  list.replaceChildren();
  for (const hit of data.results) {
    const product = hit.product || {};
    const li = document.createElement("li");
    li.className = "result";
    li.dataset.productId = hit.product_id;
    const left = document.createElement("div");
    left.append(text("div", "title", product.title || hit.product_id));
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
}

async function search(event) {
  if (event) event.preventDefault();
  const body = request();
  if (!body.q) return;
  const headers = { "Content-Type": "application/json" };
  const key = $("api_key").value || sessionStorage.getItem("shopsearch-key");
  if (key) {
    headers["X-API-Key"] = key;
    sessionStorage.setItem("shopsearch-key", key);
  }
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

$("search-form").addEventListener("submit", search);
// a shareable link: /?q=drill&user_id=... fills the form and searches
const params = new URLSearchParams(window.location.search);
for (const name of ["q", "category", "brand", "min_price", "max_price", "user_id"]) {
  if (params.has(name)) $(name).value = params.get(name);
}
if (params.get("in_stock") === "true") $("in_stock").checked = true;
if ($("q").value) search();
