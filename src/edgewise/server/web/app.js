// Edgewise dashboard: fleet overview, device charts, alerts. Vanilla JS, no dependencies.
// The API token is entered once and kept in localStorage; every call sends it as Bearer.
"use strict";

const TOKEN_KEY = "edgewise.token";
const POLL_MS = 3000;
const WINDOWS = [["15m", 900], ["1h", 3600], ["6h", 21600], ["24h", 86400], ["7d", 604800]];
const WINDOW_KEY = "edgewise.window";  // the device charts' last chosen window, in seconds
// refresh: the current view's poll function (act() reruns it in place, no rebuild);
// clockOffsetMs: the gateway's clock minus the browser's, from the last /v1/fleet answer
const state = { me: null, timer: null, view: null, refresh: null, window: 900, clockOffsetMs: 0 };
// Where the dashboard is served: "/" or the path prefix of a proxy in front (nginx's
// `location /edgewise/ { proxy_pass http://gateway:8080/; }`), from this script's own
// address (ROOT + "static/app.js"). API paths ("/v1/…", as written here and as the
// gateway's answers give them) are resolved under it, so the dashboard works at either.
const ROOT = new URL("../", document.currentScript.src);
function apiUrl(path) { return path.startsWith("/") ? new URL(path.slice(1), ROOT).href : path; }

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

// Times are shown in the browser's local zone; the zone is named next to them (zoneLabel).
const pad2 = (n) => String(n).padStart(2, "0");
const MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];

function fmtDate(d) {
  return `${d.getFullYear()}-${pad2(d.getMonth() + 1)}-${pad2(d.getDate())}`;
}

function fmtClock(d, seconds) {
  return `${pad2(d.getHours())}:${pad2(d.getMinutes())}` + (seconds ? `:${pad2(d.getSeconds())}` : "");
}

// "UTC+05:30" for a Date's local offset
function utcOffset(d) {
  const m = -(d || new Date()).getTimezoneOffset();
  return `UTC${m < 0 ? "-" : "+"}${pad2(Math.floor(Math.abs(m) / 60))}:${pad2(Math.abs(m) % 60)}`;
}

function zoneName() {
  try { return Intl.DateTimeFormat().resolvedOptions().timeZone || ""; } catch (e) { return ""; }
}

// "Europe/Berlin (UTC+01:00)", or "UTC"
function zoneLabel() {
  const zone = zoneName(), off = utcOffset();
  if (!zone) return off;
  return zone === "UTC" || zone === "Etc/UTC" ? "UTC" : `${zone} (${off})`;
}

// "2024-01-31 13:00:00" in local time, from the API's RFC 3339 UTC text
function fmtTime(iso) {
  if (!iso) return "–";
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? iso : `${fmtDate(d)} ${fmtClock(d, true)}`;
}

// an end time: only the clock when it is on the start's (local) day
function fmtUntil(startIso, endIso) {
  const full = fmtTime(endIso);
  return startIso && full.slice(0, 10) === fmtTime(startIso).slice(0, 10) ? full.slice(11) : full;
}

// the same with its offset, for a title
function fmtTimeZone(iso) {
  if (!iso) return null;
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? iso : `${fmtTime(iso)} ${utcOffset(d)}`;
}

class ApiError extends Error {
  constructor(status, body) {
    super((body && (body.detail || body.title)) || `HTTP ${status}`);
    this.status = status;
    this.body = body;
  }
}

// fetch() itself failed: the gateway is down or the network is.
class NetworkError extends Error {}

async function api(path, options = {}) {
  return (await apiPage(path, options)).body;
}

// The answer's body and `next`: the URL of its Link rel="next" header (the next page of a
// paged list), resolved against the URL asked (the link is relative to it, not to this
// page's address), or null on the last page.
async function apiPage(path, options = {}) {
  const token = localStorage.getItem(TOKEN_KEY);
  const headers = { Accept: "application/json", ...(options.headers || {}) };
  if (token) headers.Authorization = `Bearer ${token}`;
  if (options.json !== undefined) {
    headers["Content-Type"] = "application/json";
    options.body = JSON.stringify(options.json);
  }
  // a token fetch cannot send (a character beyond Latin-1) is refused here, as the gateway
  // would refuse it: fetch threw a TypeError before sending, read as "gateway unreachable"
  const bad = token ? tokenProblem(token) : null;
  if (bad) {
    localStorage.removeItem(TOKEN_KEY);
    showLogin(bad);
    throw new ApiError(401, { detail: bad });
  }
  let resp;
  try {
    resp = await fetch(apiUrl(path), { method: options.method || "GET", headers, body: options.body });
  } catch (e) {
    throw new NetworkError(e.message);
  }
  const text = await resp.text();
  let body = null, isJson = true;
  try { body = text ? JSON.parse(text) : null; } catch (e) {
    isJson = false;
    body = { detail: plainDetail(resp, text) };
  }
  // a page where the gateway's JSON was due: a proxy in front answered (its sign-in page
  // once its session expired). It was read as data: "Cannot read properties of undefined".
  if (resp.ok && !isJson) {
    throw new ApiError(resp.status, { detail: `Not the gateway's answer: a page came instead ` +
      `("${body.detail}"${resp.redirected ? `, from ${new URL(resp.url).host}` : ""}). A proxy ` +
      "in front of the gateway asking to sign in again? Reload the page." });
  }
  if (!resp.ok) {
    if (resp.status === 401) showLogin("The token was refused: " + ((body && body.detail) || ""));
    throw new ApiError(resp.status, body);
  }
  const link = /<([^>]*)>\s*;\s*rel="?next"?/.exec(resp.headers.get("Link") || "");
  return { body, next: link ? new URL(link[1], resp.url).href : null };
}

// What an answer that is no JSON says, in one line of at most 200 characters: a page (a
// proxy's error page in front of the gateway, nginx's "502 Bad Gateway" while it restarts)
// by its title, else its text. Its HTML source was flashed whole, tags and all.
function plainDetail(resp, text) {
  let said = text;
  if (/html/i.test(resp.headers.get("Content-Type") || "") || /^\s*</.test(text)) {
    const doc = new DOMParser().parseFromString(text, "text/html");  // runs nothing
    said = doc.title || (doc.body ? doc.body.textContent : "");
  }
  said = said.replace(/\s+/g, " ").trim();
  if (said.length > 200) said = `${said.slice(0, 199)}…`;
  return said || `HTTP ${resp.status}`;
}

function setMain(...children) {
  const main = document.getElementById("main");
  main.replaceChildren(...children);
}

// One message above the page. source "poll": a failed refresh, cleared by the next good one.
function flash(message, source) {
  const old = document.getElementById("flash");
  if (old) old.remove();
  const el = h("p", { id: "flash", class: "error", role: "alert", "data-source": source || "action" },
    message);
  document.getElementById("main").prepend(el);
}

function clearFlash(source) {
  const old = document.getElementById("flash");
  if (old && (!source || old.dataset.source === source)) old.remove();
}

// What a failed refresh says: a transient failure is retried by the next poll.
function pollError(e) {
  if (e instanceof NetworkError) return "Gateway unreachable, retrying…";
  if (e instanceof ApiError && e.status >= 500) {
    const detail = e.body && (e.body.detail || e.body.title);
    return `Gateway error (HTTP ${e.status}${detail ? ": " + detail : ""}), retrying…`;
  }
  return e.message;
}

// ---------------------------------------------------------------- login
// Ends the view's polling for good: a 401 came while a poll ran, and its tick re-armed the
// timer after stopPolling (the page went on polling with the refused token behind the form).
function showLogin(message) {
  stopPolling();
  state.view = null;
  state.refresh = null;
  state.me = null;  // a change of hash routes nothing until a token is accepted again
  document.getElementById("login").classList.remove("hidden");
  document.getElementById("main").classList.add("hidden");
  document.getElementById("login-error").textContent = message || "";
  document.getElementById("logout").classList.add("hidden");
  document.getElementById("who").textContent = "";
}

function showMain() {
  document.getElementById("login").classList.add("hidden");
  document.getElementById("main").classList.remove("hidden");
  document.getElementById("logout").classList.remove("hidden");
}

// Why ``token`` cannot be a token, or null: a token is printable ASCII with no space
// ("ew_" and URL-safe base64). One other character (a zero-width space pasted with it, which
// trim() keeps) made every fetch throw before sending, and the page said "Gateway
// unreachable, retrying…" forever, also after a reload. The token itself is not shown.
function tokenProblem(token) {
  const chars = [...token];
  const at = chars.findIndex((c) => c < "!" || c > "~");
  if (at < 0) return null;
  const code = `U+${chars[at].codePointAt(0).toString(16).toUpperCase().padStart(4, "0")}`;
  return `That token is not valid: character ${at + 1} of ${chars.length} is ${code}; a ` +
    "token is printable ASCII with no spaces (\"ew_\" then letters, digits, - and _).";
}

