"""Task-level presence rules, sans-I/O: who is a viewer, when a user joins or leaves, what expires at ``now``.

The design review's model: a user viewing a task sends ``presence.join``, then a heartbeat every
``heartbeat_interval`` seconds; an entry whose last heartbeat is ``timeout`` seconds old (or older) is gone.
State is one sorted set per task (member = one *connection* of a user, score = its last heartbeat) plus a
per-task count of entries per user, so a user with two tabs joins on the first and leaves on the last.

Stores carry out primitive operations (upsert an entry, remove one, pop the expired ones) and report
:class:`EntryFact` s; the functions here turn facts into presence events. Two stores implement the same
primitives: :class:`PresenceBook` (in memory, for virtual time and unit tests) and the Redis Lua scripts in
:mod:`rtlib.server.store` (the live server). ``tests/test_store.py`` drives both with one random sequence and
checks they agree.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

from rtlib.protocol.presence_table import Announcement, Change, LeftReason, announcement

__all__ = [
    "PRESENCE_MODES",
    "EntryFact",
    "PresenceBook",
    "PresenceChange",
    "PresenceConfig",
    "PresenceMode",
    "check_presence_mode",
    "joined_change",
    "next_multiple",
    "left_change",
    "member",
    "split_member",
]

# LeftReason (leave / disconnect / timeout) is defined with the lifecycle table and imported above.


#: "timer": clients beat from their own timer (the design review's); "probe": the server sends each viewing
#: connection a ``presence.probe`` every heartbeat interval and the client's answer is the heartbeat.
PresenceMode = Literal["timer", "probe"]
PRESENCE_MODES: tuple[PresenceMode, ...] = ("timer", "probe")


@dataclass(frozen=True)
class PresenceConfig:
    """Presence settings, in seconds (fractions allowed: simulations compress time), declared and validated
    here only: the server's :class:`~rtlib.protocol.config.ServerConfig`, the lab's ``Scenario`` and the model's
    ``ModelScenario`` take their defaults from this class and build one of these to validate."""

    heartbeat_interval: float = 30.0
    timeout: float = 60.0
    sweep_interval: float = 5.0
    #: Seconds a timed-out viewer's ``presence.left`` is held back; a beat within them drops it (no flap).
    #: 0 = off. A clean leave or disconnect is never delayed.
    leave_grace: float = 0.0
    #: Who drives the heartbeat (docs/protocol.md §9): see :data:`PresenceMode`.
    mode: PresenceMode = "timer"
    #: Announced in ``session.welcome``: clients also beat when their page becomes hidden or visible again.
    visibility_beat: bool = False

    def __post_init__(self) -> None:
        check_presence_mode(self.mode)
        for name in ("heartbeat_interval", "timeout", "sweep_interval"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive number of seconds, got {value!r}")
        grace = self.leave_grace
        if not (isinstance(grace, (int, float)) and math.isfinite(grace) and grace >= 0):
            raise ValueError(f"leave_grace must be a non-negative number of seconds, got {grace!r}")

    @property
    def expiry(self) -> float:
        """Seconds without a beat after which a sweep pops an entry: the timeout plus the leave grace.

        Holding a timed-out entry's ``presence.left`` back for the grace and dropping it when the viewer beats
        again is, for the observers, exactly an entry that is popped ``leave_grace`` later: during the grace
        the user is still listed, and a beat refreshes the entry without any event. So the grace is applied
        here, once, and every sweep (live, model, analytic) inherits it."""
        return self.timeout + self.leave_grace

    # The predicates below are the rules themselves, written once. They use only arithmetic and comparisons,
    # so they work on floats (the server, the plain executor) and elementwise on numpy arrays (the fast
    # executor, the analytic functions) alike: protocol/ imports no numpy, and no caller keeps a copy.
    def cutoff(self, now: Any) -> Any:
        """Entries whose last heartbeat is at or before this time have expired at ``now``."""
        return now - self.expiry

    def is_expired(self, last_heartbeat: Any, now: Any) -> Any:
        """Expired? Inclusive: an entry exactly ``expiry`` old is popped (what the Lua ``EXPIRE`` script does)."""
        return last_heartbeat <= self.cutoff(now)

    def popped_at(self, last_heartbeat: Any) -> Any:
        """The sweep of the aligned schedule that pops an entry whose last beat was ``last_heartbeat`` if no beat
        comes first: the first multiple ``s`` of the sweep interval with :meth:`is_expired` at ``s``. (Not simply
        the multiple at or after ``last + expiry``: in floats that one can miss the inclusive rule by a rounding
        error.)"""
        step = self.sweep_interval
        k = _multiple_index(last_heartbeat + self.expiry, step)
        k = k - self.is_expired(last_heartbeat, (k - 1) * step)
        return (k + (1 - self.is_expired(last_heartbeat, k * step))) * step

    # The one sweep schedule. Aligned: every instance sweeps at the absolute multiples of sweep_interval
    # (Unix time), so all instances share one phase and a model, the analytic functions and the live server
    # agree on when a departure is announced. Several instances sweeping at once is safe: each entry is
    # popped by exactly one script.
    def sweep_at_or_after(self, t: float) -> float:
        """The first sweep at or after ``t``: where an entry whose last beat was ``t - timeout`` is popped."""
        return next_multiple(t, self.sweep_interval)

    def next_sweep(self, now: float) -> float:
        """The first sweep strictly after ``now`` (what a sweeper that just ran at ``now`` waits for)."""
        at = next_multiple(now, self.sweep_interval)
        # Not ``at + sweep_interval``: that sum can fall a rounding error short of the next multiple as
        # next_multiple forms it (2.1 + 0.7 = 2.8 < 4 * 0.7), and the timer then swept twice, 4e-16 s apart.
        return at if at > now else next_multiple(at + self.sweep_interval / 2, self.sweep_interval)

    def worst_case_detection(self) -> float:
        """Longest delay from a client's last heartbeat to its ``presence.left`` (timeout + grace + one sweep)."""
        return self.expiry + self.sweep_interval


