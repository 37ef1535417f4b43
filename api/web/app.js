// storekeeper dashboard: plain JavaScript, no build step, no network access
// beyond this server. It reads /api/dashboard, then follows /ws and
// re-reads what an event changed. Once /ws says stream.live (subscribed,
// after any replay) it reads the snapshot again: nothing that happened
// between the first read and the subscription is missed.
"use strict";

const TOKEN_KEY = "storekeeper.token";
const FEED_MAX = 200;
const HISTORY_PAGE = 25;
const STORE_PAGE = 100; // stores per page: the first comes with /api/dashboard, the next as you scroll

const state = {
  token: "",
  stores: [],          // the stores loaded: the first page from /api/dashboard, then extra
  extra: [],           // the stores loaded by scrolling (/api/stores pages), after the first page's
  storesNext: "",      // the cursor of the page after the last loaded; "" when every store is loaded
  storesTotal: 0,
  loadingMore: false,
  dirtyStores: new Set(), // stores an event touched since the last refresh
  running: new Map(),  // job_id -> {job_id, kind, store, state, phase, done, total, attempt, seen}
  ended: new Set(),    // job ids seen ending: a snapshot read before that does not bring them back
  runningReads: 0,     // /api/jobs reads asked for; a job's seen is the count when it was first tracked
  restoring: new Set(),// stores with a restore running (the store is fenced meanwhile)
  lastEventID: "",
  historyBefore: [],   // stack of "before" ids for paging; empty = newest page
  ws: null,
  refreshTimer: 0,
};

const $ = (sel) => document.querySelector(sel);

// h builds an element: h("td", {class: "num"}, "text", child…). Text is
// always set as text, never as HTML.
function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

function bytes(n) {
  if (!n) return "0 B";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return (i ? n.toFixed(1) : n) + " " + units[i];
}

function ago(t) {
  if (!t) return "never";
  const s = (Date.now() - new Date(t).getTime()) / 1000;
  if (s < 0) return "in " + span(-s);
  return span(s) + " ago";
}

function span(s) {
  if (s < 60) return Math.round(s) + " s";
  if (s < 3600) return Math.round(s / 60) + " min";
  if (s < 86400) return (s / 3600).toFixed(1) + " h";
  return (s / 86400).toFixed(1) + " d";
}

function clock(t) { return new Date(t).toLocaleTimeString(); }
function stamp(t) { return new Date(t).toLocaleString(); }

// ---- HTTP -----------------------------------------------------------------

class APIError extends Error {
  constructor(status, body) {
    super((body && body.message) || ("HTTP " + status));
    this.status = status;
    this.code = body && body.error;
  }
}

async function api(method, path, body) {
  const opts = { method, headers: { Authorization: "Bearer " + state.token } };
  if (body !== undefined) {
    opts.headers["Content-Type"] = "application/json";
    opts.body = JSON.stringify(body);
  }
  const res = await fetch(path, opts);
  let data = null;
  try { data = await res.json(); } catch (_) { /* empty body */ }
  if (res.status === 401) { signOut("That token was refused."); throw new APIError(401, data); }
  if (!res.ok) throw new APIError(res.status, data);
  return data;
}

function showError(err) {
  const el = $("#error");
  if (!err) { el.hidden = true; return; }
  el.textContent = err.message + (err.code ? " (" + err.code + ")" : "");
  el.hidden = false;
}

// ---- sign in ----------------------------------------------------------------

function signOut(message) {
  sessionStorage.removeItem(TOKEN_KEY);
  state.token = "";
  state.chartsLoaded = false;
  if (state.ws) { state.ws.onclose = null; state.ws.close(); state.ws = null; }
  $("#app").hidden = true;
  $("#logout").hidden = true;
  $("#login").hidden = false;
  $("#login-error").textContent = message || "";
  setConn("offline");
}

