// callgate console: plain JavaScript, no library, no build step.
// Every request carries the token from sessionStorage as a bearer token;
// the API decides what each role may see and do (docs/integration.md).
"use strict";

const KEY = "callgate.console.token";
const POLL_MS = 2000;
const $ = (id) => document.getElementById(id);
let me = null;          // {name, role} from /v1/whoami
let timers = [];
let feed = null;        // AbortController of the event stream
let agentCall = "";     // the Call-ID the current-call view shows
let supSelected = null; // {call_id, caller} the supervisor picked
const rank = { agent: 0, supervisor: 1, ops: 2 };

function token() { return sessionStorage.getItem(KEY) || ""; }

async function api(method, path, body) {
  const headers = { "Authorization": "Bearer " + token() };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const r = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body), cache: "no-store" });
  const text = await r.text();
  let data = null;
  try { data = JSON.parse(text); } catch (_) { data = text; }
  return { status: r.status, ok: r.ok, data };
}

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v; else e.setAttribute(k, v);
  }
  for (const c of children) if (c !== null && c !== undefined) e.append(c);
  return e;
}

function time(ms) { return ms ? new Date(ms).toLocaleTimeString() : ""; }
function errorText(r) { return (r.data && r.data.error) || (typeof r.data === "string" ? r.data.trim() : "") || ("HTTP " + r.status); }

// ---- login ----------------------------------------------------------

async function login(candidate) {
  sessionStorage.setItem(KEY, candidate);
  const r = await api("GET", "/v1/whoami");
  if (!r.ok) {
    sessionStorage.removeItem(KEY);
    $("login-error").textContent = r.status === 401 ? "This token is not valid." : errorText(r);
    return false;
  }
  me = r.data;
  start();
  return true;
}

function logout() {
  sessionStorage.removeItem(KEY);
  me = null;
  stopLive();
  for (const v of ["agent", "supervisor", "ops"]) $("view-" + v).hidden = true;
  $("tabs").hidden = true; $("who").hidden = true; $("login").hidden = false;
  $("token").value = "";
}

function start() {
  $("login").hidden = true;
  $("who").hidden = false; $("tabs").hidden = false;
  $("who-name").textContent = me.name;
  $("who-role").textContent = me.role;
  const level = rank[me.role] ?? 0;
  $("tab-supervisor").hidden = level < 1;
  $("tab-ops").hidden = level < 2;
  const fromUrl = new URLSearchParams(location.hash.slice(1)).get("call");
  if (fromUrl) agentCall = fromUrl;
  show(level >= 1 && !fromUrl ? "supervisor" : "agent");
}

function show(view) {
  stopLive();
  for (const v of ["agent", "supervisor", "ops"]) {
    $("view-" + v).hidden = v !== view;
    $("tab-" + v).classList.toggle("active", v === view);
  }
  if (view === "agent") startAgent();
  if (view === "supervisor") startSupervisor();
  if (view === "ops") startOps();
}

function stopLive() {
  for (const t of timers) clearInterval(t);
  timers = [];
  if (feed) { feed.abort(); feed = null; }
}

function every(ms, f) { f(); timers.push(setInterval(f, ms)); }

// ---- live updates: the event stream, else polling ---------------------

// Reads /v1/events with fetch (EventSource cannot send a bearer token),
// calling onEvent for each event and reconnecting with Last-Event-ID;
// where the stream is off (404) or not for this role (403), polls.
function live(onEvent) {
  let lastId = "";
  const controller = new AbortController();
  feed = controller;
  const poll = () => { $("feed-status").textContent = "updated every 2 s"; every(POLL_MS, onEvent); };
  const connect = async () => {
    const headers = { "Authorization": "Bearer " + token(), "Accept": "text/event-stream" };
    if (lastId) headers["Last-Event-ID"] = lastId;
    let r;
    try { r = await fetch("/v1/events", { headers, signal: controller.signal, cache: "no-store" }); }
    catch (_) { if (!controller.signal.aborted) setTimeout(connect, POLL_MS); return; }
    if (r.status === 404 || r.status === 403) { poll(); return; }
    if (!r.ok || !r.body) { setTimeout(connect, POLL_MS); return; }
    $("feed-status").textContent = "live";
    onEvent();
    const reader = r.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += decoder.decode(value, { stream: true });
        let end;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          const block = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          let data = false;
          for (const line of block.split("\n")) {
            if (line.startsWith("id:")) lastId = line.slice(3).trim();
            if (line.startsWith("data:")) data = true;
          }
          if (data) onEvent();
        }
      }
    } catch (_) { /* aborted or dropped: reconnect below */ }
    if (!controller.signal.aborted) setTimeout(connect, 1000);
  };
  connect();
}

