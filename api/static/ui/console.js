// The memsvc web console: plain DOM, no framework, no build. Every number it shows comes from the
// public REST API, one page at a time, so it stays fast however many memories a user has.
// Text from the server is only ever set as textContent: memory contents never become markup.

import { ApiError, makeApi, seg } from "./api.js";
import { colourOf, drawGraph } from "./graph.js";

const KEY = "memsvc.apiKey";
const SIGNALS = [
  ["dense", "meaning: how close the embedding is to the query's (z-score over the user's memories)"],
  ["keyword", "keywords: BM25 over the query's words, scaled to the best match"],
  ["graph", "graph: mentions an entity the query names, or one near it"],
  ["time", "time: the query asks when, and the memory states a time"],
  ["speaker", "speaker: said by the one person the query names"],
  ["role", "role: said by the user or the assistant, as the query asks"],
  ["message", "message: a passage raised to its whole message's score"],
  ["neighbours", "neighbours: inherited from the turn that answers it"],
  ["superseded", "superseded: a fact no longer true, pushed down"],
  ["place", "place: mentions a place, and the query asks where"],
  ["instruction", "instruction: the user's standing instruction for requests like this one"],
  ["importance", "importance: small talk and thanks, pushed down (as forgetting judges them)"],
  ["merged", "merged: raised to where the memories merged into it ranked"],
];
const state = {
  api: null,
  user: null,
  tab: "memories",
  loaded: new Set(),
  memCursors: [null],
  memPage: 0,
  usersCursor: null,
  changesCursor: null,
  runId: null,
  jobsCursor: null,
};

// -- small helpers ------------------------------------------------------------------------------

const $ = (selector) => document.querySelector(selector);

function h(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "class") node.className = value;
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

const when = (iso) =>
  iso
    ? new Date(iso).toLocaleString(undefined, {
        year: "numeric", month: "short", day: "numeric", hour: "2-digit", minute: "2-digit",
      })
    : "—";
const short = (id) => String(id).slice(0, 8);
const clip = (text, n) => (text.length > n ? `${text.slice(0, n - 1)}…` : text);
const signed = (x) => `${x >= 0 ? "+" : "−"}${Math.abs(x).toFixed(2)}`;

function toast(message) {
  const box = $("#toast");
  box.textContent = message;
  box.hidden = false;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { box.hidden = true; }, 6000);
}

function explainError(error) {
  if (!(error instanceof ApiError)) return `Could not reach the server (${error.message}).`;
  if (error.status === 401) return "That API key is not valid (or was revoked).";
  if (error.status === 403) return `This API key lacks a scope: ${error.message}`;
  return `${error.status}: ${error.message}`;
}

/** Run `work`, showing any API error as a toast (or in `where`). */
async function guarded(work, where) {
  try {
    return await work();
  } catch (error) {
    if (error instanceof ApiError && error.status === 401) return logout("Your key stopped working.");
    if (where) where.replaceChildren(h("p", { class: "error", role: "alert" }, explainError(error)));
    else toast(explainError(error));
    return undefined;
  }
}

function chips(ids, label = "source message") {
  if (!ids?.length) return h("span", { class: "muted" }, "—");
  return h("span", { class: "chips", "aria-label": `${ids.length} ${label}${ids.length === 1 ? "" : "s"}` },
    ids.slice(0, 6).map((id) => h("code", { class: "chip", title: label }, id)),
    ids.length > 6 ? h("span", { class: "muted" }, ` +${ids.length - 6}`) : null);
}

/** Replace `node`'s children; arrays are flattened and null, undefined and false left out. */
function fill(node, ...children) {
  node.replaceChildren(...children.flat(Infinity).filter((c) => c !== null && c !== undefined && c !== false));
}

const badge = (text, kind = text) => h("span", { class: `badge badge-${kind}` }, text);

// -- login and users ----------------------------------------------------------------------------