async function signIn(token) {
  state.token = token;
  try {
    await refresh();
  } catch (err) {
    if (err.status !== 401) $("#login-error").textContent = err.message;
    return;
  }
  sessionStorage.setItem(TOKEN_KEY, token);
  $("#login").hidden = true;
  $("#app").hidden = false;
  $("#logout").hidden = false;
  moreIfVisible();
  await Promise.all([loadRunning(), loadHistory()]);
  connect();
  setupPush();
}

// ---- snapshot ---------------------------------------------------------------

async function refresh() {
  const d = await api("GET", "/api/dashboard?limit=" + STORE_PAGE);
  const first = d.stores || [];
  const last = first.length ? first[first.length - 1].name : "";
  // The stores loaded by scrolling stay; those an event touched are read
  // again, one by one (only the loaded ones: a page of the list costs the
  // same whatever the number of stores).
  state.extra = d.next_cursor ? state.extra.filter((s) => s.name > last) : [];
  if (!state.extra.length) state.storesNext = d.next_cursor || "";
  const dirty = state.extra.filter((s) => state.dirtyStores.has(s.name));
  state.dirtyStores.clear();
  await Promise.all(dirty.map(async (s) => {
    try {
      const v = await api("GET", "/api/stores/" + encodeURIComponent(s.name));
      state.extra[state.extra.indexOf(s)] = v;
    } catch (err) { if (err.status !== 404) throw err; }
  }));
  state.stores = first.concat(state.extra);
  state.storesTotal = d.stores_total ?? state.stores.length;
  renderSummary(d);
  renderHealth(d.health || [], !!d.next_cursor);
  renderStores();
  renderSchedules(d.schedules || [], d.schedule_groups || []);
  renderQueues(d.queues || [], d.queues_total);
  showError(null);
  // Charts come from each store's history: read them once for the first
  // stores, then only for the stores whose jobs ended since.
  const names = state.chartsLoaded ? [...state.chartsDirty] : state.stores.slice(0, 50).map((s) => s.name);
  state.chartsLoaded = true;
  state.chartsDirty.clear();
  if (names.length) loadCharts(names);
  moreIfVisible();
}

// loadMore reads the next page of stores (GET /api/stores?limit=&cursor=)
// and shows it under the others; the page asks for it as its end scrolls
// into view, so the first paint costs one page whatever the number of
// stores.
async function loadMore() {
  if (!state.storesNext || state.loadingMore) return;
  state.loadingMore = true;
  try {
    const page = await api("GET", `/api/stores?limit=${STORE_PAGE}&cursor=${encodeURIComponent(state.storesNext)}`);
    state.extra.push(...(page.stores || []));
    state.storesNext = page.next_cursor || "";
    state.storesTotal = page.total ?? state.storesTotal;
    state.stores = state.stores.concat(page.stores || []);
    renderStores();
  } finally {
    state.loadingMore = false;
  }
  moreIfVisible();
}

// moreIfVisible loads the next page while the end of the list is in view
// (an IntersectionObserver only tells of changes).
function moreIfVisible() {
  const more = $("#stores-more");
  more.textContent = state.storesNext ? `${state.stores.length} of ${state.storesTotal} stores shown · scroll for more` : "";
  const shown = more.offsetParent !== null; // not while signing in: #app is hidden
  if (state.storesNext && shown && more.getBoundingClientRect().top < window.innerHeight + 200) loadMore().catch(showError);
}

function scheduleRefresh() {
  clearTimeout(state.refreshTimer);
  state.refreshTimer = setTimeout(() => {
    refresh().catch(showError);
    if (state.historyBefore.length === 0) loadHistory().catch(showError);
  }, 250);
}

function renderSummary(d) {
  const nodes = d.nodes || [];
  const up = nodes.filter((n) => n.up).length;
  $("#summary").textContent = `${state.storesTotal} stores · ${up}/${nodes.length} nodes up · updated ${clock(d.at)}`;
}

