// grapevine's dashboard: plain JavaScript, no build step, no library. Each page polls the
// agent's own API while it is shown (and only then); the drills banner and the member
// counts poll once a second. Every render is timed (window.gv.renderMs) so tests and people
// can see that an update stays cheap.
"use strict";

const $ = (sel) => document.querySelector(sel);
const HISTORY = 300; // points kept per series: five minutes at one a second
const gv = (window.gv = { renderMs: [], worst: {}, errors: 0, page: "members" });

// ---------- talking to the agent ----------
function token() {
  return localStorage.getItem("gv-token") || "";
}

async function api(path, opts = {}) {
  const headers = Object.assign({}, opts.headers || {});
  if (token()) headers["X-Consul-Token"] = token();
  const r = await fetch(path, Object.assign({}, opts, { headers }));
  const text = await r.text();
  if (!r.ok) {
    const err = new Error(`${r.status} ${text}`);
    err.status = r.status;
    throw err;
  }
  const type = r.headers.get("content-type") || "";
  return type.includes("json") ? JSON.parse(text) : text;
}

function showError(e) {
  const b = $("#error-banner");
  if (!e) {
    b.hidden = true;
    return;
  }
  b.hidden = false;
  b.textContent = e.status === 403
    ? "The agent refused: it has ACL tokens. Set one with localStorage.setItem('gv-token', TOKEN) and reload."
    : `The agent did not answer: ${e.message}`;
}

// ---------- small helpers ----------
function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") e.className = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return e;
}

function badge(status) {
  return el("span", { class: `status ${status}` }, status);
}

