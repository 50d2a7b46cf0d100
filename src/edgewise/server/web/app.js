// Edgewise dashboard: fleet overview, device charts, alerts. Vanilla JS, no dependencies.
// The API token is entered once and kept in localStorage; every call sends it as Bearer.
"use strict";

const TOKEN_KEY = "edgewise.token";
const POLL_MS = 3000;
const WINDOWS = [["15m", 900], ["1h", 3600], ["6h", 21600], ["24h", 86400], ["7d", 604800]];
const state = { me: null, timer: null, view: null, window: 900 };

// ---------------------------------------------------------------- small helpers
function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

function ago(seconds) {
  if (seconds === null || seconds === undefined) return "never";
  if (seconds < 0) return "just now";
  if (seconds < 90) return `${Math.round(seconds)} s ago`;
  if (seconds < 5400) return `${Math.round(seconds / 60)} min ago`;
  if (seconds < 172800) return `${Math.round(seconds / 3600)} h ago`;
  return `${Math.round(seconds / 86400)} d ago`;
}

function fmtTime(iso) {
  return iso ? iso.replace("T", " ").replace(/\.\d+Z$/, "Z") : "–";
}

class ApiError extends Error {
  constructor(status, body) {
    super((body && (body.detail || body.title)) || `HTTP ${status}`);
    this.status = status;
    this.body = body;
  }
}

async function api(path, options = {}) {
  const token = localStorage.getItem(TOKEN_KEY);
  const headers = { Accept: "application/json", ...(options.headers || {}) };
  if (token) headers.Authorization = `Bearer ${token}`;
  if (options.json !== undefined) {
    headers["Content-Type"] = "application/json";
    options.body = JSON.stringify(options.json);
  }
  const resp = await fetch(path, { method: options.method || "GET", headers, body: options.body });
  const text = await resp.text();
  let body = null;
  try { body = text ? JSON.parse(text) : null; } catch (e) { body = { detail: text }; }
  if (!resp.ok) {
    if (resp.status === 401) showLogin("The token was refused: " + ((body && body.detail) || ""));
    throw new ApiError(resp.status, body);
  }
  return body;
}

function setMain(...children) {
  const main = document.getElementById("main");
  main.replaceChildren(...children);
}

function flash(message) {
  const old = document.getElementById("flash");
  if (old) old.remove();
  const el = h("p", { id: "flash", class: "error" }, message);
  document.getElementById("main").prepend(el);
}

// ---------------------------------------------------------------- login
function showLogin(message) {
  stopPolling();
  document.getElementById("login").classList.remove("hidden");
  document.getElementById("main").classList.add("hidden");
  document.getElementById("login-error").textContent = message || "";
  document.getElementById("logout").classList.add("hidden");
  document.getElementById("who").textContent = "";
}

async function login(token) {
  localStorage.setItem(TOKEN_KEY, token);
  try {
    state.me = await api("/v1/me");
  } catch (e) {
    localStorage.removeItem(TOKEN_KEY);
    showLogin(e.status === 401 ? "That token is not valid." : e.message);
    return false;
  }
  document.getElementById("login").classList.add("hidden");
  document.getElementById("main").classList.remove("hidden");
  document.getElementById("logout").classList.remove("hidden");
  document.getElementById("who").textContent = `${state.me.name} (${state.me.role})`;
  return true;
}

function canOperate() {
  return state.me && (state.me.role === "operator" || state.me.role === "admin");
}

// ---------------------------------------------------------------- routing and polling
function stopPolling() {
  if (state.timer) clearTimeout(state.timer);
  state.timer = null;
}

function poll(fn) {
  stopPolling();
  const token = {};
  state.view = token;
  const tick = async () => {
    if (state.view !== token) return;
    try { await fn(); } catch (e) { if (e.status !== 401) flash(e.message); }
    if (state.view === token && localStorage.getItem(TOKEN_KEY)) {
      state.timer = setTimeout(tick, POLL_MS);
    }
  };
  tick();
}

function route() {
  if (!localStorage.getItem(TOKEN_KEY)) { showLogin(); return; }
  const hash = location.hash || "#/fleet";
  const parts = hash.slice(2).split("/").map(decodeURIComponent);
  for (const a of document.querySelectorAll("[data-nav]")) {
    a.classList.toggle("active", a.dataset.nav === parts[0]);
  }
  if (parts[0] === "device" && parts[1]) deviceView(parts[1]);
  else if (parts[0] === "alerts") alertsView();
  else fleetView();
}

