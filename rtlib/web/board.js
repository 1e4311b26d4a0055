// The task board: columns by status, inline create/edit, live changes from others (highlighted), a task detail
// view that shows who is viewing *this* task, and a connection indicator. All state comes from RtlibClient.
import { RtlibClient } from "./rtlib-client.js";

const STATUSES = [["todo", "To do"], ["doing", "Doing"], ["done", "Done"]];
const FIELDS = ["title", "status", "assignee", "description"];
const $ = (id) => document.getElementById(id);

const params = new URLSearchParams(location.hash.slice(1)); // the token stays out of requests and server logs
const workspaceId = params.get("workspace");
const token = params.get("token");

if (!workspaceId || !token) {
  $("login").hidden = false;
  setStatus("offline");
} else {
  start();
}

function setStatus(status) {
  const labels = { connecting: "Connecting…", connected: "Connected", reconnecting: "Reconnecting…", offline: "Offline" };
  $("conn").dataset.status = status;
  $("conn-text").textContent = labels[status] ?? status;
}

function start() {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  const client = new RtlibClient({ url: `${scheme}//${location.host}/ws`, token, workspaceId });
  const board = buildColumns();
  let openTask = null;
  window.rtlibBoard = { client }; // for the browser tests and the curious
  $("workspace").textContent = `· ${workspaceId}`;
  $("app").hidden = false;

  client.addEventListener("status", (e) => setStatus(e.detail.status));
  client.addEventListener("expired", () => notice("Your token expired: get a new link to keep working."));
  client.addEventListener("protocolerror", (e) => notice(`The server refused a message: ${e.detail.message}`));
  client.addEventListener("task", (e) => {
    const t = e.detail;
    // Highlight what others changed: a live update, or a task that moved on while we were reconnecting.
    const shown = Number(board.cards.get(t.taskId)?.firstChild.dataset.version ?? 0);
    const fromOther = t.source === "update" ? t.userId !== client.userId : shown > 0 && t.version > shown;
    renderCard(board, t.taskId, t.fields, t.version, fromOther);
    if (openTask === t.taskId) fillDetail(t.taskId, t.fields, t.version);
  });
  client.addEventListener("synced", () => {
    // Cards of tasks the server no longer lists cannot exist (no deletes); just make sure every task is drawn.
    for (const [id, t] of client.tasks) renderCard(board, id, t.fields, t.version, false);
  });
  client.addEventListener("presence", (e) => {
    if (e.detail.taskId === openTask) renderViewers(e.detail.viewers, client.userId);
  });
  client.addEventListener("status", (e) => {
    if (e.detail.status === "connected") $("me").textContent = client.userId;
  });

  $("new-task").addEventListener("submit", (e) => {
    e.preventDefault();
    const input = $("new-title");
    const title = input.value.trim();
    if (!title) return;
    const taskId = `T-${Date.now().toString(36)}${Math.random().toString(36).slice(2, 6)}`;
    send(client, taskId, { title, status: "todo", assignee: client.userId ?? "", description: "" })
      .then((saved) => { if (saved) input.value = ""; });
  });

  // Detail view: join presence on open, leave on close (Esc, the Close button or closing the tab).
  board.root.addEventListener("click", (e) => {
    const card = e.target.closest(".card");
    if (card) openDetail(card.dataset.taskId);
  });
  function openDetail(taskId) {
    openTask = taskId;
    const t = client.tasks.get(taskId);
    fillDetail(taskId, t?.fields ?? {}, t?.version ?? 0, true);
    renderViewers([], client.userId);
    client.view(taskId);
    $("detail").showModal();
  }
  $("detail").addEventListener("close", () => {
    if (openTask) client.unview(openTask);
    const card = openTask && document.querySelector(`.card[data-task-id="${CSS.escape(openTask)}"]`);
    openTask = null;
    card?.focus();
  });
  for (const name of FIELDS) {
    const el = $(`f-${name}`);
    const save = () => {
      if (!openTask) return;
      const current = client.tasks.get(openTask)?.fields?.[name] ?? "";
      const value = name === "title" ? el.value.trim() : el.value;
      if (value === current || (name === "title" && !value)) return;
      send(client, openTask, { [name]: value });
    };
    el.addEventListener(name === "status" ? "change" : "blur", save);
    if (el.tagName === "INPUT") {
      el.addEventListener("keydown", (e) => {
        if (e.key === "Enter") { e.preventDefault(); save(); }
      });
    }
  }
  const select = $("f-status");
  for (const [value, label] of STATUSES) select.append(new Option(label, value));

  client.connect();
  addEventListener("pagehide", () => client.close()); // closes the socket: our presence goes at once
  // Restored from the back/forward cache (recorded: Chromium caches the board, bench/results/page_lifecycle.md):
  // the socket was closed on pagehide, and nothing else would reopen it, so the user would view the task
  // unseen by the others. Reconnect; the welcome re-joins the viewed task.
  addEventListener("pageshow", (e) => { if (e.persisted) client.connect(); });
}

