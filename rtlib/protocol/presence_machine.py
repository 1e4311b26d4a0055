"""One instance's presence as a state machine that owns its state and its timers, sans-I/O.

In the style of ``websockets``' ``protocol.py`` (data in, effects out) and SimPy's processes (the same code on
a virtual or a real clock): :class:`PresenceMachine` holds what each connection views, the probe schedule
(:class:`~rtlib.protocol.probes.Prober`, presence mode ``probe``) and the sweep schedule
(:meth:`PresenceConfig.next_sweep`). It never reads a clock or sleeps; a driver asks it when to wake
(:meth:`~PresenceMachine.next_deadline`), wakes then, and hands it ``now`` (:meth:`~PresenceMachine.on_timer`).
Every input returns a list of effects for the driver to carry out:

* a store operation (:class:`Upsert`, :class:`Remove`, :class:`Hold`, :class:`Expire`) carrying the event the
  store publishes with it (:mod:`rtlib.protocol.presence_protocol`);
* :class:`Send`, a frame for one connection (a ``presence.probe``).

After an :class:`Upsert` has run, :meth:`~PresenceMachine.stored` turns the store's fact into the replies for
the requester (a ``presence.state``).

Two drivers run **this object**: the live server (:mod:`rtlib.server.loops` wakes one timer task at
:meth:`~PresenceMachine.next_deadline`; the driver executes effects on Redis) and the virtual-time model
(:mod:`rtlib.model.engine` wakes it on a virtual clock, each wake read ``lag`` late like a live loop, and
executes effects on the in-memory :class:`~rtlib.protocol.presence_protocol.BookStore`). Nothing recomputes its
schedule elsewhere: the fast executor asks it for its sweep instants (:func:`sweep_instants`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from rtlib.protocol.presence import EntryFact, PresenceConfig
from rtlib.protocol.presence_protocol import Expire, Hold, PresenceProtocol, Remove, Upsert
from rtlib.protocol.probes import Prober
from rtlib.protocol.session import Session

__all__ = ["Effect", "PresenceMachine", "Send", "StoreOp", "sweep_instants"]


@dataclass(frozen=True, slots=True)
class Send:
    """Send ``frame`` to the connection ``conn_id`` (if it is still open)."""

    conn_id: str
    frame: bytes


StoreOp = Upsert | Remove | Hold | Expire
Effect = StoreOp | Send

#: Presence requests a client can send (``presence.pong`` is answered by :meth:`PresenceMachine.pong`).
REQUESTS = frozenset({"presence.join", "presence.heartbeat", "presence.leave"})


class PresenceMachine:
    """Presence of one server instance: connections' views, probe and sweep schedules, as effects."""

    def __init__(self, config: PresenceConfig, probe_interval: float | None = None) -> None:
        """In presence mode ``probe`` (``config.mode``) the server probes each viewing connection every heartbeat
        interval (or ``probe_interval``, which also turns probing on); in mode ``timer`` clients beat on their
        own timers."""
        self.config = config
        self.protocol = PresenceProtocol(config)
        if probe_interval is None and config.mode == "probe":
            probe_interval = config.heartbeat_interval
        self.prober = Prober(probe_interval) if probe_interval is not None else None
        self.sessions: dict[str, Session] = {}
        self._sweep_at = math.inf  # the next sweep; set by start()
        self._probe_at = math.inf  # the next probe tick with something due

    # --- inputs ---------------------------------------------------------------------------------------------
    def start(self, now: float) -> None:
        """Begin the sweep schedule: the first sweep is the first multiple of the sweep interval after ``now``."""
        self._sweep_at = self.config.next_sweep(now)

    def open(self, session: Session) -> None:
        """A connection opened (it views nothing yet)."""
        self.sessions[session.conn_id] = session

    def receive(self, session: Session, type_: str, task_id: str, now: float) -> list[Effect]:
        """A ``presence.join`` / ``presence.heartbeat`` / ``presence.leave`` of ``session`` at ``now``."""
        if type_ not in REQUESTS:
            raise ValueError(f"not a presence request: {type_!r}")
        op = self.protocol.request(session, type_, task_id, now)
        self._watch(session, now)
        return [op]

    def pong(self, session: Session, now: float) -> list[Effect]:
        """``presence.pong``: a heartbeat of every task the connection views (the driver runs them together)."""
        return list(self.protocol.pong(session, now))

    def close(self, session: Session, now: float, clean: bool = True) -> list[Effect]:
        """The connection closed: remove its entries (or, lost with a leave grace, hold them)."""
        self.sessions.pop(session.conn_id, None)
        return list(self.protocol.disconnect(session, now, clean))

    def stored(self, session: Session, type_: str, fact: EntryFact, viewers: list[str], now: float) -> list[bytes]:
        """The replies for ``session`` once its upsert has run (``type_``: the request that caused it)."""
        return self.protocol.replies(session, type_, fact, viewers, now)

    # --- timers ---------------------------------------------------------------------------------------------
    def next_deadline(self) -> float:
        """When the driver must call :meth:`on_timer` next (``inf``: never, until an input arrives)."""
        return min(self._sweep_at, self._probe_at)

    def on_timer(self, now: float) -> list[Effect]:
        """Run what is due at ``now`` (a driver may call late: ``now`` is what it read): the sweep, then probes."""
        effects: list[Effect] = []
        if now >= self._sweep_at:
            effects.append(self.protocol.sweep(now))
            # From the time read, as a live loop that woke late does: a wake more than one interval late skips
            # the sweeps in between (one sweep pops everything they would have).
            self._sweep_at = self.config.next_sweep(now)
        if self.prober is not None and now >= self._probe_at:
            effects += [Send(s.conn_id, frame) for s, frame in self.prober.due(now, self.sessions)]
            self._probe_at = self.prober.next_deadline(now)
        return effects

    def _watch(self, session: Session, now: float) -> None:
        if self.prober is not None:
            self.prober.watch(session, now)
            self._probe_at = self.prober.next_deadline(now)


def sweep_instants(config: PresenceConfig, start: float, end: float,
                   lag: Callable[[int], float] | None = None) -> list[float]:
    """The clock readings at which a :class:`PresenceMachine` started at ``start`` sweeps, up to ``end``, when
    its ``k``-th wake reads the clock ``lag(k)`` late: obtained by running the machine's own timer (an empty
    machine: its sweep schedule does not depend on what it holds). What the vectorised executor uses instead
    of a formula of its own."""
    machine = PresenceMachine(config)
    machine.start(start)
    out: list[float] = []
    while (at := machine.next_deadline()) <= end:
        now = at + (lag(len(out)) if lag is not None else 0.0)
        for effect in machine.on_timer(now):
            if isinstance(effect, Expire):
                out.append(now)
    return out
