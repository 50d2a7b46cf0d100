// Edgewise label queue: proposed windows as charts with context; one click labels one.
// Vanilla JS, no dependencies; the API token comes from the dashboard's localStorage.
"use strict";

const TOKEN_KEY = "edgewise.token";
const SVG_NS = "http://www.w3.org/2000/svg";
const COLORS = ["#1f6feb", "#2da44e", "#bf8700", "#8250df", "#cf222e", "#0a7ea4"];
// The dashboard's root ("/" or a proxy's path prefix): this script is ROOT + "static/labels.js".
const ROOT = new URL("../", document.currentScript.src);
function apiUrl(path) { return path.startsWith("/") ? new URL(path.slice(1), ROOT).href : path; }

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (k === "class") node.className = v;
    else node.setAttribute(k, String(v));
  }
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return node;
}

function svg(tag, attrs) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  return node;
}

// options.json: a value sent as JSON; options.rawJson: JSON text sent as it is.
async function api(path, options = {}) {
  const headers = { Accept: "application/json" };
  const token = localStorage.getItem(TOKEN_KEY);
  if (token) headers.Authorization = `Bearer ${token}`;
  const sent = options.rawJson !== undefined ? options.rawJson
    : options.json !== undefined ? JSON.stringify(options.json) : undefined;
  if (sent !== undefined) headers["Content-Type"] = "application/json";
  const resp = await fetch(apiUrl(path), { method: options.method || "GET", headers, body: sent,
                                   signal: options.signal });
  const text = await resp.text();
  let body = null;
  try { body = text ? JSON.parse(text) : null; } catch (e) {
    // a page, not the gateway's JSON: a proxy in front answered (its error page, or its
    // sign-in page once its session expired, which was read as data: "Cannot read
    // properties of null (reading 'items')"). Said by its title.
    const doc = new DOMParser().parseFromString(text, "text/html");  // runs nothing
    const said = (doc.title || (doc.body ? doc.body.textContent : "")).replace(/\s+/g, " ").trim();
    const title = said.length > 200 ? `${said.slice(0, 199)}…` : said || `HTTP ${resp.status}`;
    if (!resp.ok) throw new Error(title);
    throw new Error(`Not the gateway's answer: a page came instead ("${title}"` +
      `${resp.redirected ? `, from ${new URL(resp.url).host}` : ""}). A proxy in front of the ` +
      "gateway asking to sign in again? Reload the page.");
  }
  if (!resp.ok) throw new Error((body && (body.detail || body.title)) || `HTTP ${resp.status}`);
  return body;
}

// One small chart per metric: the context line, the proposed window shaded.
function chart(item) {
  const W = 640, H = 70, P = 4;
  const ts = item.context.ts_ns;
  const t0 = ts[0], t1 = ts[ts.length - 1] || t0 + 1;
  const x = (t) => P + ((t - t0) / Math.max(1, t1 - t0)) * (W - 2 * P);
  const box = el("div", { class: "queue-charts" });
  Object.entries(item.context.values).forEach(([metric, values], j) => {
    const finite = values.filter((v) => v !== null);
    const lo = finite.length ? Math.min(...finite) : 0, hi = finite.length ? Math.max(...finite) : 1;
    // worked out in halves (v / 2 - lo / 2): readings of +-1e308 (a float's "no value"
    // sentinel) span more than a double holds, hi - lo was Infinity and every point NaN,
    // which the browser refuses: no line at all, the metric seemingly without readings
    const y = (v) => H - P - ((v / 2 - lo / 2) / (hi / 2 - lo / 2 || 1)) * (H - 2 * P);
    const s = svg("svg", { viewBox: `0 0 ${W} ${H}`, width: W, height: H,
                           "data-metric": metric, "data-points": finite.length });
    s.append(svg("rect", { x: x(item.start_ns), y: 0, height: H, "data-window": "1",
                           width: Math.max(2, x(item.end_ns) - x(item.start_ns)),
                           fill: item.alarm ? "#ffd8d3" : "#fff1c2" }));
    // the line breaks at each null (the server sends one where the sensor sent nothing): one
    // polyline per run of readings, a dot for a lone one. Joining the rest drew a straight
    // line across a dropout, as if the sensor had read values it never sent.
    const runs = [[]];
    values.forEach((v, i) => {
      if (v === null) { if (runs[runs.length - 1].length) runs.push([]); return; }
      runs[runs.length - 1].push([x(ts[i]).toFixed(1), y(v).toFixed(1)]);
    });
    const color = COLORS[j % COLORS.length];
    const drawn = runs.filter((run) => run.length);
    s.dataset.runs = String(drawn.length);
    for (const run of drawn) {
      if (run.length === 1) {
        s.append(svg("circle", { cx: run[0][0], cy: run[0][1], r: 1.5, fill: color }));
      } else {
        s.append(svg("polyline", { points: run.map((pt) => pt.join(",")).join(" "), fill: "none",
                                   stroke: color, "stroke-width": 1.5 }));
      }
    }
    // a metric with no line at all keeps one empty polyline (the chart's place for its line)
    if (!s.querySelector("polyline")) {
      s.append(svg("polyline", { points: "", fill: "none", stroke: color, "stroke-width": 1.5 }));
    }
    const label = svg("text", { x: P + 2, y: 12, "font-size": 11, fill: "#57606a" });
    // a metric with no reading here (a sensor that stopped) is said, not drawn as a line
    label.textContent = finite.length ? `${metric} (${lo.toPrecision(4)} … ${hi.toPrecision(4)})`
      : `${metric} (no readings here)`;
    s.append(label);
    box.append(s);
  });
  return box;
}

