"""Simulated clients: real WebSocket clients speaking ``docs/protocol.md``, driven by seeded behaviour.

Each :class:`SimClient` is one browser tab: it connects with a token, keeps a task cache with the
scenario's ordering strategy (:mod:`rtlib.clientmodels.ordering`), and plays its roles from a :class:`ClientPlan`:

* editor: open-loop Poisson ``task.update`` (sent on schedule, never waiting for replies; latency is taken
  from the *scheduled* time, so a stalled sender cannot hide queueing: no coordinated omission);
* viewer: ``presence.join`` on one task, heartbeats from :mod:`rtlib.clientmodels.heartbeat`, ``presence.leave``;
* crash: the client vanishes mid-run (no leave, no close, no FIN: a dropped network or frozen tab), so only
  the presence timeout can detect it; churn: a clean disconnect, then a reconnect.

Reconnects use exponential backoff with jitter and move to the next instance. Every record goes to a
:class:`Recorder` as a plain tuple (cheap on the hot path); :mod:`rtlib.lab.results` makes DataFrames of them.
Every received frame is also counted by type and workspace, so leaks are checked on every event type.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass
from typing import Any

import msgspec
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from rtlib.clientmodels.heartbeat import Lossy, parse_model
from rtlib.clientmodels.ordering import make_cache
from rtlib.lab.impair import Impairer
from rtlib.lab.realtime import RealtimeClock
from rtlib.lab.recorder import Recorder
from rtlib.lab.scenario import Scenario
from rtlib.protocol.history import offset_key
from rtlib.protocol.schema import SERVER_PAYLOADS, PresenceLeft, ServerEnvelope, TaskUpdated
from rtlib.server.tasks import spawn

__all__ = ["ClientPlan", "SimClient", "plan_clients"]


@dataclass(frozen=True)
class ClientPlan:
    """One simulated client's identity and behaviour, decided up front from the scenario's seed."""

    index: int
    user: str
    workspace: str
    instance: int
    editor: bool
    view_task: str | None  # the task this client opens (presence), if a viewer
    view_at: float = 0.0  # design seconds after start
    crash_at: float | None = None
    churn_at: float | None = None


def plan_clients(scenario: Scenario, instances: int) -> list[ClientPlan]:
    """Deterministic plans: the same scenario (and seed) always gives the same clients."""
    rng = random.Random(scenario.seed)
    plans = []
    for i in range(scenario.clients):
        ws = f"w{i % scenario.workspaces}"
        viewer = rng.random() < scenario.viewers
        crash = viewer and rng.random() < scenario.crash
        churn = not crash and rng.random() < scenario.churn
        d = scenario.duration
        plans.append(ClientPlan(
            index=i, user=f"u{i}", workspace=ws, instance=i % instances,
            editor=rng.random() < scenario.editors,
            view_task=f"t{rng.randrange(scenario.tasks)}" if viewer else None,
            view_at=rng.uniform(0, 0.1 * d),
            crash_at=rng.uniform(0.3 * d, 0.6 * d) if crash else None,
            churn_at=rng.uniform(0.3 * d, 0.7 * d) if churn else None,
        ))
    if not any(p.editor for p in plans):  # a run with no edits measures nothing
        plans[0] = ClientPlan(**{**plans[0].__dict__, "editor": True})
    return plans


# Frames are decoded with the schema's own structs (the wire contract's single definition). Looser structs decoded a
# task.updated frame in 0.84 us instead of 2.7 us (min of 7 x 200,000, this machine): ~2 us per received frame, small
# beside the asyncio websockets client's own cost per frame, so not worth a second definition of the wire format.
_envelope = msgspec.json.Decoder(ServerEnvelope)
_payloads = {kind: msgspec.json.Decoder(cls) for kind, cls in SERVER_PAYLOADS.items()}
_encode = msgspec.json.encode


class SimClient:
    """One simulated tab. ``run`` plays the plan between the shared start and stop times."""

    def __init__(self, plan: ClientPlan, scenario: Scenario, urls: list[str], token: str, rec: Recorder,
                 t0: float, tasks: list[str], editor_rate: float = 0.0) -> None:
        self.plan, self.sc, self.urls, self.token, self.rec = plan, scenario, urls, token, rec
        self.clock = RealtimeClock(t0, scenario.time_scale, rec.lateness)  # design time; records its overruns
        self.tasks = tasks  # every task id of the workspace (the app's task list, refetched on reconnect)
        self.editor_rate = editor_rate  # this client's task.update per design second
        self.rng = random.Random(f"{scenario.seed}:{plan.index}")
        self.cache = make_cache(scenario.ordering)
        self.impair = Impairer(scenario.impairment, self.rng)
        self.ws: ClientConnection | None = None
        self.instance = plan.instance
        self.connected = asyncio.Event()
        self.offset = self.epoch = ""  # where this tab is in the workspace history (resumed from on reconnect)
        self.recovered = False
        self.dropped_at: float | None = None  # design time the last connection dropped (for time to recover)
        # While catching up after a resume: (recovered, dropped at, welcome at, target) where target is the
        # history head at the welcome (recovered) or the set of tasks still to be re-fetched (resynced).
        self.catching: tuple[bool, float, float, Any] | None = None
        self.viewing: str | None = None
        self.stopping = False
        self.conn_count = 0
        # Presence mode "probe": probes are answered from the frame handler, as a hidden browser tab still does;
        # a lossy heartbeat model loses that share of the answers. Its own generator, so when probes arrive
        # does not shift the draws of the edit schedule (a seeded run must reproduce).
        model = parse_model(scenario.heartbeat)
        self.pong_loss = model.loss if isinstance(model, Lossy) else 0.0
        self.pong_rng = random.Random(f"{scenario.seed}:{plan.index}:pong")

    # --- clock -------------------------------------------------------------------------------------
    @property
    def t0(self) -> float:
        """Monotonic time of design second 0 (the clock's origin)."""
        return self.clock.t0

    @t0.setter
    def t0(self, value: float) -> None:
        self.clock.t0 = value

    def now(self) -> float:
        """Design seconds since the run started."""
        return self.clock.now()

    async def sleep_until(self, design_t: float) -> None:
        await self.clock.sleep_until(design_t)

    # --- connection ------------------------------------------------------------------------------------
    async def connect(self) -> None:
        """Connect (or reconnect) with exponential backoff and jitter, moving to the next instance on failure."""
        backoff = 0.05
        while not self.stopping:
            url = f"{self.urls[self.instance]}?token={self.token}&workspace={self.plan.workspace}"
            if self.offset and self.epoch:  # resume: the server replays what this tab missed, if it still can
                url += f"&offset={self.offset}&epoch={self.epoch}"
            try:
                self.ws = await connect(url, compression=None, max_size=None, open_timeout=10)
                first = _envelope.decode(await asyncio.wait_for(self.ws.recv(decode=False), 10))
                if first.type != "session.welcome":
                    raise ConnectionError(f"expected session.welcome, got {first.type}")
                welcome = _payloads["session.welcome"].decode(first.payload)
                self.recovered = welcome.recovered is True
                if welcome.recovered is not None:
                    now = self.now()
                    target: Any = offset_key(welcome.offset or "0-0") if self.recovered else set(self.tasks)
                    self.catching = (self.recovered, self.dropped_at if self.dropped_at is not None else now, now,
                                     target)
                    if self.recovered and target <= offset_key(self.offset or "0-0"):
                        self._caught_up()  # nothing was missed
                    self.rec.connections.append((self.plan.user, self.plan.workspace, self.instance,
                                                 "recovered" if self.recovered else "resynced", self.now(),
                                                 self.conn_count))
                if not self.recovered and welcome.epoch:
                    self.offset, self.epoch = welcome.offset, welcome.epoch
                self.conn_count += 1
                self.rec.connections.append((self.plan.user, self.plan.workspace, self.instance, "connected",
                                             self.now(), self.conn_count))
                self.connected.set()
                return
            # InvalidHandshake: a refusal (InvalidStatus: 503 while an instance reconnects to Redis) or an instance
            # that died mid-handshake (InvalidMessage: the socket closed before any HTTP response).
            except (OSError, InvalidHandshake, ConnectionClosed, TimeoutError, ConnectionError):
                self.instance = (self.instance + 1) % len(self.urls)
                await asyncio.sleep(backoff * self.rng.uniform(0.5, 1.5))
                backoff = min(backoff * 2, 2.0)

    async def send(self, type_: str, payload: dict[str, Any]) -> None:
        frame = _encode({"type": type_, "workspaceId": self.plan.workspace, "payload": payload})
        ws = self.ws
        if ws is None:
            return
        await self.impair.send(ws, frame)

    # --- the run -----------------------------------------------------------------------------------------
    async def run(self, stop_at: float) -> None:
        """Play the plan until design time ``stop_at``; then leave cleanly (unless crashed)."""
        if self.ws is None:  # the lab normally connects everyone first, then starts the clock
            await self.connect()
        jobs = [asyncio.create_task(self._reader())]
        if self.plan.editor:
            jobs.append(asyncio.create_task(self._edit(stop_at)))
        if self.plan.view_task:
            jobs.append(asyncio.create_task(self._view(stop_at)))
        if self.plan.churn_at is not None:
            jobs.append(asyncio.create_task(self._churn()))
        try:
            await self.sleep_until(stop_at if self.plan.crash_at is None else min(stop_at, self.plan.crash_at))
            if self.plan.crash_at is not None and self.plan.crash_at < stop_at:
                self._crash()
            elif self.viewing:
                await self.send("presence.leave", {"taskId": self.viewing})
                self.rec.departures.append((self.plan.user, self.viewing, "leave", self.now()))
        finally:
            for job in jobs[1:]:
                job.cancel()

    async def finish(self) -> None:
        """After the drain: resync once more (gap_resync) and close."""
        self.stopping = True
        if self.ws is not None:
            if self.plan.crash_at is not None and self.plan.crash_at < self.sc.duration:
                self.ws.transport.abort()
            else:
                await self.ws.close()

    def _crash(self) -> None:
        self.stopping = True
        self.rec.departures.append((self.plan.user, self.viewing, "crash", self.now()))
        self.rec.connections.append((self.plan.user, self.plan.workspace, self.instance, "crashed", self.now(),
                                     self.conn_count))
        if self.ws is not None:
            # Vanish without a trace, as a dropped network or a frozen tab does: no leave, no close frame and
            # no FIN (a FIN would let the server remove the presence at once as a disconnect). The socket just
            # goes silent; only the presence timeout can tell. finish() aborts it after the run.
            self.ws.transport.pause_reading()

    async def _edit(self, stop_at: float) -> None:
        sc, rate = self.sc, self.editor_rate
        if rate <= 0:
            return
        hot = [f"t{i}" for i in range(sc.hot_tasks)]
        cold = [f"t{i}" for i in range(sc.hot_tasks, sc.tasks)] or hot
        t, n = max(0.0, self.now()), 0
        while True:
            t += self.rng.expovariate(rate)
            if t >= stop_at:
                return
            await self.sleep_until(t)
            await self.connected.wait()
            task = self.rng.choice(hot if hot and self.rng.random() < sc.hot_share else cold)
            n += 1
            ref = f"{self.plan.user}.{n}"
            field_name = self.rng.choice(("title", "status", "assignee", "priority", "description"))
            sent_ns = int((self.t0 + t * sc.time_scale) * 1e9)  # the scheduled time, as monotonic ns
            # "_ws" is the canary: a receiver in another workspace must never see it (cross-workspace leak check).
            changes = {field_name: ref, "_sentNs": sent_ns, "_ref": ref, "_from": f"{self.plan.user}@{self.instance}",
                       "_ws": self.plan.workspace}
            self.rec.sends.append((self.plan.user, self.plan.workspace, task, ref, t, self.instance))
            await self.send("task.update", {"taskId": task, "changes": changes, "ref": ref})

    async def _view(self, stop_at: float) -> None:
        task = self.plan.view_task
        assert task is not None
        await self.sleep_until(self.plan.view_at)
        await self.connected.wait()
        self.viewing = task
        await self.send("presence.join", {"taskId": task})
        if self.sc.presence_mode == "probe":
            return  # the server's probes drive the heartbeat (_on_frame answers them)
        model = parse_model(self.sc.heartbeat)
        # Its own generator, seeded as rtlib.model.live rebuilds it: a shared one would be drawn by this tab's
        # edits first (models that draw their hide/show spells up front then differ from the model's replay).
        for beat in model.beats(self.plan.view_at, stop_at, random.Random(f"{self.sc.seed}:{self.plan.index}")):
            await self.sleep_until(beat.t)
            if beat.delivered and self.viewing:
                await self.send("presence.heartbeat", {"taskId": task})

    async def _churn(self) -> None:
        assert self.plan.churn_at is not None
        await self.sleep_until(self.plan.churn_at)
        ws = self.ws
        if ws is None:
            return
        self.connected.clear()
        if self.viewing:
            self.rec.departures.append((self.plan.user, self.viewing, "disconnect", self.now()))
        self.rec.connections.append((self.plan.user, self.plan.workspace, self.instance, "closed", self.now(),
                                     self.conn_count))
        await ws.close()  # the reader notices and reconnects after a pause

    async def _reader(self) -> None:
        while True:
            ws = self.ws
            if ws is None:
                return
            try:
                async for raw in ws:
                    self.impair.receive(raw, self._on_frame, self._on_drop)
            except ConnectionClosed:
                pass
            if self.stopping:
                return
            # Unexpected close (instance stopped or killed) or churn: reconnect, then resync every task.
            self.connected.clear()
            if self.catching is not None:  # dropped again before the last resume caught up
                self._caught_up(interrupted=True)
            self.dropped_at = self.now()
            self.rec.connections.append((self.plan.user, self.plan.workspace, self.instance, "lost", self.dropped_at,
                                         self.conn_count))
            await asyncio.sleep(self.rng.uniform(0.01, 0.05))
            self.instance = (self.instance + 1) % len(self.urls) if self.plan.churn_at is None else self.instance
            await self.connect()
            if not self.recovered:  # the history could not fill the gap: fetch every task again
                for task in self.tasks:
                    await self.send("task.get", {"taskId": task})
            if self.viewing:
                await self.send("presence.join", {"taskId": self.viewing})

    # --- one received frame ------------------------------------------------------------------------------------
    def _delivery(self, frame: ServerEnvelope, ev: TaskUpdated, received_ns: int, dropped: bool) -> None:
        sent_ns = ev.changes.get("_sentNs")
        ok = isinstance(sent_ns, int)
        latency = (received_ns - sent_ns) / 1e6 if ok and not dropped else float("nan")
        t_sent = (sent_ns / 1e9 - self.t0) / self.sc.time_scale if ok else float("nan")
        canary = ev.changes.get("_ws", self.plan.workspace)
        self._count(frame, str(canary))
        if canary != self.plan.workspace or frame.workspaceId != self.plan.workspace:
            self.rec.cross.append((self.plan.user, self.plan.workspace, frame.workspaceId, canary,
                                   ev.changes.get("_ref", "")))
        self.rec.deliveries.append((ev.taskId, ev.version, frame.userId, ev.changes.get("_from", ""),
                                    ev.changes.get("_ref", ""), self.plan.user, self.instance, t_sent,
                                    frame.timestamp, self.now(), latency, dropped))

    def _count(self, frame: ServerEnvelope, content_ws: str = "") -> None:
        """Count every frame by type and workspaces (``Recorder.frames``): another workspace's is a leak."""
        self.rec.frames[(self.plan.user, frame.type, frame.workspaceId, content_ws)] += 1

    def _on_drop(self, raw: str | bytes) -> None:
        frame = _envelope.decode(raw)
        self._delivery(frame, _payloads["task.updated"].decode(frame.payload), time.monotonic_ns(), dropped=True)

    def _on_frame(self, raw: str | bytes) -> None:
        received_ns = time.monotonic_ns()
        frame = _envelope.decode(raw)
        kind = frame.type
        if kind not in ("task.updated", "task.snapshot"):  # those two are counted with their canary
            self._count(frame)
        if frame.offset:
            self.offset, self.epoch = frame.offset, frame.epoch
            if self.catching is not None and self.catching[0] and offset_key(frame.offset) >= self.catching[3]:
                self._caught_up()
        if kind == "task.updated":
            ev = _payloads[kind].decode(frame.payload)
            self._delivery(frame, ev, received_ns, dropped=False)
            now = self.now()
            self._applied(self.cache.on_update(ev.taskId, ev.version, ev.changes, now), now)
        elif kind == "task.snapshot":
            ev = _payloads[kind].decode(frame.payload)
            self._count(frame, str(ev.fields.get("_ws", "")))  # the last update's canary, kept in the fields
            now = self.now()
            self._applied(self.cache.on_snapshot(ev.taskId, ev.version, ev.fields, now), now)
            if self.catching is not None and not self.catching[0]:
                self.catching[3].discard(ev.taskId)
                if not self.catching[3]:
                    self._caught_up()
        elif kind == "ack":
            ev = _payloads[kind].decode(frame.payload)
            self.rec.acks.append((self.plan.user, self.plan.workspace, ev.ref, ev.taskId, ev.version, self.now()))
        elif kind in ("presence.joined", "presence.left"):
            ev = _payloads[kind].decode(frame.payload)
            reason = ev.reason if isinstance(ev, PresenceLeft) else None
            self.rec.presence.append((self.plan.user, ev.userId, ev.taskId, kind.split(".")[1], reason,
                                      self.now(), frame.timestamp))
        elif kind == "presence.probe":
            if self.viewing and not self.stopping and self.pong_rng.random() >= self.pong_loss:
                seq = _payloads[kind].decode(frame.payload).seq
                spawn(self.send("presence.pong", {"seq": seq}))
        elif kind == "error":
            self.rec.connections.append((self.plan.user, self.plan.workspace, self.instance, "error", self.now(),
                                         bytes(frame.payload).decode()))
        elif kind == "session.resync":  # open through a Redis outage, but what it missed is gone (protocol §11b)
            self._resync_in_place(_payloads[kind].decode(frame.payload))

    def _resync_in_place(self, ev: Any) -> None:
        """What a welcome with ``recovered: false`` asks, on the open connection: fetch every task, re-join."""
        now = self.now()
        if self.catching is not None:
            self._caught_up(interrupted=True)
        if ev.epoch:
            self.offset, self.epoch = ev.offset, ev.epoch
        self.recovered = False
        self.catching = (False, now, now, set(self.tasks))
        self.rec.connections.append((self.plan.user, self.plan.workspace, self.instance, "resynced", now,
                                     self.conn_count))
        for task in self.tasks:
            spawn(self.send("task.get", {"taskId": task}))
        if self.viewing:
            spawn(self.send("presence.join", {"taskId": self.viewing}))

    def _caught_up(self, interrupted: bool = False) -> None:
        """Record one resume: caught up now, or (``interrupted``) never, because the connection dropped again."""
        assert self.catching is not None
        recovered, dropped, welcomed, _ = self.catching
        self.rec.recoveries.append((self.plan.user, self.plan.workspace, "recovered" if recovered else "resynced",
                                    dropped, welcomed, float("nan") if interrupted else self.now()))
        self.catching = None

    def _applied(self, applies: list[Any], now: float) -> None:
        for a in applies:
            self.rec.applies.append((self.plan.user, a.task_id, a.version, str(a.outcome), a.out_of_order, now))
        for task in self.cache.take_resync_requests():
            spawn(self.send("task.get", {"taskId": task}))
