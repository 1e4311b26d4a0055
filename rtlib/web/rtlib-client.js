// rtlib-client.js: the browser client of the rtlib wire protocol (docs/protocol.md). A plain ES module, no
// build step, no dependencies. One RtlibClient is one WebSocket to one workspace; it keeps every task of the
// workspace (loaded with task.list, kept current with task.updated in version order), the viewers of the tasks
// this tab views, and it reconnects by itself. Everything it learns comes out as EventTarget events:
//   "status"   {status: "connecting" | "connected" | "reconnecting" | "offline", attempt}
//   "task"     {taskId, version, fields, changes, userId, source: "update" | "snapshot"}
//   "loading"  {}  every task is being (re)loaded with task.list: cached tasks may be stale until "synced"
//   "synced"   {}  every task of the workspace is loaded (after each (re)connect that was not resumed)
//   "resumed"  {recovered}  a reconnect resumed from the last offset: true = the missed events are replayed
//                           (also {recovered: false} on session.resync: the connection stayed open, reloading)
//   "presence" {taskId, viewers}  sorted user ids viewing a task this client views
//   "protocolerror" {code, message, ref}  an error event the server sent (the connection stays open)
// The pure parts (TaskCache, backoffDelay) are exported for tests and for other front ends.

export const DEFAULTS = Object.freeze({
  backoffBase: 500, // ms; reconnect delays grow 0.5, 1, 2, 4 ... s with jitter,
  backoffCap: 15000, // up to 15 s
  offlineAfter: 4, // failed attempts in a row before the status says "offline" (it keeps retrying)
  welcomeTimeout: 5000, // ms without session.welcome after the socket opened: treat the instance as dead
  stallMs: 1000, // a version gap older than this is resynced with task.get (protocol.md §8)
  maxPending: 64, // buffered out-of-order versions of one task before resyncing at once
  pageLimit: 100, // task.list page size
  ackTimeout: 10000, // ms before an update's promise is rejected as unconfirmed
});

/** Reconnect delay in ms for the n-th failed attempt (0-based): "equal jitter" exponential backoff, so a
 *  whole room of clients dropped at once does not come back in lock step, yet nobody retries at 0 ms. */
export function backoffDelay(attempt, { backoffBase = DEFAULTS.backoffBase, backoffCap = DEFAULTS.backoffCap } = {},
  random = Math.random) {
  const ceiling = Math.min(backoffCap, backoffBase * 2 ** Math.min(attempt, 30));
  return ceiling / 2 + random() * (ceiling / 2);
}

/** Tasks kept in version order with the gap-detect-and-resync rule (protocol.md §8). Sans-I/O: the caller
 *  passes the time and sends the task.get requests this returns. */
export class TaskCache {
  constructor({ stallMs = DEFAULTS.stallMs, maxPending = DEFAULTS.maxPending } = {}) {
    this.stallMs = stallMs;
    this.maxPending = maxPending;
    this.tasks = new Map(); // taskId -> {version, fields, pending: Map(version -> {changes, userId}), syncing, gapSince}
    this.listing = false;
  }

  entry(taskId) {
    let e = this.tasks.get(taskId);
    if (!e) {
      // A task first heard of while the board is loading waits for its snapshot like every other task.
      e = { version: 0, fields: {}, pending: new Map(), syncing: this.listing, gapSince: null };
      this.tasks.set(taskId, e);
    }
    return e;
  }

  /** Start (re)loading every task: updates are buffered until each task's snapshot arrives. */
  beginListing() {
    this.listing = true;
    for (const e of this.tasks.values()) e.syncing = true;
  }

  /** The pages are all in: the ids of tasks still waiting for a snapshot (heard of, but not listed). */
  endListing() {
    this.listing = false;
    return [...this.tasks].filter(([, e]) => e.syncing).map(([id]) => id);
  }

  /** Mark one task as resyncing (the caller sends task.get). */
  resync(taskId) {
    this.entry(taskId).syncing = true;
  }