// Checks the token with /v1/me. Only a 401 drops it: when the gateway is down or failing
// (a network error, a 5xx) the token is kept and the check is tried again every POLL_MS,
// and the view is shown once it answers.
async function login(token) {
  const bad = tokenProblem(token);
  if (bad) {  // not stored: a reload would try it again
    localStorage.removeItem(TOKEN_KEY);
    showLogin(bad);
    return false;
  }
  localStorage.setItem(TOKEN_KEY, token);
  stopPolling();
  const began = Date.now();  // a check left unanswered is said, as a poll's (STALL_MS)
  const stalled = setInterval(() => {
    const waited = Date.now() - began;
    if (waited < STALL_MS || localStorage.getItem(TOKEN_KEY) !== token) return;
    showMain();
    flash(`The gateway has not answered for ${Math.round(waited / 1000)} s. Waiting…`, "poll");
  }, 1000);
  try {
    state.me = await api("/v1/me");
  } catch (e) {
    if (e.status === 401) {
      localStorage.removeItem(TOKEN_KEY);
      showLogin("That token is not valid.");
      return false;
    }
    if (localStorage.getItem(TOKEN_KEY) !== token) return false;  // changed meanwhile
    showMain();
    if (!document.getElementById("flash")) setMain(h("p", { class: "muted" }, "Connecting…"));
    flash(pollError(e), "poll");
    state.view = null;
    state.timer = setTimeout(async () => {
      state.timer = null;
      if (localStorage.getItem(TOKEN_KEY) === token && await login(token)) route();
    }, POLL_MS);
    return false;
  } finally {
    clearInterval(stalled);
  }
  showMain();
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

// A poll unanswered this long is said (the next poll waits for it): a gateway that hangs (a
// store lock held, a frozen process, a proxy waiting on it) left the page showing its last
// data as if live, with no word. Not aborted: a long window's readings may take this long.
const STALL_MS = 10000;

function poll(fn) {
  stopPolling();
  const token = {};
  state.view = token;
  state.refresh = fn;
  let lastGood = null;  // when this view's data was last fetched whole (and drawn)
  const tick = async () => {
    if (state.view !== token) return;
    const began = Date.now();
    const stalled = setInterval(() => {
      const waited = Date.now() - began;
      if (state.view !== token || waited < STALL_MS) return;
      flash(`The gateway has not answered for ${Math.round(waited / 1000)} s` + (lastGood
        ? `; the data shown is from ${fmtClock(new Date(lastGood), true)}` : "") + ". Waiting…",
      "poll");
    }, 1000);
    try {
      await fn();
      lastGood = Date.now();
      if (state.view === token) clearFlash("poll");
    } catch (e) {
      if (e.status === 401) return;  // the login form is shown: no more polls with that token
      if (state.view === token) flash(pollError(e), "poll");
      if (!(e instanceof ApiError) && !(e instanceof NetworkError)) console.warn(e);
    } finally {
      clearInterval(stalled);
    }
    if (state.view === token && localStorage.getItem(TOKEN_KEY)) {
      state.timer = setTimeout(tick, POLL_MS);
    }
  };
  tick();
}

// One part of the hash, %-decoded; as written when it is no valid %-encoding (a stray "%"
// in "#/device/pump%" threw a URIError and left the page on "Loading…").
function decodePart(part) {
  try { return decodeURIComponent(part); } catch (e) { return part; }
}

// The current view's data fetched again and redrawn in place: its page, scroll position and
// opened panels (forecasts, groups) stay as they are. A view that polls nothing is rebuilt.
function refreshView() {
  if (state.refresh) poll(state.refresh); else route();
}

// The gateway's "now" (RFC 3339, from /v1/fleet) kept as an offset from the browser's clock:
// the charts end at the gateway's time, so a browser clock minutes behind the gateway's no
// longer cuts the newest readings off the chart and off "Download CSV".
function syncClock(gatewayIso) {
  const ms = Date.parse(gatewayIso || "");
  if (Number.isFinite(ms)) state.clockOffsetMs = ms - Date.now();
}

// The gateway's time now, in epoch seconds (the browser's clock plus the last offset seen).
function gatewayNowS() {
  return (Date.now() + state.clockOffsetMs) / 1000;
}

function route() {
  if (!localStorage.getItem(TOKEN_KEY)) { showLogin(); return; }
  const hash = location.hash || "#/fleet";
  const [path, query] = hash.slice(2).split("?");
  const parts = path.split("/").map(decodePart);
  const params = new URLSearchParams(query || "");
  for (const a of document.querySelectorAll("[data-nav]")) {
    a.classList.toggle("active", a.dataset.nav === parts[0]);
  }
  if (parts[0] === "device" && parts[1]) deviceView(parts[1], params);
  else if (parts[0] === "alerts") alertsView();
  else fleetView();
}

// ---------------------------------------------------------------- fleet
// A table in its own horizontal scroller, so a wide one never widens the page.
function scroller(table) {
  return h("div", { class: "table-wrap" }, table);
}

const HEALTH = [["ok", "OK"], ["alerting", "Alerting"], ["stale", "Stale"], ["silent", "Silent"]];

// The Last seen cell's tooltip: when the gateway last heard from the device (by its own
// clock), and the newest reading's time as the device stamped it (they differ when the
// device's clock is off or it uploads a backlog).
function seenTitle(d) {
  if (!d.last_seen) return null;
  const reading = d.last_reading ? `; newest reading stamped ${fmtTimeZone(d.last_reading)}` : "";
  return `heard from ${fmtTimeZone(d.last_seen)}${reading}`;
}

function fleetView() {
  const summary = h("div", { class: "summary", id: "fleet-summary" });
  const body = h("tbody", { id: "fleet-rows" });
  const table = h("table", { id: "fleet-table" },
    h("thead", {}, h("tr", {}, ["Device", "Health", "Last seen", "Readings", "Metrics",
      "Open alerts"].map((t) => h("th", {}, t)))),
    body);
  setMain(h("h1", {}, "Fleet"), summary, scroller(table), groupsPanel());
  poll(async () => {
    const fleet = await api("/v1/fleet");
    syncClock(fleet.now);
    const count = (k) => fleet.counts[k] || 0;
    // every health the API counts gets a card (silent: registered, never sent anything)
    const known = new Set(HEALTH.map(([k]) => k));
    const extra = Object.keys(fleet.counts || {}).filter((k) => !known.has(k)).sort()
      .map((k) => [k, k.charAt(0).toUpperCase() + k.slice(1)]);
    summary.replaceChildren(
      ...[["devices", "Devices", fleet.devices.length],
        ...[...HEALTH, ...extra].map(([k, label]) => [k, label, count(k)]),
        ["open-alerts", "Open alerts", fleet.open_alerts]].map(([kind, label, n]) =>
        h("div", { class: `card ${kind}`, "data-kind": kind, "data-count": n },
          h("div", { class: "num" }, n), h("div", { class: "muted" }, label))));
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
      h("td", { title: seenTitle(d) }, ago(d.last_seen_age_s)),
      h("td", {}, d.readings.toLocaleString()),
      h("td", {}, d.metrics.length),
      h("td", {}, d.open_alerts ? h("span", { class: "badge open" }, d.open_alerts) : "0"))));
  });
}

// ---------------------------------------------------------------- behaviour groups
// On demand (a fit takes seconds; the gateway keeps it for minutes): the fleet's devices
// grouped by behaviour, each group with its members (links to their pages) and what sets it
// apart, the odd ones out highlighted. Not refreshed by the poll.
function groupsPanel() {
  const box = h("div", { id: "groups-result" });
  const button = h("button", { type: "button", id: "groups-btn", class: "primary",
    title: "Group the devices by how they behaved over the last 7 days",
    onclick: (e) => fillGroups(box, e.currentTarget) }, "Find groups");
  return h("section", { class: "card groups", id: "groups-panel" },
    h("h2", {}, "Groups by behaviour"),
    h("div", { class: "toolbar" }, button,
      h("span", { class: "muted" }, "Devices that behave alike, what sets each group apart, " +
        "and the odd ones out.")),
    box);
}

function deviceLink(id) {
  return h("a", { href: `#/device/${encodeURIComponent(id)}`, "data-device": id }, id);
}

