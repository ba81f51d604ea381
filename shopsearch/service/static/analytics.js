// The analytics view: GET /admin/analytics with the admin key (kept in sessionStorage for the
// tab, sent as X-Admin-Key), drawn as inline SVG and tables. Query texts come from shoppers:
// they are only ever set as textContent, never as HTML.
"use strict";

const ANALYTICS_PATH = "/admin/analytics";
const SVG_NS = "http://www.w3.org/2000/svg";
const $ = (id) => document.getElementById(id);

function pct(x) { return (100 * x).toFixed(1) + "%"; }
function pos(x) { return x === null || x === undefined ? "-" : x.toFixed(2); }
function num(x) { return Number(x).toLocaleString("en"); }

function svgEl(name, attrs, text) {
  const el = document.createElementNS(SVG_NS, name);
  for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, String(v));
  if (text !== undefined) el.textContent = text;
  return el;
}

// A chart frame: axes box [x0, x1] x [y0, y1] inside the 360 x 200 viewBox.
const FRAME = { x0: 40, x1: 350, y0: 170, y1: 15 };

function axes(svg, ymax, yLabel, asPercent) {
  svg.replaceChildren();
  svg.appendChild(svgEl("line", { x1: FRAME.x0, y1: FRAME.y0, x2: FRAME.x1, y2: FRAME.y0, stroke: "#999" }));
  svg.appendChild(svgEl("line", { x1: FRAME.x0, y1: FRAME.y0, x2: FRAME.x0, y2: FRAME.y1, stroke: "#999" }));
  for (const f of [0, 0.5, 1]) {
    const y = FRAME.y0 - f * (FRAME.y0 - FRAME.y1);
    const label = asPercent ? Math.round(f * ymax * 100) + "%" : num(Math.round(f * ymax));
    svg.appendChild(svgEl("text", { x: FRAME.x0 - 4, y: y + 3, "text-anchor": "end" }, label));
  }
  svg.appendChild(svgEl("text", { x: FRAME.x0, y: 10 }, yLabel));
}

function xLabels(svg, labels, xOf) {
  const step = Math.max(1, Math.ceil(labels.length / 8));
  labels.forEach((label, i) => {
    if (i % step === 0) {
      const x = xOf(i);  // a label at the frame's right edge ends there, not past the plot
      const anchor = x > FRAME.x1 - 25 ? "end" : "middle";
      svg.appendChild(svgEl("text", { x, y: FRAME.y0 + 14, "text-anchor": anchor }, label));
    }
  });
}

function bars(svg, labels, values, color, yLabel) {
  const ymax = Math.max(1, ...values);
  axes(svg, ymax, yLabel, false);
  const width = (FRAME.x1 - FRAME.x0) / Math.max(1, values.length);
  values.forEach((v, i) => {
    const h = (v / ymax) * (FRAME.y0 - FRAME.y1);
    const bar = svgEl("rect", {
      class: "bar", x: FRAME.x0 + i * width + width * 0.1, y: FRAME.y0 - h,
      width: width * 0.8, height: h, fill: color,
    });
    bar.appendChild(svgEl("title", {}, `${labels[i]}: ${num(v)}`));
    svg.appendChild(bar);
  });
  xLabels(svg, labels, (i) => FRAME.x0 + (i + 0.5) * width);
}

function lines(svg, labels, series, yLabel) {
  // series: [{values, color, name}], values in 0..1
  axes(svg, 1, yLabel, true);
  const n = Math.max(1, labels.length - 1);
  const xOf = (i) => FRAME.x0 + (labels.length === 1 ? 0.5 : i / n) * (FRAME.x1 - FRAME.x0);
  const yOf = (v) => FRAME.y0 - Math.min(1, Math.max(0, v)) * (FRAME.y0 - FRAME.y1);
  series.forEach((s, k) => {
    if (!s.values.length) return;
    const points = s.values.map((v, i) => `${xOf(i)},${yOf(v)}`).join(" ");
    svg.appendChild(svgEl("polyline", { class: "series", points, fill: "none", stroke: s.color, "stroke-width": 2 }));
    s.values.forEach((v, i) => {
      const dot = svgEl("circle", { cx: xOf(i), cy: yOf(v), r: 2.5, fill: s.color });
      dot.appendChild(svgEl("title", {}, `${s.name} at ${labels[i]}: ${pct(v)}`));
      svg.appendChild(dot);
    });
    svg.appendChild(svgEl("text", { x: FRAME.x1 - 100, y: 12 + 11 * k, fill: s.color }, s.name));
  });
  xLabels(svg, labels, xOf);
}

function table(el, head, rows, rare, rareColumns) {
  el.replaceChildren();
  const tr = document.createElement("tr");
  for (const h of head) {
    const th = document.createElement("th");
    th.textContent = h;
    tr.appendChild(th);
  }
  el.appendChild(tr);
  for (const row of rows) {
    const r = document.createElement("tr");
    for (const cell of row) {
      const td = document.createElement("td");
      td.textContent = cell;
      r.appendChild(td);
    }
    el.appendChild(r);
  }
  if (rare && rare.queries > 0) {
    const r = document.createElement("tr");
    const cells = [`rare queries (${num(rare.queries)})`, num(rare.searches)];
    while (cells.length < rareColumns) cells.push("");
    cells.forEach((cell, i) => {
      const td = document.createElement("td");
      td.textContent = cell;
      if (i === 0) td.className = "rare";
      r.appendChild(td);
    });
    el.appendChild(r);
  }
  if (!rows.length && !(rare && rare.queries > 0)) {
    const r = document.createElement("tr");
    const td = document.createElement("td");
    td.colSpan = head.length;
    td.textContent = "none";
    r.appendChild(td);
    el.appendChild(r);
  }
}