  /** A task.updated. Returns the updates applied now, in version order: [{version, changes, userId}]. */
  onUpdated(taskId, version, changes, userId, now) {
    const e = this.entry(taskId);
    if (version <= e.version) return []; // stale or duplicate
    if (e.syncing || version !== e.version + 1) {
      e.pending.set(version, { changes, userId });
      this.#markGap(e, now);
      return [];
    }
    return this.#apply(e, version, changes, userId, now);
  }

  /** A task.snapshot or a task.page entry. Returns the updates applied after it (buffered newer versions);
   *  null when the snapshot was ignored because the cache is already newer. */
  onSnapshot(taskId, version, fields, now) {
    const e = this.entry(taskId);
    if (!e.syncing && version <= e.version) return null;
    e.fields = { ...fields };
    e.version = version;
    e.syncing = false;
    for (const v of e.pending.keys()) if (v <= version) e.pending.delete(v);
    e.gapSince = null;
    const applied = this.#drain(e);
    this.#markGap(e, now);
    return applied;
  }

  /** Ids whose gap outlived stallMs (or whose buffer overflowed): resync them. */
  stalled(now) {
    const out = [];
    for (const [id, e] of this.tasks) {
      if (e.syncing || e.pending.size === 0) continue;
      if (now - e.gapSince >= this.stallMs || e.pending.size > this.maxPending) out.push(id);
    }
    return out;
  }

  #apply(e, version, changes, userId, now) {
    Object.assign(e.fields, changes);
    e.version = version;
    const applied = [{ version, changes, userId }, ...this.#drain(e)];
    e.gapSince = null;
    this.#markGap(e, now);
    return applied;
  }

  #drain(e) {
    const applied = [];
    let next;
    while ((next = e.pending.get(e.version + 1))) {
      e.pending.delete(e.version + 1);
      e.version += 1;
      Object.assign(e.fields, next.changes);
      applied.push({ version: e.version, ...next });
    }
    return applied;
  }

  #markGap(e, now) {
    if (e.pending.size === 0) e.gapSince = null;
    else if (e.gapSince === null) e.gapSince = now;
  }
}

/** One connection to one workspace, reconnecting by itself. */
export class RtlibClient extends EventTarget {
  constructor({ url, token, workspaceId, WebSocketImpl = globalThis.WebSocket, ...options }) {
    super();
    this.url = url;
    this.token = token;
    this.workspaceId = workspaceId;
    this.options = { ...DEFAULTS, ...options };
    this.WebSocketImpl = WebSocketImpl;
    this.cache = new TaskCache(this.options);
    this.status = "offline";
    this.userId = null;
    this.welcome = null;
    // Where this client is in the workspace history (protocol.md §11a): sent back on reconnect to resume.
    this.offset = null;
    this.epoch = null;
    this.viewing = new Set(); // tasks this tab views (re-joined after every reconnect)
    this.viewers = new Map(); // taskId -> Set of user ids, for viewed tasks only
    this.attempt = 0;
    this.#refs = 0;
    this.#refBase = Math.random().toString(36).slice(2, 10);
    this.#acks = new Map();
    this.#socket = null;
    this.#timers = {};
    this.#closed = true;
    this.#onVisibility = () => this.#visibilityBeat();
  }

  #refs; #refBase; #acks; #socket; #timers; #closed; #onVisibility;

  /** Every known task as {version, fields}, by id. */
  get tasks() {
    const out = new Map();
    for (const [id, e] of this.cache.tasks) if (e.version > 0) out.set(id, { version: e.version, fields: e.fields });
    return out;
  }

