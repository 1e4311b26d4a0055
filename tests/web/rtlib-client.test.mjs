// node --test tests/web/rtlib-client.test.mjs: the browser client's pure logic (ordering, backoff) and its protocol driving with a
// fake WebSocket. Run by `make test`.
import assert from "node:assert/strict";
import { test } from "node:test";

import { backoffDelay, DEFAULTS, RtlibClient, TaskCache } from "../../rtlib/web/rtlib-client.js";

globalThis.CustomEvent ??= class extends Event {
  constructor(type, init = {}) { super(type); this.detail = init.detail; }
};

test("in-order updates apply at once, partial fields merge", () => {
  const c = new TaskCache();
  assert.equal(c.onSnapshot("t", 0, {}, 0), null, "nothing newer than an unknown task");
  assert.equal(c.onUpdated("t", 1, { title: "A", status: "todo" }, "u", 0).length, 1);
  assert.equal(c.onUpdated("t", 2, { status: "done" }, "u", 0).length, 1);
  assert.deepEqual(c.tasks.get("t").fields, { title: "A", status: "done" });
  assert.deepEqual(c.onUpdated("t", 2, { status: "x" }, "u", 0), [], "a duplicate is dropped");
  assert.deepEqual(c.onUpdated("t", 1, { status: "x" }, "u", 0), [], "a stale version is dropped");
});

test("an out-of-order version is buffered and applied when the gap closes (apply-if-newer would lose it)", () => {
  const c = new TaskCache();
  c.onSnapshot("t", 3, { title: "Fix login", status: "doing" }, 0);
  assert.deepEqual(c.onUpdated("t", 5, { title: "Fix login bug" }, "b", 10), []);
  assert.equal(c.tasks.get("t").version, 3);
  const applied = c.onUpdated("t", 4, { status: "done" }, "a", 20);
  assert.deepEqual(applied.map((a) => [a.version, a.userId]), [[4, "a"], [5, "b"]]);
  assert.deepEqual(c.tasks.get("t").fields, { title: "Fix login bug", status: "done" });
  assert.deepEqual(c.stalled(10_000), []);
});

test("a gap that persists past stallMs asks for a resync; the snapshot drains newer buffered versions", () => {
  const c = new TaskCache({ stallMs: 1000 });
  c.onSnapshot("t", 1, { a: 1 }, 0);
  c.onUpdated("t", 3, { a: 3 }, "u", 100);
  assert.deepEqual(c.stalled(1099), []);
  assert.deepEqual(c.stalled(1100), ["t"]);
  c.resync("t");
  assert.deepEqual(c.stalled(5000), [], "a task being resynced is not reported again");
  c.onUpdated("t", 4, { b: 4 }, "u", 1200); // arrives while syncing: buffered
  const applied = c.onSnapshot("t", 3, { a: 3 }, 1300);
  assert.deepEqual(applied.map((a) => a.version), [4]);
  assert.deepEqual(c.tasks.get("t"), { version: 4, fields: { a: 3, b: 4 }, pending: new Map(), syncing: false,
    gapSince: null });
});

test("too many buffered versions resync at once", () => {
  const c = new TaskCache({ stallMs: 1e9, maxPending: 3 });
  c.onSnapshot("t", 1, {}, 0);
  for (let v = 3; v <= 6; v++) c.onUpdated("t", v, { v }, "u", 0);
  assert.deepEqual(c.stalled(1), ["t"]);
});

test("listing buffers every update until the task's page entry; unlisted tasks are returned for task.get", () => {
  const c = new TaskCache();
  c.onSnapshot("old", 2, { x: 1 }, 0);
  c.beginListing();
  assert.deepEqual(c.onUpdated("old", 3, { x: 3 }, "u", 1), []);
  assert.deepEqual(c.onUpdated("new", 5, { y: 5 }, "u", 1), []);
  assert.deepEqual(c.onSnapshot("old", 3, { x: 3 }, 2), []);
  assert.deepEqual(c.endListing(), ["new"]);
  assert.deepEqual(c.onSnapshot("new", 5, { y: 5 }, 3), []);
  assert.equal(c.tasks.get("new").version, 5);
  assert.equal(c.onSnapshot("old", 2, { x: 1 }, 4), null, "an older snapshot never rolls a task back");
});