async function login(key, quiet = false) {
  const api = makeApi(key);
  let page;
  try {
    page = await api.get("v1/users", { limit: 100 });
  } catch (error) {
    sessionStorage.removeItem(KEY);
    if (!quiet) $("#login-error").textContent = explainError(error);
    return;
  }
  sessionStorage.setItem(KEY, key);
  state.api = api;
  $("#login-error").textContent = "";
  $("#api-key").value = "";
  $("#login-view").hidden = true;
  $("#app-view").hidden = false;
  $("#session").hidden = false;
  $("#key-note").textContent = `key ${key.slice(0, 8)}…`;
  $("#user-list").replaceChildren();
  renderUsers(page);
  const fromHash = new URLSearchParams(location.hash.slice(1)).get("user");
  if (fromHash) selectUser(fromHash);
  else $("#user-id").focus();
}

function logout(message) {
  sessionStorage.removeItem(KEY);
  state.api = null;
  state.user = null;
  $("#app-view").hidden = true;
  $("#session").hidden = true;
  $("#login-view").hidden = false;
  $("#login-error").textContent = message || "";
  $("#api-key").focus();
}

function renderUsers(page) {
  const list = $("#user-list");
  for (const user of page.users) {
    const button = h("button", { type: "button", class: "user", "data-user": user.user_id,
      onclick: () => selectUser(user.user_id) },
      h("span", { class: "user-name" }, user.user_id),
      h("span", { class: "count", "aria-label": `${user.memories} memories` }, user.memories.toLocaleString()));
    list.append(h("li", {}, button));
  }
  if (!list.children.length) list.append(h("li", { class: "muted" }, "No users with memories yet."));
  state.usersCursor = page.next_cursor;
  $("#more-users").hidden = !page.next_cursor;
  markCurrentUser();
}

function markCurrentUser() {
  for (const button of document.querySelectorAll("#user-list button.user")) {
    if (button.dataset.user === state.user) button.setAttribute("aria-current", "true");
    else button.removeAttribute("aria-current");
  }
}

function selectUser(userId) {
  state.user = userId;
  state.loaded.clear();
  state.memCursors = [null];
  state.memPage = 0;
  state.runId = null;
  history.replaceState(null, "", `#user=${encodeURIComponent(userId)}`);
  $("#user-id").value = userId;
  $("#no-user").hidden = true;
  $("#user-pane").hidden = false;
  $("#user-title").replaceChildren(h("span", { class: "muted" }, "User "), userId);
  $("#memory-detail").replaceChildren(h("p", { class: "muted" }, "Select a memory to see its provenance and history."));
  $("#graph-detail").replaceChildren(h("p", { class: "muted" }, "Select an entity. Drag to move it, scroll to zoom."));
  $("#search-out").replaceChildren();
  markCurrentUser();
  showTab(state.tab);
}

// -- tabs ---------------------------------------------------------------------------------------

const TABS = ["memories", "search", "graph", "changes", "jobs"];
const LOADERS = {
  memories: () => loadMemories(),
  search: () => $("#search-form [name=query]").focus(),
  graph: () => loadGraph(),
  changes: () => Promise.all([loadRuns(), loadChanges(false)]),
  jobs: () => loadJobs(false),
};

function showTab(name, focus = false) {
  state.tab = name;
  for (const tab of TABS) {
    const button = $(`#tab-${tab}`);
    const active = tab === name;
    button.setAttribute("aria-selected", String(active));
    button.tabIndex = active ? 0 : -1;
    $(`#panel-${tab}`).hidden = !active;
  }
  if (focus) $(`#tab-${name}`).focus();
  if (!state.loaded.has(name)) {
    state.loaded.add(name);
    LOADERS[name]();
  }
}

function tabKeys(event) {
  const i = TABS.indexOf(state.tab);
  const next = { ArrowRight: i + 1, ArrowLeft: i - 1, Home: 0, End: TABS.length - 1 }[event.key];
  if (next === undefined) return;
  event.preventDefault();
  showTab(TABS[(next + TABS.length) % TABS.length], true);
}

