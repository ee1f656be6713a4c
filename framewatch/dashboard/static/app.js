// framewatch review: live updates by server-sent events, evidence blurred until clicked.
// No framework and no build step; every value from the server is set as text, never as HTML.
"use strict";

function el(tag, attrs, text) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  return node;
}

function svg(tag, attrs) {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  return node;
}

function sparkline(values) {
  const w = 120, h = 24;
  const box = svg("svg", {width: w, height: h, viewBox: `0 0 ${w} ${h}`, class: "spark"});
  if (values.length > 1) {
    const pts = values.map((v, i) => `${(i * (w - 2) / (values.length - 1) + 1).toFixed(1)},${(h - 1 - v * (h - 2)).toFixed(1)}`);
    box.appendChild(svg("polyline", {points: pts.join(" "), fill: "none", stroke: "#036", "stroke-width": "1.5"}));
  }
  return box;
}

function fmt(x) { return typeof x === "number" ? x.toFixed(2) : "–"; }

function renderRanking(rows) {
  const body = document.querySelector("#ranking tbody");
  if (!body) return;
  body.replaceChildren(...rows.map((r) => {
    const tr = el("tr", {"data-stream": r.stream});
    tr.appendChild(el("td", {}, r.stream));
    tr.appendChild(el("td", {}, fmt(r.ema)));
    tr.appendChild(el("td", {}, fmt(r.score)));
    const spark = el("td"); spark.appendChild(sparkline(r.spark || [])); tr.appendChild(spark);
    const flag = el("td"); if (r.alert === 1) flag.appendChild(el("span", {class: "badge alert"}, "alert")); tr.appendChild(flag);
    return tr;
  }));
}

function queueItem(item) {
  const li = el("li", {"data-entry": `${item.kind}/${item.entry}`, "data-label": item.label || ""});
  const a = el("a", {href: item.url});
  if (item.evidence && item.evidence.length) {
    a.appendChild(el("img", {class: "thumb evidence", src: `/evidence/${item.evidence[0]}`, alt: `evidence of ${item.stream}`}));
  }
  a.appendChild(el("span", {class: `kind ${item.kind}`}, item.kind));
  a.append(" ");
  a.appendChild(el("span", {class: "stream"}, item.stream));
  a.append(" ");
  a.appendChild(el("span", {class: "ema"}, `EMA ${fmt(item.ema)}`));
  a.append(" ");
  a.appendChild(el("time", {"data-ms": String(item.at_ms)}, new Date(item.at_ms).toLocaleTimeString()));
  if (item.label) { a.append(" "); a.appendChild(el("span", {class: "badge"}, item.label)); }
  li.appendChild(a);
  return li;
}

function renderQueue(items) {
  const list = document.getElementById("queue");
  if (!list) return;
  const existing = new Map([...list.children].map((li) => [li.dataset.entry, li]));
  const wanted = items.map((item) => {
    const kept = existing.get(`${item.kind}/${item.entry}`);
    // Reused only while its label is unchanged (another reviewer's decision shows without a reload).
    if (kept && kept.dataset.label === (item.label || "")) return kept;
    return queueItem(item);
  });
  // Kept items keep their element (a revealed thumbnail stays revealed); order follows the server.
  list.replaceChildren(...wanted);
  document.getElementById("queue-empty").hidden = items.length > 0;
}

function connect() {
  const live = document.getElementById("live");
  if (!live || !window.EventSource) return;
  const badge = document.getElementById("pushed");
  const source = new EventSource(`/events?scope=${encodeURIComponent(live.dataset.scope || "mine")}`);
  source.addEventListener("state", (event) => {
    const state = JSON.parse(event.data);
    if (state.error) { badge.textContent = "Redis unreachable"; badge.className = "down"; return; }
    renderRanking(state.ranking || []);
    renderQueue(state.queue || []);
    badge.textContent = "live"; badge.className = "up";
    live.dataset.updated = String(state.at_ms);
  });
  source.addEventListener("superseded", () => {
    // Newer pages of this user took the live updates (each user has a few): this one stops.
    source.close(); badge.textContent = "paused: open in newer tabs — reload to resume here"; badge.className = "down";
  });
  source.addEventListener("expired", () => { source.close(); window.location.assign("/login"); });
  source.onerror = () => {
    // Closed for good (the session ended, the server refused): say so instead of "reconnecting" forever.
    if (source.readyState === EventSource.CLOSED) { badge.textContent = "disconnected: reload the page"; badge.className = "down"; return; }
    badge.textContent = "reconnecting…"; badge.className = "down";
  };
}

// Evidence is blurred until clicked (reviewer protection; `--no-blur` turns it off).
document.addEventListener("click", (event) => {
  const img = event.target.closest && event.target.closest("img.evidence");
  if (!img || !document.body.classList.contains("blur-evidence") || img.classList.contains("revealed")) return;
  event.preventDefault();
  img.classList.add("revealed");
}, true);

document.addEventListener("DOMContentLoaded", () => {
  for (const t of document.querySelectorAll("time[data-ms]")) t.textContent = new Date(Number(t.dataset.ms)).toLocaleString();
  for (const t of document.querySelectorAll("#queue time[data-ms]")) t.textContent = new Date(Number(t.dataset.ms)).toLocaleTimeString();
  connect();
});