function cards(report) {
  const el = $("totals");
  el.replaceChildren();
  const items = [
    ["searches", num(report.searches)],
    ["shoppers", num(report.shoppers)],
    ["click-through rate", pct(report.ctr)],
    ["mean click position", pos(report.mean_click_position)],
    ["abandonment", pct(report.abandonment)],
    ["zero-result searches", num(report.zero_result)],
    ["rescued by correction", num(report.rescued)],
  ];
  for (const [label, value] of items) {
    const card = document.createElement("div");
    card.className = "card";
    const v = document.createElement("div");
    v.className = "value";
    v.textContent = value;
    const l = document.createElement("div");
    l.className = "label";
    l.textContent = label;
    card.append(v, l);
    el.appendChild(card);
  }
}

function render(report) {
  $("privacy").textContent =
    `From ${report.since || "the start"} to ${report.until || "the end"} (UTC days). ` +
    `A query is listed only when at least ${report.min_shoppers} distinct shoppers typed it; ` +
    "the others are summed as rare queries.";
  cards(report);
  const days = report.days.map((d) => d.day);
  bars($("plot-days"), days, report.days.map((d) => d.searches), "#4a7bd0", "searches");
  lines($("plot-rates"), days, [
    { name: "CTR", color: "#1f5f99", values: report.days.map((d) => d.ctr) },
    { name: "abandonment", color: "#b5562b", values: report.days.map((d) => d.abandonment) },
  ], "share of searches");
  const e = report.examination;
  const ranks = e.ctr_by_rank.map((_, i) => String(i + 1));
  lines($("plot-curve"), ranks, [
    { name: "examination", color: "#2d7d46", values: e.theta },
    { name: "CTR per rank", color: "#e0902a", values: e.ctr_by_rank },
  ], e.note ? `not estimated: ${e.note}` : "relative to rank 1");
  const s = report.searches_per_shopper;
  bars($("plot-shoppers"), s.buckets.map((b) => b.searches), s.buckets.map((b) => b.shoppers), "#6a9f58", "shoppers");
  table($("days"), ["day", "searches", "shoppers", "CTR", "mean click position", "abandonment", "zero results", "rescued"],
    report.days.map((d) => [d.day, num(d.searches), num(d.shoppers), pct(d.ctr), pos(d.mean_click_position),
      pct(d.abandonment), num(d.zero_result), num(d.rescued)]));
  table($("top-queries"), ["query", "searches", "shoppers", "CTR", "mean click position", "zero results"],
    report.top_queries.map((q) => [q.query, num(q.searches), num(q.shoppers), pct(q.ctr),
      pos(q.mean_click_position), num(q.zero_result)]), report.rare_queries, 6);
  table($("zero-queries"), ["query", "searches", "shoppers"],
    report.zero_result_queries.map((q) => [q.query, num(q.searches), num(q.shoppers)]), report.rare_zero_result, 3);
  table($("rescued-queries"), ["query", "searched as", "searches", "shoppers"],
    report.rescued_queries.map((q) => [q.query, q.corrected, num(q.searches), num(q.shoppers)]), report.rare_rescued, 4);
  $("report").hidden = false;
}

async function load() {
  const status = $("status");
  const adminKey = $("admin_key").value || sessionStorage.getItem("shopsearch-admin-key");
  const apiKey = $("api_key").value || sessionStorage.getItem("shopsearch-key");
  if (!adminKey) {
    status.className = "error";
    status.textContent = "Give the admin key (X-Admin-Key).";
    return;
  }
  sessionStorage.setItem("shopsearch-admin-key", adminKey);
  const headers = { "X-Admin-Key": adminKey };
  if (apiKey) {
    headers["X-API-Key"] = apiKey;
    sessionStorage.setItem("shopsearch-key", apiKey);
  }
  const params = new URLSearchParams();
  for (const name of ["since", "until", "top"]) {
    if ($(name).value) params.set(name, $(name).value);
  }
  status.className = "";
  status.textContent = "Reading the search log...";
  try {
    const response = await fetch(`${ANALYTICS_PATH}?${params}`, { headers });
    const body = await response.json().catch(() => ({}));
    if (!response.ok) {
      if (response.status === 401 || response.status === 403) {
        sessionStorage.removeItem("shopsearch-admin-key");
      }
      status.className = "error";
      status.textContent = `${response.status}: ${body.message || body.detail || response.statusText}`;
      return;
    }
    render(body);
    status.textContent = `${num(body.searches)} searches.`;
  } catch (err) {
    status.className = "error";
    status.textContent = `Could not reach the service: ${err}`;
  }
}

$("analytics-form").addEventListener("submit", (event) => {
  event.preventDefault();
  load();
});
// Query parameters pre-fill the form (?since=2026-12-01&until=...); a key kept for this tab
// loads the report at once.
const initial = new URLSearchParams(location.search);
for (const name of ["since", "until", "top"]) {
  if (initial.get(name)) $(name).value = initial.get(name);
}
if (sessionStorage.getItem("shopsearch-admin-key")) load();