// ---------------------------------------------------------------- fleet
function fleetView() {
  const summary = h("div", { class: "summary" });
  const body = h("tbody", { id: "fleet-rows" });
  const table = h("table", { id: "fleet-table" },
    h("thead", {}, h("tr", {}, ["Device", "Health", "Last seen", "Readings", "Metrics",
      "Open alerts"].map((t) => h("th", {}, t)))),
    body);
  setMain(h("h1", {}, "Fleet"), summary, table);
  poll(async () => {
    const fleet = await api("/v1/fleet");
    const count = (k) => fleet.counts[k] || 0;
    summary.replaceChildren(
      ...[["Devices", fleet.devices.length], ["OK", count("ok")], ["Alerting", count("alerting")],
        ["Stale", count("stale")], ["Open alerts", fleet.open_alerts]].map(([label, n]) =>
        h("div", { class: "card" }, h("div", { class: "num" }, n), h("div", { class: "muted" }, label))));
    if (!fleet.devices.length) {
      body.replaceChildren(h("tr", {}, h("td", { colspan: 6, class: "muted" },
        "No devices yet. Register one with: edgewise device add NAME")));
      return;
    }
    body.replaceChildren(...fleet.devices.map((d) => h("tr", {
      class: "clickable", "data-device": d.id,
      onclick: () => { location.hash = `#/device/${encodeURIComponent(d.id)}`; },
    },
      h("td", {}, h("a", { href: `#/device/${encodeURIComponent(d.id)}` }, d.id),
        d.name !== d.id ? h("span", { class: "muted" }, ` ${d.name}`) : null),
      h("td", {}, h("span", { class: `badge ${d.health}`, "data-health": d.health }, d.health)),
      h("td", { title: fmtTime(d.last_seen) }, ago(d.last_seen_age_s)),
      h("td", {}, d.readings.toLocaleString()),
      h("td", {}, d.metrics.length),
      h("td", {}, d.open_alerts ? h("span", { class: "badge open" }, d.open_alerts) : "0"))));
  });
}

// ---------------------------------------------------------------- device charts
const COLORS = { line: "#1f6feb", grid: "#e6e9ed", axis: "#57606a", open: "rgba(207,34,46,0.28)",
  acked: "rgba(154,103,0,0.20)", mark: "#cf222e", bg: "#ffffff" };
const PAD = { left: 56, right: 10, top: 8, bottom: 22 };

function niceStep(span, target) {
  const raw = span / Math.max(1, target);
  const mag = Math.pow(10, Math.floor(Math.log10(raw)));
  const norm = raw / mag;
  return (norm < 1.5 ? 1 : norm < 3 ? 2 : norm < 7 ? 5 : 10) * mag;
}