// -- memories -----------------------------------------------------------------------------------

function memoryQuery() {
  const form = new FormData($("#memory-filters"));
  const day = (value, plus = 0) => {
    if (!value) return undefined;
    const d = new Date(`${value}T00:00`);
    d.setDate(d.getDate() + plus);
    return d.toISOString();
  };
  return {
    user_id: state.user,
    type: form.get("type"),
    status: form.get("status"),
    since: day(form.get("since")),
    until: day(form.get("until"), 1), // the whole "until" day
    limit: form.get("limit"),
    cursor: state.memCursors[state.memPage],
  };
}

async function loadMemories() {
  const body = $("#memory-table tbody");
  body.replaceChildren(h("tr", {}, h("td", { colspan: 5, class: "muted" }, "Loading…")));
  const page = await guarded(() => state.api.get("v1/memories", memoryQuery()), body);
  if (!page) return;
  body.replaceChildren();
  for (const m of page.items) {
    body.append(h("tr", { "data-id": m.id },
      h("td", { class: "content-cell" },
        h("button", { type: "button", class: "link", onclick: () => showMemory(m.id) }, clip(m.content, 160))),
      h("td", {}, badge(m.type), h("span", { class: "muted" }, ` ${m.kind || ""}`)),
      h("td", {}, badge(m.status || "active"), m.pinned ? badge("pinned") : null),
      h("td", { class: "nowrap" }, when(m.event_at || m.created_at)),
      h("td", {}, chips(m.source_message_ids))));
  }
  if (!page.items.length) {
    body.append(h("tr", {}, h("td", { colspan: 5, class: "muted" }, "No memories match these filters.")));
  }
  state.memCursors[state.memPage + 1] = page.next_cursor;
  $("#mem-prev").disabled = state.memPage === 0;
  $("#mem-next").disabled = !page.next_cursor;
  $("#mem-page").textContent = `page ${state.memPage + 1}`;
}

async function showMemory(id) {
  const pane = $("#memory-detail");
  pane.replaceChildren(h("p", { class: "muted" }, "Loading…"));
  for (const row of document.querySelectorAll("#memory-table tr[aria-selected]")) row.removeAttribute("aria-selected");
  document.querySelector(`#memory-table tr[data-id="${id}"]`)?.setAttribute("aria-selected", "true");
  const memory = await guarded(() => state.api.get(`v1/memories/${seg(id)}`), pane);
  if (!memory) return;
  let events = [];
  try {
    events = (await state.api.get(`v1/memories/${seg(id)}/history`)).events;
  } catch (error) {
    // 404: no event recorded for it (yet); anything else is worth saying.
    if (!(error instanceof ApiError && error.status === 404)) toast(explainError(error));
  }
  const field = (label, value) => (value ? [h("dt", {}, label), h("dd", {}, value)] : []);
  fill(pane,
    h("h3", {}, "Memory ", h("code", {}, short(memory.id))),
    h("p", { class: "memory-content" }, memory.content),
    h("dl", { class: "fields" },
      field("Type", `${memory.type} · ${memory.kind || ""}`),
      field("Status", [badge(memory.status || "active"), memory.pinned ? badge("pinned") : ""]),
      field("Speaker", memory.speaker && `${memory.speaker}${memory.role ? ` (${memory.role})` : ""}`),
      field("Session", memory.session_id),
      field("Agent", memory.agent_id),
      field("Happened", when(memory.event_at)),
      field("Valid", memory.valid_from || memory.valid_to
        ? `${when(memory.valid_from)} → ${memory.valid_to ? when(memory.valid_to) : "now"}` : null),
      field("Stored", when(memory.created_at)),
      field("Id", h("code", {}, memory.id))),
    h("h4", {}, "Provenance"),
    h("p", {}, chips(memory.source_message_ids)),
    Object.keys(memory.metadata || {}).length
      ? [h("h4", {}, "Metadata"), h("pre", { class: "json" }, JSON.stringify(memory.metadata, null, 2))]
      : null,
    h("h4", { id: "history-title" }, `History (${events.length})`),
    events.length
      ? h("ol", { class: "events", "aria-labelledby": "history-title" }, events.map((e) => eventItem(e, false)))
      : h("p", { class: "muted" }, "No recorded changes."));
}

