// node --test tests/web/rtlib-query.test.mjs: rtlib-query.js (RtlibClient -> TanStack QueryClient) against the
// real @tanstack/query-core pinned in tests/web/package.json (`make jstest` installs it with npm ci), the
// client driven with a fake WebSocket. Reports the fields lost on notebook 02's replayed streams (through the
// adapter vs a naive setQueryData merge) and the adapter's size minified + gzipped next to the client's.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { afterEach, test } from "node:test";

import { QueryClient, QueryObserver } from "@tanstack/query-core";

import { RtlibClient } from "../../rtlib/web/rtlib-client.js";
import { bindQueryClient, rtlibKeys } from "../../rtlib/web/rtlib-query.js";
import { streams, TRIALS, WINDOWS } from "./notebook02.mjs";
import { gzipSize, queryCoreBundle, sizeOf, TOOL, VENDORED, WEB } from "./web-build.mjs";

globalThis.CustomEvent ??= class extends Event {
  constructor(type, init = {}) { super(type); this.detail = init.detail; }
};

class FakeSocket {
  static last = null;
  constructor(url) { this.url = url; this.sent = []; this.readyState = 0; FakeSocket.last = this; }
  send(text) { this.sent.push(JSON.parse(text)); }
  close(code = 1000, reason = "") { this.readyState = 3; this.onclose?.({ code, reason }); }
  open() { this.readyState = 1; this.onopen?.(); }
  deliver(type, payload, userId = "me") { this.onmessage({ data: JSON.stringify({ type, payload, userId }) }); }
}

// Microtasks, then notifyManager's setTimeout(0) flush.
const settle = (ms = 0) => new Promise((r) => setTimeout(r, ms));

async function eventually(check, ms = 2000) {
  for (const end = Date.now() + ms; !check() && Date.now() < end;) await settle(5);
  return check();
}

// Every client and QueryClient a test made is closed after it, passed or failed (timers keep node running).
const live = new Set();
afterEach(() => {
  for (const b of live) b.done();
});
const WELCOME = { heartbeatInterval: 30, presenceTimeout: 60, epoch: "77", offset: "1-0" };
const T1 = { taskId: "T1", version: 3, fields: { title: "Fix login", status: "doing" } };
const T2 = { taskId: "T2", version: 1, fields: { title: "Write docs", status: "todo" } };

/** A QueryClient bound to a client that has loaded `tasks`; `watch` keys get an observer (active queries). */
async function board({ tasks = [T1, T2], watch = [], ...options } = {}) {
  const queryClient = new QueryClient();
  const client = new RtlibClient({ url: "ws://x/ws", token: "t", workspaceId: "w", WebSocketImpl: FakeSocket,
    backoffBase: 1, backoffCap: 1, ...options });
  const rq = bindQueryClient(client, queryClient);
  const unsubscribe = watch.map((opts) => new QueryObserver(queryClient, opts(rq)).subscribe(() => {}));
  client.connect();
  const ws = FakeSocket.last;
  ws.open();
  ws.deliver("session.welcome", WELCOME);
  ws.deliver("task.page", { tasks, nextCursor: null });
  await settle();
  const query = (key) => queryClient.getQueryCache().find({ queryKey: key, exact: true });
  const b = {
    queryClient, client, rq, ws, query,
    task: (id) => queryClient.getQueryData(rq.keys.task(id)),
    list: () => queryClient.getQueryData(rq.keys.tasks),
    invalidated: () => queryClient.getQueryCache().getAll().filter((q) => q.state.isInvalidated)
      .map((q) => q.queryKey.slice(2).join(":")).sort(),
    done() {
      live.delete(b);
      for (const u of unsubscribe) u();
      rq.close();
      client.close();
      queryClient.clear();
    },
  };
  live.add(b);
  return b;
}

const row = (t, pending = 0) => ({ taskId: t.taskId, version: t.version, fields: t.fields, pending });

test("keys: one per task, one per workspace list, one per viewed task's viewers", () => {
  assert.deepEqual(rtlibKeys.tasks("acme"), ["rtlib", "acme", "tasks"]);
  assert.deepEqual(rtlibKeys.task("acme", "T-42"), ["rtlib", "acme", "tasks", "T-42"]);
  assert.deepEqual(rtlibKeys.viewers("acme", "T-42"), ["rtlib", "acme", "viewers", "T-42"]);
  assert.deepEqual(rtlibKeys.update("acme"), ["rtlib", "acme", "update"]);
});