// renderHealth lists the conditions of the stores on the first page (all
// of them when they fit on it) and the recent job failures.
function renderHealth(list, paged) {
  const ul = $("#health");
  ul.replaceChildren(...(list.length ? list.map((c) =>
    h("li", { class: "cond cond-" + c.kind }, h("b", {}, c.kind.replaceAll("_", " ")), " ", c.message))
    : [h("li", { class: "ok" }, paged ? `The first ${STORE_PAGE} stores are healthy (GET /api/stores?health=unhealthy lists any that are not).` : "All stores healthy.")]));
}

function storeState(s) {
  if (state.restoring.has(s.name)) return "restoring";
  if (!s.node_up) return "node down";
  return (s.stats && s.stats.state) || "unknown";
}

function healthBadge(s) {
  const kinds = (s.health || []).map((c) => c.kind);
  const worst = ["corrupt", "unavailable", "lost", "node_down", "drill_failed", "no_recent_backup", "rpo_exceeded", "rto_exceeded", "backup_target_failing", "high_fragmentation"].find((k) => kinds.includes(k));
  if (!worst) return h("span", { class: "badge ok" }, "healthy");
  return h("span", { class: "badge bad-" + worst, title: s.health.map((c) => c.message).join("\n") }, worst.replaceAll("_", " "));
}

function renderStores() {
  const tbody = $("#stores tbody");
  tbody.replaceChildren(...state.stores.map((s) => {
    const st = s.stats || {};
    const last = state.lastRuns && state.lastRuns[s.name] || {};
    const stateName = storeState(s);
    return h("tr", { "data-store": s.name },
      h("td", {}, h("b", {}, s.name), s.paused ? h("span", { class: "badge paused" }, "paused") : null,
        h("div", { class: "muted small" }, s.node)),
      h("td", {}, h("span", { class: "state state-" + stateName.replace(" ", "-"), "data-role": "state" }, stateName)),
      h("td", {}, healthBadge(s)),
      h("td", { class: "num" }, bytes(st.disk_bytes)),
      h("td", { class: "num" }, bytes(st.reclaimable_bytes)),
      h("td", { class: "num" }, st.read_amp ?? ""),
      h("td", {}, ago(last.compact || st.last_compaction)),
      h("td", {}, ago(s.last_backup), restorable(s), shipping(s), offsite(s)),
      h("td", {}, ago(last.verify || st.last_verify)),
      h("td", { class: "chart" }, chart(s.name)),
      h("td", { class: "actions" },
        ["compact", "backup", "verify", "drill"].map((k) =>
          h("button", { class: "small", "data-action": k, "data-store": s.name, onclick: () => enqueue(k, s.name) }, label(k))),
        h("button", { class: "small danger", "data-action": "restore", "data-store": s.name, disabled: !(s.backups || []).length,
          onclick: () => openRestore(s) }, "Restore")));
  }));
}

function label(kind) { return { compact: "Compact", backup: "Back up", verify: "Verify", drill: "Drill" }[kind]; }

// restorable tells what the store's last restore drill proved: the newest
// backup known to restore, when the drill ran and how long it took (its
// measured RTO); highlighted when the drill failed or an objective is
// breached (the API's health conditions say which).
function restorable(s) {
  const d = s.drill;
  if (!d) return h("div", { class: "muted small", "data-role": "restorable" }, "never drilled");
  const breach = (s.health || []).filter((c) => ["drill_failed", "rpo_exceeded", "rto_exceeded"].includes(c.kind));
  const parts = [d.restorable ? "restorable as of " + ago(d.restorable) : "not proven restorable",
    (d.ok ? "drill " : "drill failed ") + ago(d.at)];
  if (d.ok && d.rto) parts.push("RTO " + (d.rto / 1e9).toFixed(1) + " s");
  return h("div", { class: "small " + (breach.length ? "breach" : "muted"), "data-role": "restorable",
    title: breach.length ? breach.map((c) => c.message).join("\n") : (d.target ? "drilled from " + d.target : "drilled from the local backups") }, parts.join(" · "));
}