function ago(seconds) {
  if (seconds == null || !isFinite(seconds)) return "";
  if (seconds < 60) return `${seconds.toFixed(seconds < 10 ? 1 : 0)} s`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)} min ${Math.floor(seconds % 60)} s`;
  return `${(seconds / 3600).toFixed(1)} h`;
}

function fill(tbody, rows) {
  tbody.replaceChildren(...rows);
}

function sparkline(svg, values) {
  const w = 300, h = 40;
  svg.setAttribute("viewBox", `0 0 ${w} ${h}`);
  svg.setAttribute("preserveAspectRatio", "none");
  const max = Math.max(1e-9, ...values);
  const step = values.length > 1 ? w / (HISTORY - 1) : 0;
  const x0 = w - step * (values.length - 1);
  const pts = values.map((v, i) => `${(x0 + i * step).toFixed(1)},${(h - 1 - (v / max) * (h - 2)).toFixed(1)}`);
  let line = svg.querySelector("polyline");
  if (!line) {
    line = document.createElementNS("http://www.w3.org/2000/svg", "polyline");
    svg.append(line);
  }
  line.setAttribute("points", pts.join(" "));
}

function smallChart(values) {
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("class", "spark");
  sparkline(svg, values);
  return svg;
}

function push(series, key, v) {
  const s = series[key] || (series[key] = []);
  s.push(v);
  if (s.length > HISTORY) s.shift();
  return s;
}

// Times a render; keeps the last 200.
function timed(f) {
  const t0 = performance.now();
  f();
  const ms = performance.now() - t0;
  // A user-timing span, so a browser's trace can tell this update's main-thread CPU time
  // from its wall time; cleared at once, so an open page does not accumulate entries.
  const span = `gv-render ${gv.page}`;
  performance.measure(span, { start: t0, end: t0 + ms });
  performance.clearMeasures(span);
  gv.renderMs.push(ms);
  if (gv.renderMs.length > 200) gv.renderMs.shift();
  gv.worst[gv.page] = Math.max(gv.worst[gv.page] || 0, ms);
}

// ---------- members ----------
let members = [];
let selected = null;
const ORDER = { alive: 0, suspect: 1, failed: 2, left: 3 };

async function loadMembers() {
  members = await api("/v1/grapevine/members");
  timed(renderMembers);
}

function renderMembers() {
  const now = Date.now() / 1000;
  const counts = {};
  for (const m of members) counts[m.status] = (counts[m.status] || 0) + 1;
  $("#member-counts").replaceChildren(
    ...["alive", "suspect", "failed", "left"].map((s) =>
      el("span", { "data-status": s }, badge(s), ` ${counts[s] || 0}`)
    )
  );
  const f = $("#member-filter").value.trim().toLowerCase();
  const by = $("#member-sort").value;
  const shown = members
    .filter((m) => !f || [m.name, m.addr, m.tags, m.status].some((x) => String(x).toLowerCase().includes(f)))
    .sort((a, b) => {
      if (by === "status") return ORDER[a.status] - ORDER[b.status] || byName(a, b);
      if (by === "since") return (a.since || 0) - (b.since || 0);
      if (by === "incarnation") return b.incarnation - a.incarnation;
      return byName(a, b);
    });
  // Rows are kept by name and only their changed cells rewritten: a poll at a hundred
  // members then touches a few text nodes, not seven hundred new elements.
  const tbody = $("#members tbody");
  const rows = shown.map((m) => memberRow(m, now));
  const same = rows.length === tbody.children.length && rows.every((r, i) => tbody.children[i] === r);
  if (!same) tbody.replaceChildren(...rows);
  const live = new Set(shown.map((m) => m.name));
  for (const name of memberRows.keys()) if (!live.has(name)) memberRows.delete(name);
}

// By code point: localeCompare's first call loads the collator, which cost the first render
// of a hundred members about 20 ms.
const byName = (a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0);

const memberRows = new Map();

function memberRow(m, now) {
  let tr = memberRows.get(m.name);
  if (!tr) {
    tr = el("tr", { "data-name": m.name, onclick: () => showMember(m.name) });
    for (let i = 0; i < 6; i++) tr.append(el("td"));
    tr.cells[2].append(el("span"));
    memberRows.set(m.name, tr);
  }
  const set = (cell, text) => {
    if (cell.textContent !== text) cell.textContent = text;
  };
  if (tr.dataset.status !== m.status) {
    tr.dataset.status = m.status;
    const b = tr.cells[2].firstChild;
    b.className = `status ${m.status}`;
    b.textContent = m.status;
  }
  tr.classList.toggle("selected", m.name === selected);
  set(tr.cells[0], m.name);
  set(tr.cells[1], m.addr);
  set(tr.cells[3], String(m.incarnation));
  set(tr.cells[4], String(m.tags));
  set(tr.cells[5], m.since ? ago(now - m.since) : "since this agent started");
  return tr;
}

async function showMember(name) {
  selected = name;
  renderMembers();
  const s = (await api("/v1/grapevine/state")).find((x) => x.Name === name);
  if (!s) {
    $("#member-detail").replaceChildren(el("p", { class: "hint" }, `${name}: no per-node state held here`));
    return;
  }
  {
    const keys = Object.entries(s.Keys || {}).map(([k, v]) =>
      el("tr", {}, el("td", {}, k), el("td", {}, atobSafe(v.Value)), el("td", {}, v.Version))
    );
    $("#member-detail").replaceChildren(
      el("h3", {}, `${name}: per-node state, generation ${s.Generation}, version ${s.Version}`),
      el("table", {}, el("thead", {}, el("tr", {}, el("th", {}, "key"), el("th", {}, "value"), el("th", {}, "version"))), el("tbody", {}, ...keys))
    );
  }
}

function atobSafe(b64) {
  try {
    return new TextDecoder().decode(Uint8Array.from(atob(b64 || ""), (c) => c.charCodeAt(0)));
  } catch (_) {
    return b64;
  }
}

// ---------- gossip internals ----------
const series = {};
let lastInternals = null;

async function loadInternals() {
  const i = await api("/v1/grapevine/internals");
  timed(() => renderInternals(i));
}

function rate(cur, prev, key, sub, dt) {
  const a = sub ? (cur[key] || {})[sub] || 0 : cur[key] || 0;
  const b = prev ? (sub ? (prev[key] || {})[sub] || 0 : prev[key] || 0) : a;
  return dt > 0 ? Math.max(0, a - b) / dt : 0;
}

function renderInternals(i) {
  const prev = lastInternals;
  const dt = prev ? i.Time - prev.Time : 0;
  lastInternals = i;
  $("#probe").replaceChildren(
    i.Probe
      ? el("span", {}, `${i.Probe.Target}, ${(i.Probe.Age * 1000).toFixed(0)} ms ago${i.Probe.Indirect ? ", through relays" : ""}`)
      : el("span", { class: "hint" }, "none right now"),
    el("div", { class: "hint" }, `mean round trip ${(i.RttMicros / 1000).toFixed(2)} ms; ${i.ProbesFailed} of ${i.Probes} probes failed`)
  );
  $("#health").textContent = i.HealthScore;
  sparkline($("#chart-health"), push(series, "health", i.HealthScore));
  $("#queue").textContent = i.QueueDepth;
  sparkline($("#chart-queue"), push(series, "queue", i.QueueDepth));
  const bps = rate(i, prev, "BytesIn", null, dt) + rate(i, prev, "BytesOut", null, dt);
  $("#bps").textContent = bps.toFixed(0);
  sparkline($("#chart-bytes"), push(series, "bytes", bps));
  fill($("#suspicions tbody"), i.Suspicions.map((s) =>
    el("tr", {}, el("td", {}, s.Member), el("td", {}, s.Incarnation), el("td", {}, ago(s.Age)),
      el("td", {}, s.Remaining == null ? "awaiting a last probe" : ago(s.Remaining)),
      el("td", {}, `${s.Confirmations} of ${s.Expected}`))));
  const types = new Set([...Object.keys(i.MessagesIn), ...Object.keys(i.MessagesOut)]);
  fill($("#rates tbody"), [...types].sort().map((t) => {
    const mi = rate(i, prev, "MessagesIn", t, dt), mo = rate(i, prev, "MessagesOut", t, dt);
    const s = push(series, `msg-${t}`, mi + mo);
    return el("tr", {}, el("td", {}, t), el("td", {}, mi.toFixed(1)), el("td", {}, mo.toFixed(1)),
      el("td", {}, rate(i, prev, "BytesInByType", t, dt).toFixed(0)),
      el("td", {}, rate(i, prev, "BytesOutByType", t, dt).toFixed(0)), el("td", {}, smallChart(s)));
  }));
  fill($("#drops tbody"), Object.entries(i.Dropped).sort().map(([r, n]) =>
    el("tr", {}, el("td", {}, r), el("td", {}, n), el("td", {}, rate(i, prev, "Dropped", r, dt).toFixed(1)))));
}

// ---------- who sees whom ----------
let lastMatrix = "";
async function loadMatrix() {
  const v = await api("/v1/grapevine/views");
  const key = JSON.stringify(v);
  if (key === lastMatrix) return; // nothing moved: nothing to draw
  lastMatrix = key;
  timed(() => renderMatrix(v));
}

function esc(s) {
  return String(s).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
}

function renderMatrix(v) {
  const names = v.Members;
  const live = new Set(v.Live);
  const rowsOf = names.filter((n) => live.has(n));
  const cell = (r, c) => (r === c ? "self" : (v.Rows[r] || {})[c] || "alive");
  // A column disagrees when the rows (its own aside) see it in more than one state: counted
  // once per column, so a large cluster costs n² and not n³.
  const split = new Set();
  for (const c of names) {
    const seen = new Set();
    for (const r of rowsOf) if (r !== c) seen.add(cell(r, c));
    if (seen.size > 1) split.add(c);
  }
  const head = `<thead><tr><th></th>${names.map((c) => `<th class="col">${esc(c)}</th>`).join("")}</tr></thead>`;
  const body = rowsOf.map((r) => {
    const cells = [];
    // Most cells are plain "alive" (no disagreement in their column): a run of them is one
    // cell drawn as a run of squares, so a healthy hundred members make about 300 cells, not
    // 10,000, and only the others carry names.
    let run = 0;
    const flush = () => {
      if (run === 1) cells.push('<td class="alive"></td>');
      else if (run > 1) cells.push(`<td class="alive run" colspan="${run}"></td>`);
      run = 0;
    };
    for (const c of names) {
      const s = cell(r, c);
      if (s === "alive" && !split.has(c)) {
        run++;
        continue;
      }
      flush();
      if (s === "self") cells.push('<td class="self"></td>');
      else {
        const cls = split.has(c) ? `${s} disagree` : s;
        cells.push(`<td class="${cls}" title="${esc(r)} sees ${esc(c)}: ${s}" data-row="${esc(r)}" data-col="${esc(c)}"></td>`);
      }
    }
    flush();
    return `<tr><th class="row">${esc(r)}</th>${cells.join("")}</tr>`;
  });
  $("#matrix").innerHTML = `${head}<tbody>${body.join("")}</tbody>`;
  const lc = v.LastChange;
  $("#last-change").replaceChildren(lc
    ? el("p", {}, `Last change: ${lc.Member} ${lc.Status}, seen by ${lc.Reached} of ${lc.Of} members, within ${lc.Seconds.toFixed(2)} s of the first`)
    : el("p", { class: "hint" }, "Every member sees every other alive."));
}

// ---------- services, aggregates ----------
async function loadServices() {
  const [checks, services, aggs] = await Promise.all([
    api("/v1/health/state/any"), api("/v1/catalog/services"), api("/v1/grapevine/aggregate"),
  ]);
  const rows = [];
  for (const name of Object.keys(services).sort()) {
    const inst = await api(`/v1/health/service/${encodeURIComponent(name)}`);
    for (const i of inst) {
      rows.push(el("tr", {}, el("td", {}, `${name} (${i.Service.ID})`), el("td", {}, i.Node.Node),
        el("td", {}, `${i.Service.Address || i.Node.Address}:${i.Service.Port}`), el("td", {}, i.Service.Tags.join(", ")),
        el("td", {}, ...i.Checks.map((c) => el("div", {}, badge(c.Status), ` ${c.Name}`)))));
    }
  }
  timed(() => {
    fill($("#services tbody"), rows.length ? rows : [el("tr", {}, el("td", { colspan: 5, class: "hint" }, `no services (${checks.length} checks known)`))]);
    fill($("#aggregates tbody"), aggs.map((a) => el("tr", {}, el("td", {}, a.Name), el("td", {}, fmt(a.Average)),
      el("td", {}, fmt(a.Sum)), el("td", {}, fmt(a.Count)), el("td", {}, fmt(a.Min)), el("td", {}, fmt(a.Max)))));
  });
}

function fmt(x) {
  return typeof x === "number" ? x.toFixed(3) : x == null ? "" : String(x);
}

// ---------- keyspace ----------
async function loadKv() {
  const prefix = $("#kv-prefix").value;
  const entries = await api(`/v1/grapevine/keys?prefix=${encodeURIComponent(prefix)}`);
  timed(() => fill($("#kv-keys tbody"), entries.map((e) =>
    el("tr", { "data-key": e.Key }, el("td", {}, e.Key), el("td", {}, e.Value == null ? "" : atobSafe(e.Value)),
      el("td", {}, e.ModifyIndex),
      el("td", {},
        el("button", { onclick: () => editKey(e) }, "edit"),
        el("button", { onclick: () => deleteKey(e) }, "delete"))))));
}

function editKey(e) {
  $("#kv-key").value = e.Key;
  $("#kv-value").value = e.Value == null ? "" : atobSafe(e.Value);
  $("#kv-cas").value = e.ModifyIndex;
}

async function deleteKey(e) {
  const ok = await api(`/v1/kv/${e.Key}?cas=${e.ModifyIndex}`, { method: "DELETE" });
  $("#kv-result").textContent = ok ? `deleted ${e.Key}` : `${e.Key} changed meanwhile: not deleted`;
  await loadKv();
}

async function saveKey(ev) {
  ev.preventDefault();
  const key = $("#kv-key").value, cas = $("#kv-cas").value.trim();
  const q = cas ? `?cas=${encodeURIComponent(cas)}` : "";
  try {
    const ok = await api(`/v1/kv/${key}${q}`, { method: "PUT", body: $("#kv-value").value });
    $("#kv-result").textContent = ok ? `saved ${key}` : `${key} changed since index ${cas}: not saved`;
    $("#kv-cas").value = "";
    await loadKv();
  } catch (e) {
    $("#kv-result").textContent = e.message;
  }
}

// ---------- events ----------
let stream = null;
function openStream() {
  if (stream) return;
  const q = token() ? `?token=${encodeURIComponent(token())}` : "";
  stream = new EventSource(`/v1/grapevine/events${q}`);
  const add = (ev) => {
    const d = JSON.parse(ev.data);
    const row = el("tr", {}, el("td", {}, new Date(d.time * 1000).toLocaleTimeString()), el("td", {}, d.event),
      el("td", {}, d.name), el("td", {}, d.reason + (d.accuser ? ` by ${d.accuser}` : "")));
    const tb = $("#events tbody");
    tb.prepend(row);
    while (tb.children.length > 200) tb.lastChild.remove();
  };
  for (const kind of ["member-join", "member-suspect", "member-alive", "member-failed", "member-leave", "member-update", "member-reap", "refute", "user"]) {
    stream.addEventListener(kind, add);
  }
}
function closeStream() {
  if (stream) stream.close();
  stream = null;
}

async function raiseEvent(ev) {
  ev.preventDefault();
  try {
    const r = await api(`/v1/event/fire/${encodeURIComponent($("#event-name").value)}`, { method: "PUT", body: $("#event-payload").value });
    $("#event-result").textContent = `raised ${r.Name} (${r.ID})`;
  } catch (e) {
    $("#event-result").textContent = e.message;
  }
}

// ---------- convergence ----------
async function loadConvergence() {
  const c = await api("/v1/grapevine/convergence");
  const m = c.Model, s = (x) => (x == null ? "not reached" : `${x.toFixed(2)} s`);
  timed(() => $("#convergence").replaceChildren(
    el("p", {}, `For ${c.Members} members on the ${c.Profile} profile at ${(c.Loss * 100).toFixed(1)} % measured loss, the simulator (the real protocol on a simulated network, median of ${m.Seeds} seeds${m.Modelled < c.Members ? `, modelled at ${m.Modelled} members: larger runs take too long to compute on request` : ""}) has a write reach:`),
    el("table", {}, el("tbody", {},
      el("tr", {}, el("th", {}, "50 % of members"), el("td", {}, s(m.Half))),
      el("tr", {}, el("th", {}, "99 %"), el("td", {}, s(m.P99))),
      el("tr", {}, el("th", {}, "100 %"), el("td", {}, s(m.All))))),
    el("p", {}, c.LastSpread
      ? `Last measured spread: ${c.LastSpread.Member} ${c.LastSpread.Status} reached ${c.LastSpread.Reached} of ${c.LastSpread.Of} members within ${c.LastSpread.Seconds.toFixed(2)} s of the first.`
      : "No change measured yet (every member sees every other alive).")));
}

// ---------- drills ----------
let drills = { Enabled: false, Drills: [] };
async function loadDrills() {
  drills = await api("/v1/grapevine/drills");
  timed(renderDrills);
}

function describeDrill(d) {
  if (d.Kind === "cut") return `cut off from ${d.Members.join(", ")}`;
  if (d.Kind === "drop") return `dropping ${(d.Share * 100).toFixed(0)} % of datagrams`;
  return `delaying datagrams sent by ${d.Millis} ms`;
}

function renderDrills() {
  const now = Date.now() / 1000;
  const b = $("#drill-banner");
  b.hidden = drills.Drills.length === 0;
  b.textContent = drills.Drills.length
    ? `Drill in progress on this agent: ${drills.Drills.map((d) => `${describeDrill(d)} (ends in ${ago(d.Expires - now)})`).join("; ")}`
    : "";
  $("#drills-state").textContent = drills.Enabled
    ? "Drills are enabled on this agent. Each ends by itself when its time is up."
    : "Drills are off on this agent (start it with --enable-drills to allow them).";
  $("#drill-start").disabled = !drills.Enabled;
  fill($("#drills tbody"), drills.Drills.map((d) =>
    el("tr", {}, el("td", {}, d.ID), el("td", {}, d.Kind), el("td", {}, describeDrill(d)), el("td", {}, ago(d.Expires - now)),
      el("td", {}, el("button", { onclick: () => endDrill(d.ID) }, "end")))));
}

async function startDrill(ev) {
  ev.preventDefault();
  const kind = $("#drill-kind").value, arg = $("#drill-arg").value.trim();
  const body = { Kind: kind, For: $("#drill-for").value.trim() || "30s" };
  if (kind === "cut") body.Members = arg.split(",").map((s) => s.trim()).filter(Boolean);
  if (kind === "drop") body.Share = Number(arg);
  if (kind === "delay") body.Millis = Number(arg);
  try {
    const d = await api("/v1/grapevine/drills", { method: "POST", body: JSON.stringify(body), headers: { "Content-Type": "application/json" } });
    $("#drill-result").textContent = `started drill ${d.ID}`;
  } catch (e) {
    $("#drill-result").textContent = e.message;
  }
  await loadDrills();
}

async function endDrill(id) {
  await api(`/v1/grapevine/drills/${id}`, { method: "DELETE" });
  await loadDrills();
}

// ---------- pages and polling ----------
const PAGES = {
  members: { load: loadMembers, every: 500 },
  internals: { load: loadInternals, every: 1000 },
  matrix: { load: loadMatrix, every: 1000 },
  services: { load: loadServices, every: 2000 },
  kv: { load: loadKv, every: 0 },
  events: { load: async () => openStream(), every: 0 },
  convergence: { load: loadConvergence, every: 5000 },
  drills: { load: loadDrills, every: 1000 },
};

let timer = null;
async function tick() {
  const p = PAGES[gv.page];
  try {
    await p.load();
    if (gv.page !== "drills") await loadDrills();
    $("#status-line").textContent = `updated ${new Date().toLocaleTimeString()}`;
    showError(null);
  } catch (e) {
    gv.errors++;
    showError(e);
  }
  if (p.every) timer = setTimeout(tick, p.every);
  else timer = setTimeout(async () => { try { await loadDrills(); } catch (_) {} ; timer = setTimeout(tick, 1000); }, 1000);
}

function show(page) {
  if (!PAGES[page]) page = "members";
  gv.page = page;
  for (const s of document.querySelectorAll(".page")) s.hidden = s.id !== `page-${page}`;
  for (const a of document.querySelectorAll("nav a")) a.classList.toggle("active", a.dataset.page === page);
  if (page !== "events") closeStream();
  clearTimeout(timer);
  tick();
}

async function start() {
  try {
    const self = await api("/v1/agent/self");
    $("#agent-name").textContent = self.Config.NodeName;
    document.title = `grapevine: ${self.Config.NodeName}`;
  } catch (e) {
    showError(e);
  }
  $("#member-filter").addEventListener("input", () => timed(renderMembers));
  $("#member-sort").addEventListener("change", () => timed(renderMembers));
  $("#kv-browse").addEventListener("click", () => loadKv());
  $("#kv-form").addEventListener("submit", saveKey);
  $("#event-form").addEventListener("submit", raiseEvent);
  $("#drill-form").addEventListener("submit", startDrill);
  window.addEventListener("hashchange", () => show(location.hash.slice(1)));
  // Nothing polls while the tab is hidden: an open but unseen page costs the agent nothing.
  document.addEventListener("visibilitychange", () => {
    if (document.hidden) clearTimeout(timer);
    else show(gv.page);
  });
  show(location.hash.slice(1) || "members");
}

start();