function joined(items) {
  return items.flatMap((x, i) => (i ? [", ", x] : [x]));
}

async function fillGroups(box, button) {
  const say = (state, cls, text) => {
    box.dataset.state = state;
    box.replaceChildren(h("p", { class: cls }, text));
  };
  button.disabled = true;
  say("loading", "muted", "Grouping the fleet…");
  try {
    const g = await api("/v1/fleet/groups");
    const odd = new Map(g.odd_ones_out.map((o) => [o.device, o]));
    const rows = g.groups.map((grp) => h("tr", { "data-group": grp.id },
      h("td", {}, `Group ${grp.id}`, h("div", { class: "muted" }, `${grp.size} device(s)`)),
      h("td", { class: "members" }, joined([
        ...grp.members.map(deviceLink),
        ...grp.odd_ones_out.map((d) => h("span", { class: "odd-member", title: odd.get(d).reason },
          deviceLink(d), " ", h("span", { class: "badge odd" }, "odd one out")))])),
      h("td", {}, grp.traits.length
        ? h("ul", { class: "traits" }, ...grp.traits.map((t) => h("li", { "data-feature": t.feature }, t.text)))
        : h("span", { class: "muted" }, g.n_groups === 1
          ? "the whole fleet: nothing separates it" : "–"))));
    const parts = [
      h("p", { class: "muted groups-info" },
        `${g.n_groups} group(s) of ${g.n_devices} devices on ${g.metrics.length} metric(s), ` +
        `from ${fmtTime(g.window.start)} to ${fmtTime(g.window.end)}` +
        (g.window.bucket_s > 1 ? ` (${fmtSpan(g.window.bucket_s)} means)` : "") +
        `; fitted ${fmtTime(g.fitted_at)}${g.cached ? " (kept)" : ""}.`),
      scroller(h("table", { id: "groups-table" },
        h("thead", {}, h("tr", {}, ["Group", "Members", "What sets it apart"].map((t) => h("th", {}, t)))),
        h("tbody", {}, ...rows)))];
    if (g.odd_ones_out.length) {
      parts.push(h("h3", {}, "Odd ones out"), scroller(h("table", { id: "odd-table" },
        h("thead", {}, h("tr", {}, ["Device", "Nearest group", "Odd score", "Furthest from its group in"]
          .map((t) => h("th", {}, t)))),
        h("tbody", {}, ...g.odd_ones_out.map((o) => h("tr", { class: "odd", "data-device": o.device },
          h("td", {}, deviceLink(o.device)), h("td", {}, `Group ${o.nearest_group}`),
          h("td", {}, Number(o.odd_score).toFixed(2)), h("td", {}, o.reason)))))));
    } else {
      parts.push(h("p", { class: "muted", id: "no-odd" }, "No odd ones out."));
    }
    const left = g.left_out.devices.map((d) => `${d.device} (${d.reason})`)
      .concat(g.left_out.metrics.map((m) => `metric ${m.metric} (${m.reason})`));
    if (left.length) parts.push(h("p", { class: "muted groups-left" }, `Left out: ${left.join("; ")}.`));
    box.dataset.state = "ok";
    box.replaceChildren(...parts);
  } catch (e) {
    if (e.status === 401) { box.replaceChildren(); return; }  // the login form is shown
    const why = e instanceof NetworkError ? "gateway unreachable" : e.message;
    say((e.body && e.body.reason) || "error", "error groups-unavailable", `Groups unavailable: ${why}`);
  } finally {
    button.disabled = false;
  }
}

// ---------------------------------------------------------------- device charts
const COLORS = { line: "#1f6feb", grid: "#e6e9ed", axis: "#57606a", open: "rgba(207,34,46,0.28)",
  acked: "rgba(154,103,0,0.20)", mark: "#cf222e", bg: "#ffffff", forecast: "#8250df",
  band: "rgba(130,80,223,0.18)" };
const PAD = { left: 56, right: 10, top: 8, bottom: 22 };

// The most points one GET /v1/devices/{id}/readings answers (edgewise.config.MAX_READINGS):
// the device charts widen their buckets so that metrics x buckets stays under it (680
// metrics of 300 buckets passed it, the answer was cut and the last metrics drawn empty).
const MAX_READING_POINTS = 200000;

const DRIVER_MIN_SHARE = 0.05;  // an alert is shaded on a metric with at least this share
const TICK_MIN_PX = 64;         // the least room for one time label

function niceStep(span, target) {
  const raw = span / Math.max(1, target);
  const mag = Math.pow(10, Math.floor(Math.log10(raw)));
  const norm = raw / mag;
  return (norm < 1.5 ? 1 : norm < 3 ? 2 : norm < 7 ? 5 : 10) * mag;
}

// Time-axis steps, in seconds: 1/2/5/10/15/30 s, 1/2/5/10/15/30 min, 1/2/3/6/12 h, 1/2/7 d.
const TIME_STEPS = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800,
  3600, 7200, 10800, 21600, 43200, 86400, 172800, 604800];

// Ticks in [t0, t1] (seconds) at most maxTicks of them, on round local times: whole minutes
// and hours of the local clock, local midnights for day steps (Mondays for weeks).
function timeTicks(t0, t1, maxTicks) {
  const raw = (t1 - t0) / Math.max(1, maxTicks);
  const step = TIME_STEPS.find((s) => s >= raw) || 604800 * Math.ceil(raw / 604800);
  const ticks = [];
  const at = (d) => d.getTime() / 1000;
  if (step < 60) {  // every zone's offset is whole minutes
    for (let t = Math.ceil(t0 / step) * step; t <= t1; t += step) ticks.push(t);
  } else if (step < 3600) {  // from the local hour (zones at :30 and :45 too)
    const d = new Date(t0 * 1000);
    d.setMinutes(0, 0, 0);
    const base = at(d);
    for (let t = base + Math.ceil((t0 - base) / step) * step; t <= t1; t += step) ticks.push(t);
  } else if (step < 86400) {  // hours of the local day, by the clock (DST days too)
    const day = new Date(t0 * 1000);
    day.setHours(0, 0, 0, 0);
    for (; at(day) <= t1; day.setDate(day.getDate() + 1)) {
      for (let hr = 0; hr < 24; hr += step / 3600) {
        const t = at(new Date(day.getFullYear(), day.getMonth(), day.getDate(), hr));
        if (t >= t0 && t <= t1 && t !== ticks[ticks.length - 1]) ticks.push(t);
      }
    }
  } else {  // local midnights
    const days = Math.round(step / 86400);
    const d = new Date(t0 * 1000);
    d.setHours(0, 0, 0, 0);
    if (at(d) < t0) d.setDate(d.getDate() + 1);
    const dayNo = () => Math.round(Date.UTC(d.getFullYear(), d.getMonth(), d.getDate()) / 86400000);
    // 1970-01-01 was a Thursday: day number + 3 is a multiple of 7 on Mondays
    while ((dayNo() + (days === 7 ? 3 : 0)) % days) d.setDate(d.getDate() + 1);
    for (; at(d) <= t1; d.setDate(d.getDate() + days)) ticks.push(at(d));
  }
  return { step, ticks };
}

// A tick's label: a date at local midnight on hour and day steps, else the local clock.
function tickLabel(t, step) {
  const d = new Date(t * 1000);
  if (step >= 3600 && d.getHours() === 0 && d.getMinutes() === 0) {
    return `${MONTHS[d.getMonth()]} ${d.getDate()}`;
  }
  return fmtClock(d, step < 60);
}

// Only metrics with a real share of the alert's drivers get its span (an alert with no
// drivers, e.g. a sequence gap, is about the whole device). The share is rounded to a whole
// percent, as the alerts table shows it: a metric listed there at 5 % is shaded.
function drivesMetric(alert, metric) {
  const drivers = alert.drivers || {};
  const share = (v) => (Number.isFinite(+v) && +v > 0 ? +v : 0);
  const total = Object.values(drivers).reduce((acc, v) => acc + share(v), 0);
  if (!(total > 0)) return true;
  return Math.round(100 * share(drivers[metric]) / total) >= 100 * DRIVER_MIN_SHARE;
}

// The median time between a series' readings (seconds), 0 for fewer than two.
function medianSpacing(ts) {
  const d = [];
  for (let i = 1; i < ts.length; i++) d.push(ts[i] - ts[i - 1]);
  if (!d.length) return 0;
  d.sort((a, b) => a - b);
  const mid = d.length >> 1;
  return d.length % 2 ? d[mid] : (d[mid - 1] + d[mid]) / 2;
}