// shipping tells how far behind the store's shipped commit log is (the
// worst target), when its node ships it (point-in-time recovery).
function shipping(s) {
  const lags = (s.targets || []).filter((t) => t.ship_lag != null).map((t) => t.ship_lag / 1e9);
  if (!lags.length) return null;
  const worst = Math.max(...lags);
  const late = worst > 60;
  const text = worst < 1 ? "log shipped (lag < 1 s)" : `log lag ${worst < 100 ? worst.toFixed(1) : Math.round(worst)} s`;
  return h("div", { class: "small " + (late ? "breach" : "muted"), "data-role": "ship-lag",
    title: (s.targets || []).filter((t) => t.ship_lag != null).map((t) => `${t.target}: ${(t.ship_lag / 1e9).toFixed(1)} s behind`).join("\n") }, text);
}

// offsite names the store's backup targets (--backup-target) and whether
// its node encrypts what it uploads to each; the title gives each one's
// newest backup and, while uploads to it fail, why. Highlighted while one
// fails (the health condition backup_target_failing says so too).
function offsite(s) {
  const ts = s.targets || [];
  if (!ts.length) return null;
  const enc = (t) => t.encrypted === true ? " (encrypted)" : t.encrypted === false ? " (unencrypted)" : "";
  const detail = (t) => t.target + ": " + (t.backup_id ? "newest backup " + t.backup_id + " from " + ago(t.backup_at) : "no backup yet") +
    (t.error ? "; failing since " + ago(t.failing_since) + ": " + t.error : "");
  return h("div", { class: "small " + (ts.some((t) => t.error) ? "breach" : "muted"), "data-role": "offsite",
    title: ts.map(detail).join("\n") }, "off-site: " + ts.map((t) => t.target + enc(t)).join(", "));
}

// ---- per-store charts from the history stream ------------------------------

state.charts = {};   // store -> [{at, before, after}] oldest first
state.lastRuns = {}; // store -> {compact, backup, verify} times
state.chartsDirty = new Set();
state.chartsLoaded = false;

async function loadCharts(names) {
  await Promise.all(names.map(async (name) => {
    const page = await api("GET", "/api/history?limit=100&store=" + encodeURIComponent(name));
    const entries = page.history || [];
    const last = {};
    for (const e of entries) if (e.status !== "failed" && !last[e.kind]) last[e.kind] = e.at;
    state.lastRuns[name] = last;
    state.charts[name] = entries.filter((e) => e.kind === "compact" && e.status === "compacted").reverse()
      .map((e) => ({ at: new Date(e.at).getTime(), before: e.bytes_before, after: e.bytes_after }));
  })).catch(showError);
  renderStores();
}

// chart draws the store's size over time (a line through each compaction's
// before and after, ending at today's size) and the bytes each compaction
// reclaimed (bars).
function chart(name) {
  const W = 160, H = 40, NS = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(NS, "svg");
  svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
  svg.setAttribute("width", W);
  svg.setAttribute("height", H);
  const pts = state.charts[name] || [];
  const s = state.stores.find((x) => x.name === name);
  const now = Date.now();
  const series = [];
  for (const p of pts) { series.push([p.at - 1, p.before], [p.at, p.after]); }
  if (s && s.stats) series.push([now, s.stats.disk_bytes]);
  const title = document.createElementNS(NS, "title");
  title.textContent = pts.length ? `${pts.length} compactions reclaimed ${bytes(pts.reduce((a, p) => a + Math.max(0, p.before - p.after), 0))}` : "no compaction yet";
  svg.append(title);
  if (series.length < 2) return svg;
  const t0 = series[0][0], t1 = Math.max(now, t0 + 1);
  const max = Math.max(...series.map((p) => p[1]), 1);
  const x = (t) => ((t - t0) / (t1 - t0)) * (W - 4) + 2;
  const y = (v) => H - 2 - (v / max) * (H - 6);
  for (const p of pts) {
    const r = Math.max(0, p.before - p.after);
    const bar = document.createElementNS(NS, "rect");
    bar.setAttribute("x", x(p.at) - 2);
    bar.setAttribute("width", 4);
    bar.setAttribute("y", y(r));
    bar.setAttribute("height", H - 2 - y(r));
    bar.setAttribute("class", "reclaimed");
    svg.append(bar);
  }
  const line = document.createElementNS(NS, "polyline");
  line.setAttribute("points", series.map((p) => `${x(p[0]).toFixed(1)},${y(p[1]).toFixed(1)}`).join(" "));
  line.setAttribute("class", "size");
  svg.append(line);
  return svg;
}