test("task queries follow the version-ordered cache: out-of-order, duplicate and gapped versions", async () => {
  const b = await board({ stallMs: 20 });
  assert.deepEqual(b.task("T1"), row(T1));
  assert.deepEqual(b.list(), [row(T1), row(T2)]);
  b.ws.deliver("task.updated", { taskId: "T1", version: 5, changes: { title: "Fix login bug" } }, "bob");
  assert.deepEqual(b.task("T1"), row(T1), "v5 before v4: buffered, the query is not touched");
  b.ws.deliver("task.updated", { taskId: "T1", version: 4, changes: { status: "done" } }, "alice");
  const v5 = { taskId: "T1", version: 5, fields: { title: "Fix login bug", status: "done" }, pending: 0 };
  assert.deepEqual(b.task("T1"), v5, "v4 then the buffered v5: both fields kept");
  assert.deepEqual(b.list()[0], v5);
  const updates = b.query(b.rq.keys.task("T1")).state.dataUpdateCount;
  b.ws.deliver("task.updated", { taskId: "T1", version: 5, changes: { title: "dup" } }, "bob");
  b.ws.deliver("task.updated", { taskId: "T1", version: 4, changes: { status: "stale" } }, "bob");
  assert.equal(b.query(b.rq.keys.task("T1")).state.dataUpdateCount, updates, "duplicate and stale: no write");
  // A gap that does not close (v6 lost): the client resyncs with task.get and the snapshot replaces the entry.
  b.ws.deliver("task.updated", { taskId: "T1", version: 7, changes: { title: "v7" } }, "bob");
  assert.equal(b.task("T1").version, 5);
  assert.ok(await eventually(() => b.ws.sent.some((f) => f.type === "task.get")), "a stalled gap: task.get");
  const get = b.ws.sent.find((f) => f.type === "task.get");
  assert.equal(get?.payload.taskId, "T1");
  b.ws.deliver("task.snapshot", { taskId: "T1", version: 7, ref: get.payload.ref,
    fields: { title: "v7", status: "done", assignee: "bob" } });
  assert.deepEqual(b.task("T1"), { taskId: "T1", version: 7, pending: 0,
    fields: { title: "v7", status: "done", assignee: "bob" } });
  b.ws.deliver("task.updated", { taskId: "T1", version: 6, changes: { assignee: "late" } }, "bob");
  assert.equal(b.task("T1").fields.assignee, "bob", "the late v6 is older than the snapshot: dropped");
  // A task first heard of after the load is added to the list in id order.
  b.ws.deliver("task.updated", { taskId: "T0", version: 1, changes: { title: "new" } }, "bob");
  assert.deepEqual(b.list().map((r) => r.taskId), ["T0", "T1", "T2"]);
  b.done();
});

test("an optimistic edit shows at once, is confirmed by the ack, and stays until its version is applied",
  async () => {
    const b = await board();
    const saved = b.rq.updateTask("T1", { title: "Mine" });
    assert.deepEqual(b.task("T1"), { ...row(T1, 1), fields: { ...T1.fields, title: "Mine" } }, "at once");
    assert.equal(b.list()[0].fields.title, "Mine");
    await settle();
    const { ref } = b.ws.sent.find((f) => f.type === "task.update").payload;
    // Bob's v4 is still on its way when ours becomes v5; the ack comes first.
    b.ws.deliver("ack", { ref, taskId: "T1", version: 5 });
    assert.deepEqual(await saved, { taskId: "T1", version: 5 });
    assert.equal(b.task("T1").pending, 1, "an ack is a confirmation, not a version to jump to");
    b.ws.deliver("task.updated", { taskId: "T1", version: 5, changes: { title: "Mine" } });
    assert.deepEqual(b.task("T1"), { taskId: "T1", version: 3, fields: { ...T1.fields, title: "Mine" }, pending: 1 });
    b.ws.deliver("task.updated", { taskId: "T1", version: 4, changes: { title: "Bob's", status: "done" } }, "bob");
    assert.deepEqual(b.task("T1"), { taskId: "T1", version: 5, fields: { title: "Mine", status: "done" }, pending: 0 });
    const [mutation] = b.queryClient.getMutationCache().getAll();
    assert.equal(mutation.state.status, "success");
    assert.deepEqual(mutation.options.mutationKey, ["rtlib", "w", "update"]);
    b.done();
  });