// ---- a decision in words ----------------------------------------------

function levelBadge(level) {
  return el("span", { class: "level level-" + (level || "none") }, level || "none");
}

function worded(codes, texts) {
  const words = new Map((texts || []).map((w) => [w.code, w.text]));
  return (codes || []).map((c) => words.get(c) || c);
}

// Renders a decision (the enforcement API's or a live call's) into box.
function renderDecision(box, d, opts) {
  box.replaceChildren();
  box.className = "decision " + (d.level || "");
  box.append(el("p", { class: "headline" }, levelBadge(d.level), " ",
    d.level_text || ("Risk " + (d.level || "unknown")),
    d.score !== null && d.score !== undefined ? el("span", { class: "muted" }, "  score " + d.score) : null));
  if (opts && opts.caller && d.caller) box.append(el("p", {}, "Caller ", el("strong", { class: "caller" }, d.caller)));
  const reasons = worded(d.reasons, d.reasons_text);
  box.append(el("h3", {}, "Why"));
  box.append(reasons.length ? el("ul", { class: "reasons" }, ...reasons.map((t) => el("li", {}, t))) : el("p", { class: "muted" }, "No rule fired."));
  box.append(el("h3", {}, "Not without step-up"));
  const restrict = worded(d.restrict, d.restrict_text);
  if (d.restrictions_lifted) box.append(el("p", { class: "lifted" }, "Step-up done: the restrictions are lifted for this call."));
  else box.append(restrict.length ? el("ul", { class: "restrict" }, ...restrict.map((t) => el("li", {}, t))) : el("p", { class: "muted" }, "No restriction."));
  box.append(el("h3", {}, "Caller ID check"));
  box.append(el("p", { class: "verify" }, d.verify_text || "No verification detail for this call."));
  const route = { agents: "to the agents", review: "to the review queue", reject: "refused" }[d.route] || d.route;
  box.append(el("p", { class: "muted" }, "Routed " + route + (d.policy_version ? " · policy " + d.policy_version : "") + " · decision " + (d.decision_id || d.id || "") + (d.instance ? " by " + d.instance : "")));
  box.hidden = false;
}

function history(d, listChanges) {
  const items = [];
  for (const s of d.step_ups || []) items.push([s.unix_ms, "step-up (" + s.method + ") by " + s.by + " via " + s.token]);
  for (const v of d.verdicts || []) items.push([v.unix_ms, v.verdict.replace(/_/g, " ") + " by " + v.by + " via " + v.token + (v.note ? ": " + v.note : "")]);
  for (const c of listChanges || []) {
    const what = c.added ? "added " + c.number + " to the " + c.list + " list" : c.number + " was on the " + c.list + " list already";
    items.push([c.unix_ms, what + ", by " + c.by + " via " + c.token + (c.note ? ": " + c.note : "")]);
  }
  items.sort((a, b) => a[0] - b[0]);
  return items.map(([ms, text]) => el("li", {}, time(ms) + " " + text));
}

// ---- agent: the current call -----------------------------------------

async function startAgent() {
  $("call-id").value = agentCall;
  if (rank[me.role] >= 1) {
    // Supervisors may list the calls: offer them, newest by default.
    const r = await api("GET", "/v1/calls?instances=all");
    if (r.ok) {
      const calls = r.data.calls.filter((c) => c.decision).sort((a, b) => b.started_unix_ms - a.started_unix_ms);
      $("call-ids").replaceChildren(...calls.map((c) => el("option", { value: c.call_id })));
      if (!agentCall && calls.length) { agentCall = calls[0].call_id; $("call-id").value = agentCall; }
    }
  }
  every(POLL_MS, loadAgent);
}

async function loadAgent() {
  if (!agentCall) { $("agent-status").textContent = "Enter the Call-ID of your call (the CRM's screen pop shows it)."; return; }
  const r = await api("GET", "/v1/calls/" + encodeURIComponent(agentCall) + "/decision");
  if (!r.ok) {
    $("agent-status").textContent = r.status === 404 ? "No decision on this call (yet)." : errorText(r);
    $("agent-decision").hidden = true; $("agent-actions").hidden = true;
    return;
  }
  $("agent-status").textContent = r.data.state === "live" ? "Call in progress" : "Call ended";
  renderDecision($("agent-decision"), r.data, { caller: false });
  $("agent-actions").hidden = false;
}

async function agentVerdict(verdict) {
  const r = await api("POST", "/v1/calls/" + encodeURIComponent(agentCall) + "/verdict", { verdict, by: me.name, note: "" });
  $("agent-result").textContent = r.ok ? "Recorded: " + verdict.replace(/_/g, " ") : errorText(r);
  if (r.ok) renderDecision($("agent-decision"), r.data, { caller: false });
}