test("random delivery orders converge to the in-order result", () => {
  let seed = 7;
  const rand = () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
  for (let run = 0; run < 200; run++) {
    const updates = Array.from({ length: 20 }, (_, i) => ({ v: i + 1, changes: { [`f${i % 4}`]: i + 1 } }));
    const shuffled = [...updates].sort(() => rand() - 0.5);
    const c = new TaskCache();
    c.onSnapshot("t", 0, {}, 0);
    for (const u of shuffled) c.onUpdated("t", u.v, u.changes, "u", 0);
    assert.deepEqual(c.tasks.get("t").fields, { f0: 17, f1: 18, f2: 19, f3: 20 });
    assert.equal(c.tasks.get("t").version, 20);
  }
});

test("backoff grows exponentially with jitter, within [ceiling/2, ceiling], capped", () => {
  const opts = { backoffBase: 500, backoffCap: 15000 };
  assert.equal(backoffDelay(0, opts, () => 0), 250);
  assert.equal(backoffDelay(0, opts, () => 1), 500);
  assert.equal(backoffDelay(3, opts, () => 1), 4000);
  assert.equal(backoffDelay(10, opts, () => 1), 15000);
  assert.equal(backoffDelay(1000, opts, () => 0), 7500, "huge attempt counts stay finite");
  const samples = new Set(Array.from({ length: 50 }, () => backoffDelay(2, opts)));
  assert.ok(samples.size > 40, "jitter spreads clients");
  for (const d of samples) assert.ok(d >= 1000 && d <= 2000);
  assert.ok(DEFAULTS.backoffCap >= DEFAULTS.backoffBase);
});

class FakeSocket {
  static last = null;
  constructor(url) { this.url = url; this.sent = []; this.readyState = 0; FakeSocket.last = this; }
  send(text) { this.sent.push(JSON.parse(text)); }
  close(code = 1000, reason = "") { this.readyState = 3; this.onclose?.({ code, reason }); }
  open() { this.readyState = 1; this.onopen?.(); }
  deliver(type, payload, userId = "me") { this.onmessage({ data: JSON.stringify({ type, payload, userId }) }); }
}

test("the client loads the board, applies updates, settles acks and re-joins presence after a reconnect", async () => {
  const c = new RtlibClient({ url: "ws://x/ws", token: "t k", workspaceId: "w", WebSocketImpl: FakeSocket,
    backoffBase: 1, backoffCap: 1 });
  const statuses = [];
  c.addEventListener("status", (e) => statuses.push(e.detail.status));
  c.connect();
  const ws = FakeSocket.last;
  assert.equal(ws.url, "ws://x/ws?token=t%20k&workspace=w");
  ws.open();
  ws.deliver("session.welcome", { heartbeatInterval: 30, presenceTimeout: 60 });
  assert.deepEqual(ws.sent.at(-1).type, "task.list");
  ws.deliver("task.page", { tasks: [{ taskId: "T1", version: 2, fields: { title: "A" } }], nextCursor: "T1" });
  assert.deepEqual(ws.sent.at(-1).payload.cursor, "T1");
  ws.deliver("task.page", { tasks: [], nextCursor: null });
  const done = c.update("T1", { title: "B" });
  const ref = ws.sent.at(-1).payload.ref;
  ws.deliver("task.updated", { taskId: "T1", version: 3, changes: { title: "B" } });
  ws.deliver("ack", { ref, taskId: "T1", version: 3 });
  assert.deepEqual(await done, { version: 3, taskId: "T1" });
  assert.deepEqual(c.tasks.get("T1"), { version: 3, fields: { title: "B" } });
  c.view("T1");
  assert.deepEqual(ws.sent.at(-1), { type: "presence.join", workspaceId: "w", payload: { taskId: "T1" } });
  const viewers = [];
  c.addEventListener("presence", (e) => viewers.push(e.detail.viewers));
  ws.deliver("presence.state", { taskId: "T1", viewers: ["bob", "me"] });
  ws.deliver("presence.left", { taskId: "T1", userId: "bob", reason: "leave" });
  assert.deepEqual(viewers, [["bob", "me"], ["me"]]);
  const failed = c.update("T1", { x: 1 });
  ws.close(1006);
  await assert.rejects(failed, /connection lost/);
  assert.equal(c.status, "reconnecting");
  await new Promise((r) => setTimeout(r, 5));
  const ws2 = FakeSocket.last;
  assert.notEqual(ws2, ws);
  ws2.open();
  ws2.deliver("session.welcome", { heartbeatInterval: 30, presenceTimeout: 60 });
  assert.deepEqual(ws2.sent.map((f) => f.type), ["presence.join", "task.list"]);
  assert.deepEqual(statuses, ["connecting", "connected", "reconnecting", "connected"]);
  c.close();
  assert.equal(c.status, "offline");
});