test("a refused edit rolls back to the cache's state, keeping what others changed meanwhile", async () => {
  const b = await board();
  const saved = b.rq.updateTask("T1", { title: "Nope", "due date": "Friday" });
  assert.equal(b.task("T1").fields.title, "Nope");
  await settle();
  const { ref } = b.ws.sent.find((f) => f.type === "task.update").payload;
  b.ws.deliver("task.updated", { taskId: "T1", version: 4, changes: { status: "done" } }, "bob");
  assert.deepEqual(b.task("T1").fields, { title: "Nope", status: "done", "due date": "Friday" });
  b.ws.deliver("error", { code: "invalid_payload", message: "invalid task.update payload: bad field name", ref });
  await assert.rejects(saved, { code: "invalid_payload" });
  // Restoring the query data saved in onMutate (the usual TanStack rollback) would also undo Bob's status.
  assert.deepEqual(b.task("T1"), { taskId: "T1", version: 4, fields: { title: "Fix login", status: "done" },
    pending: 0 });
  assert.deepEqual(b.list()[0], b.task("T1"));
  assert.ok(!b.ws.sent.some((f) => f.type === "task.get"), "refused: nothing changed, nothing to refetch");
  assert.deepEqual(b.invalidated(), []);
  b.done();
});

test("a drop before the ack rolls back, then refetches the task after the resume (nothing else)", async () => {
  const b = await board({ watch: [(rq) => rq.tasksQuery(), (rq) => rq.taskQuery("T1"), (rq) => rq.taskQuery("T2")] });
  const saved = b.rq.updateTask("T1", { title: "Maybe" });
  await settle();
  b.ws.deliver("task.updated", { taskId: "T2", version: 2, changes: { status: "doing" } }, "bob");
  b.ws.onmessage({ data: JSON.stringify({ type: "task.updated", userId: "bob", offset: "9-1", epoch: "77",
    payload: { taskId: "T2", version: 3, changes: { title: "Docs" } } }) });
  b.ws.close(1006); // the update was sent; no ack: it may or may not have been applied
  await assert.rejects(saved, /outcome unknown/);
  assert.deepEqual(b.task("T1"), row(T1), "rolled back, not guessed");
  assert.deepEqual(b.invalidated(), ["tasks:T1"], "only the task whose outcome is unknown");
  await settle(5);
  const ws2 = FakeSocket.last;
  assert.match(ws2.url, /offset=9-1&epoch=77$/);
  ws2.open();
  ws2.deliver("session.welcome", { ...WELCOME, offset: "12-0", recovered: true });
  await settle();
  assert.deepEqual(ws2.sent.map((f) => [f.type, f.payload.taskId]), [["task.get", "T1"]], "no task.list");
  // The replay shows the update was applied (v4); the snapshot says the same.
  ws2.deliver("task.updated", { taskId: "T1", version: 4, changes: { title: "Maybe" } });
  ws2.deliver("task.snapshot", { taskId: "T1", version: 4, fields: { ...T1.fields, title: "Maybe" },
    ref: ws2.sent[0].payload.ref });
  await settle();
  assert.deepEqual(b.task("T1"), { taskId: "T1", version: 4, fields: { ...T1.fields, title: "Maybe" }, pending: 0 });
  assert.deepEqual(b.invalidated(), []);
  assert.equal(b.query(b.rq.keys.task("T1")).state.fetchStatus, "idle");
  assert.deepEqual(b.list().map((r) => [r.taskId, r.version, r.fields.title]), [["T1", 4, "Maybe"], ["T2", 3, "Docs"]]);
  b.done();
});