function drawChart(canvas, series, t0, t1, spans, stepS) {
  const dpr = window.devicePixelRatio || 1;
  const w = canvas.clientWidth || 420;
  const hgt = canvas.clientHeight || 200;
  if (canvas.width !== Math.round(w * dpr)) canvas.width = Math.round(w * dpr);
  if (canvas.height !== Math.round(hgt * dpr)) canvas.height = Math.round(hgt * dpr);
  const ctx = canvas.getContext("2d");
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.fillStyle = COLORS.bg;
  ctx.fillRect(0, 0, w, hgt);
  const pw = w - PAD.left - PAD.right;
  const ph = hgt - PAD.top - PAD.bottom;
  const ts = series ? series.t : [];
  const vs = series ? series.v : [];
  let lo = Infinity, hi = -Infinity;
  for (const v of vs) { if (v < lo) lo = v; if (v > hi) hi = v; }
  if (!vs.length) { lo = 0; hi = 1; }
  // a flat series gets a band around its level (relative: a metric in nA is drawn at its
  // own scale, not flattened into a band of +-1)
  const level = Math.max(Math.abs(lo), Math.abs(hi));
  if (!(hi - lo > 1e-9 * level)) { const pad = level > 0 ? 0.1 * level : 1; lo -= pad; hi += pad; }
  const margin = (hi - lo) * 0.08;
  lo -= margin; hi += margin;
  const x = (t) => PAD.left + ((t - t0) / (t1 - t0)) * pw;
  const y = (v) => PAD.top + (1 - (v - lo) / (hi - lo)) * ph;

  // alert spans first, under the line
  for (const s of spans) {
    const a = Math.max(PAD.left, x(s.start)), b = Math.min(PAD.left + pw, x(s.end));
    if (b < PAD.left || a > PAD.left + pw) continue;
    ctx.fillStyle = s.open ? COLORS.open : COLORS.acked;
    ctx.fillRect(a, PAD.top, Math.max(3, b - a), ph);
  }
  // grid and axes
  ctx.strokeStyle = COLORS.grid; ctx.lineWidth = 1;
  ctx.fillStyle = COLORS.axis; ctx.font = "11px system-ui, sans-serif";
  const ystep = niceStep(hi - lo, 4);
  ctx.textAlign = "right"; ctx.textBaseline = "middle";
  for (let v = Math.ceil(lo / ystep) * ystep; v <= hi; v += ystep) {
    ctx.beginPath(); ctx.moveTo(PAD.left, y(v)); ctx.lineTo(PAD.left + pw, y(v)); ctx.stroke();
    ctx.fillText(Number(v.toPrecision(4)).toString(), PAD.left - 4, y(v));
  }
  const xstep = niceStep(t1 - t0, 5);
  ctx.textAlign = "center"; ctx.textBaseline = "top";
  for (let t = Math.ceil(t0 / xstep) * xstep; t <= t1; t += xstep) {
    ctx.beginPath(); ctx.moveTo(x(t), PAD.top); ctx.lineTo(x(t), PAD.top + ph); ctx.stroke();
    const d = new Date(t * 1000);
    const label = (t1 - t0) > 172800 ? d.toISOString().slice(5, 10)
      : d.toISOString().slice(11, (t1 - t0) < 600 ? 19 : 16);
    ctx.fillText(label, x(t), PAD.top + ph + 4);
  }
  ctx.strokeStyle = COLORS.axis;
  ctx.strokeRect(PAD.left, PAD.top, pw, ph);
  // the series; a gap longer than 3 steps breaks the line
  const gap = Math.max(3 * (stepS || 0), (t1 - t0) / 50);
  ctx.strokeStyle = COLORS.line; ctx.lineWidth = 1.5;
  ctx.beginPath();
  for (let i = 0; i < ts.length; i++) {
    const px = x(ts[i]), py = y(vs[i]);
    if (i === 0 || ts[i] - ts[i - 1] > gap) ctx.moveTo(px, py); else ctx.lineTo(px, py);
  }
  ctx.stroke();
  if (ts.length === 1) { ctx.fillStyle = COLORS.line; ctx.fillRect(x(ts[0]) - 2, y(vs[0]) - 2, 4, 4); }
  // readings inside an open alert span are marked
  ctx.fillStyle = COLORS.mark;
  for (const s of spans) {
    for (let i = 0; i < ts.length; i++) {
      if (ts[i] >= s.start - (stepS || 0) && ts[i] <= s.end) {
        ctx.beginPath(); ctx.arc(x(ts[i]), y(vs[i]), 2.5, 0, 2 * Math.PI); ctx.fill();
      }
    }
  }
  canvas.dataset.points = String(ts.length);
  canvas.dataset.lo = String(lo);  // the value axis, for tests and tools
  canvas.dataset.hi = String(hi);
  canvas.dataset.spans = String(spans.length);
}