// ---- actions ----------------------------------------------------------------

async function enqueue(kind, store, body) {
  try {
    const path = "/api/admin/" + kind + (store ? "/" + encodeURIComponent(store) : "");
    const res = await api("POST", path, body || {});
    for (const j of res.jobs || [res]) trackJob(j);
    renderRunning();
  } catch (err) { showError(err); }
}

async function cancelJob(id) {
  try { await api("DELETE", "/api/jobs/" + encodeURIComponent(id)); } catch (err) { showError(err); }
}

function openRestore(s) {
  const dlg = $("#restore-dialog");
  $("#restore-store").textContent = s.name;
  const sel = $("#restore-backup");
  const usable = (s.backups || []).filter((b) => !b.bad);
  sel.replaceChildren(...usable.map((b, i) =>
    h("option", { value: b.id }, `${stamp(b.created_at)} — ${bytes(b.bytes)}${i === 0 ? " (newest)" : ""}`)));
  const explain = () => {
    const b = usable.find((x) => x.id === sel.value);
    $("#restore-window").textContent = b
      ? `Every write to ${s.name} after ${stamp(b.created_at)} (${ago(b.created_at)}) will be rolled back. ` +
        "The current data is moved to quarantine, not deleted."
      : "";
  };
  // A store whose node ships its commit log can be put back as it was at
  // any moment its log reaches.
  const ships = (s.targets || []).some((t) => t.ship_lag != null);
  const at = $("#restore-at");
  const mode = () => (ships && document.querySelector('input[name="restore-mode"]:checked').value) || "backup";
  $("#restore-mode").hidden = !ships;
  const pad = (n) => String(n).padStart(2, "0");
  const d = new Date(Date.now() - 60000);
  at.value = `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  const explainAll = () => {
    const m = mode();
    $("#restore-backup-label").hidden = m !== "backup";
    $("#restore-at-label").hidden = m !== "moment";
    if (m === "backup") return explain();
    const t = new Date(at.value);
    // Where the store's log starts, when its node says: nothing before it
    // can be restored to (the server refuses it too).
    const start = s.log_start ? new Date(s.log_start) : null;
    $("#restore-window").textContent = isNaN(t)
      ? "Pick a moment."
      : start && t < start
      ? `${s.name}'s commit log starts at ${stamp(s.log_start)}: no earlier moment can be restored to. Pick a later one, or restore a backup.`
      : `${s.name} will be as it was at ${stamp(t.toISOString())}: every write committed before then is kept, every later one rolled back. ` +
        "The current data is moved to quarantine, not deleted.";
  };
  sel.onchange = explainAll;
  at.oninput = explainAll;
  for (const r of document.querySelectorAll('input[name="restore-mode"]')) r.onchange = explainAll;
  explainAll();
  dlg.onclose = () => {
    if (dlg.returnValue !== "confirm") return;
    if (mode() === "moment") {
      const t = new Date(at.value);
      if (!isNaN(t)) enqueue("restore", s.name, { at: t.toISOString() });
    } else if (sel.value) enqueue("restore", s.name, { backup_id: sel.value });
  };
  dlg.returnValue = "";
  dlg.showModal();
}

// ---- running jobs -----------------------------------------------------------

// loadRunning reads the jobs in flight. Events may come while it waits for
// the answer: a job seen ending is not brought back, and a job first seen
// after the read was asked for is kept even though the answer lacks it.
async function loadRunning() {
  const mark = ++state.runningReads;
  const res = await api("GET", "/api/jobs");
  const inFlight = new Set();
  for (const j of res.jobs || []) { inFlight.add(j.job_id); trackJob(j); }
  for (const [id, j] of state.running) if (!inFlight.has(id) && j.seen < mark) state.running.delete(id);
  renderRunning();
}