test("an unacknowledged edit on a live connection is refetched at once", async () => {
  const b = await board({ ackTimeout: 20 });
  const saved = b.rq.updateTask("T2", { status: "done" });
  await assert.rejects(saved, /no ack/);
  assert.deepEqual(b.task("T2"), row(T2));
  await settle();
  const get = b.ws.sent.find((f) => f.type === "task.get");
  assert.equal(get?.payload.taskId, "T2");
  b.ws.deliver("task.snapshot", { taskId: "T2", version: 2, fields: { ...T2.fields, status: "done" },
    ref: get.payload.ref });
  await settle();
  assert.deepEqual(b.task("T2").fields.status, "done");
  assert.deepEqual(b.invalidated(), []);
  b.done();
});

test("a reconnect: recovered false invalidates every task until its snapshot; recovered true nothing", async () => {
  const watch = [(rq) => rq.tasksQuery(), (rq) => rq.taskQuery("T1"), (rq) => rq.taskQuery("T2")];
  const b = await board({ watch });
  const t2 = b.task("T2");
  b.ws.close(1006);
  await settle(5);
  const ws2 = FakeSocket.last;
  ws2.open();
  ws2.deliver("session.welcome", { ...WELCOME, epoch: "78", recovered: false });
  await settle();
  assert.deepEqual(ws2.sent.map((f) => f.type), ["task.list"]);
  assert.deepEqual(b.invalidated(), ["tasks", "tasks:T1", "tasks:T2"], "history lost: everything may be stale");
  assert.equal(b.query(b.rq.keys.tasks).state.fetchStatus, "fetching", "the list waits for the reload");
  ws2.deliver("task.page", { tasks: [{ ...T1, version: 4, fields: { ...T1.fields, status: "done" } }],
    nextCursor: "T1" });
  assert.deepEqual(b.invalidated(), ["tasks", "tasks:T2"], "fresh as soon as its snapshot is in");
  ws2.deliver("task.page", { tasks: [T2], nextCursor: null });
  await settle();
  assert.deepEqual(b.invalidated(), []);
  assert.ok(b.queryClient.getQueryCache().getAll().every((q) => q.state.fetchStatus === "idle"));
  assert.deepEqual(b.list().map((r) => [r.taskId, r.version]), [["T1", 4], ["T2", 1]]);
  assert.equal(b.task("T2"), t2, "reloaded unchanged: the same object (structural sharing)");
  // Now a resume that recovered: the missed events are replayed, nothing is invalidated or fetched.
  const writes = b.query(b.rq.keys.task("T2")).state.dataUpdateCount;
  ws2.deliver("task.updated", { taskId: "T1", version: 5, changes: { title: "x" } }, "bob");
  ws2.close(1006);
  await settle(5);
  const ws3 = FakeSocket.last;
  ws3.open();
  ws3.deliver("session.welcome", { ...WELCOME, recovered: true });
  await settle();
  assert.deepEqual(ws3.sent, []);
  assert.deepEqual(b.invalidated(), []);
  assert.ok(b.queryClient.getQueryCache().getAll().every((q) => q.state.fetchStatus === "idle"));
  ws3.deliver("task.updated", { taskId: "T1", version: 6, changes: { title: "replayed" } }, "bob");
  assert.deepEqual([b.task("T1").version, b.task("T1").fields.title], [6, "replayed"]);
  assert.equal(b.query(b.rq.keys.task("T2")).state.dataUpdateCount, writes, "T2 untouched");
  b.done();
});

test("a drop in the middle of the load: a recovered resume still finishes it (re-lists)", async () => {
  const queryClient = new QueryClient();
  const client = new RtlibClient({ url: "ws://x/ws", token: "t", workspaceId: "w", WebSocketImpl: FakeSocket,
    backoffBase: 1, backoffCap: 1 });
  const rq = bindQueryClient(client, queryClient);
  const list = new QueryObserver(queryClient, rq.tasksQuery());
  list.subscribe(() => {});
  const cleanup = { done() { live.delete(cleanup); list.destroy(); rq.close(); client.close(); queryClient.clear(); } };
  live.add(cleanup);
  client.connect();
  const ws = FakeSocket.last;
  ws.open();
  ws.deliver("session.welcome", WELCOME);
  ws.deliver("task.page", { tasks: [T1], nextCursor: "T1" });
  ws.close(1006);
  await settle(5);
  const ws2 = FakeSocket.last;
  ws2.open();
  ws2.deliver("session.welcome", { ...WELCOME, recovered: true });
  assert.deepEqual(ws2.sent.map((f) => f.type), ["task.list"]);
  ws2.deliver("task.page", { tasks: [T1, T2], nextCursor: null });
  await settle();
  assert.deepEqual(list.getCurrentResult().data.map((r) => r.taskId), ["T1", "T2"]);
});