// forecast (optional): parallel arrays t, forecast, low, high, drawn as a dashed line in
// its interval band after the readings; a null bound (unbounded) reaches the chart's edge.
function drawChart(canvas, series, t0, t1, spans, stepS, forecast) {
  const dpr = window.devicePixelRatio || 1;
  const w = canvas.clientWidth || 420;
  const hgt = canvas.clientHeight || 200;
  if (canvas.width !== Math.round(w * dpr)) canvas.width = Math.round(w * dpr);
  if (canvas.height !== Math.round(hgt * dpr)) canvas.height = Math.round(hgt * dpr);
  const ctx = canvas.getContext("2d");
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.fillStyle = COLORS.bg;
  ctx.fillRect(0, 0, w, hgt);
  const ph = hgt - PAD.top - PAD.bottom;
  const ts = series ? series.t : [];
  const vs = series ? series.v : [];
  let lo = Infinity, hi = -Infinity;
  const fc = forecast || { t: [], forecast: [], low: [], high: [] };
  for (const v of [...vs, ...fc.forecast, ...fc.low, ...fc.high]) {
    if (v === null) continue;  // an unbounded side of the interval
    if (v < lo) lo = v; if (v > hi) hi = v;
  }
  if (!vs.length && !fc.t.length) { lo = 0; hi = 1; }
  // a flat series gets a band around its level (relative: a metric in nA is drawn at its
  // own scale, not flattened into a band of +-1)
  // Worked out in halves ((b - a) / 2 as b / 2 - a / 2) and kept to the finite doubles: a
  // metric at 1.7e308 (a float's "no value" sentinel) padded its range to Infinity, and
  // readings of +-1e308 spanned more than a double holds: a blank chart (NaN everywhere).
  const level = Math.max(Math.abs(lo), Math.abs(hi));
  const clamp = (v) => Math.min(Number.MAX_VALUE, Math.max(-Number.MAX_VALUE, v));
  const half = (a, b) => b / 2 - a / 2;
  if (!(hi - lo > 1e-9 * level)) {
    const pad = level > 0 ? Math.max(0.1 * level, 1e-300) : 1;  // 1e-300: not below a double
    lo = clamp(lo - pad); hi = clamp(hi + pad);
  }
  const margin = 0.16 * half(lo, hi);
  lo = clamp(lo - margin); hi = clamp(hi + margin);
  const range2 = half(lo, hi);  // half the value range: the whole may pass Number.MAX_VALUE
  ctx.font = "11px system-ui, sans-serif";
  const ystep = niceStep(range2, 2);
  // as many decimals as the step needs (1452.8, 1453.0, not 1453 four times)
  const decimals = Math.max(0, -Math.floor(Math.log10(ystep) + 1e-9));
  const yLabel = (v) => (Math.abs(v) < ystep / 2 ? "0" : decimals <= 6 ? v.toFixed(decimals)
    : Number(v.toPrecision(3)).toString());
  const yTicks = [];
  for (let v = Math.ceil(lo / ystep) * ystep; v <= hi && yTicks.length < 50; v += ystep) yTicks.push(v);
  // the plot starts right of its widest value label (at PAD.left at least, at most half
  // the width): a fixed 56 px cut "123456900000" to "56900000" and "-98765440" to
  // "98765440" at the canvas' edge, a wrong number on the axis
  const padLeft = Math.min(Math.max(PAD.left,
    Math.ceil(Math.max(0, ...yTicks.map((v) => ctx.measureText(yLabel(v)).width))) + 8),
  Math.floor(w / 2));
  const pw = w - padLeft - PAD.right;
  const x = (t) => padLeft + ((t - t0) / (t1 - t0)) * pw;
  const y = (v) => PAD.top + (1 - half(lo, v) / range2) * ph;

  // alert spans first, under the line
  for (const s of spans) {
    const a = Math.max(padLeft, x(s.start)), b = Math.min(padLeft + pw, x(s.end));
    if (b < padLeft || a > padLeft + pw) continue;
    ctx.fillStyle = s.open ? COLORS.open : COLORS.acked;
    ctx.fillRect(a, PAD.top, Math.max(3, b - a), ph);
  }
  // grid and axes
  ctx.strokeStyle = COLORS.grid; ctx.lineWidth = 1;
  ctx.fillStyle = COLORS.axis;
  ctx.textAlign = "right"; ctx.textBaseline = "middle";
  for (const v of yTicks) {
    ctx.beginPath(); ctx.moveTo(padLeft, y(v)); ctx.lineTo(padLeft + pw, y(v)); ctx.stroke();
    ctx.fillText(yLabel(v), padLeft - 4, y(v));
  }
  const { step: xstep, ticks } = timeTicks(t0, t1, Math.max(2, Math.floor(pw / TICK_MIN_PX)));
  const labels = ticks.map((t) => tickLabel(t, xstep));
  ctx.textAlign = "center"; ctx.textBaseline = "top";
  ticks.forEach((t, i) => {
    ctx.beginPath(); ctx.moveTo(x(t), PAD.top); ctx.lineTo(x(t), PAD.top + ph); ctx.stroke();
    const half = ctx.measureText(labels[i]).width / 2;  // kept inside the canvas
    ctx.fillText(labels[i], Math.min(x(t), w - half - 1), PAD.top + ph + 4);
  });
  ctx.strokeStyle = COLORS.axis;
  ctx.strokeRect(padLeft, PAD.top, pw, ph);
  // the series; a gap longer than 3 steps, or 3 times the series' own spacing, breaks the
  // line (a device reporting once a minute was all breaks in the 15 min window's 18 s: an
  // empty chart); a reading with a break on both sides is drawn as a dot
  const gap = Math.max(3 * (stepS || 0), (t1 - t0) / 50, 3 * medianSpacing(ts));
  const broken = (i) => i <= 0 || i >= ts.length || ts[i] - ts[i - 1] > gap;
  ctx.strokeStyle = COLORS.line; ctx.lineWidth = 1.5;
  ctx.beginPath();
  for (let i = 0; i < ts.length; i++) {
    const px = x(ts[i]), py = y(vs[i]);
    if (broken(i)) ctx.moveTo(px, py); else ctx.lineTo(px, py);
  }
  ctx.stroke();
  ctx.fillStyle = COLORS.line;
  let dots = 0;
  for (let i = 0; i < ts.length; i++) {
    if (broken(i) && broken(i + 1)) { ctx.fillRect(x(ts[i]) - 2, y(vs[i]) - 2, 4, 4); dots += 1; }
  }
  if (fc.t.length) {  // the interval band, then the forecast dashed over it
    ctx.fillStyle = COLORS.band;
    ctx.beginPath();
    const top = (i) => y(fc.high[i] === null ? hi : fc.high[i]);
    const bottom = (i) => y(fc.low[i] === null ? lo : fc.low[i]);
    fc.t.forEach((t, i) => (i ? ctx.lineTo(x(t), top(i)) : ctx.moveTo(x(t), top(i))));
    for (let i = fc.t.length - 1; i >= 0; i--) ctx.lineTo(x(fc.t[i]), bottom(i));
    ctx.closePath(); ctx.fill();
    ctx.strokeStyle = COLORS.forecast; ctx.setLineDash([5, 3]);
    ctx.beginPath();
    fc.t.forEach((t, i) => (i ? ctx.lineTo(x(t), y(fc.forecast[i])) : ctx.moveTo(x(t), y(fc.forecast[i]))));
    ctx.stroke(); ctx.setLineDash([]);
  }
  // readings inside an open alert span are marked
  ctx.fillStyle = COLORS.mark;
  for (const s of spans.filter((sp) => sp.open)) {
    for (let i = 0; i < ts.length; i++) {
      if (ts[i] >= s.start - (stepS || 0) && ts[i] <= s.end) {
        ctx.beginPath(); ctx.arc(x(ts[i]), y(vs[i]), 2.5, 0, 2 * Math.PI); ctx.fill();
      }
    }
  }
  canvas.dataset.points = String(ts.length);
  canvas.dataset.dots = String(dots);  // readings drawn alone, a break on either side
  canvas.dataset.forecastPoints = String(fc.t.length);
  canvas.dataset.lo = String(lo);  // the value axis, for tests and tools
  canvas.dataset.hi = String(hi);
  canvas.dataset.padLeft = String(padLeft);  // where the plot area starts (CSS px)
  canvas.dataset.yLabels = yTicks.map(yLabel).join("|");
  canvas.dataset.spans = String(spans.length);
  canvas.dataset.window = String(Math.round(t1 - t0));
  canvas.dataset.tickStep = String(xstep);  // the time axis: epoch seconds and their labels
  canvas.dataset.ticks = ticks.join(",");
  canvas.dataset.tickLabels = labels.join("|");
  canvas.redraw = () => drawChart(canvas, series, t0, t1, spans, stepS, forecast);  // on resize
}