function trackJob(j) {
  if (!j || !j.job_id || state.ended.has(j.job_id) || ["succeeded", "failed", "canceled"].includes(j.state)) return;
  const cur = state.running.get(j.job_id) || { seen: state.runningReads };
  state.running.set(j.job_id, { ...cur, job_id: j.job_id, kind: j.kind, store: j.store, state: j.state || cur.state || "pending" });
}

function jobEnded(id) {
  state.running.delete(id);
  state.ended.add(id);
  if (state.ended.size > 1000) state.ended.delete(state.ended.values().next().value);
}

function renderRunning() {
  const ul = $("#running");
  const jobs = [...state.running.values()];
  if (!jobs.length) { ul.replaceChildren(h("li", { class: "muted" }, "none")); return; }
  ul.replaceChildren(...jobs.map((j) => {
    const pct = j.total ? Math.min(100, Math.round((100 * j.done) / j.total)) : null;
    return h("li", { "data-job": j.job_id },
      h("b", {}, j.kind), " ", j.store, " ", h("span", { class: "badge" }, j.state),
      j.phase ? h("span", { class: "muted" }, " " + j.phase + (pct !== null ? ` ${pct}%` : "")) : null,
      h("progress", { max: 100, value: pct ?? undefined }),
      h("button", { class: "small", onclick: () => cancelJob(j.job_id) }, "Cancel"));
  }));
}

// ---- live events ------------------------------------------------------------

function setConn(text) {
  const el = $("#conn");
  el.textContent = text;
  el.className = "conn conn-" + text;
}

function connect() {
  const proto = location.protocol === "https:" ? "wss:" : "ws:";
  let url = `${proto}//${location.host}/ws?token=${encodeURIComponent(state.token)}`;
  if (state.lastEventID) url += "&since=" + encodeURIComponent(state.lastEventID);
  const ws = new WebSocket(url);
  state.ws = ws;
  ws.onopen = () => setConn("connecting"); // live once the server says stream.live
  ws.onmessage = (m) => onEvent(JSON.parse(m.data));
  ws.onclose = () => {
    if (state.ws !== ws) return;
    setConn("reconnecting");
    setTimeout(() => { if (state.token && state.ws === ws) connect(); }, 2000);
  };
}

function describe(e) {
  switch (e.type) {
    case "job.progress": return e.phase + (e.total ? ` ${Math.round((100 * (e.done || 0)) / e.total)}%` : "");
    case "job.retrying": return `attempt ${e.attempt} of ${e.max_retry + 1} failed: ${e.error}`;
    case "job.failed": return e.error || "";
    case "store.restored": return e.restored_to
      ? `to ${stamp(e.restored_to)} (backup ${e.backup_id} plus the shipped commit log): later writes rolled back`
      : `from backup ${e.backup_id}: writes after ${stamp(e.backup_at)} rolled back`;
    case "store.ship_gap": return e.error || "";
    case "store.corrupt": return `${e.error || ""} ${e.action ? "→ " + e.action : ""}`;
    case "store.lost": return `node ${e.node} stopped serving its copy: node ${e.holder} holds the lease`;
    case "stream.dropped": return `this page missed ${e.count} events; the tables are re-read`;
    case "stream.gap": return "events the server could not replay were missed; the tables are re-read";
    default: return e.trigger ? `${e.trigger}${e.actor ? " by " + e.actor : ""}` : "";
  }
}

