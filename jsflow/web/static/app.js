// jsflow monitor: plain JavaScript, no build step, no external assets.
// Every URL is relative to <base href>, so the page works wherever the gateway is mounted.
"use strict";

const KIND_STATUS = {
  requested: "PENDING", scheduled: "PENDING", started: "RUNNING", progress: "RUNNING",
  retrying: "RETRYING", completed: "SUCCEEDED", failed: "FAILED", cancelled: "CANCELLED",
  dead: "DEAD",
};
const TERMINAL = new Set(["SUCCEEDED", "FAILED", "CANCELLED", "DEAD"]);
const PAGE = 50;

const $ = (sel) => document.querySelector(sel);
const state = {
  rows: new Map(),        // task id -> row data shown in the table
  cursor: null,           // next page of the current listing
  selected: null,         // id of the task in the detail pane
  detailSource: null,     // EventSource of the selected task's events
  firehose: null,
  apps: [],
  flowSamples: new Map(), // stream -> [time, last_seq] for msgs/s
  deadStream: null,
  total: 0,               // tasks matching the filters (listing, then live inserts)
  loading: true,          // live events wait while the table loads
  loads: 0,
  early: [],
};

function el(tag, text, cls) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (cls) node.className = cls;
  return node;
}

function fmtTime(t) {
  if (!t) return "";
  const d = new Date(t * 1000);
  return d.toLocaleTimeString() + (Date.now() - d.getTime() > 86400000 ? " " + d.toLocaleDateString() : "");
}

function fmtDuration(row) {
  if (!row.started_at) return "";
  const end = row.finished_at || Date.now() / 1000;
  const s = Math.max(0, end - row.started_at);
  return s < 1 ? `${Math.round(s * 1000)} ms` : `${s.toFixed(1)} s`;
}

async function api(path, options) {
  const resp = await fetch(path, options);
  let body = null;
  const text = await resp.text();
  if (text) {
    try { body = JSON.parse(text); } catch (e) { body = { error: { type: "Invalid", message: text } }; }
  }
  if (!resp.ok) {
    const err = body && body.error ? body.error : { type: String(resp.status), message: resp.statusText };
    throw new Error(`${err.type}: ${err.message}`);
  }
  return body;
}

function setLive(on) {
  const live = $("#live");
  live.className = "live " + (on ? "on" : "off");
  live.textContent = on ? "live" : "reconnecting";
}

// -- tabs -------------------------------------------------------------------------------

function showTab(name) {
  for (const b of document.querySelectorAll("#tabs button")) b.classList.toggle("active", b.dataset.tab === name);
  for (const s of document.querySelectorAll(".tab")) s.classList.toggle("active", s.id === `tab-${name}`);
  if (name === "queues") refreshQueues();
  if (name === "dead") refreshDead();
  if (name === "flows") refreshFlows();
}

// -- tasks table --------------------------------------------------------------------------

function filters() {
  return { app: $("#f-app").value, name: $("#f-name").value.trim(), status: $("#f-status").value };
}

function matches(row) {
  const f = filters();
  return (!f.app || row.app === f.app) && (!f.name || row.name === f.name) && (!f.status || row.status === f.status);
}

function renderRow(row) {
  let tr = document.querySelector(`#tasks tbody tr[data-task-id="${CSS.escape(row.id)}"]`);
  if (!tr) {
    tr = el("tr");
    tr.dataset.taskId = row.id;
    tr.addEventListener("click", () => selectTask(row.id));
    for (const cls of ["mono id", "name", "app", "status", "attempt", "created", "duration", "mono worker"]) {
      tr.appendChild(el("td", "", cls));
    }
  }
  const cells = tr.children;
  cells[0].textContent = row.id;
  cells[1].textContent = row.name;
  cells[2].textContent = row.app;
  cells[3].textContent = "";
  const badge = el("span", row.status, `badge ${row.status}`);
  cells[3].appendChild(badge);
  cells[3].dataset.status = row.status;
  cells[4].textContent = row.attempt || "";
  cells[5].textContent = fmtTime(row.created_at);
  cells[6].textContent = fmtDuration(row);
  cells[7].textContent = row.worker || "";
  tr.classList.toggle("selected", state.selected === row.id);
  return tr;
}