function diff(before, after) {
  if (!before && after) return h("p", { class: "muted" }, clip(String(after.content ?? JSON.stringify(after)), 200));
  if (before && !after) return h("p", { class: "muted" }, `removed: ${clip(String(before.content ?? ""), 200)}`);
  const keys = [...new Set([...Object.keys(before || {}), ...Object.keys(after || {})])];
  const changed = keys.filter((k) => JSON.stringify(before?.[k]) !== JSON.stringify(after?.[k]));
  if (!changed.length) return null;
  const show = (v) => (v === null || v === undefined ? "—" : clip(typeof v === "string" ? v : JSON.stringify(v), 120));
  return h("dl", { class: "diff" }, changed.map((k) => [
    h("dt", {}, k),
    h("dd", {}, h("del", {}, show(before?.[k])), " → ", h("ins", {}, show(after?.[k]))),
  ]));
}

function eventItem(event, withMemory) {
  return h("li", { class: "event" },
    h("div", { class: "event-head" },
      badge(event.op, "op"),
      h("span", { class: "nowrap" }, when(event.at)),
      h("span", { class: "muted" }, `by ${event.actor}`),
      event.run_id ? h("span", { class: "muted" }, "run ", h("code", {}, short(event.run_id))) : null,
      withMemory && event.memory_id
        ? h("button", { type: "button", class: "link", onclick: () => openMemory(event.memory_id) },
          `memory ${short(event.memory_id)}`)
        : null),
    diff(event.before, event.after));
}

function openMemory(id) {
  showTab("memories", true);
  showMemory(id);
}

// -- search and context -------------------------------------------------------------------------

function signalBar(explain, scale) {
  const bar = h("div", { class: "bar", "aria-hidden": "true" });
  for (const [name] of SIGNALS) {
    const value = explain[name] || 0;
    if (value <= 0) continue;
    const segment = h("span", { class: `seg seg-${name}`, title: `${name} ${signed(value)}` });
    segment.style.width = `${(100 * value) / scale}%`;
    bar.append(segment);
  }
  return bar;
}

function whyItMatched(explain) {
  const notes = SIGNALS.filter(([name]) => Math.abs(explain[name] || 0) >= 0.005).map(([name, help]) => {
    const value = explain[name];
    const raw = name === "dense" ? ` (cosine ${explain.cosine.toFixed(2)})`
      : name === "keyword" ? ` (BM25 ${explain.bm25.toFixed(2)})` : "";
    return h("li", { class: `signal ${value < 0 ? "negative" : ""}`, title: help },
      h("span", { class: `dot seg-${name}` }), `${name} ${signed(value)}${raw}`);
  });
  return h("ul", { class: "signals", "aria-label": "score by signal" }, notes);
}

function resultCard(item, rank, scale) {
  const explain = item.metadata?.explain;
  return h("li", { class: "result card" },
    h("div", { class: "result-head" },
      h("span", { class: "rank" }, `#${rank}`),
      h("span", { class: "score", title: "fused score (z units)" }, `score ${item.score?.toFixed(3) ?? "—"}`),
      badge(item.type), h("span", { class: "muted" }, item.kind || ""),
      item.status && item.status !== "active" ? badge(item.status) : null,
      h("span", { class: "muted nowrap" }, when(item.valid_from || item.event_at)),
      h("button", { type: "button", class: "link push", onclick: () => openMemory(item.id) }, "history →")),
    h("p", { class: "memory-content" }, item.content),
    explain ? [signalBar(explain, scale), whyItMatched(explain)] : null,
    h("div", { class: "muted small" }, "sources ", chips(item.source_message_ids)));
}

