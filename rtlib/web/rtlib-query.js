// rtlib-query.js: binds an RtlibClient (rtlib-client.js) to a TanStack Query QueryClient (@tanstack/query-core,
// which @tanstack/react-query, vue-query, solid-query ... wrap). A plain ES module, no build step, no imports:
// it uses the QueryClient instance it is given. docs/web-client.md, "with TanStack Query", shows the wiring.
//
// The rule: the query cache is written only from the client's version-ordered TaskCache (never from a raw
// task.updated), plus a pending overlay of this tab's unconfirmed edits on top. Keys, for workspace ws:
//   ["rtlib", ws, "tasks"]           every task, sorted by id: [{taskId, version, fields, pending}]
//   ["rtlib", ws, "tasks", taskId]   one task: {taskId, version, fields, pending}, or null if it does not exist
//   ["rtlib", ws, "viewers", taskId] user ids viewing the task, sorted (for tasks shown with view())
//   ["rtlib", ws, "update"]          the mutation key of updateTask / updateMutation()
// `fields` is the server's state at `version` with this tab's unconfirmed edits applied over it; `pending` is
// how many such edits it shows (0: exactly the server's state).

export const rtlibKeys = {
  all: (ws) => ["rtlib", ws],
  tasks: (ws) => ["rtlib", ws, "tasks"],
  task: (ws, taskId) => ["rtlib", ws, "tasks", taskId],
  viewers: (ws, taskId) => ["rtlib", ws, "viewers", taskId],
  update: (ws) => ["rtlib", ws, "update"],
};

/** Bind once per client; returns the binding (queries, mutation, view/unview, close). */
export function bindQueryClient(client, queryClient) {
  return new RtlibQuery(client, queryClient);
}

export class RtlibQuery {
  constructor(client, queryClient) {
    const ws = client.workspaceId;
    this.client = client;
    this.queryClient = queryClient;
    this.keys = {
      all: rtlibKeys.all(ws), tasks: rtlibKeys.tasks(ws), update: rtlibKeys.update(ws),
      task: (id) => rtlibKeys.task(ws, id), viewers: (id) => rtlibKeys.viewers(ws, id),
    };
    this.#overlays = new Map(); // taskId -> [{changes, version}]: this tab's edits not yet in the TaskCache
    this.#viewCounts = new Map(); // taskId -> how many view() calls are open
    this.#heard = new Set(); // viewed tasks whose viewer list came since view()
    this.#waiters = new Set();
    this.#loaded = false; // a task.list load completed and no new one started
    this.#loads = 0; // task.list loads completed
    this.#connections = 0; // welcomes seen
    // The client pushes; queries never poll. Refetches (invalidation) wait for the client's own loading.
    queryClient.setQueryDefaults(this.keys.all, {
      queryFn: ({ queryKey }) => this.#fetch(queryKey), staleTime: Infinity, networkMode: "always", retry: false,
      refetchOnWindowFocus: false, refetchOnReconnect: false, structuralSharing: share,
    });
    queryClient.setMutationDefaults(this.keys.update, this.updateMutation());
    const on = {
      task: (e) => this.#onTask(e.detail.taskId), synced: () => this.#onSynced(), loading: () => this.#onLoading(),
      presence: (e) => this.#onPresence(e.detail), status: (e) => this.#onStatus(e.detail.status),
    };
    for (const [type, fn] of Object.entries(on)) client.addEventListener(type, fn);
    this.#off = () => { for (const [type, fn] of Object.entries(on)) client.removeEventListener(type, fn); };
    if (client.welcome && !client.cache.listing) this.#onSynced(); // bound after the board loaded
  }

  #overlays; #viewCounts; #heard; #waiters; #loaded; #loads; #connections; #off; #poked;