let resizePending = false;
window.addEventListener("resize", () => {
  if (resizePending) return;
  resizePending = true;
  requestAnimationFrame(() => {
    resizePending = false;
    for (const c of document.querySelectorAll("canvas[data-metric], canvas[data-forecast]")) {
      if (c.redraw) c.redraw();
    }
  });
});

// The window from "?window=1h" in the hash, else the last one chosen here, else 15 min.
function initialWindow(params) {
  const fromHash = WINDOWS.find(([label]) => label === params.get("window"));
  if (fromHash) return fromHash[1];
  const saved = +localStorage.getItem(WINDOW_KEY);
  return WINDOWS.some(([, s]) => s === saved) ? saved : 900;
}

function deviceView(id, params) {
  state.window = initialWindow(params || new URLSearchParams());
  const shown = { t0: null, t1: null };  // the window drawn last: what "Download CSV" takes
  const csvBtn = csvButton(id, shown);
  // a new window is kept (hash and localStorage) and drawn at once, not at the next poll
  const windowSel = h("select", { id: "window", onchange: (e) => {
    state.window = +e.target.value;
    shown.t0 = null; shown.t1 = null;  // the old window is no longer what is asked for
    csvBtn.sync();  // disabled until the new window is drawn
    localStorage.setItem(WINDOW_KEY, String(state.window));
    const label = WINDOWS.find(([, s]) => s === state.window)[0];
    history.replaceState(null, "", `#/device/${encodeURIComponent(id)}?window=${label}`);
    poll(update);
  } }, WINDOWS.map(([label, s]) => h("option", { value: s, selected: s === state.window }, label)));
  const info = h("span", { class: "muted", id: "device-info" });
  const charts = h("div", { class: "charts", id: "charts" });
  const alertsBody = h("tbody", { id: "device-alerts" });
  const alertsMore = h("p", { id: "device-alerts-more", class: "muted more-alerts hidden" });
  const pagesKey = `device:${id}`;
  const qualityBody = h("tbody", { id: "device-quality" });
  const rulBox = h("div", { id: "device-rul", class: "muted" });
  const plotsBox = h("div", { id: "quality-plots", class: "quality-plots" });
  setMain(
    h("p", {}, h("a", { href: "#/fleet" }, "← Fleet")),
    h("h1", {}, `Device ${id}`),
    h("div", { class: "toolbar" }, "Window ", windowSel, " ", csvBtn, info),
    rulBox,
    h("div", { class: "legend" },
      h("span", {}, h("i", { class: "swatch line" }), "reading"),
      h("span", {}, h("i", { class: "swatch open" }), "open alert"),
      h("span", {}, h("i", { class: "swatch acked" }), "acknowledged alert"),
      h("span", {}, h("i", { class: "swatch forecast" }), "forecast and its interval"),
      h("span", { class: "muted tz", id: "device-tz" }, `times: ${zoneLabel()}`)),
    charts,
    h("h2", {}, "Data quality"),
    h("div", { class: "quality-row" }, h("div", { class: "quality-table" }, scroller(qualityTable(qualityBody))),
      plotsBox),
    h("h2", {}, "Alerts"),
    scroller(alertsTable(alertsBody)), alertsMore);
  const canvases = new Map();
  let drawn = false;  // whether this page has drawn the device: gone() says it was deleted
  let cap = MAX_READING_POINTS;  // lowered to the points of an answer that came cut
  // The device is gone from the fleet (deleted while its page is open): everything drawn of
  // it is taken away, not left clickable (Acknowledge answered 404, Download CSV fetched
  // nothing), and the page says so. Drawn again should it come back.
  const gone = () => {
    charts.replaceChildren();
    canvases.clear();
    alertsBody.replaceChildren();
    sayMoreAlerts(alertsMore, 0, false, null);
    alertPagesShown.delete(pagesKey);
    qualityBody.replaceChildren();
    plotsBox.replaceChildren();
    const plotPath = `/v1/devices/${encodeURIComponent(id)}/`;
    for (const k of [...plotCache.keys()]) if (k.startsWith(plotPath)) plotCache.delete(k);
    rulBox.replaceChildren();
    for (const a of ["data-rul", "data-rul-reason", "data-rul-open", "data-high-open"]) rulBox.removeAttribute(a);
    rulBox.dataset.deviceGone = "true";  // an answer in flight writes nothing
    shown.t0 = null; shown.t1 = null;
    csvBtn.sync();
    info.dataset.gone = "true";
    info.classList.toggle("error", drawn);
    info.textContent = drawn ? ` · Device ${id} is no longer in the fleet (deleted?)` : " unknown device";
  };
  const update = async () => {
    const win = state.window;
    const fleet = await api("/v1/fleet");
    syncClock(fleet.now);
    const dev = fleet.devices.find((d) => d.id === id);
    if (!dev) { gone(); return; }
    const nowS = gatewayNowS();  // the gateway's clock, not the browser's (it may be off)
    // the window ends at the newest reading (by its own time: a backlog may be days old), or
    // now when that is recent; a reading stamped in the future by a fast clock is still shown
    const lastS = dev.last_reading_ns ? dev.last_reading_ns / 1e9 : nowS;
    const t1 = (nowS - lastS < win / 10 ? Math.max(nowS, lastS) : lastS) + 1;
    const t0 = t1 - win;
    // buckets of at least win/300, wide enough that every metric fits in one answer: a
    // metric gets at most ceil(win / step) + 1 of them (they are aligned to multiples of step)
    const perMetric = Math.floor(cap / Math.max(1, dev.metrics.length)) - 1;
    const stepS = Math.max(1, Math.round(win / 300), perMetric >= 1 ? Math.ceil(win / perMetric) : win);
    const q = `start=${t0.toFixed(3)}&end=${t1.toFixed(3)}&step=${stepS}s`;
    const qStart = Math.max(t0, t1 - 3600);  // the quality checks look at the last hour at most
    let data, alerts, more, quality;
    try {
      [data, { alerts, more }, quality] = await Promise.all([
        api(`/v1/devices/${encodeURIComponent(id)}/readings?${q}`),
        alertPages(`/v1/alerts?device=${encodeURIComponent(id)}&limit=${DEVICE_ALERT_PAGE}`,
          alertPagesShown.get(pagesKey) || 1),
        api(`/v1/devices/${encodeURIComponent(id)}/quality?start=${qStart.toFixed(3)}&end=${t1.toFixed(3)}`),
      ]);
    } catch (e) {  // deleted since /v1/fleet answered
      if (e instanceof ApiError && e.status === 404 && e.body && e.body.reason === "unknown_device") {
        gone();
        return;
      }
      throw e;
    }
    if (state.window !== win) return;  // changed meanwhile: the new window's fetch draws
    drawn = true;
    delete info.dataset.gone;
    delete rulBox.dataset.deviceGone;
    shown.t0 = t0; shown.t1 = t1;
    csvBtn.sync();
    const metrics = (dev.metrics.length ? dev.metrics : Object.keys(data.series)).slice().sort();
    // an answer cut at its cap holds the first metrics (in the store's order) whole, one in
    // part and none of the rest: those are marked, not drawn as if their sensors had stopped
    const keys = Object.keys(data.series);
    const partial = data.truncated && keys.length ? keys[keys.length - 1] : null;
    const cut = (m) => Boolean(data.truncated) && (m === partial || !(m in data.series));
    const nCut = data.truncated ? metrics.filter(cut).length : 0;
    if (data.truncated && data.points > 0) cap = Math.min(cap, data.points);  // wider next time
    info.classList.toggle("error", Boolean(data.truncated));
    info.dataset.truncated = String(Boolean(data.truncated));
    info.textContent = ` · ${dev.health} · last seen ${ago(dev.last_seen_age_s)} · ` +
      `${data.points} points, ${stepS} s buckets` + (data.truncated
        ? ` · truncated: the answer stopped at ${data.points.toLocaleString()} points, ` +
          `${nCut} of ${metrics.length} metrics not drawn whole` : "");
    for (const m of metrics) {
      if (!canvases.has(m)) {
        const c = h("canvas", { "data-metric": m, width: 420, height: 200 });
        const fbox = h("div", { class: "forecast", "data-forecast-for": m });
        const note = h("p", { class: "error chart-cut hidden" });
        charts.append(h("div", { class: "chart", "data-chart": m },
          h("h3", {}, h("span", {}, m), forecastButton(id, m, fbox)), note, c, fbox));
        canvases.set(m, c);
      }
      const spans = alerts
        .filter((a) => drivesMetric(a, m))
        .map((a) => ({ start: a.start_ns / 1e9, end: a.end_ns / 1e9, open: a.status === "open" }));
      const c = canvases.get(m);
      drawChart(c, data.series[m], t0, t1, spans, stepS);
      const isCut = cut(m);
      c.dataset.truncated = String(isCut);
      const note = c.parentElement.querySelector(".chart-cut");
      note.classList.toggle("hidden", !isCut);
      note.textContent = isCut ? `Not drawn whole: the readings answer stopped at ` +
        `${data.points.toLocaleString()} points (this is not a sensor that stopped).` : "";
    }
    fillAlerts(alertsBody, alerts, false);
    sayMoreAlerts(alertsMore, alerts.length, more, () => {
      alertPagesShown.set(pagesKey, (alertPagesShown.get(pagesKey) || 1) + 1);
      poll(update);
    });
    fillQuality(qualityBody, quality);
    fillQualityPlots(plotsBox, id, quality);
    fillRul(rulBox, id);
  };
  poll(update);
}