async function agentStepUp() {
  const r = await api("POST", "/v1/calls/" + encodeURIComponent(agentCall) + "/step-up", { by: me.name, method: $("stepup-method").value });
  $("agent-result").textContent = r.ok ? "Step-up recorded" : errorText(r);
  if (r.ok) renderDecision($("agent-decision"), r.data, { caller: false });
}

// ---- supervisor: live calls, review queue, decision, lists -------------

function startSupervisor() { live(loadSupervisor); }

function callRow(c, cells) {
  const tr = el("tr", { "data-call-id": c.call_id }, ...cells.map((x) => el("td", {}, x)));
  if (supSelected && supSelected.call_id === c.call_id) tr.classList.add("selected");
  tr.addEventListener("click", () => { supSelected = { call_id: c.call_id, caller: c.caller }; loadSelected(); loadSupervisor(); });
  return tr;
}

async function loadSupervisor() {
  const [calls, review] = await Promise.all([api("GET", "/v1/calls?instances=all"), api("GET", "/v1/review")]);
  if (calls.ok) {
    const inbound = calls.data.calls.filter((c) => c.direction === "inbound").sort((a, b) => b.started_unix_ms - a.started_unix_ms);
    $("calls").tBodies[0].replaceChildren(...inbound.map((c) => callRow(c, [time(c.started_unix_ms), c.caller,
      levelBadge(c.decision && c.decision.level), String(c.decision && c.decision.score !== null ? c.decision.score : ""), (c.decision && c.decision.route) || "", c.instance || ""])));
  }
  if (review.ok) {
    const queue = review.data.calls.slice().sort((a, b) => a.started_unix_ms - b.started_unix_ms);
    $("review").tBodies[0].replaceChildren(...queue.map((c) => callRow(c, [time(c.started_unix_ms), c.caller,
      levelBadge(c.decision.level), String(c.decision.score ?? ""), worded(c.decision.reasons, c.decision.reasons_text).join(" · "), c.instance || ""])));
  }
}

async function loadSelected() {
  if (!supSelected) return;
  const [d, lists] = await Promise.all([
    api("GET", "/v1/calls/" + encodeURIComponent(supSelected.call_id) + "/decision"),
    api("GET", "/v1/lists"),
  ]);
  if (!d.ok) { $("sup-result").textContent = errorText(d); return; }
  $("sup-empty").hidden = true;
  renderDecision($("sup-decision"), d.data, { caller: true });
  $("sup-actions").hidden = false;
  const digits = (d.data.caller || "").replace(/\D/g, "");
  const changes = lists.ok ? lists.data.changes.filter((c) => c.number === digits) : [];
  $("history").replaceChildren(...history(d.data, changes));
}

async function supVerdict(verdict) {
  if (!supSelected) return;
  const r = await api("POST", "/v1/calls/" + encodeURIComponent(supSelected.call_id) + "/verdict", { verdict, by: me.name, note: $("list-note").value });
  $("sup-result").textContent = r.ok ? "Verdict recorded: " + verdict.replace(/_/g, " ") : errorText(r);
  loadSelected();
}

async function supList(list) {
  if (!supSelected) return;
  const r = await api("POST", "/v1/lists/" + list, { number: supSelected.caller, by: me.name, note: $("list-note").value });
  $("sup-result").textContent = r.ok ? (r.data.added ? "Added " + r.data.number + " to the " + list + " list" : r.data.number + " was on the " + list + " list already") : errorText(r);
  loadSelected();
}

// ---- ops: charts from /metrics ----------------------------------------

// Prometheus text → [{name, labels, value}].
function parseMetrics(text) {
  const out = [];
  for (const line of text.split("\n")) {
    if (!line || line.startsWith("#")) continue;
    const m = line.match(/^([a-zA-Z_:][\w:]*)(\{([^}]*)\})?\s+(\S+)/);
    if (!m) continue;
    const labels = {};
    if (m[3]) for (const p of m[3].matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) labels[p[1]] = p[2];
    out.push({ name: m[1], labels, value: Number(m[4]) });
  }
  return out;
}