test("a stalled gap sends task.get; a missing welcome closes the socket and retries", async () => {
  const c = new RtlibClient({ url: "ws://x/ws", token: "t", workspaceId: "w", WebSocketImpl: FakeSocket,
    stallMs: 20, welcomeTimeout: 20, backoffBase: 1, backoffCap: 1 });
  c.connect();
  const ws = FakeSocket.last;
  ws.open();
  ws.deliver("session.welcome", { heartbeatInterval: 30, presenceTimeout: 60 });
  ws.deliver("task.page", { tasks: [{ taskId: "T1", version: 1, fields: {} }], nextCursor: null });
  ws.deliver("task.updated", { taskId: "T1", version: 3, changes: { a: 3 } });
  await new Promise((r) => setTimeout(r, 60));
  const get = ws.sent.find((f) => f.type === "task.get");
  assert.equal(get?.payload.taskId, "T1");
  ws.deliver("task.snapshot", { taskId: "T1", version: 3, fields: { a: 3 }, ref: get.payload.ref });
  assert.deepEqual(c.tasks.get("T1"), { version: 3, fields: { a: 3 } });
  ws.close(1001);
  await new Promise((r) => setTimeout(r, 5));
  const silent = FakeSocket.last;
  silent.open(); // an instance that never welcomes: given up after welcomeTimeout, then retried
  await new Promise((r) => setTimeout(r, 60));
  assert.notEqual(FakeSocket.last, silent);
  assert.equal(silent.readyState, 3);
  c.close();
});

test("a reconnect resumes from the last offset: recovered skips the reload, not recovered reloads", async () => {
  const c = new RtlibClient({ url: "ws://x/ws", token: "t", workspaceId: "w", WebSocketImpl: FakeSocket,
    backoffBase: 1, backoffCap: 1 });
  c.connect();
  const ws = FakeSocket.last;
  ws.open();
  ws.deliver("session.welcome", { heartbeatInterval: 30, presenceTimeout: 60, epoch: "77", offset: "5-0" });
  ws.deliver("task.page", { tasks: [{ taskId: "T1", version: 1, fields: { a: 1 } }], nextCursor: null });
  ws.onmessage({ data: JSON.stringify({ type: "task.updated", userId: "bob", offset: "9-1", epoch: "77",
    payload: { taskId: "T1", version: 2, changes: { a: 2 } } }) });
  ws.close(1006);
  await new Promise((r) => setTimeout(r, 5));
  const ws2 = FakeSocket.last;
  assert.equal(ws2.url, "ws://x/ws?token=t&workspace=w&offset=9-1&epoch=77");
  ws2.open();
  ws2.deliver("session.welcome", { heartbeatInterval: 30, presenceTimeout: 60, epoch: "77", offset: "12-0",
    recovered: true });
  assert.deepEqual(ws2.sent.map((f) => f.type), []); // nothing to reload: the replay follows
  ws2.deliver("task.updated", { taskId: "T1", version: 3, changes: { a: 3 } });
  assert.deepEqual(c.tasks.get("T1"), { version: 3, fields: { a: 3 } });
  ws2.close(1006);
  await new Promise((r) => setTimeout(r, 5));
  const ws3 = FakeSocket.last;
  ws3.open();
  ws3.deliver("session.welcome", { heartbeatInterval: 30, presenceTimeout: 60, epoch: "78", offset: "1-0",
    recovered: false });
  assert.deepEqual(ws3.sent.map((f) => f.type), ["task.list"]); // history lost: reload the board
  c.close();
});