// Local time, as on the dashboard: "2024-01-31 13:00:00 UTC+01:00".
function localTime(iso) {
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return iso;
  const p2 = (n) => String(n).padStart(2, "0");
  const m = -d.getTimezoneOffset();
  return `${d.getFullYear()}-${p2(d.getMonth() + 1)}-${p2(d.getDate())} ` +
    `${p2(d.getHours())}:${p2(d.getMinutes())}:${p2(d.getSeconds())} ` +
    `UTC${m < 0 ? "-" : "+"}${p2(Math.floor(Math.abs(m) / 60))}:${p2(Math.abs(m) % 60)}`;
}

// A window edge's UTC nanoseconds as JSON integer text, exact: the queue's "start_ns_text"
// (a JSON number above 2**53, as JSON.parse reads start_ns, is off by up to 128 ns or so,
// and the label then covered a reading of the next window), else the number itself.
function exactNs(item, edge) {
  const text = item[`${edge}_ns_text`];
  if (typeof text === "string" && /^[0-9]{1,19}$/.test(text)) return text;
  return String(item[`${edge}_ns`]);
}

function card(device, item) {
  const status = el("span", { class: "muted", "data-status": "" }, "");
  const fault = el("input", { placeholder: "fault class, e.g. cavitation", "data-fault": "" });
  const buttons = [];
  async function send(label) {
    buttons.forEach((b) => { b.disabled = true; });
    try {
      // the times spliced in as exact integers: JSON.stringify would write the rounded ones
      await api("/v1/labels", { method: "POST", rawJson:
        `{"device_id": ${JSON.stringify(device)}, "start_ns": ${exactNs(item, "start")}, ` +
        `"end_ns": ${exactNs(item, "end")}, "label": ${JSON.stringify(label)}}` });
      node.setAttribute("data-labelled", label);
      status.textContent = `labelled ${label}`;
    } catch (e) {
      status.textContent = e.message;
      buttons.forEach((b) => { b.disabled = false; });
    }
  }
  const mk = (text, label) => {
    const b = el("button", { type: "button", "data-label": label,
                             onclick: () => send(label === "fault" ? fault.value.trim() : label) },
                 text);
    buttons.push(b);
    return b;
  };
  // the device named on each card: the label it sends is for that device
  const node = el("section", { class: "card queue-item", "data-device": device,
                               "data-window": exactNs(item, "start") },
    el("h3", {}, el("span", { class: "queue-device" }, device), " · ",
       `${localTime(item.start)} → ${localTime(item.end)}`,
       ` · score ${item.score.toFixed(3)}${item.alarm ? " · alarm" : ""}`),
    chart(item),
    el("div", { class: "queue-actions" }, mk("Normal", "normal"), mk("Anomaly", "anomaly"),
       fault, mk("Fault class", "fault"), status));
  return node;
}

// Only the latest load writes the status and the cards: a second one started while the
// first was still answering (a double click, or another device asked meanwhile) appended
// both answers' cards, and pump-1's windows showed under "5 windows for pump-2".
let loadSeq = 0;
let loadAbort = null;

async function load(device, k) {
  const out = document.getElementById("queue");
  const status = document.getElementById("queue-status");
  const button = document.querySelector("#queue-form button[type=submit]");
  const seq = ++loadSeq;
  if (loadAbort) loadAbort.abort();  // the answer to an older question is not wanted
  const abort = new AbortController();
  loadAbort = abort;
  out.replaceChildren();
  status.textContent = `Loading the queue of ${device}…`;
  // disabled until this answer comes, or the device or k is changed (another question)
  if (button) button.disabled = true;
  try {
    const q = await api(`/v1/label-queue?device=${encodeURIComponent(device)}&k=${k}`,
                        { signal: abort.signal });
    if (seq !== loadSeq) return;
    status.textContent = `${q.items.length} windows for ${q.device_id} (labels ${q.snapshot_id})`;
    out.replaceChildren(...q.items.map((item) => card(q.device_id, item)));
  } catch (e) {
    if (seq !== loadSeq) return;
    status.textContent = e.message;
  } finally {
    if (seq === loadSeq) {
      loadAbort = null;
      if (button) button.disabled = false;
    }
  }
}

document.addEventListener("DOMContentLoaded", () => {
  const params = new URLSearchParams(location.search);
  const form = document.getElementById("queue-form");
  if (params.get("device")) document.getElementById("device").value = params.get("device");
  for (const id of ["device", "k"]) {  // another question may be asked while one loads
    document.getElementById(id).addEventListener("input", () => {
      form.querySelector("button[type=submit]").disabled = false;
    });
  }
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    load(document.getElementById("device").value.trim(), document.getElementById("k").value);
  });
  if (params.get("device")) load(params.get("device"), params.get("k") || 10);
});