function deviceView(id) {
  const windowSel = h("select", { id: "window", onchange: (e) => { state.window = +e.target.value; } },
    WINDOWS.map(([label, s]) => h("option", { value: s, selected: s === state.window }, label)));
  const info = h("span", { class: "muted", id: "device-info" });
  const charts = h("div", { class: "charts", id: "charts" });
  const alertsBody = h("tbody", { id: "device-alerts" });
  const qualityBody = h("tbody", { id: "device-quality" });
  const rulBox = h("div", { id: "device-rul", class: "muted" });
  const plotsBox = h("div", { id: "quality-plots", class: "quality-plots" });
  setMain(
    h("p", {}, h("a", { href: "#/fleet" }, "← Fleet")),
    h("h1", {}, `Device ${id}`),
    h("div", { class: "toolbar" }, "Window ", windowSel, info),
    rulBox,
    h("div", { class: "legend" },
      h("span", {}, h("i", { class: "swatch line" }), "reading"),
      h("span", {}, h("i", { class: "swatch open" }), "open alert"),
      h("span", {}, h("i", { class: "swatch acked" }), "acknowledged alert")),
    charts,
    h("h2", {}, "Data quality"),
    h("div", { class: "quality-row" }, h("div", { class: "quality-table" }, qualityTable(qualityBody)),
      plotsBox),
    h("h2", {}, "Alerts"),
    alertsTable(alertsBody));
  const canvases = new Map();
  poll(async () => {
    const fleet = await api("/v1/fleet");
    const dev = fleet.devices.find((d) => d.id === id);
    if (!dev) { info.textContent = " unknown device"; return; }
    const nowS = Date.now() / 1000;
    const lastS = dev.last_seen_ns ? dev.last_seen_ns / 1e9 : nowS;
    const t1 = (nowS - lastS < state.window / 10 ? nowS : lastS) + 1;
    const t0 = t1 - state.window;
    const stepS = Math.max(1, Math.round(state.window / 300));
    const q = `start=${t0.toFixed(3)}&end=${t1.toFixed(3)}&step=${stepS}s`;
    const qStart = Math.max(t0, t1 - 3600);  // the quality checks look at the last hour at most
    const [data, alerts, quality] = await Promise.all([
      api(`/v1/devices/${encodeURIComponent(id)}/readings?${q}`),
      api(`/v1/alerts?device=${encodeURIComponent(id)}&limit=200`),
      api(`/v1/devices/${encodeURIComponent(id)}/quality?start=${qStart.toFixed(3)}&end=${t1.toFixed(3)}`),
    ]);
    info.textContent = ` · ${dev.health} · last seen ${ago(dev.last_seen_age_s)} · ` +
      `${data.points} points, ${stepS} s buckets`;
    const metrics = (dev.metrics.length ? dev.metrics : Object.keys(data.series)).slice().sort();
    for (const m of metrics) {
      if (!canvases.has(m)) {
        const c = h("canvas", { "data-metric": m, width: 420, height: 200 });
        charts.append(h("div", { class: "chart" }, h("h3", {}, m), c));
        canvases.set(m, c);
      }
      const spans = alerts
        .filter((a) => !a.drivers || !Object.keys(a.drivers).length || m in a.drivers)
        .map((a) => ({ start: a.start_ns / 1e9, end: a.end_ns / 1e9, open: a.status === "open" }));
      drawChart(canvases.get(m), data.series[m], t0, t1, spans, stepS);
    }
    fillAlerts(alertsBody, alerts, false);
    fillQuality(qualityBody, quality);
    fillQualityPlots(plotsBox, id, quality);
    fillRul(rulBox, id);
  });
}

// ---------------------------------------------------------------- remaining useful life
async function fillRul(box, id) {
  // Shown only when a RUL model file is in the data dir and fits the device's metrics.
  const r = await api(`/v1/devices/${encodeURIComponent(id)}/rul`);
  if (r.rul === null) { box.replaceChildren(); box.removeAttribute("data-rul"); return; }
  box.dataset.rul = String(r.rul);
  const ex = r.explanation;
  box.replaceChildren(h("p", {}, h("strong", {}, `Remaining useful life: ${r.rul.toFixed(0)} steps`),
    ` (${r.interval}% interval ${r.low.toFixed(0)}–${r.high.toFixed(0)}; model ${r.model})`),
    ex ? contribBars("rul-explain", ex.top,
      `Why: from a fleet average of ${ex.base.toFixed(0)} steps, each sensor moved it by`) : null);
}

function bar(cls, widthPct) {
  const el = h("i", { class: cls });
  el.style.width = `${widthPct.toFixed(2)}%`;  // CSSOM, not a style attribute (the CSP forbids those)
  return el;
}

// A diverging bar list of signed contributions: right (pos) pushes the value up, left down.
function contribBars(id, top, caption) {
  const items = (top || []).filter((t) => Number.isFinite(t.value));
  const scale = Math.max(1e-12, ...items.map((t) => Math.abs(t.value)));
  const fmt = (v) => (Math.abs(v) >= 100 ? v.toFixed(0) : v.toPrecision(3));
  return h("div", { class: "contrib", id, "data-bars": items.length },
    caption ? h("div", { class: "muted contrib-caption" }, caption) : null,
    ...items.map((t) => h("div", { class: "bar-row", "data-name": t.name, "data-value": t.value },
      h("span", { class: "bar-name" }, t.name),
      h("span", { class: "bar-track" }, bar(t.value >= 0 ? "pos" : "neg", 50 * Math.abs(t.value) / scale)),
      h("span", { class: "bar-val" }, (t.value >= 0 ? "+" : "") + fmt(t.value)))));
}

