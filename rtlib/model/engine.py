"""The plain executor: one event at a time on a heap, through the server's own presence machine.

Every instance is a :class:`~rtlib.protocol.presence_machine.PresenceMachine`, the object the live server runs.
Every frame becomes a :class:`~rtlib.protocol.session.Session` request handed to its instance's machine, and the
effects are applied to a :class:`~rtlib.protocol.presence_protocol.BookStore` (the in-memory store that
publishes exactly as the Redis scripts do); each machine's timer is woken on its own clock at
:meth:`PresenceMachine.next_deadline`, read ``lag`` late like a live timer task (:func:`sweep_lags`).
What the store published is decoded and recorded. This is the reference the vectorised
:mod:`rtlib.model.fast` must reproduce exactly; it costs microseconds per event, so use it on small inputs.
"""

from __future__ import annotations

import heapq
import json

import numpy as np

from rtlib.model.beats import Timelines, run_end
from rtlib.model.network import frames
from rtlib.model.outcome import Outcome, sweep_lags
from rtlib.model.scenario import ModelScenario, PresenceConfig
from rtlib.protocol.config import ServerConfig
from rtlib.protocol.presence_machine import PresenceMachine
from rtlib.protocol.presence_protocol import BookStore, Expire
from rtlib.protocol.session import Session

__all__ = ["run_engine"]

_SWEEP, _WRITE = 0, 1  # at the same Redis instant a sweep runs first (the pessimistic order)


def run_engine(tl: Timelines, config: PresenceConfig, sc: ModelScenario) -> Outcome:
    machines = [PresenceMachine(config) for _ in range(sc.instances)]
    store = BookStore()
    server = ServerConfig(heartbeat_interval=config.heartbeat_interval, presence_timeout=config.timeout,
                          sweep_interval=config.sweep_interval,
                          leave_grace=config.leave_grace)
    fr = frames(tl, sc)
    end = run_end(sc, config)
    half_rtt = sc.redis_rtt / 2
    arrival = fr.arrival_plain()
    offsets = [sc.clock_offset(m) for m in range(sc.instances)]
    instance = tl.instance.tolist()
    sessions = [Session(conn_id=f"c{i}", user_id=f"u{i}", workspace_id=f"w{i % 7}", config=server)
                for i in range(tl.n)]
    for i, session in enumerate(sessions):
        machines[instance[i]].open(session)
    heap: list[tuple[float, int, int, int, float]] = []
    first = set(fr.first.tolist())
    for seq, (v, r) in enumerate(zip(fr.viewer.tolist(), arrival, strict=True)):
        c = offsets[instance[v]]
        heap.append((r + half_rtt, _WRITE, seq, v, r + c))
    t_lo = min(arrival) - 1.0 if arrival else 0.0
    wakes = int((end - t_lo) / config.sweep_interval) + 3  # more than the timers can wake
    lags = [sweep_lags(sc, m, wakes).tolist() for m in range(sc.instances)]
    for m, c in enumerate(offsets):
        machines[m].start(t_lo + c)  # started before the first frame, like a live instance
        read = machines[m].next_deadline() + lags[m][0]  # a timer wakes at its deadline and reads the clock late
        heap.append(((read - c) + half_rtt, _SWEEP, m, 0, read))
    heapq.heapify(heap)
    joined: list[tuple[int, float]] = []
    joined_away: list[float] = []
    away = fr.away.tolist()
    left: list[tuple[int, float]] = []
    writes: list[float] = []
    sweeps = 0
    while heap:
        t, kind, seq, v, now = heapq.heappop(heap)
        before = len(store.published)
        if kind == _WRITE:
            session = sessions[v]
            type_ = "presence.join" if seq in first else "presence.heartbeat"
            for op in machines[instance[v]].receive(session, type_, f"t{v % 13}", now):
                store.upsert(op)  # type: ignore[arg-type]  # a join/heartbeat is one Upsert
            writes.append(t)
        else:
            m, c, k = seq, offsets[seq], v
            for op in machines[m].on_timer(now):
                if isinstance(op, Expire):
                    store.expire(op)
                    sweeps += 1
            nxt = machines[m].next_deadline()
            if nxt <= end + c:
                read = nxt + lags[m][k + 1]
                heapq.heappush(heap, ((read - c) + half_rtt, _SWEEP, m, k + 1, read))
        for pub in store.published[before:]:
            event = json.loads(pub.event)
            who = int(event["payload"]["userId"][1:])
            if event["type"] == "presence.joined":
                joined.append((who, t))
                joined_away.append(away[seq])
            else:
                left.append((who, t))
    j = np.array(joined, dtype=float).reshape(-1, 2)
    lf = np.array(left, dtype=float).reshape(-1, 2)
    return Outcome(j[:, 0].astype(np.int64), j[:, 1], lf[:, 0].astype(np.int64), lf[:, 1],
                   np.array(joined_away, dtype=float), np.array(writes), sweeps, fr.attempted_beats, fr.lost_beats, end)
