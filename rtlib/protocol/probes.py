"""Server-driven heartbeats, sans-I/O: which connections are due a ``presence.probe`` at ``now``.

Presence mode ``probe`` (``docs/protocol.md`` §9) moves the heartbeat's timer from the client to the server:
a browser throttles a hidden tab's timers to one wake-up a minute, but still runs its message handlers within
milliseconds, so a probe answered from the handler keeps a hidden viewer alive at the server's pace.

A connection is probed every ``heartbeat_interval`` while it views at least one task, its first probe one
interval after its first join (so probes of many connections spread over the interval instead of going out
together). A driver wakes at :meth:`Prober.next_tick` (absolute ticks, half a tick off the multiples of
``tick``: batches the probes of a tick into one loop turn) and sends what :meth:`Prober.due` returns. The
answer, ``presence.pong``, is turned into heartbeats by
:meth:`rtlib.protocol.presence_protocol.PresenceProtocol.pong`.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from rtlib.protocol import events
from rtlib.protocol.session import Session

__all__ = ["TICKS_PER_INTERVAL", "TICK_PHASE", "Prober", "tick_index"]

#: Probes are sent on ticks ``interval / TICKS_PER_INTERVAL`` apart: at 30 s a probe is at most 1 s late.
TICKS_PER_INTERVAL = 30
#: Ticks fall at ``(m + TICK_PHASE) * tick``, half a tick off the whole multiples: sweeps run at whole multiples
#: of the sweep interval, and a probe sent at a sweep instant races that sweep with its answer.
TICK_PHASE = 0.5


def tick_index(t: float, tick: float, phase: float = TICK_PHASE) -> int:
    """The smallest ``m`` with ``m * tick + phase * tick >= t`` (computed as written, so every driver that
    forms tick times as ``m * tick + phase * tick`` gets bit-identical floats)."""
    off = phase * tick
    m = math.ceil((t - off) / tick)
    if (m - 1) * tick + off >= t:
        return m - 1
    return m if m * tick + off >= t else m + 1


@dataclass
class Prober:
    """One instance's probe schedule: a heap of (due time, connection id)."""

    interval: float
    _heap: list[tuple[float, str]] = field(default_factory=list)
    _due: dict[str, float] = field(default_factory=dict)
    _seq: int = 0

    def __post_init__(self) -> None:
        if not self.interval > 0:
            raise ValueError("the probe interval must be positive")

    @property
    def tick(self) -> float:
        return self.interval / TICKS_PER_INTERVAL

    def watch(self, session: Session, now: float) -> None:
        """Call after each presence request of ``session``: a connection that views a task and is not
        scheduled gets its first probe one interval from ``now``. Connections that stop viewing are dropped
        lazily by :meth:`due`."""
        if session.tasks and session.conn_id not in self._due:
            self._schedule(session.conn_id, now + self.interval)

    def due(self, now: float, sessions: Mapping[str, Session]) -> list[tuple[Session, bytes]]:
        """Pop every probe due at or before ``now``: ``(session, presence.probe frame)`` to send. Each is
        rescheduled one interval after it was due (no drift), or after ``now`` if the driver fell behind."""
        out: list[tuple[Session, bytes]] = []
        heap = self._heap
        while heap and heap[0][0] <= now:
            at, conn = heapq.heappop(heap)
            if self._due.get(conn) != at:
                continue  # a stale heap entry (the connection was dropped and watched again)
            session = sessions.get(conn)
            if session is None or not session.tasks:
                del self._due[conn]  # closed, or views nothing: no more probes until it joins again
                continue
            self._seq += 1
            out.append((session, events.presence_probe(session.workspace_id, session.user_id, self._seq, now)))
            nxt = at + self.interval
            self._schedule(conn, nxt if nxt > now else now + self.interval)
        return out

    def next_tick(self, now: float) -> float:
        """When the driver wakes next: the first tick (``(m + TICK_PHASE) * tick``) strictly after ``now``."""
        tick, off = self.tick, TICK_PHASE * self.tick
        m = tick_index(now, tick)
        if m * tick + off <= now:
            m += 1
        return m * tick + off

    def next_deadline(self, now: float) -> float:
        """When a driver must call :meth:`due` next: the first tick at or after the earliest scheduled probe
        (``inf`` when none is). Waking only then, instead of on every tick, sends exactly the same probes at the
        same ticks: a probe due at ``d`` goes out at the first tick ``>= d`` either way."""
        if not self._heap:
            return math.inf
        tick, off = self.tick, TICK_PHASE * self.tick
        at = tick_index(max(self._heap[0][0], now), tick) * tick + off
        return at if at > now else self.next_tick(now)

    def __len__(self) -> int:
        return len(self._due)

    def _schedule(self, conn: str, at: float) -> None:
        self._due[conn] = at
        heapq.heappush(self._heap, (at, conn))