// The readings of the window on screen as a CSV file (every reading, not the chart's
// buckets), from GET /v1/devices/{id}/readings.csv: fetched with the token (a plain link
// cannot carry it) and saved under "<device>_<start>.csv". A refusal is flashed.
// Disabled while no window is drawn (shown.t0 null: before the first draw, and from a change
// of window until the new one is drawn: it fetched the old window meanwhile) and while a
// download is in flight; button.sync() sets it after `shown` changes.
function csvButton(id, shown) {
  let busy = false;
  const button = h("button", { type: "button", id: "download-csv", class: "csv-btn",
    title: "Every reading of the window shown, as CSV (time, then a column per metric)",
    disabled: true,
    onclick: async () => {
      if (shown.t0 === null || busy) return;
      busy = true;
      button.sync();
      try {
        const q = `start=${shown.t0.toFixed(3)}&end=${shown.t1.toFixed(3)}`;
        const resp = await fetch(apiUrl(`/v1/devices/${encodeURIComponent(id)}/readings.csv?${q}`),
          { headers: { Authorization: `Bearer ${localStorage.getItem(TOKEN_KEY)}` } });
        if (!resp.ok) {
          let detail = `${resp.status} ${resp.statusText}`;
          try { detail = (await resp.json()).detail || detail; } catch (e) { /* not JSON */ }
          throw new Error(`CSV download refused: ${detail}`);
        }
        const url = URL.createObjectURL(await resp.blob());
        const stamp = new Date(shown.t0 * 1000).toISOString().slice(0, 19).replace(/[-:]/g, "");
        const a = h("a", { href: url, download: `${id}_${stamp}Z.csv` });
        document.body.append(a); a.click(); a.remove();
        setTimeout(() => URL.revokeObjectURL(url), 60000);
        clearFlash("csv");
      } catch (e) {
        flash(e.message, "csv");
      } finally {
        busy = false;
        button.sync();
      }
    } }, "Download CSV");
  button.sync = () => { button.disabled = busy || shown.t0 === null; };
  return button;
}

// ---------------------------------------------------------------- forecast
// On demand (a fit takes about a second; the gateway keeps it per metric and horizon): the
// forecast after the last reading, with its interval band, drawn by drawChart under the
// metric's chart together with the readings before it. Too little history is said, as the
// API words it.
function forecastButton(id, metric, box) {
  return h("button", { type: "button", class: "forecast-btn", "data-metric": metric,
    title: "Forecast the next steps of this metric from its stored history",
    onclick: (e) => fillForecast(box, id, metric, e.currentTarget) }, "Forecast");
}

// "30 s", "5 min", "1 h", "1 d", "1.5 h"
function fmtSpan(s) {
  const [unit, n] = s >= 86400 ? ["d", s / 86400] : s >= 3600 ? ["h", s / 3600]
    : s >= 60 ? ["min", s / 60] : ["s", s];
  return `${Number(n.toPrecision(3))} ${unit}`;
}

async function fillForecast(box, id, metric, button) {
  const say = (state, cls, text) => {
    box.dataset.state = state;
    box.replaceChildren(h("p", { class: cls }, text));
  };
  const base = `/v1/devices/${encodeURIComponent(id)}`;
  button.disabled = true;
  say("loading", "muted", "Fitting a forecast…");
  try {
    const f = await api(`${base}/forecast?metric=${encodeURIComponent(metric)}`);
    const fc = f.forecast;
    const endS = Date.parse(f.history.end) / 1000;
    // the readings of the last two horizons (or a season) before it, on the forecast's step
    const t0 = endS - Math.max(2 * f.horizon, f.season) * f.step_s;
    const q = `metric=${encodeURIComponent(metric)}&start=${t0.toFixed(3)}` +
      `&end=${(endS + 0.001).toFixed(3)}&step=${Math.max(1, Math.round(f.step_s * 1000))}ms`;
    const past = await api(`${base}/readings?${q}`);
    const c = h("canvas", { "data-forecast": metric, width: 420, height: 200 });
    box.dataset.state = "ok";
    box.replaceChildren(h("p", { class: "muted forecast-info" },
      `Forecast: ${f.horizon} steps of ${fmtSpan(f.step_s)}, ${f.interval}% interval; ` +
      (f.season > 1 ? `cycle of ${fmtSpan(f.season_s)}` : "no daily or weekly cycle found") +
      `; from ${f.history.readings.toLocaleString()} readings since ${fmtTime(f.history.start)}.`),
    c);
    drawChart(c, past.series[metric], t0, fc.t[fc.t.length - 1], [], f.step_s, fc);
  } catch (e) {
    if (e.status === 401) { box.replaceChildren(); return; }  // the login form is shown
    const why = e instanceof NetworkError ? "gateway unreachable" : e.message;
    say((e.body && e.body.reason) || "error", "error forecast-unavailable",
      `Forecast unavailable: ${why}`);
  } finally {
    button.disabled = false;
  }
}

// ---------------------------------------------------------------- remaining useful life
// Shown when a RUL model file is in the data dir and fits the device's metrics; a model file
// that does not load (reason bad_model), a history retention trimmed (history_trimmed)
// and a failed request are said, not hidden. Not
// awaited by the poll, so it catches its own failures (no uncaught rejection every poll).
// Devices whose GET /rul is in flight: the 3 s poll starts no second one for a device
// (an uncached RUL may take longer than a poll; each would score the device again).
const rulInFlight = new Set();

async function fillRul(box, id) {
  if (rulInFlight.has(id)) return;  // the box keeps what it shows until that one answers
  rulInFlight.add(id);
  try {
    await fillRulNow(box, id);
  } finally {
    rulInFlight.delete(id);
  }
}