  // --- queries -------------------------------------------------------------------------------------------
  tasksQuery() {
    return { queryKey: this.keys.tasks, queryFn: () => this.#fetch(this.keys.tasks) };
  }

  taskQuery(taskId) {
    return { queryKey: this.keys.task(taskId), queryFn: () => this.#fetch(this.keys.task(taskId)) };
  }

  viewersQuery(taskId) {
    return { queryKey: this.keys.viewers(taskId), queryFn: () => this.#fetch(this.keys.viewers(taskId)) };
  }

  /** Show a task: presence.join (viewer list in viewersQuery) until the returned function (or unview) runs. */
  view(taskId) {
    const n = this.#viewCounts.get(taskId) ?? 0;
    this.#viewCounts.set(taskId, n + 1);
    if (n === 0) {
      this.#heard.delete(taskId);
      this.client.view(taskId);
      // The list shown before is stale: observers wait for presence.state (the server's answer to the join).
      this.queryClient.invalidateQueries({ queryKey: this.keys.viewers(taskId), exact: true });
    }
    let done = false;
    return () => { if (!done) { done = true; this.unview(taskId); } };
  }

  unview(taskId) {
    const n = this.#viewCounts.get(taskId) ?? 0;
    if (n > 1) return void this.#viewCounts.set(taskId, n - 1);
    if (n === 0) return;
    this.#viewCounts.delete(taskId);
    this.client.unview(taskId);
    this.queryClient.setQueryData(this.keys.viewers(taskId), []);
  }

  // --- the optimistic update -----------------------------------------------------------------------------
  /** Mutation options for useMutation / MutationObserver; variables {taskId, changes}. Also registered as the
   *  defaults of the update key. Resolves with {taskId, version} on the ack. */
  updateMutation() {
    return {
      mutationKey: this.keys.update,
      networkMode: "always", // the client knows the connection; TanStack's onlineManager does not
      retry: 0, // an unacknowledged update is refetched, never blindly re-sent
      mutationFn: ({ taskId, changes }) => this.client.update(taskId, changes),
      onMutate: ({ taskId, changes }) => {
        const overlay = { changes, version: null };
        this.#overlays.set(taskId, [...(this.#overlays.get(taskId) ?? []), overlay]);
        this.#write(taskId); // shown at once
        return { overlay };
      },
      onSuccess: ({ version }, { taskId }, ctx) => {
        // The ack says "your edit is version N": keep showing it until the cache has applied N (protocol.md §8).
        if (ctx?.overlay) ctx.overlay.version = version;
        this.#onTask(taskId);
      },
      onError: (err, { taskId }, ctx) => {
        this.#drop(taskId, (o) => o === ctx?.overlay);
        this.#write(taskId); // rolled back to the server's state as the cache has it
        // No `code`: not refused by the server but unknown (no ack, the connection dropped): refetch, do not
        // guess. A refused edit (an error event with its ref) changed nothing on the server.
        if (!err?.code) {
          this.queryClient.invalidateQueries({ queryKey: this.keys.task(taskId), exact: true, refetchType: "all" });
        }
      },
    };
  }

  /** Run one optimistic update through the mutation cache (what useMutation(updateMutation()).mutate does). */
  updateTask(taskId, changes) {
    const qc = this.queryClient;
    return qc.getMutationCache().build(qc, this.updateMutation()).execute({ taskId, changes });
  }

  /** Stop listening to the client (the query data stays). */
  close() {
    this.#off();
    for (const w of this.#waiters) w.reject(new Error("rtlib-query closed"));
    this.#waiters.clear();
  }

  // --- what the client says ------------------------------------------------------------------------------
  #onTask(taskId) {
    const e = this.client.cache.tasks.get(taskId);
    // An edit is in the cache once its version is: drop it from the overlay (a resync to a newer snapshot too).
    if (e) this.#drop(taskId, (o) => o.version !== null && o.version <= e.version);
    this.#write(taskId);
    this.#poke();
  }

  #onSynced() {
    this.#loaded = true;
    this.#loads += 1;
    this.queryClient.setQueryData(this.keys.tasks, this.#rows());
    this.#poke();
  }

  /** A (re)load with task.list: after a reconnect that was not resumed (or an interrupted load). Every task
   *  may be stale; after `recovered: true` nothing is (the missed events are replayed) and this never runs. */
  #onLoading() {
    this.#loaded = false;
    this.queryClient.invalidateQueries({ queryKey: this.keys.tasks });
  }

  #onStatus(status) {
    if (status === "connected") this.#connections += 1;
    this.#poke();
  }

  #onPresence({ taskId, viewers }) {
    this.#heard.add(taskId);
    this.queryClient.setQueryData(this.keys.viewers(taskId), viewers);
    this.#poke();
  }