async function loadTasks(reset) {
  const f = filters();
  const params = new URLSearchParams({ limit: String(PAGE) });
  if (f.app) params.set("app", f.app);
  if (f.name) params.set("name", f.name);
  if (f.status) params.set("status", f.status);
  if (!reset && state.cursor) params.set("cursor", state.cursor);
  const body = await api(`tasks?${params}`);
  const tbody = $("#tasks tbody");
  if (reset) { tbody.textContent = ""; state.rows.clear(); }
  for (const t of body.tasks) {
    state.rows.set(t.id, t);
    tbody.appendChild(renderRow(t));
  }
  state.cursor = body.next_cursor;
  $("#more").classList.toggle("hidden", !state.cursor);
  state.total = body.total;
  $("#task-count").textContent = `${state.total} task(s)`;
}

function onLiveEvent(ev) {
  if (state.loading) { if (state.early.length < 5000) state.early.push(ev); return; }
  const status = KIND_STATUS[ev.kind];
  if (!status) return;
  let row = state.rows.get(ev.task_id);
  if (!row) {
    row = { id: ev.task_id, name: ev.name, app: ev.app, status, attempt: ev.attempt,
      created_at: ev.time, started_at: null, finished_at: null, worker: null };
    if (!matches(row)) return;
    state.rows.set(row.id, row);
    const tbody = $("#tasks tbody");
    tbody.insertBefore(renderRow(row), tbody.firstChild);
    state.total += 1;
    $("#task-count").textContent = `${state.total} task(s)`;
    refreshRow(row.id);
  } else {
    if (TERMINAL.has(row.status) && !TERMINAL.has(status) && ev.kind !== "requested") return;
    row.status = status;
    if (ev.attempt) row.attempt = ev.attempt;
    if (ev.kind === "started") { row.started_at = ev.time; row.finished_at = null; }
    if (TERMINAL.has(status)) { row.finished_at = ev.time; refreshRow(row.id); }
    renderRow(row);
  }
}

async function refreshRow(id) {
  try {
    const t = await api(`tasks/${encodeURIComponent(id).replace(/%2F/g, "/")}`);
    const row = state.rows.get(id);
    if (!row) return;
    // Live events may be ahead of the state read: never move a row back from terminal.
    if (TERMINAL.has(row.status) && !TERMINAL.has(t.status)) return;
    Object.assign(row, t);
    renderRow(row);
  } catch (e) { /* gone (retention) or not readable: keep what the events said */ }
}

function startFirehose() {
  if (state.firehose) state.firehose.close();
  const src = new EventSource("events");
  state.firehose = src;
  // "ready" comes once the gateway's subscription is in place: reading the list after it
  // leaves no gap between what the list shows and the events that follow.
  src.addEventListener("ready", () => { setLive(true); reload(); });
  src.onerror = () => setLive(false);
  src.onmessage = (msg) => {
    const ev = JSON.parse(msg.data);
    onLiveEvent(ev);
    if (state.selected === ev.task_id && !state.detailSource) loadDetail(ev.task_id);
  };
  src.addEventListener("lagged", () => reload());
}

async function reload() {
  state.loading = true;
  state.loads += 1;
  try { await loadTasks(true); } finally {
    state.loads -= 1;
    if (!state.loads) {  // the last of overlapping loads: apply what came meanwhile
      state.loading = false;
      const early = state.early;
      state.early = [];
      for (const ev of early) onLiveEvent(ev);
    }
  }
}

// -- one task -----------------------------------------------------------------------------

function taskPath(id) { return `tasks/${encodeURIComponent(id).replace(/%2F/g, "/")}`; }

function selectTask(id) {
  state.selected = id;
  for (const tr of document.querySelectorAll("#tasks tbody tr")) tr.classList.toggle("selected", tr.dataset.taskId === id);
  $("#detail").classList.remove("hidden");
  $("#d-events").textContent = "";
  loadDetail(id);
  followTask(id);
}

function closeDetail() {
  state.selected = null;
  if (state.detailSource) { state.detailSource.close(); state.detailSource = null; }
  $("#detail").classList.add("hidden");
}

