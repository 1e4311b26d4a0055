"""Client-side task caches that apply ``task.updated`` partial updates under pluggable ordering rules, sans-I/O.

The server sends ``task.updated {taskId, version, changes}`` with only the changed fields; a task's versions
are 1, 2, 3, ... (each update bumps by exactly one). ``task.get`` returns ``task.snapshot {taskId, version,
fields}`` (version 0 and no fields for a task never updated). Updates may arrive out of order, so the cache
needs a rule for what to do with each arrival; :data:`STRATEGIES` names three, built by :func:`make_cache`:

* ``naive``: merge whatever arrives and take its version (even a lower one).
* ``version_gate``: the design review's rule, apply only a newer version (loses fields, see the class).
* ``gap_resync``: apply only the next version, buffer later ones and ask for a snapshot to fill the gap.

Caches never send anything: the driver calls :meth:`TaskCache.on_update` / :meth:`TaskCache.on_snapshot`
with the arrival time and collects the task ids to send ``task.get`` for with
:meth:`TaskCache.take_resync_requests`. :func:`diverged` compares a cache with the authoritative state.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

__all__ = [
    "DEFAULT_MAX_BUFFER",
    "STRATEGIES",
    "Apply",
    "GapResyncCache",
    "NaiveCache",
    "Outcome",
    "TaskCache",
    "VersionGateCache",
    "diverged",
    "make_cache",
]

STRATEGIES = ("naive", "version_gate", "gap_resync")
DEFAULT_MAX_BUFFER = 1000


class Outcome(StrEnum):
    """What a cache did with one update or snapshot."""

    APPLIED = "applied"
    STALE_DROPPED = "stale_dropped"  # older than (or equal to) what the cache has, or a duplicate
    GAP_BUFFERED = "gap_buffered"  # newer than the next expected version: held until the gap is filled
    RESYNCED = "resynced"  # a snapshot replaced the task's state


@dataclass(frozen=True)
class Apply:
    """One record of what happened to a version of a task.

    ``out_of_order``: the update arrived after a higher version of the same task had arrived (snapshots do
    not count: this measures reordering of the ``task.updated`` stream). ``drained``: the record is a
    buffered update applied later, not an arrival, so a driver counting arrivals skips these; it keeps the
    ``out_of_order`` flag of its arrival.
    """

    task_id: str
    version: int
    outcome: Outcome
    out_of_order: bool = False
    drained: bool = False


@dataclass
class _Task:
    version: int = 0
    fields: dict[str, Any] = field(default_factory=dict)
    max_seen: int = 0  # highest update version that arrived
    buffer: dict[int, tuple[dict[str, Any], bool]] = field(default_factory=dict)  # gap_resync only


class TaskCache:
    """Base class: per-task ``(version, fields)`` plus the hooks a strategy overrides.

    The base rule for snapshots is shared: a snapshot replaces the task if its version is at least the local
    one, else it is stale (the cache already applied updates committed after the snapshot was taken).
    Only :class:`GapResyncCache` ever asks for snapshots, but a driver may send ``task.get`` on its own
    (e.g. when a task is opened) and feed the reply to any cache.
    """

    strategy: str = ""

    def __init__(self) -> None:
        self._tasks: dict[str, _Task] = {}

    def on_update(self, task_id: str, version: int, changes: dict[str, Any], now: float) -> list[Apply]:
        """Handle a ``task.updated`` arriving at ``now``; returns the arrival's record first, then any
        buffered updates it let the cache apply."""
        task = self._tasks.setdefault(task_id, _Task())
        out_of_order = version < task.max_seen
        task.max_seen = max(task.max_seen, version)
        return self._update(task_id, task, version, changes, out_of_order, now)

    def on_snapshot(self, task_id: str, version: int, fields: dict[str, Any], now: float) -> list[Apply]:
        """Handle a ``task.snapshot``: ``RESYNCED`` (then any drained updates) or ``STALE_DROPPED``."""
        task = self._tasks.setdefault(task_id, _Task())
        if version < task.version:
            return [Apply(task_id, version, Outcome.STALE_DROPPED)]
        task.version, task.fields = version, dict(fields)
        return [Apply(task_id, version, Outcome.RESYNCED)]

    def take_resync_requests(self) -> list[str]:
        """Task ids to send ``task.get`` for; each is returned once. The base strategies never ask."""
        return []

    def view(self, task_id: str) -> tuple[int, dict[str, Any]]:
        """``(version, fields)`` as the client sees the task; ``(0, {})`` for a task it never heard of."""
        task = self._tasks.get(task_id)
        return (task.version, dict(task.fields)) if task else (0, {})

    def tasks(self) -> list[str]:
        """Every task id the cache has heard of, sorted."""
        return sorted(self._tasks)

    def _update(self, task_id: str, task: _Task, version: int, changes: dict[str, Any], out_of_order: bool,
                now: float) -> list[Apply]:
        raise NotImplementedError


class NaiveCache(TaskCache):
    """Apply every arrival: merge its changes and take its version, even a lower one.

    A late older update overwrites newer values of the fields it carries and rolls the version back.
    Snapshots, too, are applied whatever their version.
    """

    strategy = "naive"

    def on_snapshot(self, task_id: str, version: int, fields: dict[str, Any], now: float) -> list[Apply]:
        task = self._tasks.setdefault(task_id, _Task())
        task.version, task.fields = version, dict(fields)
        return [Apply(task_id, version, Outcome.RESYNCED)]

    def _update(self, task_id: str, task: _Task, version: int, changes: dict[str, Any], out_of_order: bool,
                now: float) -> list[Apply]:
        task.fields.update(changes)
        task.version = version
        return [Apply(task_id, version, Outcome.APPLIED, out_of_order)]


class VersionGateCache(TaskCache):
    """The design review's rule: merge an update only if its version is newer than the local one.

    With *partial* updates this silently loses fields when updates arrive out of order: v2 changes
    ``title``, v3 changes ``status``; v3 arrives first and is applied, then v2 is dropped as stale, so the
    new ``title`` is lost for good (until another update happens to change ``title`` again), while the
    version says the cache is up to date. The gate is only sound for full-object updates.
    """

    strategy = "version_gate"

    def _update(self, task_id: str, task: _Task, version: int, changes: dict[str, Any], out_of_order: bool,
                now: float) -> list[Apply]:
        if version <= task.version:
            return [Apply(task_id, version, Outcome.STALE_DROPPED, out_of_order)]
        task.fields.update(changes)
        task.version = version
        return [Apply(task_id, version, Outcome.APPLIED, out_of_order)]


class GapResyncCache(TaskCache):
    """Apply only the next version; buffer later ones and ask for a snapshot when a gap opens.

    Invariant: the view of a task is always the true state at its version (a prefix of the task's history),
    because only version ``local + 1`` or a snapshot ever changes it.

    A task *has a gap* while an update newer than ``local + 1`` has arrived (``max_seen > version``). When a
    gap opens the task gets a resync request, unless one is already outstanding: at most one ``task.get``
    per task is in flight, and any snapshot for the task answers it. If a gap is still open after a snapshot
    (updates newer than the snapshot are buffered but the next one is missing) a new request is made at
    once, so every gap has a request in flight. A request queued but not yet taken is withdrawn if the
    missing updates arrive first; one already sent stays outstanding until its reply, so a gap reopening
    meanwhile waits for that reply. A task first heard of at version 57 is a gap too: it gets a snapshot.

    A lost reply would leave the gap open forever: the driver asks :meth:`stalled` and re-sends with
    :meth:`retry_stalled`. A lost *last* update of a task is invisible (no later version reveals the gap)
    until the next update of that task or a ``task.get`` the driver sends on its own.

    The buffer holds at most ``max_buffer`` updates per task; one more drops the whole buffer and the cache
    relies on the snapshot, so memory stays bounded when a task is hot and an update is lost.
    """

    strategy = "gap_resync"

    def __init__(self, max_buffer: int = DEFAULT_MAX_BUFFER) -> None:
        super().__init__()
        if max_buffer < 1:
            raise ValueError(f"max_buffer must be at least 1, got {max_buffer}")
        self.max_buffer = max_buffer
        self._queued: list[str] = []  # requests not yet taken by the driver
        self._outstanding: set[str] = set()  # requested (queued or sent) and not yet answered by a snapshot
        self._since: dict[str, float] = {}  # tasks with a gap: when it opened or was last (re)requested

    def _update(self, task_id: str, task: _Task, version: int, changes: dict[str, Any], out_of_order: bool,
                now: float) -> list[Apply]:
        if version <= task.version or version in task.buffer:
            return [Apply(task_id, version, Outcome.STALE_DROPPED, out_of_order)]
        if version == task.version + 1:
            task.fields.update(changes)
            task.version = version
            records = [Apply(task_id, version, Outcome.APPLIED, out_of_order)]
            records += self._drain(task_id, task)
            self._check_gap(task_id, task, now)
            return records
        if len(task.buffer) >= self.max_buffer:
            task.buffer.clear()  # the outstanding snapshot will cover everything dropped here
        task.buffer[version] = (dict(changes), out_of_order)
        self._check_gap(task_id, task, now)
        return [Apply(task_id, version, Outcome.GAP_BUFFERED, out_of_order)]

    def on_snapshot(self, task_id: str, version: int, fields: dict[str, Any], now: float) -> list[Apply]:
        """Replace the task if the snapshot is not older than the cache, drop buffered updates it covers,
        then apply the buffered ones that follow it; a stale snapshot is dropped. Either way it answers the
        outstanding request."""
        records = super().on_snapshot(task_id, version, fields, now)
        task = self._tasks[task_id]
        self._outstanding.discard(task_id)
        if task_id in self._queued:  # answered before the driver even sent the request
            self._queued.remove(task_id)
        if records[0].outcome is Outcome.RESYNCED:
            for stale in [v for v in task.buffer if v <= version]:
                del task.buffer[stale]
            records += self._drain(task_id, task)
        self._since.pop(task_id, None)  # a gap still open now is a new one, with a new request
        self._check_gap(task_id, task, now)
        return records

    def take_resync_requests(self) -> list[str]:
        """Task ids to send ``task.get`` for, each once until a snapshot answers it (or it is retried)."""
        taken, self._queued = self._queued, []
        return taken

    def pending(self) -> list[str]:
        """Tasks with a resync request queued or in flight, sorted."""
        return sorted(self._outstanding)

    def buffered(self, task_id: str) -> list[int]:
        """The versions buffered for a task, ascending."""
        task = self._tasks.get(task_id)
        return sorted(task.buffer) if task else []

    def stalled(self, now: float, after: float) -> list[str]:
        """Tasks whose gap has been open, without a new request, for ``after`` seconds or more at ``now``:
        their snapshot reply is presumably lost."""
        return sorted(t for t, since in self._since.items() if now - since >= after)

    def retry_stalled(self, now: float, after: float) -> list[str]:
        """Queue a new request for every :meth:`stalled` task (the old one is presumed lost); returns them."""
        retried = self.stalled(now, after)
        for task_id in retried:
            self._since[task_id] = now
            self._outstanding.add(task_id)
            if task_id not in self._queued:
                self._queued.append(task_id)
        return retried

    def _drain(self, task_id: str, task: _Task) -> list[Apply]:
        records: list[Apply] = []
        while (nxt := task.version + 1) in task.buffer:
            changes, out_of_order = task.buffer.pop(nxt)
            task.fields.update(changes)
            task.version = nxt
            records.append(Apply(task_id, nxt, Outcome.APPLIED, out_of_order, drained=True))
        return records

    def _check_gap(self, task_id: str, task: _Task, now: float) -> None:
        if task.max_seen <= task.version:  # no gap: withdraw a request the driver has not sent yet
            self._since.pop(task_id, None)
            if task_id in self._queued:
                self._queued.remove(task_id)
                self._outstanding.discard(task_id)
            return
        if task_id not in self._since:
            self._since[task_id] = now
        if task_id not in self._outstanding:
            self._outstanding.add(task_id)
            self._queued.append(task_id)


def make_cache(strategy: str, *, max_buffer: int = DEFAULT_MAX_BUFFER) -> TaskCache:
    """A fresh cache for one of :data:`STRATEGIES` (``max_buffer`` only matters to ``gap_resync``)."""
    if strategy == "naive":
        return NaiveCache()
    if strategy == "version_gate":
        return VersionGateCache()
    if strategy == "gap_resync":
        return GapResyncCache(max_buffer)
    raise ValueError(f"unknown ordering strategy {strategy!r}; expected one of {', '.join(STRATEGIES)}")


def diverged(cache: TaskCache, truth: dict[str, tuple[int, dict[str, Any]]]) -> list[str]:
    """Task ids whose ``(version, fields)`` in the cache differ from ``truth``, sorted.

    A task missing on one side counts as ``(0, {})`` there, so a task the cache never heard of diverges
    only if the truth has a version above 0.
    """
    ids = set(truth) | set(cache.tasks())
    return sorted(t for t in ids if cache.view(t) != truth.get(t, (0, {})))