async function fillRulNow(box, id) {
  const unavailable = (reason, detail) => {
    for (const a of ["data-rul", "data-rul-open", "data-high-open"]) box.removeAttribute(a);
    box.dataset.rulReason = reason;
    box.replaceChildren(h("p", { class: "error rul-unavailable" },
      `Remaining useful life unavailable: ${detail}`));
  };
  let r;
  try {
    r = await api(`/v1/devices/${encodeURIComponent(id)}/rul`);
  } catch (e) {
    if (e.status === 401) return;  // the login form is shown
    if (box.dataset.deviceGone) return;  // deleted meanwhile: the page says so
    unavailable("error", e instanceof NetworkError ? "gateway unreachable" : e.message);
    return;
  }
  if (box.dataset.deviceGone) return;  // deleted meanwhile: the page says so
  if (r.rul === null) {
    // said: a damaged model file, and a history retention trimmed (the model needs it whole)
    if (r.reason === "bad_model" || r.reason === "history_trimmed") {
      unavailable(r.reason, r.detail);
      return;
    }
    box.replaceChildren();
    for (const a of ["data-rul", "data-rul-reason", "data-rul-open", "data-high-open"]) box.removeAttribute(a);
    return;
  }
  box.dataset.rul = String(r.rul);
  box.removeAttribute("data-rul-reason");
  const ex = r.explanation;
  const passed = (r.skipped || []).map((s) => s.model);
  // the API's unit (readings, from a store); rul_open: the RUL is at least `rul` (the
  // prediction reached the model's cap); high_open or high null: no upper bound (`high` is
  // the cap). "125 steps" and "interval 77–125" said a bound the model does not know.
  const unit = r.rul_unit || "readings";
  const upper = r.high_open || r.high === null ? "no upper bound" : `up to ${r.high.toFixed(0)}`;
  box.dataset.rulOpen = String(Boolean(r.rul_open));
  box.dataset.highOpen = String(Boolean(r.high_open || r.high === null));
  // replaceChildren writes a null as the text "null": only the parts there are
  box.replaceChildren(...[
    h("p", {}, h("strong", {}, `Remaining useful life: ${r.rul_open ? "≥ " : ""}${r.rul.toFixed(0)} ${unit}`),
      ` (${r.interval}% interval from ${r.low.toFixed(0)}, ${upper}; model ${r.model})`),
    passed.length ? h("p", { class: "error rul-skipped", title: r.skipped.map((s) => s.detail).join("\n") },
      `Newer model file${passed.length > 1 ? "s" : ""} ${passed.join(", ")} did not load; using ${r.model}.`) : null,
    ex ? contribBars("rul-explain", ex.top,
      `Why: from a fleet average of ${ex.base.toFixed(0)} ${unit}, each sensor moved it by`) : null,
  ].filter((part) => part !== null));
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

// The stuck count, and beside it "never changed" where the metric's valid readings were all one
// value (the report's `unchanged`: stuck in whole from 20 readings on): a frozen sensor and a
// setpoint that held read alike, and the count alone did not say the series never moved.
function stuckCell(f) {
  const still = f.unchanged === true;
  return h("td", { "data-unchanged": still, title: still ? (f.stuck
    ? "One value throughout: a frozen sensor, or a setpoint that held"
    : "One value throughout (too few readings to call it stuck)") : null },
  f.stuck, still ? h("span", { class: "muted" }, " · never changed") : null);
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
      h("td", {}, f.spikes), stuckCell(f), h("td", {}, f.gaps),
      h("td", {}, counts(c.removed)), h("td", {}, counts(c.flagged)));
  }));
}

// One PNG per metric with flagged readings; fetched with the token (an <img src> cannot send
// it) and shown as a data: URL (the CSP allows img-src 'self' data:), refreshed at most once
// a minute per metric. Its time axis is in the browser's time zone (tz, named on the axis),
// each reading at its own offset, as the charts beside it are: one offset taken now
// (tz_offset_min) drew the readings across a DST change an hour off the charts. Where the
// browser names no zone, or the server does not know it (a 422 on tz), the offset now.
function dataUrl(blob) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(blob);
  });
}

const plotCache = new Map();    // plotKey -> { url (a data: URL), at (ms), end (s) }
const plotPending = new Map();  // plotKey -> the fetch in flight (or queued)
const PLOT_REFRESH_MS = 60000;

// An instant of a plot URL (RFC 3339, to the ns, as the report writes it; or epoch
// seconds) in epoch seconds; NaN when absent or unreadable.
function urlInstantS(text) {
  if (!text) return NaN;
  if (/^-?\d+(\.\d+)?$/.test(text)) return Number(text);
  return Date.parse(text.replace(/(\.\d{3})\d+/, "$1")) / 1000;
}

// What a plot URL shows: its cache key (the path, i.e. device and metric, the zone and the
// length of its time range) and the end of that range. The key was device/metric/zone: after
// a change of window (15m -> 6h) the old window's plot was kept for up to a minute under the
// new window's caption. Not the start and end themselves: on a live device they move at every
// poll, and each poll would fetch every plot again.
function plotKey(plotUrl, zoneQuery) {
  const [path, query = ""] = plotUrl.split("?");
  const params = new URLSearchParams(query);
  const start = urlInstantS(params.get("start")), end = urlInstantS(params.get("end"));
  const span = Number.isFinite(start) && Number.isFinite(end) ? `${Math.round(end - start)}s` : query;
  return { key: `${path}|${zoneQuery}|${span}`, end };
}

// Fetches the plots not cached (or older than PLOT_REFRESH_MS, or whose range ended more than
// that long before the one asked for now), one after another. Each is registered as pending
// before the first fetch starts, so a poll that comes while they run asks for none of them
// again (it did: a slow plot was requested at every poll). A figure shows only the plot of the
// range its caption is for (img data-url); until that one comes it shows none.
function fillQualityPlots(box, id, q) {
  const plots = q.plots || [];
  const want = new Set(plots.map((p) => p.metric));
  for (const fig of [...box.querySelectorAll("figure[data-metric]")]) {
    if (!want.has(fig.dataset.metric)) fig.remove();
  }
  const zone = zoneName();
  const offsetQuery = () => `tz_offset_min=${-new Date().getTimezoneOffset()}`;  // minutes east of UTC
  const zoneQuery = zone ? `tz=${encodeURIComponent(zone)}` : offsetQuery();
  const figure = (metric) => box.querySelector(`figure[data-metric="${CSS.escape(metric)}"]`);
  const show = (fig, hit, key) => {
    const img = fig.querySelector("img");
    if (img.getAttribute("src") !== hit.url) img.src = hit.url;
    img.dataset.key = key;
    img.dataset.url = hit.plotUrl;
  };
  let chain = Promise.resolve();
  for (const p of plots) {
    const { key, end } = plotKey(p.url, zoneQuery);
    let fig = figure(p.metric);
    if (!fig) {
      fig = h("figure", { "data-metric": p.metric },
        h("img", { alt: `${p.metric}: flagged readings` }), h("figcaption", {}));
      box.append(fig);
    }
    fig.dataset.key = key;  // the plot this figure waits for
    fig.querySelector("figcaption").textContent = `${p.metric}: ${counts(p.flagged)}`;
    const hit = plotCache.get(key);
    const img = fig.querySelector("img");
    if (hit) show(fig, hit, key);
    else if (img.dataset.key !== key) {  // another range's plot: not under this caption
      img.removeAttribute("src"); delete img.dataset.key; delete img.dataset.url;
    }
    const fresh = hit && Date.now() - hit.at < PLOT_REFRESH_MS &&
      !(Math.abs(end - hit.end) > PLOT_REFRESH_MS / 1000);
    if (fresh || plotPending.has(key)) continue;
    const url = (q) => p.url + (p.url.includes("?") ? "&" : "?") + q;
    chain = chain.then(async () => {
      try {
        const get = (q) => fetch(apiUrl(url(q)), { headers: { Authorization: `Bearer ${localStorage.getItem(TOKEN_KEY)}` } });
        let resp = await get(zoneQuery);
        if (resp.status === 422 && zone) {  // a zone the server does not know: the offset now
          const body = await resp.json().catch(() => ({}));
          if (body.field === "tz") resp = await get(offsetQuery());
        }
        if (!resp.ok) return;  // nothing flagged any more: the next report drops it
        const got = { url: await dataUrl(await resp.blob()), at: Date.now(), end, plotUrl: p.url };
        plotCache.set(key, got);
        const shown = figure(p.metric);
        if (shown && shown.dataset.key === key) show(shown, got, key);  // not a range left meanwhile
      } catch (e) { /* the next poll tries again */ }
      finally { plotPending.delete(key); }
    });
    plotPending.set(key, chain);
  }
  return chain;
}

// ---------------------------------------------------------------- alerts
function alertsTable(body) {
  return h("table", { class: "alerts" },
    h("thead", {}, h("tr", {}, [`When (${zoneLabel()})`, "Device", "Kind", "Score", "Drivers", "Status", "Label",
      "Actions"].map((t) => h("th", {}, t)))), body);
}

// Alerts with an acknowledgement or verdict in flight: fillAlerts draws their buttons
// disabled (aria-busy) until the answer comes. Disabling only the clicked row was undone by
// the next poll, which rebuilt the rows, and on a slow link a second verdict went out.
const alertsInFlight = new Set();

// The row's buttons stay disabled while the request is in flight: on a slow link a second
// click sent a second verdict (two window label versions for one decision).
async function act(alertId, action, label, button) {
  if (alertsInFlight.has(alertId)) return;
  alertsInFlight.add(alertId);
  const view = state.view;
  const cell = button ? button.closest("td") : null;
  const buttons = cell ? [...cell.querySelectorAll("button")] : [];
  const was = buttons.map((b) => b.disabled);
  buttons.forEach((b) => { b.disabled = true; b.setAttribute("aria-busy", "true"); });
  try {
    if (action === "ack") await api(`/v1/alerts/${encodeURIComponent(alertId)}/ack`, { method: "POST" });
    else await api(`/v1/alerts/${encodeURIComponent(alertId)}/label`, { method: "POST", json: { label } });
    // redrawn in place: a rebuilt view jumped to the top of the page and closed the
    // forecasts opened on the device page (a view left meanwhile polls on its own)
    if (state.view === view) refreshView();
  } catch (e) {
    flash(`Could not ${action} alert ${alertId}: ${e.message}`);
  } finally {
    alertsInFlight.delete(alertId);
    buttons.forEach((b, i) => { b.disabled = was[i]; b.removeAttribute("aria-busy"); });
    // rows a poll drew meanwhile: disabled as in flight, enabled as they would be now
    for (const b of document.querySelectorAll(`tr[data-alert="${CSS.escape(alertId)}"] button[aria-busy]`)) {
      if (b.restDisabled !== undefined) { b.disabled = b.restDisabled; b.removeAttribute("aria-busy"); }
    }
  }
}