async function runSearch(event) {
  event.preventDefault();
  const form = new FormData(event.target);
  const mode = event.submitter?.value || "search";
  const out = $("#search-out");
  const asOf = form.get("as_of") ? new Date(form.get("as_of")).toISOString() : undefined;
  const body = { query: form.get("query"), user_id: state.user };
  if (asOf) body.as_of = asOf;
  out.replaceChildren(h("p", { class: "muted" }, mode === "search" ? "Searching…" : "Building context…"));
  const started = performance.now();
  if (mode === "context") {
    const answer = await guarded(() => state.api.post("v1/context", body), out);
    if (!answer) return;
    fill(out,
      h("p", { class: "muted" }, `${answer.tokens} tokens, ${answer.items.length} memories, ${Math.round(performance.now() - started)} ms`),
      h("pre", { class: "context", "aria-label": "context block" }, answer.context || "(empty)"),
      h("ol", { class: "results" }, answer.items.map((item, i) => resultCard(item, i + 1, 1))));
    return;
  }
  body.limit = Number(form.get("limit")) || 10;
  body.types = form.getAll("types");
  body.explain = true;
  if (!body.types.length) delete body.types;
  const answer = await guarded(() => state.api.post("v1/search", body), out);
  if (!answer) return;
  const positive = (e) => SIGNALS.reduce((sum, [name]) => sum + Math.max(0, e?.[name] || 0), 0);
  const scale = Math.max(1e-6, ...answer.results.map((r) => positive(r.metadata?.explain)));
  fill(out,
    h("p", { class: "muted" }, `${answer.results.length} results in ${Math.round(performance.now() - started)} ms`),
    answer.results.length
      ? h("ol", { class: "results", "aria-label": "search results" }, answer.results.map((r, i) => resultCard(r, i + 1, scale)))
      : h("p", { class: "muted" }, "Nothing found."));
}

// -- graph --------------------------------------------------------------------------------------

async function loadGraph(entity, depth) {
  const form = $("#graph-form");
  if (entity !== undefined) form.entity.value = entity;
  if (depth !== undefined) form.depth.value = String(depth);
  const note = $("#graph-note");
  note.textContent = "Loading…";
  const query = { user_id: state.user, entity: form.entity.value.trim(), depth: form.depth.value };
  let graph;
  try {
    graph = await state.api.get("v1/graph", query);
  } catch (error) {
    if (error instanceof ApiError && error.status === 401) return logout("Your key stopped working.");
    note.textContent = explainError(error);
    return;
  }
  const svg = $("#graph");
  const shown = drawGraph(svg, graph, {
    onSelect: showEntity,
    onFocus: (name) => loadGraph(name),
  });
  note.textContent = graph.entities.length
    ? `${shown.shown} of ${shown.total} entities${shown.shown < shown.total ? " (most mentioned)" : ""}, ${shown.relations} relations`
    : "No entities yet.";
}

function showEntity(entity, relations) {
  fill($("#graph-detail"),
    h("h3", {}, h("span", { class: "dot", "data-colour": entity.type }), entity.name),
    h("dl", { class: "fields" },
      h("dt", {}, "Type"), h("dd", {}, entity.type),
      h("dt", {}, "Mentions"), h("dd", {}, String(entity.mention_count)),
      entity.aliases.length ? [h("dt", {}, "Aliases"), h("dd", {}, entity.aliases.join(", "))] : null),
    h("h4", {}, `Relations (${relations.length})`),
    relations.length
      ? h("ul", { class: "relations" }, relations.map((r) => h("li", {},
        h("strong", {}, r.subject), ` ${r.predicate.replaceAll("_", " ")} `, h("strong", {}, r.object),
        h("div", { class: "muted small" }, r.fact),
        r.valid_to ? h("div", { class: "muted small" }, `until ${when(r.valid_to)}`) : null)))
      : h("p", { class: "muted" }, "None shown."),
    h("h4", {}, "Mentioned in"),
    h("p", {}, chips(entity.source_message_ids)),
    h("button", { type: "button", onclick: () => loadGraph(entity.name) }, "Centre the graph here"));
  const dot = $("#graph-detail .dot");
  dot.style.background = colourOf(entity.type);
}