test("session.resync (Redis came back without the history) reloads and re-joins on the same connection", () => {
  const c = new RtlibClient({ url: "ws://x/ws", token: "t", workspaceId: "w", WebSocketImpl: FakeSocket });
  const resumed = [];
  c.addEventListener("resumed", (e) => resumed.push(e.detail.recovered));
  c.connect();
  const ws = FakeSocket.last;
  ws.open();
  ws.deliver("session.welcome", { heartbeatInterval: 30, presenceTimeout: 60, epoch: "77", offset: "5-0" });
  ws.deliver("task.page", { tasks: [{ taskId: "T1", version: 4, fields: { a: 1 } }], nextCursor: null });
  c.view("T1");
  ws.sent.length = 0;
  ws.deliver("session.resync", { epoch: "78", offset: "0-0", reason: "epoch changed: the history was lost" });
  assert.deepEqual(ws.sent.map((f) => f.type), ["presence.join", "task.list"]);
  assert.deepEqual([c.epoch, c.offset, resumed], ["78", "0-0", [false]]);
  ws.deliver("task.page", { tasks: [{ taskId: "T1", version: 1, fields: { a: 9 } }], nextCursor: null });
  assert.deepEqual(c.tasks.get("T1"), { version: 1, fields: { a: 9 } }); // a new history: its versions count
  assert.equal(FakeSocket.last, ws); // no reconnect
  c.close();
});

test("presence mode probe: no heartbeat timer; each presence.probe is answered with presence.pong", async () => {
  const c = new RtlibClient({ url: "ws://x/ws", token: "t", workspaceId: "w", WebSocketImpl: FakeSocket });
  c.connect();
  const ws = FakeSocket.last;
  ws.open();
  ws.deliver("session.welcome", { heartbeatInterval: 0.01, presenceTimeout: 60, presenceMode: "probe" });
  ws.deliver("presence.probe", { seq: 1 });
  assert.ok(!ws.sent.some((f) => f.type === "presence.pong"), "a tab that views nothing does not answer");
  c.view("T1");
  await new Promise((r) => setTimeout(r, 40)); // four "intervals": a timer would have beaten by now
  assert.ok(!ws.sent.some((f) => f.type === "presence.heartbeat"), "no timer heartbeats in probe mode");
  ws.deliver("presence.probe", { seq: 7 });
  assert.deepEqual(ws.sent.at(-1), { type: "presence.pong", workspaceId: "w", payload: { seq: 7 } });
  c.close();
});

test("timer mode beats from its timer; visibilityBeat also beats on every visibility change", async () => {
  const doc = new EventTarget();
  globalThis.document = doc;
  try {
    for (const visibilityBeat of [false, true]) {
      const c = new RtlibClient({ url: "ws://x/ws", token: "t", workspaceId: "w", WebSocketImpl: FakeSocket });
      c.connect();
      const ws = FakeSocket.last;
      ws.open();
      ws.deliver("session.welcome", { heartbeatInterval: 0.02, presenceTimeout: 60, presenceMode: "timer",
        visibilityBeat });
      c.view("T1");
      await new Promise((r) => setTimeout(r, 50));
      const timerBeats = ws.sent.filter((f) => f.type === "presence.heartbeat").length;
      assert.ok(timerBeats >= 1, "the timer beats");
      c.close(); // stops the timer; a visibility change after close sends nothing
      const before = ws.sent.length;
      doc.dispatchEvent(new Event("visibilitychange"));
      assert.equal(ws.sent.length, before);
      const c2 = new RtlibClient({ url: "ws://x/ws", token: "t", workspaceId: "w", WebSocketImpl: FakeSocket });
      c2.connect();
      const ws2 = FakeSocket.last;
      ws2.open();
      ws2.deliver("session.welcome", { heartbeatInterval: 60, presenceTimeout: 120, visibilityBeat });
      c2.view("T1");
      doc.dispatchEvent(new Event("visibilitychange"));
      const beats = ws2.sent.filter((f) => f.type === "presence.heartbeat").length;
      assert.equal(beats, visibilityBeat ? 1 : 0);
      c2.close();
    }
  } finally {
    delete globalThis.document;
  }
});