// An alert row's Acknowledge / True alarm / False alarm buttons; each keeps the state it
// has with no request in flight (restDisabled).
function alertButtons(a, allowed, why) {
  const busy = alertsInFlight.has(a.id);
  const button = (action, label, rest, onclick) => {
    const b = h("button", { type: "button", "data-action": action, title: why,
      disabled: rest || busy, "aria-busy": busy ? "true" : null, onclick }, label);
    b.restDisabled = rest;
    return b;
  };
  return [
    button("ack", "Acknowledge", !allowed || a.status !== "open",
      (e) => act(a.id, "ack", undefined, e.currentTarget)),
    button("true_alarm", "True alarm", !allowed,
      (e) => act(a.id, "label", "true_alarm", e.currentTarget)),
    button("false_alarm", "False alarm", !allowed,
      (e) => act(a.id, "label", "false_alarm", e.currentTarget))];
}

// Alerts a list page reads at a time, and on the device page; older ones are read a page
// more at each "Show older alerts" (the list said nothing of them: it stopped at 500).
const ALERT_PAGE = 500;
const DEVICE_ALERT_PAGE = 200;
// Pages read per list ("alerts:<status>", "device:<id>"), kept while the tab is open, so the
// redraw after acknowledging an old alert stays where it was.
const alertPagesShown = new Map();

// The alerts of `pages` pages of the list at `path` (its limit= is the page), following each
// page's Link header; `more`: whether older alerts follow. An alert that a late reading moved
// meanwhile may come on two pages: it is shown once.
async function alertPages(path, pages) {
  const byId = new Map();
  let next = path;
  for (let n = 0; next && n < pages; n += 1) {
    const page = await apiPage(next);
    for (const a of page.body) if (!byId.has(a.id)) byId.set(a.id, a);
    next = page.next;
  }
  return { alerts: [...byId.values()], more: Boolean(next) };
}

// Under a list that stops before its oldest alerts: how many it shows and a button that
// reads a page more of them.
function sayMoreAlerts(box, shown, more, onMore) {
  box.classList.toggle("hidden", !more);
  box.replaceChildren(...(more ? [`Showing the newest ${shown} alerts; more are older. `,
    h("button", { type: "button", "data-action": "older", onclick: onMore }, "Show older alerts")] : []));
}

// Signed sensor contributions of anomaly alerts, from GET /v1/alerts/{id}, kept per span
// (start and end: a late reading moves the start earlier and changes the explanation) for
// EXPLAIN_TTL_MS, then asked again: a late reading inside the span makes the gateway
// explain it anew, and "no explanation yet" (too little history) may become one. Kept
// until reload, a stale explanation and a null stayed on screen for good.
const explainCache = new Map();    // "id:start_ns:end_ns" -> { ex, at }: ex null when none
const explainPending = new Map();  // "id:start_ns:end_ns" -> the fetch in flight (or queued)
const EXPLAIN_PER_POLL = 20;
const EXPLAIN_TTL_MS = 30000;
const explainKey = (a) => `${a.id}:${a.start_ns}:${a.end_ns}`;

// The alert's explanation box: the last one fetched (also while it is asked again).
function alertWhy(a) {
  const hit = explainCache.get(explainKey(a));
  const box = h("div", { class: "alert-why", "data-explain-for": a.id });
  if (hit && hit.ex) box.append(contribBars(null, hit.ex.top.slice(0, 5), "T² contributions"));
  return box;
}

// Fetches the explanations not cached or expired, one after another. Each is registered as
// pending before the first fetch starts, so a poll that comes while they run starts none of
// them again. A null answer is shown as none and asked again once expired (not at every
// poll: a one-metric device's alerts are all null); a failed fetch is not kept.
function explainAlerts(body, alerts) {
  const key = explainKey;
  const now = Date.now();
  if (explainCache.size > 5000) {  // a tab left open for days: drop what has expired
    for (const [k, hit] of explainCache) if (now - hit.at >= EXPLAIN_TTL_MS) explainCache.delete(k);
  }
  const fresh = (k) => explainCache.has(k) && now - explainCache.get(k).at < EXPLAIN_TTL_MS;
  const todo = alerts.filter((a) => a.kind === "anomaly" && !fresh(key(a))
    && !explainPending.has(key(a))).slice(0, EXPLAIN_PER_POLL);
  let chain = Promise.resolve();
  for (const a of todo) {
    const k = key(a);
    chain = chain.then(async () => {
      try {
        const ex = (await api(`/v1/alerts/${encodeURIComponent(a.id)}`)).explanation || null;
        explainCache.set(k, { ex, at: Date.now() });
        const box = body.querySelector(`[data-explain-for="${CSS.escape(a.id)}"]`);
        if (box) box.replaceChildren(...(ex ? [contribBars(null, ex.top.slice(0, 5), "T² contributions")] : []));
      } catch (e) { /* not cached: a later poll tries again */ }
      finally { explainPending.delete(k); }
    });
    explainPending.set(k, chain);
  }
  return chain;
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
      h("td", { class: "when", title: `${fmtTimeZone(a.start)} to ${fmtTimeZone(a.end)}` },
        fmtTime(a.start), h("br"),
        h("span", { class: "muted" }, `to ${fmtUntil(a.start, a.end)}`)),
      h("td", {}, h("a", { href: `#/device/${encodeURIComponent(a.device_id)}` }, a.device_id)),
      h("td", {}, a.kind, a.message ? h("div", { class: "muted" }, a.message) : null),
      h("td", {}, a.score == null ? "–" : Number(a.score).toFixed(2)),  // null: a NaN stored before it was refused
      h("td", {}, drivers || "–", a.kind === "anomaly" ? alertWhy(a) : null),
      h("td", {}, h("span", { class: `badge ${a.status}` }, a.status),
        a.acked_by ? h("div", { class: "muted" }, `by ${a.acked_by}`) : null),
      h("td", {}, a.label ? h("span", { class: `badge ${a.label}` }, a.label.replace("_", " ")) : "–",
        a.note ? h("div", { class: "muted" }, a.note) : null),
      h("td", { class: "actions" }, alertButtons(a, allowed, why)));
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
  const more = h("p", { id: "alerts-more", class: "muted more-alerts hidden" });
  setMain(h("h1", {}, "Alerts"), h("div", { class: "toolbar" }, "Status ", status),
    scroller(alertsTable(body)), more);
  const pagesKey = `alerts:${status.value}`;
  const update = async () => {
    const q = status.value ? `status=${status.value}&` : "";
    const got = await alertPages(`/v1/alerts?${q}limit=${ALERT_PAGE}`, alertPagesShown.get(pagesKey) || 1);
    fillAlerts(body, got.alerts, true);
    sayMoreAlerts(more, got.alerts.length, got.more, () => {
      alertPagesShown.set(pagesKey, (alertPagesShown.get(pagesKey) || 1) + 1);
      poll(update);
    });
  };
  poll(update);
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
  // The token is shared by every tab of the dashboard: one changed or removed in another
  // tab is this tab's too. It was not noticed: the page went on naming the old token's
  // user and role (operator buttons for a viewer's token, answered 403; acknowledgements
  // audited under another name than the one shown) until reloaded.
  window.addEventListener("storage", async (e) => {
    if (e.key !== TOKEN_KEY && e.key !== null) return;  // null: the storage was cleared
    const now = localStorage.getItem(TOKEN_KEY);
    if (!now) {
      showLogin("Another tab of this dashboard removed the token (changed there, or refused " +
        "by the gateway).");
      return;
    }
    if (await login(now)) route();
  });
  const tz = document.getElementById("tz");
  if (tz) tz.textContent = `Times are local: ${zoneLabel()}.`;
  const token = localStorage.getItem(TOKEN_KEY);
  if (token && await login(token)) route(); else if (!token) showLogin();
});