/** Send an update; resolves true once acknowledged, false (with a notice) if it was refused or not sent. */
function send(client, taskId, changes) {
  return client.update(taskId, changes).then(() => {
    notice(null);
    return true;
  }, (err) => {
    notice(`Not saved: ${err.message}`);
    return false;
  });
}

function notice(text) {
  const el = $("notice");
  el.hidden = !text;
  el.textContent = text ?? "";
}

function buildColumns() {
  const root = $("board");
  const lists = new Map();
  for (const [status, label] of STATUSES) {
    const section = document.createElement("section");
    section.className = "column";
    section.dataset.status = status;
    section.setAttribute("aria-labelledby", `col-${status}`);
    section.innerHTML = `<h2 id="col-${status}"><span></span><span class="muted count"></span></h2><ul></ul>`;
    section.querySelector("h2 span").textContent = label;
    root.append(section);
    lists.set(status, section.querySelector("ul"));
  }
  return { root, lists, cards: new Map() };
}

function renderCard(board, taskId, fields, version, highlight) {
  let item = board.cards.get(taskId);
  if (!item) {
    item = document.createElement("li");
    item.innerHTML = `<button type="button" class="card"><span class="title"></span><span class="meta"></span></button>`;
    item.firstChild.dataset.taskId = taskId;
    board.cards.set(taskId, item);
  }
  const card = item.firstChild;
  card.dataset.version = version;
  card.querySelector(".title").textContent = fields.title || "(untitled)";
  card.querySelector(".meta").textContent = `${taskId}${fields.assignee ? ` · ${fields.assignee}` : ""}`;
  const status = board.lists.has(fields.status) ? fields.status : STATUSES[0][0];
  const list = board.lists.get(status);
  if (item.parentElement !== list || !inOrder(item)) insertSorted(list, item, taskId);
  if (highlight) {
    card.classList.remove("flash");
    void card.offsetWidth; // restart the animation for back-to-back changes
    card.classList.add("flash");
  }
  for (const ul of board.lists.values()) ul.parentElement.querySelector(".count").textContent = String(ul.children.length);
}

function inOrder(item) {
  const id = item.firstChild.dataset.taskId;
  const prev = item.previousElementSibling?.firstChild.dataset.taskId;
  const next = item.nextElementSibling?.firstChild.dataset.taskId;
  return (!prev || prev < id) && (!next || id < next);
}

function insertSorted(list, item, taskId) {
  const before = [...list.children].find((li) => li !== item && li.firstChild.dataset.taskId > taskId);
  const hadFocus = document.activeElement === item.firstChild;
  list.insertBefore(item, before ?? null);
  if (hadFocus) item.firstChild.focus();
}

function fillDetail(taskId, fields, version, force = false) {
  $("detail-id").textContent = taskId;
  $("detail-version").textContent = version ? `Version ${version}.` : "";
  for (const name of FIELDS) {
    const el = $(`f-${name}`);
    // Never overwrite what the user is typing; a field they are not in follows the live state.
    if (force || document.activeElement !== el) el.value = fields[name] ?? (name === "status" ? "todo" : "");
  }
}

function renderViewers(viewers, me) {
  const el = $("viewers");
  el.replaceChildren(...viewers.map((user) => {
    const chip = document.createElement("span");
    chip.className = "viewer";
    chip.dataset.user = user;
    chip.textContent = user === me ? `${user} (you)` : user;
    return chip;
  }));
  if (!viewers.length) el.textContent = "…";
}