async function loadDetail(id) {
  let t;
  try { t = await api(taskPath(id)); } catch (e) { $("#d-meta").textContent = e.message; return; }
  if (state.selected !== id) return;
  $("#d-title").textContent = `${t.name} · ${t.id}`;
  const badge = $("#d-status");
  badge.textContent = t.status;
  badge.className = `badge ${t.status}`;
  $("#d-meta").textContent = `app ${t.app} · attempt ${t.attempt}` + (t.worker ? ` · ${t.worker}` : "") +
    (t.replays ? ` · replayed ${t.replays}×` : "");
  const pct = t.status === "SUCCEEDED" ? 100 : (t.progress ? t.progress.percent : 0);
  $("#d-bar").style.width = `${pct}%`;
  $("#d-progress").textContent = t.progress ? `${t.progress.percent}% ${t.progress.message || ""}` : "";
  const err = $("#d-error");
  err.classList.toggle("hidden", !t.error);
  err.textContent = t.error ? `${t.error.type}: ${t.error.message}` + (t.error.traceback ? `\n\n${t.error.traceback}` : "") : "";
  $("#d-result").textContent = t.result === null || t.result === undefined ? "—" : JSON.stringify(t.result, null, 2);
  $("#d-args").textContent = t.args === null ? "—" : JSON.stringify({ args: t.args, kwargs: t.kwargs }, null, 2);
  $("#d-cancel").disabled = TERMINAL.has(t.status);
  $("#d-replay").disabled = !(t.status === "FAILED" || t.status === "DEAD");
  const row = state.rows.get(id);
  if (row && !(TERMINAL.has(row.status) && !TERMINAL.has(t.status))) { Object.assign(row, t); renderRow(row); }
}

function followTask(id) {
  if (state.detailSource) state.detailSource.close();
  const src = new EventSource(`${taskPath(id)}/events`);
  state.detailSource = src;
  src.onmessage = (msg) => {
    if (state.selected !== id) { src.close(); return; }
    const ev = JSON.parse(msg.data);
    const li = el("li");
    li.appendChild(el("span", ev.kind, "kind"));
    const bits = [fmtTime(ev.time)];
    if (ev.attempt) bits.push(`attempt ${ev.attempt}`);
    if (ev.kind === "progress") bits.push(`${ev.progress}% ${ev.message || ""}`);
    if (ev.error) bits.push(`${ev.error.type}: ${ev.error.message}`);
    li.appendChild(el("span", " " + bits.join(" · "), "muted"));
    $("#d-events").appendChild(li);
    if (ev.kind === "progress") {
      $("#d-bar").style.width = `${ev.progress}%`;
      $("#d-progress").textContent = `${ev.progress}% ${ev.message || ""}`;
    }
    onLiveEvent(ev);
    if (ev.terminal) {
      src.close();           // the stream ends after the terminal event: do not reconnect
      state.detailSource = null;
      loadDetail(id);
    } else if (ev.kind === "started" || ev.kind === "retrying") {
      loadDetail(id);
    }
  };
}

async function act(action) {
  const id = state.selected;
  if (!id) return;
  try {
    await api(`${taskPath(id)}/${action}`, { method: "POST" });
    $("#d-events").textContent = "";
    if (action === "replay") followTask(id);
    loadDetail(id);
  } catch (e) { $("#d-meta").textContent = e.message; }
}

// -- apps and the submit form -------------------------------------------------------------

async function loadApps() {
  const body = await api("apps");
  state.apps = body.apps;
  const appSel = $("#f-app");
  const names = $("#task-names");
  const taskSel = $("#s-task");
  for (const a of body.apps) {
    appSel.appendChild(el("option", a.name));
    for (const t of a.tasks) {
      names.appendChild(el("option", t.name));
      const opt = el("option", `${t.name}${t.signature}${body.apps.length > 1 ? " · " + a.name : ""}`);
      opt.value = JSON.stringify([a.name, t.name]);
      taskSel.appendChild(opt);
    }
  }
  $("#submit-box").classList.toggle("hidden", !taskSel.options.length);
}

async function submitTask(e) {
  e.preventDefault();
  const [app, name] = JSON.parse($("#s-task").value);
  const out = $("#s-result");
  try {
    const body = { args: JSON.parse($("#s-args").value || "[]"), kwargs: JSON.parse($("#s-kwargs").value || "{}") };
    const res = await api(`tasks/${encodeURIComponent(name)}?app=${encodeURIComponent(app)}`, {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
    });
    out.textContent = `submitted ${res.id}`;
  } catch (err) { out.textContent = err.message; }
}

// -- queues and workers -------------------------------------------------------------------

function fillTable(sel, rows, cells) {
  const tbody = $(`${sel} tbody`);
  tbody.textContent = "";
  for (const r of rows) {
    const tr = el("tr");
    for (const c of cells(r)) tr.appendChild(c instanceof Node ? c : el("td", c));
    tbody.appendChild(tr);
  }
  if (!rows.length) {
    const tr = el("tr");
    const td = el("td", "none", "muted");
    td.colSpan = $(`${sel} thead tr`).children.length;
    tr.appendChild(td);
    tbody.appendChild(tr);
  }
}

