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

**Blindness** (``docs/protocol.md`` §11b). A driver that cannot reach its store says so
(:meth:`~PresenceMachine.blind`); from then on the machine *holds* each entry's latest operation
(:class:`Deferred`) instead of returning it, and runs no sweep. When the store answers again the driver drains
what is held (:meth:`~PresenceMachine.sighted`) before anything else. A driver whose own clock jumped (its event
loop stalled: the timer woke far past its deadline, ``stall_after``) records the gap
(:meth:`~PresenceMachine.stalled`). Either way, time spent blind or stalled does not count towards an entry's
expiry (:meth:`~PresenceMachine.cutoff`): a viewer is not declared gone because *this* instance could not hear
it (Lifeguard's self-suspicion; Cassandra pauses convictions after a local pause), while a viewer that really
went silent is still swept, the blind time later.

Two drivers run **this object**: the live server (:mod:`rtlib.server.loops` wakes one timer task at
:meth:`~PresenceMachine.next_deadline`; the driver executes effects on Redis) and the virtual-time model
(:mod:`rtlib.model.engine` wakes it on a virtual clock, each wake read ``lag`` late like a live loop, and
executes effects on the in-memory :class:`~rtlib.protocol.presence_protocol.BookStore`). Nothing recomputes its
schedule elsewhere: the fast executor asks it for its sweep instants (:func:`sweep_instants`).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from rtlib.protocol.presence import EntryFact, PresenceConfig
from rtlib.protocol.presence_protocol import Expire, Hold, PresenceProtocol, Remove, Upsert
from rtlib.protocol.probes import Prober
from rtlib.protocol.session import Session

__all__ = ["Deferred", "Effect", "PresenceMachine", "Send", "StoreOp", "sweep_instants"]


@dataclass(frozen=True, slots=True)
class Send:
    """Send ``frame`` to the connection ``conn_id`` (if it is still open)."""

    conn_id: str
    frame: bytes


StoreOp = Upsert | Remove | Hold | Expire


@dataclass(frozen=True, slots=True)
class Deferred:
    """A connection's presence operation that was held while the store could not be reached (the latest one of
    its entry) and is carried out once it answers. ``cause`` is the input that made it: a request type (the
    replies of ``presence.join``, or of a beat that re-created an entry, then go to the connection, late) or
    ``"close"``."""

    op: Upsert | Remove | Hold
    cause: str

    @property
    def entry(self) -> tuple[str, str, str]:
        """(workspace, task, connection): the store entry the operation is about."""
        return self.op.workspace_id, self.op.task_id, self.op.conn_id


Effect = StoreOp | Send | Deferred

#: Presence requests a client can send (``presence.pong`` is answered by :meth:`PresenceMachine.pong`).
REQUESTS = frozenset({"presence.join", "presence.heartbeat", "presence.leave"})


class PresenceMachine:
    """Presence of one server instance: connections' views, probe and sweep schedules, as effects."""

    def __init__(self, config: PresenceConfig, probe_interval: float | None = None,
                 stall_after: float | None = None) -> None:
        """In presence mode ``probe`` (``config.mode``) the server probes each viewing connection every heartbeat
        interval (or ``probe_interval``, which also turns probing on); in mode ``timer`` clients beat on their
        own timers. ``stall_after``: a timer call more than this late for its deadline means the driver itself
        stalled (:meth:`stalled`); ``None``: never assumed (the virtual-time model, whose wakes are late by
        design only)."""
        self.config = config
        self.protocol = PresenceProtocol(config)
        if probe_interval is None and config.mode == "probe":
            probe_interval = config.heartbeat_interval
        self.prober = Prober(probe_interval) if probe_interval is not None else None
        self.stall_after = stall_after
        self.sessions: dict[str, Session] = {}
        self._sweep_at = math.inf  # the next sweep; set by start()
        self._probe_at = math.inf  # the next probe tick with something due
        self._blind_since: float | None = None  # the store cannot be reached since then (None: it can)
        self._gaps: list[tuple[float, float]] = []  # past blind or stalled intervals, sorted, disjoint
        self._held: dict[tuple[str, str, str], Deferred] = {}  # while blind: the latest operation per entry

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
        return self._unless_blind([op], type_)

    def pong(self, session: Session, now: float) -> list[Effect]:
        """``presence.pong``: a heartbeat of every task the connection views (the driver runs them together)."""
        return self._unless_blind(list(self.protocol.pong(session, now)), "presence.pong")

    def close(self, session: Session, now: float, clean: bool = True) -> list[Effect]:
        """The connection closed: remove its entries (or, lost with a leave grace, hold them)."""
        self.sessions.pop(session.conn_id, None)
        return self._unless_blind(list(self.protocol.disconnect(session, now, clean)), "close")

    def stored(self, session: Session, type_: str, fact: EntryFact, viewers: list[str], now: float) -> list[bytes]:
        """The replies for ``session`` once its upsert has run (``type_``: the request that caused it)."""
        return self.protocol.replies(session, type_, fact, viewers, now)

    # --- timers ---------------------------------------------------------------------------------------------
    def next_deadline(self) -> float:
        """When the driver must call :meth:`on_timer` next (``inf``: never, until an input arrives)."""
        return min(self._sweep_at, self._probe_at)

    def on_timer(self, now: float) -> list[Effect]:
        """Run what is due at ``now`` (a driver may call late: ``now`` is what it read): the sweep, then probes.
        While blind there is no sweep (the store cannot run it, and it would judge entries by beats held here)."""
        effects: list[Effect] = []
        late = now - self.next_deadline()
        if self.stall_after is not None and late > self.stall_after:
            self.stalled(now - late, now)
        if now >= self._sweep_at:
            if self._blind_since is None:
                sweep = self.protocol.sweep(now)
                cutoff = self.cutoff(now)
                effects.append(sweep if cutoff == sweep.cutoff else replace(sweep, cutoff=cutoff))
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

    # --- blindness: the store unreachable, or this driver stalled -------------------------------------------
    @property
    def blind_since(self) -> float | None:
        """Since when the store cannot be reached (None: it can)."""
        return self._blind_since

    def blind(self, since: float) -> None:
        """The store cannot be reached, since ``since`` (the last time it was known to answer: staleness from
        then on is this instance's blindness). Presence inputs are held from now on, the latest per entry, and
        no sweep runs. Calling it again while blind keeps the earlier start."""
        if self._blind_since is None or since < self._blind_since:
            self._blind_since = since

    def sighted(self, now: float) -> list[Effect]:
        """The store answers again. Returns what is held, to carry out *before anything else*, and stays blind
        meanwhile (inputs keep being held); call again once it is carried out. An empty list means nothing is
        left: blindness ended at ``now``, inputs return their effects again and sweeps resume, the blind time not
        counted (:meth:`cutoff`). So held beats are written before this instance sweeps again, and an input that
        arrived during the drain can never overtake an older one of its entry."""
        if self._blind_since is None:
            return []
        if self._held:
            held, self._held = list(self._held.values()), {}
            return list(held)
        self._gap(self._blind_since, now)
        self._blind_since = None
        return []

    def requeue(self, deferred: Sequence[Deferred]) -> bool:
        """Operations the store did not carry out because it stopped answering: held again, behind anything of
        the same entry held since (the later input wins). False (and nothing held) if the machine is not blind:
        the driver's error was not an outage, the operations are dropped like any failed store call."""
        if self._blind_since is None:
            return False
        older = {d.entry: d for d in deferred if d.entry not in self._held}
        self._held = {**older, **self._held}
        return True

    def stalled(self, since: float, now: float) -> None:
        """The driver did not run from ``since`` to ``now`` (a long GC pause, a stopped VM): beats that reached it
        meanwhile are still unread, so that gap does not count towards expiry either (:meth:`cutoff`)."""
        self._gap(since, now)

    def cutoff(self, now: float) -> float:
        """The sweep's cutoff at ``now``: an entry expires once it went ``timeout`` (+ leave grace) seconds
        without a beat *while this instance could hear it*; blind or stalled time does not count. Without gaps
        this is :meth:`PresenceConfig.cutoff`. A crashed viewer is still swept, at most the gaps' length later."""
        need, t = self.config.expiry, now
        for start, end in reversed(self._gaps):
            end = min(end, t)
            if t - end >= need:
                break
            need -= t - end
            t = min(start, t)
        cutoff = t - need if self._gaps else self.config.cutoff(now)
        self._gaps = [g for g in self._gaps if g[1] > cutoff]  # gaps before the cutoff never matter again
        return cutoff

    def _gap(self, start: float, end: float) -> None:
        if end <= start:
            return
        merged: list[tuple[float, float]] = []
        for s, e in sorted([*self._gaps, (start, end)]):
            if merged and s <= merged[-1][1]:
                merged[-1] = (merged[-1][0], max(merged[-1][1], e))
            else:
                merged.append((s, e))
        self._gaps = merged

    def _unless_blind(self, ops: list[Effect], cause: str) -> list[Effect]:
        """``ops`` as they are, or, while blind, nothing: each is held as its entry's latest operation (a join
        stays a join when a beat follows it, so its ``presence.state`` is still sent)."""
        if self._blind_since is None:
            return ops
        for op in ops:
            assert isinstance(op, Upsert | Remove | Hold)
            d = Deferred(op, cause)
            prior = self._held.pop(d.entry, None)
            if prior is not None and prior.cause == "presence.join" and isinstance(op, Upsert) \
                    and isinstance(prior.op, Upsert):
                d = Deferred(op, "presence.join")
            self._held[d.entry] = d
        return []


def sweep_instants(config: PresenceConfig, start: float, end: float,
                   lag: Callable[[int], float] | None = None) -> list[float]:
    """The clock readings at which a :class:`PresenceMachine` started at ``start`` sweeps, up to ``end``, when
    its ``k``-th wake reads the clock ``lag(k)`` late: obtained by running the machine's own timer (an empty
    machine: its sweep schedule does not depend on what it holds). What the vectorised executor uses instead
    of a formula of its own."""
    if lag is None:
        return list(_on_time_sweeps(config.sweep_interval, start, end))
    return _run_sweeps(config, start, end, lag)


@functools.lru_cache(maxsize=64)
def _on_time_sweeps(sweep_interval: float, start: float, end: float) -> tuple[float, ...]:
    # Cached by what the schedule depends on (the sweep interval, not the timeout or grace): a tuning sweep runs
    # hundreds of configurations of one schedule, and running the timer costs ~0.1 s per 8 h (each wake builds
    # its sweep's event), about two thirds of a fast run.
    return tuple(_run_sweeps(PresenceConfig(sweep_interval=sweep_interval), start, end, None))


def _run_sweeps(config: PresenceConfig, start: float, end: float, lag: Callable[[int], float] | None
                ) -> list[float]:
    machine = PresenceMachine(config)
    machine.start(start)
    out: list[float] = []
    while (at := machine.next_deadline()) <= end:
        now = at + (lag(len(out)) if lag is not None else 0.0)
        for effect in machine.on_timer(now):
            if isinstance(effect, Expire):
                out.append(now)
    return out