const svgNs = "http://www.w3.org/2000/svg";
function svg(tag, attrs, text) {
  const e = document.createElementNS(svgNs, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}

// A bar chart of [{label, value, cls}] into the <svg> node.
function bars(node, rows, unit) {
  node.replaceChildren();
  const w = 420, h = 200, left = 8, bottom = 38, top = 16;
  const max = Math.max(1, ...rows.map((r) => r.value));
  const slot = (w - left * 2) / Math.max(1, rows.length);
  node.append(svg("line", { class: "axis", x1: left, y1: h - bottom, x2: w - left, y2: h - bottom }));
  rows.forEach((r, i) => {
    const bh = (h - bottom - top) * (r.value / max);
    const x = left + i * slot + slot * 0.15;
    node.append(svg("rect", { class: r.cls || "bar", x, y: h - bottom - bh, width: slot * 0.7, height: bh }));
    node.append(svg("text", { x: x + slot * 0.35, y: h - bottom - bh - 3, "text-anchor": "middle" }, fmt(r.value) + (unit || "")));
    node.append(svg("text", { x: x + slot * 0.35, y: h - bottom + 14, "text-anchor": "middle" }, r.label));
  });
  if (!rows.length) node.append(svg("text", { x: w / 2, y: h / 2, "text-anchor": "middle" }, "no data yet"));
}

function fmt(v) { return v >= 100 ? String(Math.round(v)) : String(Math.round(v * 10) / 10); }

// Samples of the decision totals, for the rate over the last minute; the
// process's start (every total 0) anchors the first ones.
let samples = [];

function startOps() { samples = []; every(POLL_MS, loadOps); }

async function loadOps() {
  const r = await fetch("/metrics", { headers: { "Authorization": "Bearer " + token() }, cache: "no-store" });
  if (!r.ok) { $("ops-status").textContent = "/metrics: HTTP " + r.status; return; }
  const m = parseMetrics(await r.text());
  const sum = (name, pred) => m.filter((s) => s.name === name && pred(s.labels)).reduce((a, s) => a + s.value, 0);
  const levels = ["low", "medium", "high", "critical"];
  const now = Date.now();
  const totals = levels.map((l) => sum("callgate_decisions_total", (x) => x.level === l));
  const started = sum("process_start_time_seconds", () => true) * 1000;
  samples.push({ at: now, totals });
  samples = samples.filter((x) => now - x.at <= 120000);
  // The newest sample at least a minute old, else the process's start.
  const base = samples.filter((x) => now - x.at >= 60000).pop() || { at: started || now - 60000, totals: levels.map(() => 0) };
  const span = Math.max(1000, now - base.at);
  const perMinute = totals.map((t, i) => Math.max(0, t - base.totals[i]) * 60000 / span);
  bars($("chart-levels"), levels.map((l, i) => ({ label: l, value: perMinute[i], cls: "bar-" + l })));
  const verify = [];
  for (const s of m.filter((s) => s.name === "callgate_stir_verifications_total" && s.labels.status !== "failed")) {
    verify.push({ label: s.labels.status, value: s.value, cls: s.labels.status === "passed" ? "bar-passed" : "bar" });
  }
  for (const s of m.filter((s) => s.name === "callgate_stir_failures_total" && s.value > 0)) {
    verify.push({ label: s.labels.cause, value: s.value, cls: "bar-failed" });
  }
  bars($("chart-verify"), verify);
  const phases = {};
  for (const s of m) {
    if (s.name === "callgate_phase_seconds_sum") (phases[s.labels.phase] ||= {}).sum = s.value;
    if (s.name === "callgate_phase_seconds_count") (phases[s.labels.phase] ||= {}).count = s.value;
  }
  bars($("chart-phases"), Object.entries(phases).filter(([, p]) => p.count > 0)
    .map(([name, p]) => ({ label: name, value: p.sum / p.count * 1e6 })));
  $("ops-status").textContent = "updated " + new Date(now).toLocaleTimeString() + " · decisions per minute over the last " + Math.round(span / 1000) + " s";
}

// ---- wiring ------------------------------------------------------------

document.addEventListener("DOMContentLoaded", () => {
  $("login-form").addEventListener("submit", (e) => { e.preventDefault(); login($("token").value.trim()); });
  $("logout").addEventListener("click", logout);
  for (const v of ["agent", "supervisor", "ops"]) $("tab-" + v).addEventListener("click", () => show(v));
  $("call-pick").addEventListener("submit", (e) => { e.preventDefault(); agentCall = $("call-id").value.trim(); loadAgent(); });
  for (const b of document.querySelectorAll("#agent-actions .verdict")) b.addEventListener("click", () => agentVerdict(b.dataset.verdict));
  $("stepup-done").addEventListener("click", agentStepUp);
  for (const b of document.querySelectorAll("#sup-actions .verdict")) b.addEventListener("click", () => supVerdict(b.dataset.verdict));
  for (const b of document.querySelectorAll("#sup-actions .list")) b.addEventListener("click", () => supList(b.dataset.list));
  if (token()) login(token()); else $("token").focus();
});