test("a task.get cut short by a drop is sent again after a recovered resume", async () => {
  const b = await board({ stallMs: 20 });
  b.ws.deliver("task.updated", { taskId: "T1", version: 5, changes: { title: "v5" } }, "bob"); // v4 lost
  assert.ok(await eventually(() => b.ws.sent.some((f) => f.type === "task.get")));
  b.ws.close(1006);
  await settle(5);
  const ws2 = FakeSocket.last;
  ws2.open();
  ws2.deliver("session.welcome", { ...WELCOME, recovered: true });
  const get = ws2.sent.find((f) => f.type === "task.get");
  assert.equal(get?.payload.taskId, "T1", "otherwise T1 would buffer its updates for ever");
  ws2.deliver("task.snapshot", { taskId: "T1", version: 5, fields: { ...T1.fields, title: "v5" }, ref: get.payload.ref });
  ws2.deliver("task.updated", { taskId: "T1", version: 6, changes: { status: "done" } }, "bob");
  assert.deepEqual(b.task("T1"), { taskId: "T1", version: 6, fields: { title: "v5", status: "done" }, pending: 0 });
});

test("viewer lists are queries for the tasks this tab views", async () => {
  const b = await board();
  const key = b.rq.keys.viewers("T1");
  const observer = new QueryObserver(b.queryClient, b.rq.viewersQuery("T1"));
  const seen = [];
  observer.subscribe((r) => seen.push(r.data));
  const stop = b.rq.view("T1");
  assert.deepEqual(b.ws.sent.at(-1), { type: "presence.join", workspaceId: "w", payload: { taskId: "T1" } });
  b.ws.deliver("presence.state", { taskId: "T1", viewers: ["me", "bob"] });
  b.ws.deliver("presence.joined", { taskId: "T1", userId: "carol" }, "carol");
  await settle();
  assert.deepEqual(b.queryClient.getQueryData(key), ["bob", "carol", "me"]);
  assert.deepEqual(observer.getCurrentResult().data, ["bob", "carol", "me"]);
  const stop2 = b.rq.view("T1"); // a second component shows the same task: one presence entry
  stop();
  assert.ok(!b.ws.sent.some((f) => f.type === "presence.leave"));
  stop2();
  assert.deepEqual(b.ws.sent.at(-1), { type: "presence.leave", workspaceId: "w", payload: { taskId: "T1" } });
  assert.deepEqual(b.queryClient.getQueryData(key), []);
  observer.destroy();
  b.done();
});

// --- notebook 02's out-of-order streams: fields lost --------------------------------------------------------
// From notebook 02's replay() (REPLAY_TRIALS 2000, SEED 3, no loss), computed with rtlib.client.ordering's
// NaiveCache and VersionGateCache: tasks diverged and fields lost per window. The notebook prints the same
// divergence (naive 9.3%, 38.9%, 69.5%; version_gate 20.3%, 67.0%, 88.8%).
const NOTEBOOK = {
  naive: { diverged: [0, 187, 778, 1389], lost: [0, 106, 492, 1225] },
  versionGate: { diverged: [0, 407, 1339, 1777], lost: [0, 433, 1823, 3163] },
};

function score(final, s) {
  const lost = Object.keys(s.truth).filter((k) => final?.fields[k] !== s.truth[k]).length;
  const extra = Object.keys(final?.fields ?? {}).filter((k) => !(k in s.truth)).length;
  return { lost, diverged: lost + extra > 0 || final?.version !== s.version };
}