// ---------------------------------------------------------------- data quality
function qualityTable(body) {
  return h("table", { class: "alerts quality" },
    h("thead", {}, h("tr", {}, ["Metric", "Completeness", "Validity", "Spikes", "Stuck", "Gaps",
      "Cleaner removed", "Cleaner flagged"].map((t) => h("th", {}, t)))), body);
}

function pct(x) {
  return x === null || x === undefined ? "–" : `${(100 * x).toFixed(1)} %`;
}

function counts(obj) {
  const parts = Object.entries(obj || {}).map(([k, n]) => `${k} ${n}`);
  return parts.length ? parts.join(", ") : "–";
}

function fillQuality(body, q) {
  const names = Object.keys(q.metrics || {}).sort();
  if (!names.length) {
    body.replaceChildren(h("tr", {}, h("td", { colspan: 8, class: "muted" }, "No readings.")));
    return;
  }
  const ingest = (q.ingest && q.ingest.metrics) || {};
  body.replaceChildren(...names.map((m) => {
    const f = q.metrics[m];
    const c = ingest[m] || {};
    return h("tr", { "data-metric": m },
      h("td", {}, m), h("td", {}, pct(f.completeness)), h("td", {}, pct(f.validity)),
      h("td", {}, f.spikes), h("td", {}, f.stuck), h("td", {}, f.gaps),
      h("td", {}, counts(c.removed)), h("td", {}, counts(c.flagged)));
  }));
}

// One PNG per metric with flagged readings; fetched with the token (an <img src> cannot send
// it) and shown as a data: URL (the CSP allows img-src 'self' data:), refreshed at most once
// a minute per metric.
function dataUrl(blob) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(blob);
  });
}

const plotCache = new Map();  // "device/metric" -> { url, at }
const PLOT_REFRESH_MS = 60000;

async function fillQualityPlots(box, id, q) {
  const plots = q.plots || [];
  const want = new Set(plots.map((p) => p.metric));
  for (const fig of [...box.querySelectorAll("figure[data-metric]")]) {
    if (!want.has(fig.dataset.metric)) fig.remove();
  }
  for (const p of plots) {
    const key = `${id}/${p.metric}`;
    let fig = box.querySelector(`figure[data-metric="${CSS.escape(p.metric)}"]`);
    if (!fig) {
      fig = h("figure", { "data-metric": p.metric },
        h("img", { alt: `${p.metric}: flagged readings` }), h("figcaption", {}));
      box.append(fig);
    }
    fig.querySelector("figcaption").textContent = `${p.metric}: ${counts(p.flagged)}`;
    const hit = plotCache.get(key);
    if (hit && Date.now() - hit.at < PLOT_REFRESH_MS) {
      if (fig.querySelector("img").src !== hit.url) fig.querySelector("img").src = hit.url;
      continue;
    }
    try {
      const resp = await fetch(p.url, { headers: { Authorization: `Bearer ${localStorage.getItem(TOKEN_KEY)}` } });
      if (!resp.ok) continue;  // nothing flagged any more: the next report drops it
      const url = await dataUrl(await resp.blob());
      plotCache.set(key, { url, at: Date.now() });
      fig.querySelector("img").src = url;
    } catch (e) { /* the next poll tries again */ }
  }
}

// ---------------------------------------------------------------- alerts
function alertsTable(body) {
  return h("table", { class: "alerts" },
    h("thead", {}, h("tr", {}, ["When", "Device", "Kind", "Score", "Drivers", "Status", "Label",
      "Actions"].map((t) => h("th", {}, t)))), body);
}

async function act(alertId, action, label) {
  try {
    if (action === "ack") await api(`/v1/alerts/${encodeURIComponent(alertId)}/ack`, { method: "POST" });
    else await api(`/v1/alerts/${encodeURIComponent(alertId)}/label`, { method: "POST", json: { label } });
    route();
  } catch (e) {
    flash(`Could not ${action} alert ${alertId}: ${e.message}`);
  }
}

// Signed sensor contributions of anomaly alerts, from GET /v1/alerts/{id}, kept per span.
const explainCache = new Map();  // "id:end_ns" -> explanation (or null)
const EXPLAIN_PER_POLL = 20;

function alertWhy(a) {
  const key = `${a.id}:${a.end_ns}`;
  const box = h("div", { class: "alert-why", "data-explain-for": a.id });
  if (explainCache.has(key)) {
    const ex = explainCache.get(key);
    if (ex) box.append(contribBars(null, ex.top.slice(0, 5), "T² contributions"));
  }
  return box;
}