// -- consolidation runs and changes -------------------------------------------------------------

function runSummary(result) {
  const totals = result?.totals;
  if (!totals) return "—";
  const parts = ["superseded", "merged", "summarised", "archived", "purged"]
    .filter((k) => totals[k]).map((k) => `${totals[k]} ${k}`);
  return parts.join(" · ") || "no changes";
}

async function loadRuns() {
  const body = $("#runs-table tbody");
  const page = await guarded(() => state.api.get("v1/jobs", { kind: "consolidate", limit: 20 }), body);
  if (!page) return;
  body.replaceChildren();
  for (const run of page.jobs) {
    body.append(h("tr", {},
      h("td", {}, h("button", { type: "button", class: "link", onclick: () => { state.runId = run.job_id; loadChanges(false); } },
        h("code", {}, short(run.job_id)))),
      h("td", {}, badge(run.status)),
      h("td", { class: "nowrap" }, when(run.created_at)),
      h("td", {}, run.user_id || "all users"),
      h("td", {}, run.error ? h("span", { class: "error" }, clip(run.error, 80)) : runSummary(run.result))));
  }
  if (!page.jobs.length) body.append(h("tr", {}, h("td", { colspan: 5, class: "muted" }, "No consolidation runs yet.")));
}

async function loadChanges(append) {
  const list = $("#changes-list");
  const title = $("#changes-title");
  fill(title, state.runId ? `Changes made by run ${short(state.runId)} ` : "Recent changes",
    state.runId ? h("button", { type: "button", class: "link", onclick: () => { state.runId = null; loadChanges(false); } }, "show all") : null);
  const query = { user_id: state.user, run_id: state.runId, limit: 50, cursor: append ? state.changesCursor : undefined };
  const page = await guarded(() => state.api.get("v1/history", query), append ? undefined : list);
  if (!page) return;
  if (!append) list.replaceChildren();
  list.append(...page.events.map((e) => eventItem(e, true)));
  if (!list.children.length) list.append(h("li", { class: "muted" }, "No changes recorded."));
  state.changesCursor = page.next_cursor;
  $("#changes-more").hidden = !page.next_cursor;
}

async function consolidateNow() {
  const status = $("#consolidate-status");
  status.textContent = "Starting…";
  let job;
  try {
    job = await state.api.post("v1/consolidate", { user_id: state.user });
  } catch (error) {
    status.textContent = error instanceof ApiError && (error.status === 404 || error.status === 405)
      ? "This server does not offer POST /v1/consolidate."
      : explainError(error);
    return;
  }
  for (let i = 0; i < 600; i++) {
    const done = await guarded(() => state.api.get(`v1/jobs/${seg(job.job_id)}`));
    if (!done) return;
    status.textContent = `run ${short(job.job_id)}: ${done.status}`;
    if (done.status === "succeeded" || done.status === "failed") break;
    await new Promise((resolve) => setTimeout(resolve, 500));
  }
  state.runId = job.job_id;
  await Promise.all([loadRuns(), loadChanges(false)]);
  state.loaded.delete("memories");
}

// -- jobs ---------------------------------------------------------------------------------------