def check_presence_mode(mode: str) -> None:
    """The one check of a presence mode's name (a clear error for anything else)."""
    if mode not in PRESENCE_MODES:
        raise ValueError(f"presence_mode must be one of {', '.join(map(repr, PRESENCE_MODES))}, got {mode!r}")


def _multiple_index(t: Any, step: float) -> Any:
    """The smallest ``k`` with ``k * step >= t``, for a float or elementwise on an array (a float ``k``)."""
    k = -((-t) // step)  # ceil(t / step), then one step of correction each way for the division's rounding
    k = k - ((k - 1) * step >= t)
    return k + (k * step < t)


def next_multiple(t: Any, step: float) -> Any:
    """The smallest multiple of ``step`` that is ``>= t`` (robust to ``t / step`` rounding either way); works on
    floats and elementwise on numpy arrays."""
    return _multiple_index(t, step) * step


def member(conn_id: str, user_id: str) -> str:
    """The sorted-set member of one connection's entry (connection ids never contain ``:``)."""
    return f"{conn_id}:{user_id}"


def split_member(entry: str) -> tuple[str, str]:
    """Inverse of :func:`member`: ``(conn_id, user_id)``."""
    conn_id, _, user_id = entry.partition(":")
    return conn_id, user_id


@dataclass(frozen=True)
class EntryFact:
    """What a store did to one entry: ``changed`` = added (upsert) or removed; ``user_entries`` = the
    user's entry count on that task afterwards."""

    workspace_id: str
    task_id: str
    conn_id: str
    user_id: str
    changed: bool
    user_entries: int


@dataclass(frozen=True)
class PresenceChange:
    """A presence event to publish to the workspace."""

    workspace_id: str
    task_id: str
    user_id: str
    kind: Literal["joined", "left"]
    reason: LeftReason | None = None
    exclude_conn: str | None = None  # "joined" goes to the *other* connections


def joined_change(fact: EntryFact) -> PresenceChange | None:
    """The ``presence.joined`` an upsert's fact announces, if any: the decision is the lifecycle table's
    (:mod:`rtlib.protocol.presence_table`: a user becomes a viewer when their first entry is added)."""
    if announcement(Change.ADDED if fact.changed else None, fact.user_entries) is Announcement.JOINED:
        return PresenceChange(fact.workspace_id, fact.task_id, fact.user_id, "joined", exclude_conn=fact.conn_id)
    return None


def left_change(fact: EntryFact, reason: LeftReason) -> PresenceChange | None:
    """The ``presence.left`` a removal's fact announces, if any (by whoever removed the entry): the decision
    is the lifecycle table's (a user stops being a viewer when their last entry on the task is removed)."""
    if announcement(Change.REMOVED if fact.changed else None, fact.user_entries) is Announcement.LEFT:
        return PresenceChange(fact.workspace_id, fact.task_id, fact.user_id, "left", reason=reason)
    return None


@dataclass
class PresenceBook:
    """In-memory presence store with the same primitives as the Redis scripts; no clock, no I/O.

    Expiry is decided only by :meth:`expire`, exactly like the live server's sweeper: an entry past its
    timeout still counts as a viewer until a sweep pops it.
    """

    entries: dict[tuple[str, str], dict[str, float]] = field(default_factory=dict)
    counts: dict[tuple[str, str], dict[str, int]] = field(default_factory=dict)

    def upsert(self, ws: str, task: str, conn: str, user: str, now: float) -> tuple[EntryFact, list[str]]:
        """Join or heartbeat: set the entry's score to ``now``. Returns the fact and the task's viewers."""
        zset = self.entries.setdefault((ws, task), {})
        counts = self.counts.setdefault((ws, task), {})
        key = member(conn, user)
        added = key not in zset
        zset[key] = now
        if added:
            counts[user] = counts.get(user, 0) + 1
        return EntryFact(ws, task, conn, user, added, counts[user]), sorted(counts)

    def remove(self, ws: str, task: str, conn: str, user: str) -> EntryFact:
        """Leave or disconnect: remove the entry if it is there."""
        zset = self.entries.get((ws, task), {})
        counts = self.counts.get((ws, task), {})
        removed = zset.pop(member(conn, user), None) is not None
        remaining = self._decrement(ws, task, user) if removed else counts.get(user, 0)
        return EntryFact(ws, task, conn, user, removed, remaining)

    def hold(self, ws: str, task: str, conn: str, user: str, score: float) -> None:
        """Lower an existing entry's score to ``score`` (Redis ``ZADD XX LT``); a missing entry stays missing."""
        zset = self.entries.get((ws, task), {})
        key = member(conn, user)
        if key in zset:
            zset[key] = min(zset[key], score)

    def expire(self, cutoff: float) -> list[EntryFact]:
        """Pop every entry whose score is ``<= cutoff``, in (workspace, task, score, member) order."""
        popped: list[EntryFact] = []
        for (ws, task), zset in sorted(self.entries.items()):
            for key, score in sorted(zset.items(), key=lambda kv: (kv[1], kv[0])):
                if score <= cutoff:
                    del zset[key]
                    conn, user = split_member(key)
                    popped.append(EntryFact(ws, task, conn, user, True, self._decrement(ws, task, user)))
        return popped

    def _decrement(self, ws: str, task: str, user: str) -> int:
        counts = self.counts[(ws, task)]
        counts[user] -= 1
        if counts[user] <= 0:
            del counts[user]
            return 0
        return counts[user]

    def viewers(self, ws: str, task: str) -> list[str]:
        return sorted(self.counts.get((ws, task), {}))
