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
from typing import Any

from rtlib.protocol import events
from rtlib.protocol.session import Session

__all__ = ["TICKS_PER_INTERVAL", "TICK_PHASE", "Prober", "probe_due", "probe_schedule", "send_tick", "tick_index"]

#: Probes are sent on ticks ``interval / TICKS_PER_INTERVAL`` apart: at 30 s a probe is at most 1 s late.
TICKS_PER_INTERVAL = 30
#: Ticks fall at ``(m + TICK_PHASE) * tick``, half a tick off the whole multiples: sweeps run at whole multiples
#: of the sweep interval, and a probe sent at a sweep instant races that sweep with its answer.
TICK_PHASE = 0.5


# The probe schedule, written once. Like the presence predicates (rtlib.protocol.presence), these use only
# arithmetic and comparisons, so the Prober calls them on floats and the model on numpy arrays: one rule, no
# copy in bulk.
def tick_index(t: Any, tick: float, phase: float = TICK_PHASE) -> Any:
    """The smallest ``m`` with ``m * tick + phase * tick >= t`` (a float ``m``; elementwise on arrays)."""
    off = phase * tick
    m = -((off - t) // tick)  # ceil((t - off) / tick), then one step of correction each way for rounding
    m = m - ((m - 1) * tick + off >= t)
    return m + (m * tick + off < t)


def send_tick(due: Any, tick: float, phase: float = TICK_PHASE) -> Any:
    """When a probe due at ``due`` goes out: the first tick at or after it (ticks are ``(m + phase) * tick``)."""
    return tick_index(due, tick, phase) * tick + phase * tick


def probe_due(watched_at: Any, n: Any, interval: float) -> Any:
    """When the ``n``-th probe (``n >= 1``) of a connection watched at ``watched_at`` is due: ``n`` intervals
    later (multiplied, not added up, so a bulk computation gets the same floats as the Prober)."""
    return watched_at + n * interval


def probe_schedule(watched_at: float, until: float, interval: float, phase: float = TICK_PHASE) -> list[float]:
    """The send times of the probes of a connection watched at ``watched_at`` that views a task until ``until``
    (a driver that wakes at :meth:`Prober.next_deadline`): what :class:`Prober` does, for replaying recordings."""
    tick, out, n = interval / TICKS_PER_INTERVAL, [], 1
    while (at := send_tick(probe_due(watched_at, n, interval), tick, phase)) <= until:
        out.append(at)
        n += 1
    return out


@dataclass
class Prober:
    """One instance's probe schedule: a heap of (due time, connection id)."""

    interval: float
    _heap: list[tuple[float, str]] = field(default_factory=list)
    _due: dict[str, float] = field(default_factory=dict)
    _base: dict[str, tuple[float, int]] = field(default_factory=dict)  # conn -> (watched at, probes due so far)
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
            self._schedule(session.conn_id, now, 1)

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
                del self._base[conn]
                continue
            self._seq += 1
            out.append((session, events.presence_probe(session.workspace_id, session.user_id, self._seq, now)))
            base, n = self._base[conn]
            if probe_due(base, n + 1, self.interval) > now:
                self._schedule(conn, base, n + 1)  # one interval after it was due: no drift
            else:
                self._schedule(conn, now, 1)  # the driver fell behind by an interval: start again from now
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
        at = send_tick(max(self._heap[0][0], now), self.tick)
        return at if at > now else self.next_tick(now)

    def __len__(self) -> int:
        return len(self._due)

    def _schedule(self, conn: str, base: float, n: int) -> None:
        at = probe_due(base, n, self.interval)
        self._base[conn] = (base, n)
        self._due[conn] = at
        heapq.heappush(self._heap, (at, conn))
