// query.html: the workspace's tasks kept in a TanStack Query cache by rtlib-query.js, without a framework:
// QueryObservers render the list, the open task and its viewers; Save is an optimistic update that the
// server confirms (or refuses: then it is rolled back on screen). A demo of the wiring in docs/web-client.md.
import { RtlibClient } from "./rtlib-client.js";
import { bindQueryClient } from "./rtlib-query.js";
import { QueryClient, QueryObserver } from "./tanstack-query-core.js";

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.hash.slice(1)); // the token stays out of requests and server logs
const workspaceId = params.get("workspace");
const token = params.get("token");
const LABELS = { connecting: "Connecting…", connected: "Connected", reconnecting: "Reconnecting…",
  offline: "Offline" };

function setStatus(status) {
  $("conn").dataset.status = status;
  $("conn-text").textContent = LABELS[status] ?? status;
}

function notice(text) {
  $("notice").hidden = !text;
  $("notice").textContent = text ?? "";
}

if (!workspaceId || !token) {
  $("login").hidden = false;
  setStatus("offline");
} else {
  start();
}

function start() {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  const client = new RtlibClient({ url: `${scheme}//${location.host}/ws`, token, workspaceId });
  const queryClient = new QueryClient();
  const rq = bindQueryClient(client, queryClient);
  window.rtlibQuery = { client, queryClient, rq }; // for the browser test and the curious
  $("workspace").textContent = `· ${workspaceId}`;
  $("app").hidden = false;
  client.addEventListener("status", (e) => {
    setStatus(e.detail.status);
    if (e.detail.status === "connected") $("me").textContent = client.userId;
  });

  const items = new Map(); // taskId -> <li>
  let open = null; // {taskId, task: QueryObserver, viewers: QueryObserver, unsubscribe: [], stopView}
  const dirty = new Set(); // form fields typed into since the last render or save

  new QueryObserver(queryClient, rq.tasksQuery()).subscribe(({ data, isFetching }) => {
    $("list-state").textContent = isFetching ? "(loading…)" : "";
    for (const row of data ?? []) renderItem(row);
  });

  function renderItem(row) {
    let li = items.get(row.taskId);
    if (!li) {
      li = document.createElement("li");
      li.innerHTML = '<button type="button" class="task"><span class="title"></span>' +
        '<span class="status"></span></button>';
      li.firstChild.dataset.taskId = row.taskId;
      li.firstChild.addEventListener("click", () => openTask(row.taskId));
      const next = [...items.keys()].sort().find((id) => id > row.taskId);
      $("tasks").insertBefore(li, next ? items.get(next) : null);
      items.set(row.taskId, li);
    }
    const button = li.firstChild;
    button.querySelector(".title").textContent = row.fields.title || "(untitled)";
    button.querySelector(".status").textContent = `${row.fields.status ?? ""} · v${row.version}`;
    button.dataset.pending = String(row.pending > 0);
    button.setAttribute("aria-current", String(open?.taskId === row.taskId));
  }

  function openTask(taskId) {
    closeTask();
    notice(null);
    dirty.clear();
    const task = new QueryObserver(queryClient, rq.taskQuery(taskId));
    const viewers = new QueryObserver(queryClient, rq.viewersQuery(taskId));
    open = { taskId, task, viewers, stopView: rq.view(taskId) };
    open.unsubscribe = [task.subscribe(({ data }) => renderTask(taskId, data)),
      viewers.subscribe(({ data }) => renderViewers(data ?? []))];
    renderTask(taskId, task.getCurrentResult().data, true);
    renderViewers(viewers.getCurrentResult().data ?? []);
    for (const [id, li] of items) li.firstChild.setAttribute("aria-current", String(id === taskId));
    $("detail").hidden = false;
    $("f-title").focus();
  }

  function closeTask() {
    if (!open) return;
    for (const u of open.unsubscribe) u();
    open.stopView();
    items.get(open.taskId)?.firstChild.setAttribute("aria-current", "false");
    open = null;
    $("detail").hidden = true;
  }

  function renderTask(taskId, task, force = false) {
    const fields = task?.fields ?? {};
    $("detail-id").textContent = taskId;
    $("detail-state").textContent = task ? `Version ${task.version}${task.pending ? " · saving…" : ""}` : "";
    for (const name of ["title", "status"]) {
      // A field the user is typing in keeps its text; every other field follows the query.
      if (force || !dirty.has(name)) $(`f-${name}`).value = fields[name] ?? (name === "status" ? "todo" : "");
    }
    const extra = Object.entries(fields).filter(([name]) => name !== "title" && name !== "status");
    $("extra").replaceChildren(...extra.flatMap(([name, value]) => {
      const dt = document.createElement("dt");
      const dd = document.createElement("dd");
      dt.textContent = name;
      dd.textContent = typeof value === "string" ? value : JSON.stringify(value);
      return [dt, dd];
    }));
  }

  function renderViewers(viewers) {
    $("viewers").replaceChildren(...viewers.map((user) => {
      const chip = document.createElement("span");
      chip.className = "viewer";
      chip.textContent = user === client.userId ? `${user} (you)` : user;
      return chip;
    }));
    if (!viewers.length) $("viewers").textContent = "…";
  }

  for (const name of ["title", "status"]) $(`f-${name}`).addEventListener("input", () => dirty.add(name));
  $("close").addEventListener("click", closeTask);
  $("edit").addEventListener("submit", (e) => {
    e.preventDefault();
    if (!open) return;
    const { taskId } = open;
    const current = open.task.getCurrentResult().data?.fields ?? {};
    const changes = {};
    for (const name of ["title", "status"]) {
      const value = name === "title" ? $("f-title").value.trim() : $(`f-${name}`).value;
      if (value !== (current[name] ?? "") && (name !== "title" || value)) changes[name] = value;
    }
    // The field name is sent as typed: the server is the judge (protocol.md §5), and a refusal rolls back.
    if ($("f-field").value) changes[$("f-field").value] = $("f-value").value;
    dirty.clear();
    $("f-field").value = $("f-value").value = "";
    if (!Object.keys(changes).length) return;
    rq.updateTask(taskId, changes).then(() => notice(null),
      (err) => notice(`Not saved, rolled back: ${err.message}`));
  });
  addEventListener("keydown", (e) => { if (e.key === "Escape") closeTask(); });

  client.connect();
  addEventListener("pagehide", () => client.close());
}