async function refreshQueues() {
  try {
    const [q, w] = await Promise.all([api("queues"), api("workers")]);
    fillTable("#queues", q.queues, (r) => [r.app, r.name, r.bound ? r.consumer : `${r.consumer} (no worker yet)`,
      r.pending, r.running, r.redelivered, r.waiting]);
    fillTable("#workers", w.workers, (r) => [r.worker, r.app, r.running,
      Object.entries(r.tasks).map(([k, v]) => `${k} ×${v}`).join(", ")]);
  } catch (e) { /* shown as stale */ }
}

// -- dead letters -------------------------------------------------------------------------

function button(text, onClick) {
  const td = el("td");
  const b = el("button", text);
  b.addEventListener("click", onClick);
  td.appendChild(b);
  return td;
}

async function refreshDead() {
  try {
    const body = await api("dead-letters/tasks?limit=100");
    fillTable("#dead-tasks", body.tasks, (t) => [el("td", t.id, "mono"), t.name, t.app, t.status,
      t.error ? `${t.error.type}: ${t.error.message}` : "",
      button("Replay", async () => { await api(`${taskPath(t.id)}/replay`, { method: "POST" }); refreshDead(); })]);
    const streams = await api("dead-letters/flows");
    const box = $("#dead-streams");
    box.textContent = "";
    if (!streams.streams.length) box.appendChild(el("span", "no dead-letter streams", "muted"));
    for (const s of streams.streams) {
      const b = el("button", `${s.stream} (${s.messages})`);
      b.addEventListener("click", () => { state.deadStream = s.stream; loadDeadMessages(); });
      box.appendChild(b);
    }
    if (state.deadStream) loadDeadMessages();
  } catch (e) { /* stale */ }
}

async function loadDeadMessages() {
  const stream = state.deadStream;
  const body = await api(`dead-letters/flows/${encodeURIComponent(stream)}?limit=100`);
  fillTable("#dead-msgs", body.messages, (m) => [m.seq, el("td", m.original_subject || "", "mono"),
    m.error ? `${m.error.type}: ${m.error.message}` : "", m.stage || "", m.failed_at || "",
    el("td", m.body.encoding === "utf-8" ? m.body.data : `(${m.body.size} bytes)`, "mono"),
    button("Replay", async () => {
      await api(`dead-letters/flows/${encodeURIComponent(stream)}/${m.seq}/replay`, { method: "POST" });
      refreshDead();
    })]);
}

// -- flows --------------------------------------------------------------------------------

async function refreshFlows() {
  try {
    const body = await api("flows");
    const now = Date.now() / 1000;
    fillTable("#flows", body.streams, (s) => {
      const prev = state.flowSamples.get(s.stream);
      state.flowSamples.set(s.stream, [now, s.last_seq]);
      const rate = prev && now > prev[0] ? ((s.last_seq - prev[1]) / (now - prev[0])).toFixed(1) : "…";
      const cons = s.consumers.map((c) => `${c.name}: ${c.pending} / ${c.ack_pending}`).join(", ");
      return [el("td", s.stream, "mono"), s.subjects.join(", "), s.messages, rate, cons, s.dead_letter ? "yes" : ""];
    });
  } catch (e) { /* stale */ }
}

// -- start --------------------------------------------------------------------------------

function every(ms, fn, tab) {
  setInterval(() => { if (document.querySelector(`#tab-${tab}.active`)) fn(); }, ms);
}

document.addEventListener("DOMContentLoaded", async () => {
  for (const b of document.querySelectorAll("#tabs button")) b.addEventListener("click", () => showTab(b.dataset.tab));
  $("#filters").addEventListener("submit", (e) => { e.preventDefault(); reload(); });
  $("#more").addEventListener("click", () => loadTasks(false));
  $("#d-close").addEventListener("click", closeDetail);
  $("#d-cancel").addEventListener("click", () => act("cancel"));
  $("#d-replay").addEventListener("click", () => act("replay"));
  $("#submit").addEventListener("submit", submitTask);
  startFirehose();
  try { await loadApps(); } catch (e) { /* the table still works */ }
  await reload();
  every(3000, refreshQueues, "queues");
  every(5000, refreshDead, "dead");
  every(3000, refreshFlows, "flows");
  // Durations of running tasks tick without events.
  setInterval(() => { for (const row of state.rows.values()) if (row.status === "RUNNING") renderRow(row); }, 1000);
});