async function loadJobs(append) {
  const body = $("#jobs-table tbody");
  const form = new FormData($("#job-filters"));
  const query = {
    user_id: state.user, status: form.get("status"), kind: form.get("kind"), limit: 50,
    cursor: append ? state.jobsCursor : undefined,
  };
  const page = await guarded(() => state.api.get("v1/jobs", query), append ? undefined : body);
  if (!page) return;
  if (!append) body.replaceChildren();
  for (const job of page.jobs) {
    body.append(h("tr", {},
      h("td", {}, h("button", { type: "button", class: "link", onclick: () => showJob(job.job_id) }, h("code", {}, short(job.job_id)))),
      h("td", {}, job.kind || "—"),
      h("td", {}, badge(job.status)),
      h("td", { class: "nowrap" }, when(job.created_at)),
      h("td", {}, job.error ? h("span", { class: "error" }, clip(job.error, 80)) : "")));
  }
  if (!body.children.length) body.append(h("tr", {}, h("td", { colspan: 5, class: "muted" }, "No jobs.")));
  state.jobsCursor = page.next_cursor;
  $("#jobs-more").hidden = !page.next_cursor;
}

async function showJob(id) {
  const pane = $("#job-detail");
  const job = await guarded(() => state.api.get(`v1/jobs/${seg(id)}`), pane);
  if (!job) return;
  fill(pane,
    h("h3", {}, "Job ", h("code", {}, short(job.job_id))),
    h("dl", { class: "fields" },
      h("dt", {}, "Kind"), h("dd", {}, job.kind || "—"),
      h("dt", {}, "Status"), h("dd", {}, badge(job.status)),
      h("dt", {}, "Created"), h("dd", {}, when(job.created_at)),
      h("dt", {}, "Updated"), h("dd", {}, when(job.updated_at)),
      h("dt", {}, "Id"), h("dd", {}, h("code", {}, job.job_id))),
    job.error ? [h("h4", {}, "Error"), h("pre", { class: "json error" }, job.error)] : null,
    job.result ? [h("h4", {}, "Result"), h("pre", { class: "json" }, JSON.stringify(job.result, null, 2))] : null);
}

// -- wiring -------------------------------------------------------------------------------------

function wire() {
  $("#login-form").addEventListener("submit", (event) => {
    event.preventDefault();
    login($("#api-key").value.trim());
  });
  $("#logout").addEventListener("click", () => logout());
  $("#user-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const id = $("#user-id").value.trim();
    if (id) selectUser(id);
  });
  $("#more-users").addEventListener("click", async () => {
    const page = await guarded(() => state.api.get("v1/users", { limit: 100, cursor: state.usersCursor }));
    if (page) renderUsers(page);
  });
  for (const tab of TABS) $(`#tab-${tab}`).addEventListener("click", () => showTab(tab));
  $(".tabs").addEventListener("keydown", tabKeys);
  $("#memory-filters").addEventListener("submit", (event) => {
    event.preventDefault();
    state.memCursors = [null];
    state.memPage = 0;
    loadMemories();
  });
  $("#mem-next").addEventListener("click", () => { state.memPage += 1; loadMemories(); });
  $("#mem-prev").addEventListener("click", () => { state.memPage = Math.max(0, state.memPage - 1); loadMemories(); });
  $("#search-form").addEventListener("submit", runSearch);
  $("#graph-form").addEventListener("submit", (event) => { event.preventDefault(); loadGraph(); });
  $("#changes-more").addEventListener("click", () => loadChanges(true));
  $("#consolidate-now").addEventListener("click", consolidateNow);
  $("#job-filters").addEventListener("submit", (event) => { event.preventDefault(); loadJobs(false); });
  $("#jobs-more").addEventListener("click", () => loadJobs(true));
  $("#signal-legend").append(...SIGNALS.map(([name, help]) =>
    h("span", { class: "legend-item", title: help }, h("span", { class: `dot seg-${name}` }), name)));
  const saved = sessionStorage.getItem(KEY);
  if (saved) login(saved, true);
  else $("#api-key").focus();
}

wire();