test("notebook 02's out-of-order streams: 0 fields lost through the adapter, N through setQueryData merges",
  async (t) => {
    const totals = { adapter: 0, naive: 0, versionGate: 0 };
    for (const [w, window] of WINDOWS.entries()) {
      const naive = new QueryClient();
      const gate = new QueryClient();
      const b = await board({ tasks: [] });
      const count = { adapter: { diverged: 0, lost: 0 }, naive: { diverged: 0, lost: 0 },
        versionGate: { diverged: 0, lost: 0 } };
      const all = [...streams(window)];
      for (const s of all) {
        const id = `t${s.trial}`;
        for (const { version, changes } of s.updates) {
          // The front end the review planned: every task.updated merged into the query as it arrives ...
          naive.setQueryData(["task", id], (old) => ({ version, fields: { ...old?.fields, ...changes } }));
          // ... or merged only when its version is newer ("apply if newer").
          gate.setQueryData(["task", id], (old) => (old && version <= old.version ? old
            : { version, fields: { ...old?.fields, ...changes } }));
          b.ws.deliver("task.updated", { taskId: id, version, changes }, "bob");
        }
      }
      await settle();
      for (const s of all) {
        const id = `t${s.trial}`;
        for (const [name, final] of [["naive", naive.getQueryData(["task", id])],
          ["versionGate", gate.getQueryData(["task", id])], ["adapter", b.task(id)]]) {
          const r = score(final, s);
          count[name].lost += r.lost;
          count[name].diverged += r.diverged;
        }
      }
      assert.equal(b.list().length, TRIALS);
      t.diagnostic(`w=${window}: fields lost: adapter ${count.adapter.lost}, naive setQueryData merge ` +
        `${count.naive.lost}, merge-if-newer ${count.versionGate.lost} (tasks diverged: ${count.adapter.diverged}, ` +
        `${count.naive.diverged}, ${count.versionGate.diverged} of ${TRIALS})`);
      // The same streams as the notebook: the naive rules fail on exactly the tasks it counted.
      for (const name of ["naive", "versionGate"]) {
        assert.deepEqual([count[name].diverged, count[name].lost],
          [NOTEBOOK[name].diverged[w], NOTEBOOK[name].lost[w]]);
      }
      assert.deepEqual(count.adapter, { diverged: 0, lost: 0 });
      for (const name of Object.keys(totals)) totals[name] += count[name].lost;
      naive.clear();
      gate.clear();
      b.done();
    }
    t.diagnostic(`LOSS COUNTS over ${WINDOWS.length} x ${TRIALS} replayed tasks (notebook 02, seed 3): adapter ` +
      `${totals.adapter} fields lost; naive setQueryData merge ${totals.naive}; merge-if-newer ${totals.versionGate}`);
    assert.equal(totals.adapter, 0);
    assert.ok(totals.naive > 0);
  });

// --- size, the vendored query-core, the docs' wiring ----------------------------------------------------------
test("sizes minified + gzipped; the vendored query-core is the pinned build", async (t) => {
  const adapter = await sizeOf(join(WEB, "rtlib-query.js"));
  const client = await sizeOf(join(WEB, "rtlib-client.js"));
  const { version, code } = await queryCoreBundle();
  t.diagnostic(`SIZES (${TOOL}): rtlib-query.js ${adapter.gzipBytes} B gzipped (${adapter.minifiedBytes} B ` +
    `minified); rtlib-client.js ${client.gzipBytes} B (${client.minifiedBytes} B); @tanstack/query-core ${version} ` +
    `(QueryClient, QueryObserver, MutationObserver) ${gzipSize(code)} B (${code.length} B)`);
  assert.ok(adapter.gzipBytes < 2048, "the adapter stays small");
  assert.ok(readFileSync(VENDORED).equals(code),
    "rtlib/web/tanstack-query-core.js is not the build of the pinned version: run node tests/web/web-build.mjs");
});

test("the docs wire TanStack Query in under 20 lines of user code", () => {
  const doc = readFileSync(join(WEB, "..", "..", "docs", "web-client.md"), "utf8");
  const section = doc.split(/^## /m).find((s) => s.startsWith("With TanStack Query"));
  assert.ok(section, "docs/web-client.md has a 'With TanStack Query' section");
  const code = section.match(/```js\n([\s\S]*?)```/)[1];
  const lines = code.split("\n").filter((l) => l.trim() && !l.trim().startsWith("//"));
  assert.ok(lines.length < 20, `${lines.length} lines`);
  assert.match(code, /bindQueryClient\(/);
});