  // --- views and writes ----------------------------------------------------------------------------------
  #view(taskId) {
    const e = this.client.cache.tasks.get(taskId);
    const overlays = this.#overlays.get(taskId) ?? [];
    if (!overlays.length && !(e?.version > 0)) return null;
    const fields = { ...e?.fields };
    for (const o of overlays) Object.assign(fields, o.changes);
    return { taskId, version: e?.version ?? 0, fields, pending: overlays.length };
  }

  #rows() {
    const ids = new Set(this.#overlays.keys());
    for (const [id, e] of this.client.cache.tasks) if (e.version > 0) ids.add(id);
    return [...ids].sort().map((id) => this.#view(id)).filter(Boolean);
  }

  #write(taskId) {
    const qc = this.queryClient;
    const row = qc.setQueryData(this.keys.task(taskId), this.#view(taskId)); // structurally shared
    qc.setQueryData(this.keys.tasks, (rows) => rows && upsert(rows, taskId, row));
    // During a reload the list stays stale (invalidated) until "synced", whatever single rows it shows.
    if (!this.#loaded) qc.invalidateQueries({ queryKey: this.keys.tasks, exact: true, refetchType: "none" });
  }

  #drop(taskId, gone) {
    const kept = (this.#overlays.get(taskId) ?? []).filter((o) => !gone(o));
    if (kept.length) this.#overlays.set(taskId, kept);
    else this.#overlays.delete(taskId);
  }

  // --- queryFn: what a (re)fetch of each key waits for ---------------------------------------------------
  async #fetch(key) {
    const [, , kind, taskId] = key;
    const c = this.client;
    if (kind === "tasks" && taskId === undefined) {
      await this.#until(() => c.welcome && this.#loaded);
      return this.#rows();
    }
    if (kind === "viewers") {
      await this.#until(() => !this.#viewCounts.has(taskId) || this.#heard.has(taskId));
      return this.#viewCounts.has(taskId) ? [...(c.viewers.get(taskId) ?? [])].sort() : [];
    }
    const loads = this.#loads;
    for (;;) { // one task: from a load that ran since the fetch began or is running, else a task.get
      await this.#until(() => c.welcome);
      if (this.#loads > loads) return this.#view(taskId);
      if (c.cache.listing) {
        await this.#until(() => !c.cache.listing && !c.cache.tasks.get(taskId)?.syncing);
        return this.#view(taskId);
      }
      const connection = this.#connections;
      try {
        await c.refresh(taskId);
        return this.#view(taskId);
      } catch (err) {
        if (err?.code) throw err; // refused (e.g. not an id)
        // Not sent (the socket is closing): wait for the next connection. Lost or unanswered: try again.
        if (err?.sent === false) await this.#until(() => this.#connections > connection);
      }
    }
  }

  /** Resolves once ready() holds, checked after each client event (in a microtask: the client has finished
   *  handling the frame by then, e.g. a welcome's task.list is under way). */
  #until(ready) {
    if (ready()) return Promise.resolve();
    return new Promise((resolve, reject) => this.#waiters.add({ ready, resolve, reject }));
  }

  #poke() {
    if (this.#poked) return;
    this.#poked = true;
    queueMicrotask(() => {
      this.#poked = false;
      for (const w of this.#waiters) {
        if (w.ready()) {
          this.#waiters.delete(w);
          w.resolve();
        }
      }
    });
  }
}

/** Structural sharing for these shapes (cheaper than a deep compare of the whole list on every update): an
 *  unchanged task keeps its object, an unchanged list or viewer list its array. */
function share(prev, next) {
  if (!prev || !next || typeof next !== "object") return next;
  if (Array.isArray(next)) { // list rows (upsert keeps unchanged rows) or user ids
    if (!Array.isArray(prev) || prev.length !== next.length) return next;
    for (let i = 0; i < next.length; i++) if (prev[i] !== next[i]) return next;
    return prev;
  }
  if (!prev.fields || !next.fields || prev.version !== next.version || prev.pending !== next.pending) return next;
  const keys = Object.keys(next.fields);
  if (keys.length !== Object.keys(prev.fields).length) return next;
  for (const k of keys) if (!(k in prev.fields) || prev.fields[k] !== next.fields[k]) return next;
  return prev;
}

/** rows (sorted by taskId) with one row replaced, inserted or (row null) removed; a new array. */
function upsert(rows, taskId, row) {
  let lo = 0;
  let hi = rows.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (rows[mid].taskId < taskId) lo = mid + 1;
    else hi = mid;
  }
  const found = rows[lo]?.taskId === taskId;
  if (!row && !found) return rows;
  const out = rows.slice();
  if (!row) out.splice(lo, 1);
  else out.splice(lo, found ? 1 : 0, row);
  return out;
}