async function explainAlerts(body, alerts) {
  const todo = alerts.filter((a) => a.kind === "anomaly" && !explainCache.has(`${a.id}:${a.end_ns}`))
    .slice(0, EXPLAIN_PER_POLL);
  for (const a of todo) {
    let ex = null;
    try { ex = (await api(`/v1/alerts/${encodeURIComponent(a.id)}`)).explanation; } catch (e) { continue; }
    explainCache.set(`${a.id}:${a.end_ns}`, ex);
    const box = body.querySelector(`[data-explain-for="${CSS.escape(a.id)}"]`);
    if (box && ex) box.replaceChildren(contribBars(null, ex.top.slice(0, 5), "T² contributions"));
  }
}

function fillAlerts(body, alerts, showDevice) {
  if (!alerts.length) {
    body.replaceChildren(h("tr", {}, h("td", { colspan: 8, class: "muted" }, "No alerts.")));
    return;
  }
  const allowed = canOperate();
  const why = allowed ? null : "needs an operator or admin token";
  body.replaceChildren(...alerts.map((a) => {
    const drivers = Object.entries(a.drivers || {}).sort((p, q) => q[1] - p[1]).slice(0, 3)
      .map(([k, v]) => `${k} ${(100 * v).toFixed(0)}%`).join(", ");
    return h("tr", { "data-alert": a.id, "data-status": a.status, "data-label": a.label || "" },
      h("td", {}, fmtTime(a.start), h("br"), h("span", { class: "muted" }, `to ${fmtTime(a.end)}`)),
      h("td", {}, h("a", { href: `#/device/${encodeURIComponent(a.device_id)}` }, a.device_id)),
      h("td", {}, a.kind, a.message ? h("div", { class: "muted" }, a.message) : null),
      h("td", {}, Number(a.score).toFixed(2)),
      h("td", {}, drivers || "–", a.kind === "anomaly" ? alertWhy(a) : null),
      h("td", {}, h("span", { class: `badge ${a.status}` }, a.status),
        a.acked_by ? h("div", { class: "muted" }, `by ${a.acked_by}`) : null),
      h("td", {}, a.label ? h("span", { class: `badge ${a.label}` }, a.label.replace("_", " ")) : "–",
        a.note ? h("div", { class: "muted" }, a.note) : null),
      h("td", { class: "actions" },
        h("button", { type: "button", "data-action": "ack", title: why,
          disabled: !allowed || a.status !== "open", onclick: () => act(a.id, "ack") }, "Acknowledge"),
        h("button", { type: "button", "data-action": "true_alarm", title: why, disabled: !allowed,
          onclick: () => act(a.id, "label", "true_alarm") }, "True alarm"),
        h("button", { type: "button", "data-action": "false_alarm", title: why, disabled: !allowed,
          onclick: () => act(a.id, "label", "false_alarm") }, "False alarm")));
  }));
  explainAlerts(body, alerts);
}

function alertsView() {
  const status = h("select", { id: "status-filter" },
    h("option", { value: "open" }, "open"), h("option", { value: "acknowledged" }, "acknowledged"),
    h("option", { value: "" }, "all"));
  status.value = sessionStorage.getItem("edgewise.alerts.status") ?? "open";
  status.addEventListener("change", () => {
    sessionStorage.setItem("edgewise.alerts.status", status.value);
    route();
  });
  const body = h("tbody", { id: "alert-rows" });
  setMain(h("h1", {}, "Alerts"), h("div", { class: "toolbar" }, "Status ", status),
    alertsTable(body));
  poll(async () => {
    const q = status.value ? `status=${status.value}&` : "";
    fillAlerts(body, await api(`/v1/alerts?${q}limit=500`), true);
  });
}

// ---------------------------------------------------------------- start
document.addEventListener("DOMContentLoaded", async () => {
  document.getElementById("login-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const token = document.getElementById("token").value.trim();
    if (token && await login(token)) route();
  });
  document.getElementById("logout").addEventListener("click", () => {
    localStorage.removeItem(TOKEN_KEY);
    state.me = null;
    showLogin();
  });
  window.addEventListener("hashchange", () => { if (state.me) route(); });
  const token = localStorage.getItem(TOKEN_KEY);
  if (token && await login(token)) route(); else if (!token) showLogin();
});