  connect() {
    this.#closed = false;
    this.#open();
    globalThis.document?.addEventListener?.("visibilitychange", this.#onVisibility);
    // The browser says the network is back: retry now instead of waiting out the backoff.
    globalThis.addEventListener?.("online", () => {
      if (!this.#closed && !this.#socket) {
        clearTimeout(this.#timers.retry);
        this.#open();
      }
    });
    return this;
  }

  close() {
    this.#closed = true;
    globalThis.document?.removeEventListener?.("visibilitychange", this.#onVisibility);
    this.#stopTimers();
    if (this.#socket) this.#socket.close(1000);
    this.#setStatus("offline");
  }

  /** Send a partial update; resolves with {version} on its ack, rejects on an error or a lost connection. */
  update(taskId, changes) {
    const ref = this.#ref("u");
    return new Promise((resolve, reject) => {
      if (!this.#send("task.update", { taskId, changes, ref })) {
        reject(new Error("not connected: the update was not sent"));
        return;
      }
      const timer = setTimeout(() => this.#settle(ref, new Error("no ack: outcome unknown")), this.options.ackTimeout);
      this.#acks.set(ref, { resolve, reject, timer });
    });
  }

  /** Fetch a task (task.get) through the cache: its snapshot replaces the cached state (updates arriving
   *  meanwhile are buffered, then drained). Resolves with {taskId, version} once the snapshot is applied,
   *  rejects like update(): not connected, an error event, or no reply (the connection lost or ackTimeout). */
  refresh(taskId) {
    const ref = this.#ref("g");
    return new Promise((resolve, reject) => {
      if (!this.#send("task.get", { taskId, ref })) {
        reject(Object.assign(new Error("not connected: the task.get was not sent"), { sent: false }));
        return;
      }
      this.cache.resync(taskId);
      const timer = setTimeout(() => this.#settle(ref, new Error("no task.snapshot")), this.options.ackTimeout);
      this.#acks.set(ref, { resolve, reject, timer });
    });
  }

  /** Start viewing a task: presence.join now, heartbeats on the server's schedule, re-join after reconnects. */
  view(taskId) {
    if (this.viewing.has(taskId)) return;
    this.viewing.add(taskId);
    this.viewers.set(taskId, new Set());
    this.#send("presence.join", { taskId });
  }

  unview(taskId) {
    if (!this.viewing.delete(taskId)) return;
    this.viewers.delete(taskId);
    this.#send("presence.leave", { taskId });
  }

  // --- the socket --------------------------------------------------------------------------------------------
  #open() {
    this.#setStatus(this.attempt === 0 ? "connecting" : this.#retryStatus());
    let q = `token=${encodeURIComponent(this.token)}&workspace=${encodeURIComponent(this.workspaceId)}`;
    if (this.offset && this.epoch) q += `&offset=${encodeURIComponent(this.offset)}&epoch=${encodeURIComponent(this.epoch)}`;
    const ws = new this.WebSocketImpl(`${this.url}?${q}`);
    this.#socket = ws;
    ws.onopen = () => {
      this.#timers.welcome = setTimeout(() => ws.close(4000, "no session.welcome"), this.options.welcomeTimeout);
    };
    ws.onmessage = (m) => {
      if (ws === this.#socket) this.#receive(JSON.parse(m.data));
    };
    ws.onclose = (ev) => {
      if (ws === this.#socket) this.#lost(ev);
    };
    ws.onerror = () => {}; // always followed by close; the console already shows the failure
  }

  #lost(ev) {
    this.#stopTimers();
    this.#socket = null;
    this.welcome = null;
    for (const ref of [...this.#acks.keys()]) this.#settle(ref, new Error("connection lost: outcome unknown"));
    // Presence entries died with the connection; the viewer lists are rebuilt by presence.state after re-join.
    for (const id of this.viewing) this.#emitViewers(id, new Set());
    if (this.#closed) return;
    if (ev.code === 1008 && ev.reason === "token expired") {
      this.#closed = true;
      this.#setStatus("offline");
      this.dispatchEvent(new CustomEvent("expired"));
      return;
    }
    const delay = backoffDelay(this.attempt, this.options);
    this.attempt += 1;
    this.#setStatus(this.#retryStatus());
    this.#timers.retry = setTimeout(() => this.#open(), delay);
  }

  #retryStatus() {
    const offline = globalThis.navigator?.onLine === false || this.attempt >= this.options.offlineAfter;
    return offline ? "offline" : "reconnecting";
  }

  #receive(frame) {
    const p = frame.payload;
    const now = Date.now();
    if (frame.offset) [this.offset, this.epoch] = [frame.offset, frame.epoch];
    switch (frame.type) {
      case "session.welcome":
        return this.#welcomed(frame);
      case "session.resync": // open through a Redis outage, but the missed events are gone (protocol.md §11b)
        return this.#resynced(p);
      case "task.updated":
        return this.#emitApplied(p.taskId, this.cache.onUpdated(p.taskId, p.version, p.changes, frame.userId, now));
      case "task.snapshot": {
        const applied = this.cache.onSnapshot(p.taskId, p.version, p.fields, now);
        if (applied) this.#emitSnapshot(p.taskId, applied);
        if (p.ref) this.#settle(p.ref, null, { taskId: p.taskId, version: p.version }); // a refresh() answered
        return;
      }
      case "task.page":
        return this.#page(p, now);
      case "ack":
        return this.#settle(p.ref, null, { version: p.version, taskId: p.taskId });
      case "presence.state":
        return this.#emitViewers(p.taskId, new Set(p.viewers));
      case "presence.joined":
      case "presence.left":
        return this.#presenceChange(frame.type, p);
      case "presence.probe": // presence mode "probe": answered from this handler, which a hidden tab still runs
        if (this.viewing.size) this.#send("presence.pong", { seq: p.seq });
        return;
      case "error":
        if (p.ref && this.#acks.has(p.ref)) this.#settle(p.ref, Object.assign(new Error(p.message), { code: p.code }));
        this.dispatchEvent(new CustomEvent("protocolerror", { detail: p }));
        return;
      default: // server events may be added: ignore what we do not know
    }
  }

  #welcomed(frame) {
    clearTimeout(this.#timers.welcome);
    this.welcome = frame.payload;
    this.userId = frame.userId;
    this.attempt = 0;
    this.#setStatus("connected");
    for (const taskId of this.viewing) this.#send("presence.join", { taskId });
    this.#startHeartbeat();
    this.#timers.stall = setInterval(() => {
      for (const id of this.cache.stalled(Date.now())) this.#resync(id);
    }, Math.max(50, this.options.stallMs / 4));
    if (frame.payload.recovered === true) {
      // Resumed: the server replays what was missed, in order, right after this welcome (protocol.md §11a).
      this.dispatchEvent(new CustomEvent("resumed", { detail: { recovered: true } }));
      // Nothing to reload, unless the drop cut a task.list short: its unlisted tasks were never loaded. A
      // task.get the drop cut short is sent again (its task would buffer updates for ever).
      if (!this.cache.listing) {
        for (const [id, e] of this.cache.tasks) if (e.syncing) this.#resync(id);
        return;
      }
    } else {
      if (frame.payload.epoch) [this.offset, this.epoch] = [frame.payload.offset, frame.payload.epoch];
      if (frame.payload.recovered === false) {
        this.dispatchEvent(new CustomEvent("resumed", { detail: { recovered: false } }));
      }
    }
    // Events were missed while disconnected and cannot be replayed: reload every task (protocol.md §10).
    this.cache.beginListing();
    this.dispatchEvent(new CustomEvent("loading"));
    this.#send("task.list", { limit: this.options.pageLimit, ref: this.#ref("l") });
  }

  /** As after a welcome that did not recover, on the same connection: keep the new position, re-join what this
   *  tab views, reload every task. */
  #resynced(p) {
    if (p.epoch) [this.offset, this.epoch] = [p.offset, p.epoch];
    for (const taskId of this.viewing) this.#send("presence.join", { taskId });
    this.dispatchEvent(new CustomEvent("resumed", { detail: { recovered: false } }));
    this.cache.beginListing();
    this.dispatchEvent(new CustomEvent("loading"));
    this.#send("task.list", { limit: this.options.pageLimit, ref: this.#ref("l") });
  }

  /** The client-timer heartbeat (protocol.md §9); none in presence mode "probe", where the server's probes
   *  are answered instead. */
  #startHeartbeat() {
    clearInterval(this.#timers.heartbeat);
    const w = this.welcome;
    if (!w || w.presenceMode === "probe") return;
    this.#timers.heartbeat = setInterval(() => this.#beat(), w.heartbeatInterval * 1000);
  }

  #beat() {
    for (const taskId of this.viewing) this.#send("presence.heartbeat", { taskId });
  }

  /** visibilityBeat: beat when the page is hidden or shown, and restart the timer. A timer created from an
   *  event handler starts a new chain: the browser throttles a hidden page's long timer chains hardest. */
  #visibilityBeat() {
    const w = this.welcome;
    if (!w || !w.visibilityBeat || w.presenceMode === "probe" || !this.#socket) return;
    this.#beat();
    this.#startHeartbeat();
  }

  #page(p, now) {
    for (const t of p.tasks) {
      const applied = this.cache.onSnapshot(t.taskId, t.version, t.fields, now);
      if (applied) this.#emitSnapshot(t.taskId, applied);
    }
    if (p.nextCursor !== null) {
      this.#send("task.list", { cursor: p.nextCursor, limit: this.options.pageLimit, ref: this.#ref("l") });
      return;
    }
    for (const id of this.cache.endListing()) this.#send("task.get", { taskId: id, ref: this.#ref("g") });
    this.dispatchEvent(new CustomEvent("synced"));
  }

  #presenceChange(type, p) {
    if (type === "presence.left" && p.userId === this.userId && p.reason === "timeout" && this.viewing.has(p.taskId)) {
      this.#send("presence.join", { taskId: p.taskId }); // our entry expired while we still view: re-join
    }
    const set = this.viewers.get(p.taskId);
    if (!set) return; // not a task this tab shows
    if (type === "presence.joined") set.add(p.userId);
    else set.delete(p.userId);
    this.#emitViewers(p.taskId, set);
  }

  #resync(taskId) {
    this.cache.resync(taskId);
    this.#send("task.get", { taskId, ref: this.#ref("g") });
  }

  // --- helpers ---------------------------------------------------------------------------------------------
  #send(type, payload) {
    const ws = this.#socket;
    if (!ws || ws.readyState !== 1 || !this.welcome) return false;
    ws.send(JSON.stringify({ type, workspaceId: this.workspaceId, payload }));
    return true;
  }