function onEvent(e) {
  if (e.type === "stream.live") {
    // Subscribed (after the since= replay): every event from here on
    // comes. Read the snapshot again, for what happened before that
    // unseen. Not an event: not in the list.
    setConn("live");
    scheduleRefresh();
    loadRunning().catch(showError);
    return;
  }
  if (e.id) state.lastEventID = e.id;
  const feed = $("#feed");
  feed.prepend(h("li", { class: "ev ev-" + e.type.replace(".", "-"), "data-type": e.type, "data-job": e.job_id || "", "data-store": e.store || "" },
    h("time", {}, clock(e.at || Date.now())), " ", h("b", {}, e.type), " ",
    e.kind ? e.kind + " " : "", e.store ? h("span", { class: "store" }, e.store) : "", " ",
    h("span", { class: "muted" }, describe(e))));
  while (feed.children.length > FEED_MAX) feed.lastChild.remove();

  const j = e.job_id && state.running.get(e.job_id);
  switch (e.type) {
    case "job.enqueued":
      trackJob({ job_id: e.job_id, kind: e.kind, store: e.store, state: "pending" });
      break;
    case "job.started":
      trackJob({ job_id: e.job_id, kind: e.kind, store: e.store, state: "active" });
      if (e.kind === "restore") { state.restoring.add(e.store); renderStores(); }
      break;
    case "job.progress":
      if (j) Object.assign(j, { state: "active", phase: e.phase, done: e.done || 0, total: e.total || 0 });
      break;
    case "job.retrying":
      if (j) Object.assign(j, { state: "retry", phase: "" });
      if (e.kind === "restore") state.restoring.delete(e.store);
      break;
    case "job.succeeded": case "job.failed": case "job.canceled":
      jobEnded(e.job_id);
      if (e.store) { state.chartsDirty.add(e.store); state.dirtyStores.add(e.store); }
      if (e.kind === "restore") state.restoring.delete(e.store);
      scheduleRefresh();
      break;
    case "store.corrupt": case "store.restored": case "store.lost": case "node.up": case "node.down": case "backup.corrupt": case "store.ship_gap":
    case "stream.dropped": case "stream.gap":
      if (e.store) state.dirtyStores.add(e.store);
      if (e.type.startsWith("node.")) for (const s of state.extra) if (s.node === e.node) state.dirtyStores.add(s.name);
      scheduleRefresh();
      if (e.type.startsWith("stream.")) loadRunning().catch(showError);
      break;
  }
  renderRunning();
}

// ---- history ----------------------------------------------------------------

async function loadHistory() {
  const before = state.historyBefore[state.historyBefore.length - 1];
  let path = "/api/history?limit=" + HISTORY_PAGE;
  if (before) path += "&before=" + encodeURIComponent(before);
  const page = await api("GET", path);
  const entries = page.history || [];
  $("#history tbody").replaceChildren(...(entries.length ? entries.map((e) => {
    const reclaimed = e.kind === "compact" && e.bytes_before > e.bytes_after ? bytes(e.bytes_before - e.bytes_after) : "";
    return h("tr", { "data-job": e.job_id, class: "st-" + e.status },
      h("td", {}, stamp(e.at)), h("td", {}, e.store), h("td", {}, e.kind),
      h("td", { title: e.error || e.reason || "" }, h("span", { class: "badge st-" + e.status }, e.status.replaceAll("_", " ")),
        e.error ? h("div", { class: "error small" }, e.error) : null),
      h("td", { class: "num" }, e.duration_ms + " ms"), h("td", { class: "num" }, reclaimed),
      h("td", {}, e.trigger), h("td", {}, e.actor));
  }) : [h("tr", {}, h("td", { colspan: 8, class: "muted" }, "no finished jobs yet"))]));
  $("#newer").disabled = state.historyBefore.length === 0;
  $("#older").disabled = !page.next;
  state.historyNext = page.next;
}

// ---- schedules and queues ---------------------------------------------------

// list: each node's schedules; groups (many nodes): the schedules nodes
// share, with how many share them and the soonest next run.
function renderSchedules(list, groups) {
  const rows = [];
  const add = (who, kinds) => {
    for (const [kind, k] of Object.entries(kinds || {}).sort()) {
      rows.push(h("tr", {}, h("td", {}, who), h("td", {}, kind), h("td", {}, h("code", {}, k.spec)),
        h("td", {}, k.next ? `${stamp(k.next)} (${ago(k.next)})` : "off")));
    }
  };
  for (const n of list) add(n.node, n.kinds);
  for (const g of groups) add(`${g.nodes} nodes`, g.kinds);
  $("#schedules tbody").replaceChildren(...(rows.length ? rows : [h("tr", {}, h("td", { colspan: 4, class: "muted" }, "no schedules published"))]));
}

function renderQueues(list, total) {
  const rows = list.map((q) => h("tr", {},
    h("td", {}, q.queue, q.paused ? " (paused)" : ""), h("td", { class: "num" }, q.pending), h("td", { class: "num" }, q.active),
    h("td", { class: "num" }, q.retry), h("td", { class: "num" }, q.archived)));
  if (total > list.length) {
    rows.push(h("tr", {}, h("td", { colspan: 5, class: "muted" }, `${total} queues: see `, h("a", { href: "/monitoring/" }, "/monitoring"))));
  }
  $("#queues tbody").replaceChildren(...rows);
}

// ---- Web Push ---------------------------------------------------------------

function b64url(s) {
  const pad = "=".repeat((4 - (s.length % 4)) % 4);
  const raw = atob((s + pad).replaceAll("-", "+").replaceAll("_", "/"));
  return Uint8Array.from(raw, (c) => c.charCodeAt(0));
}

async function setupPush() {
  const btn = $("#push");
  if (!("serviceWorker" in navigator) || !("PushManager" in window) || !window.isSecureContext) return;
  const reg = await navigator.serviceWorker.register("/ui/sw.js", { scope: "/ui/" }).catch(() => null);
  if (!reg) return;
  const sub = await reg.pushManager.getSubscription();
  const show = (on) => { btn.textContent = on ? "Stop notifications" : "Notify me of failures"; btn.dataset.on = on ? "1" : ""; };
  show(!!sub);
  btn.hidden = false;
  btn.onclick = async () => {
    try {
      const cur = await reg.pushManager.getSubscription();
      if (cur) {
        await api("DELETE", "/api/push/subscriptions", { endpoint: cur.endpoint }).catch((err) => { if (err.status !== 404) throw err; });
        await cur.unsubscribe();
        show(false);
        return;
      }
      if ((await Notification.requestPermission()) !== "granted") throw new Error("notifications are blocked for this page");
      const key = await api("GET", "/api/push/key");
      const s = await reg.pushManager.subscribe({ userVisibleOnly: true, applicationServerKey: b64url(key.public_key) });
      await api("POST", "/api/push/subscriptions", s.toJSON());
      show(true);
    } catch (err) { showError(err); }
  };
}

// ---- start ------------------------------------------------------------------

document.addEventListener("DOMContentLoaded", () => {
  $("#login-form").addEventListener("submit", (ev) => { ev.preventDefault(); signIn($("#token").value.trim()); });
  $("#logout").addEventListener("click", () => signOut(""));
  $("#older").addEventListener("click", () => {
    if (!state.historyNext) return;
    state.historyBefore.push(state.historyNext);
    loadHistory().catch(showError);
  });
  $("#newer").addEventListener("click", () => { state.historyBefore = []; loadHistory().catch(showError); });
  for (const b of document.querySelectorAll("[data-all]")) b.addEventListener("click", () => enqueue(b.dataset.all));
  setInterval(() => { if (state.token && !$("#app").hidden) refresh().catch(showError); }, 30000);
  window.addEventListener("scroll", () => { if (state.token && !$("#app").hidden) moreIfVisible(); }, { passive: true });

  // A token in the URL fragment (storekeeper serve prints such a link) is
  // taken once and removed from the address bar; fragments never reach the
  // server or its logs.
  const m = location.hash.match(/token=([^&]+)/);
  if (m) {
    sessionStorage.setItem(TOKEN_KEY, decodeURIComponent(m[1]));
    history.replaceState(null, "", location.pathname + location.search);
  }
  const saved = sessionStorage.getItem(TOKEN_KEY);
  if (saved) signIn(saved); else signOut("");
});