  #ref(kind) {
    // Unique per client instance, not just per page: the server treats a repeated (user, ref) with the same
    // changes as a retry for a few minutes, so a counter restarted by a reload must not collide.
    this.#refs += 1;
    return `${kind}-${this.#refBase}-${this.#refs}`;
  }

  #settle(ref, error, value) {
    const pending = this.#acks.get(ref);
    if (!pending) return;
    this.#acks.delete(ref);
    clearTimeout(pending.timer);
    if (error) pending.reject(error);
    else pending.resolve(value);
  }

  #stopTimers() {
    clearTimeout(this.#timers.welcome);
    clearTimeout(this.#timers.retry);
    clearInterval(this.#timers.heartbeat);
    clearInterval(this.#timers.stall);
    this.#timers = {};
  }

  #setStatus(status) {
    if (status === this.status) return;
    this.status = status;
    this.dispatchEvent(new CustomEvent("status", { detail: { status, attempt: this.attempt } }));
  }

  #emitApplied(taskId, applied) {
    const e = this.cache.tasks.get(taskId);
    for (const a of applied) {
      this.dispatchEvent(new CustomEvent("task", { detail: {
        taskId, version: e.version, fields: e.fields, changes: a.changes, userId: a.userId, source: "update" } }));
    }
  }

  #emitSnapshot(taskId, applied) {
    const e = this.cache.tasks.get(taskId);
    const last = applied.at(-1);
    this.dispatchEvent(new CustomEvent("task", { detail: {
      taskId, version: e.version, fields: e.fields, changes: last ? last.changes : null,
      userId: last ? last.userId : null, source: "snapshot" } }));
  }

  #emitViewers(taskId, set) {
    if (!this.viewing.has(taskId)) return;
    this.viewers.set(taskId, set);
    this.dispatchEvent(new CustomEvent("presence", { detail: { taskId, viewers: [...set].sort() } }));
  }
}
