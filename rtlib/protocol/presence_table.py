"""The presence lifecycle as one transition table, sans-I/O (h11's ``_state.py`` is the model).

Why a table: the rules of when an entry changes and when a change is announced were spread over
:class:`~rtlib.protocol.presence.PresenceBook`, the Lua scripts (:mod:`rtlib.server.scripts`) and
``joined_change``/``left_change``, each in its own words. Here they are one dict, :data:`TABLE`, keyed by
``(state, event)``: what the docs show (``docs/protocol.md`` §9 is rendered from it by :func:`markdown`), what
``joined_change``/``left_change`` consult, and what ``tests/server/test_presence_table_redis.py`` runs row by
row through the in-memory store and through the Lua scripts on a real Redis.

Two machines share the table:

* an **entry**: one connection's entry on one task (a member of the task's sorted set, scored by its last
  beat). Its events are what clients, closing connections, time and sweeps do; a row says what the store does
  to the entry (:class:`Change`: adds it, removes it, or neither) and, when it removes it, the ``reason`` a
  resulting ``presence.left`` carries;
* a **viewer**: one ``(user, task)``, viewing while the user has at least one entry there. Its events are the
  entry changes, told apart by the user's entry count (first added, another added, one removed, last
  removed), and only its rows announce: ``presence.joined`` on the first entry, ``presence.left`` on the last.

A pair that is not in the table cannot happen (a lost connection sends nothing more, so a held entry gets no
request) or would mean a store broke its own invariants; :func:`transition` raises
:class:`PresenceStateError` for it instead of guessing.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Literal

__all__ = [
    "TABLE",
    "Announcement",
    "Change",
    "EntryEvent",
    "EntryState",
    "LeftReason",
    "PresenceStateError",
    "Step",
    "Transition",
    "ViewerEvent",
    "ViewerState",
    "announcement",
    "left_reason",
    "markdown",
    "step",
    "transition",
    "viewer_event",
    "with_table",
]

LeftReason = Literal["leave", "disconnect", "timeout"]


class EntryState(StrEnum):
    """One connection's entry on one task."""

    ABSENT = "ABSENT"
    LIVE = "LIVE"
    STALE = "STALE"
    HELD = "HELD"


class ViewerState(StrEnum):
    """One ``(user, task)``."""

    NOT_VIEWING = "NOT_VIEWING"
    VIEWING = "VIEWING"


class EntryEvent(StrEnum):
    """What happens to one entry."""

    UPSERT = "UPSERT"
    LEAVE = "LEAVE"
    DISCONNECT = "DISCONNECT"
    LOST = "LOST"
    EXPIRY = "EXPIRY"
    SWEEP = "SWEEP"


class ViewerEvent(StrEnum):
    """An entry change as the viewer sees it: which of the user's entries on the task it was."""

    FIRST_ADDED = "FIRST_ADDED"
    ANOTHER_ADDED = "ANOTHER_ADDED"
    ONE_REMOVED = "ONE_REMOVED"
    LAST_REMOVED = "LAST_REMOVED"


class Change(StrEnum):
    """What the store does to an entry's membership (a refresh or a back-dating is neither)."""

    ADDED = "ADDED"
    REMOVED = "REMOVED"


class Announcement(StrEnum):
    """What a viewer transition publishes to the workspace."""

    JOINED = "presence.joined"
    LEFT = "presence.left"


State = EntryState | ViewerState
Event = EntryEvent | ViewerEvent


class PresenceStateError(LookupError):
    """A ``(state, event)`` pair the table does not list: it cannot happen, so something upstream is wrong."""


@dataclass(frozen=True, slots=True)
class Transition:
    """One row. Entry rows set ``change`` (and ``reason`` when they remove); viewer rows set ``announce``."""

    next: State
    change: Change | None = None
    reason: LeftReason | None = None
    announce: Announcement | None = None
    why: str = ""


_E, _V, _EV, _VE = EntryState, ViewerState, EntryEvent, ViewerEvent
_ADD, _DEL = Change.ADDED, Change.REMOVED

#: The presence lifecycle: ``(state, event) -> Transition``. The one definition (see the module docstring).
TABLE: dict[tuple[State, Event], Transition] = {
    (_E.ABSENT, _EV.UPSERT): Transition(_E.LIVE, _ADD, why="a join, or a beat after a sweep popped the entry"),
    (_E.ABSENT, _EV.LEAVE): Transition(_E.ABSENT, why="nothing to remove"),
    (_E.ABSENT, _EV.DISCONNECT): Transition(_E.ABSENT, why="nothing to remove (a sweep popped it)"),
    (_E.ABSENT, _EV.LOST): Transition(_E.ABSENT, why="a hold never adds an entry"),
    (_E.ABSENT, _EV.SWEEP): Transition(_E.ABSENT),
    (_E.LIVE, _EV.UPSERT): Transition(_E.LIVE, why="a heartbeat: the last beat becomes now"),
    (_E.LIVE, _EV.LEAVE): Transition(_E.ABSENT, _DEL, "leave"),
    (_E.LIVE, _EV.DISCONNECT): Transition(_E.ABSENT, _DEL, "disconnect"),
    (_E.LIVE, _EV.LOST): Transition(_E.HELD, why="back-dated to now - timeout, never made younger"),
    (_E.LIVE, _EV.EXPIRY): Transition(_E.STALE, why="expired, still listed until a sweep pops it"),
    (_E.LIVE, _EV.SWEEP): Transition(_E.LIVE, why="not expired: left in place"),
    (_E.STALE, _EV.UPSERT): Transition(_E.LIVE, why="a late beat before the sweep: silently live again"),
    (_E.STALE, _EV.LEAVE): Transition(_E.ABSENT, _DEL, "leave"),
    (_E.STALE, _EV.DISCONNECT): Transition(_E.ABSENT, _DEL, "disconnect"),
    (_E.STALE, _EV.LOST): Transition(_E.STALE, why="older than the hold already: kept as it is"),
    (_E.STALE, _EV.SWEEP): Transition(_E.ABSENT, _DEL, "timeout"),
    (_E.HELD, _EV.EXPIRY): Transition(_E.STALE, why="the grace is over"),
    (_E.HELD, _EV.SWEEP): Transition(_E.HELD, why="within the grace: left in place"),
    (_V.NOT_VIEWING, _VE.FIRST_ADDED): Transition(_V.VIEWING, announce=Announcement.JOINED,
                                                  why="to the workspace's other connections"),
    (_V.VIEWING, _VE.ANOTHER_ADDED): Transition(_V.VIEWING, why="another tab: n + 1"),
    (_V.VIEWING, _VE.ONE_REMOVED): Transition(_V.VIEWING, why="other entries remain: n - 1"),
    (_V.VIEWING, _VE.LAST_REMOVED): Transition(_V.NOT_VIEWING, announce=Announcement.LEFT,
                                               why="to every connection of the workspace"),
}

#: What each state and event means (rendered above the table).
MEANINGS: dict[State | Event, str] = {
    _E.ABSENT: "no entry of this connection on the task (never joined, left, removed or swept)",
    _E.LIVE: "an entry whose last beat is less than `presenceTimeout` + leave grace old",
    _E.STALE: "expired (its last beat is `presenceTimeout` + leave grace old or older) but not yet swept: "
              "still listed",
    _E.HELD: "a lost connection's entry, back-dated to the loss - `presenceTimeout`, so the sweep pops it a "
             "leave grace after the loss; its connection sends nothing more",
    _V.NOT_VIEWING: "the user has no entry on the task",
    _V.VIEWING: "the user has n >= 1 entries on the task (one per connection viewing it)",
    _EV.UPSERT: "`presence.join`, `presence.heartbeat`, or a `presence.pong` (a beat of every viewed task)",
    _EV.LEAVE: "`presence.leave`",
    _EV.DISCONNECT: "the connection closed with a close frame, or was lost with no leave grace",
    _EV.LOST: "the connection was lost (no close frame) and the server has a leave grace",
    _EV.EXPIRY: "time passes the entry's expiry (last beat + `presenceTimeout` + leave grace); no store call",
    _EV.SWEEP: "a sweep pops every expired entry (one atomic script per batch of tasks)",
    _VE.FIRST_ADDED: "the user's first entry on the task was added (n: 0 -> 1)",
    _VE.ANOTHER_ADDED: "another entry of the user was added (n -> n + 1 >= 2)",
    _VE.ONE_REMOVED: "an entry of the user was removed and others remain (n -> n - 1 >= 1)",
    _VE.LAST_REMOVED: "the user's last entry on the task was removed (n: 1 -> 0)",
}


def transition(state: State, event: Event) -> Transition:
    """The table's row for ``(state, event)``; :class:`PresenceStateError` if there is none."""
    try:
        return TABLE[state, event]
    except KeyError:
        allowed = ", ".join(e for s, e in TABLE if s == state) or "nothing"
        raise PresenceStateError(f"no presence transition for event {event} in state {state} "
                                 f"(the table allows: {allowed})") from None


def left_reason(event: EntryEvent) -> LeftReason:
    """The reason of the ``presence.left`` that removing a user's last entry by ``event`` announces."""
    reasons = {row.reason for (_, e), row in TABLE.items() if e == event and row.reason is not None}
    if len(reasons) != 1:
        raise PresenceStateError(f"event {event} removes no entry, so it announces no presence.left")
    return reasons.pop()


def viewer_event(change: Change, user_entries: int) -> tuple[ViewerState, ViewerEvent]:
    """The viewer's state before, and its event, when the store ``change`` d one entry and the user then has
    ``user_entries`` entries on the task (the count the stores report)."""
    if change is Change.ADDED and user_entries >= 1:
        return (_V.NOT_VIEWING, _VE.FIRST_ADDED) if user_entries == 1 else (_V.VIEWING, _VE.ANOTHER_ADDED)
    if change is Change.REMOVED and user_entries >= 0:
        return (_V.VIEWING, _VE.LAST_REMOVED) if user_entries == 0 else (_V.VIEWING, _VE.ONE_REMOVED)
    raise PresenceStateError(f"a store reported {user_entries} entries after an entry was {change}")


def announcement(change: Change | None, user_entries: int) -> Announcement | None:
    """What one entry change announces (``None`` for no change), given the user's entry count afterwards."""
    if change is None:
        return None
    return transition(*viewer_event(change, user_entries)).announce


@dataclass(frozen=True, slots=True)
class Step:
    """One entry event, composed: the entry's and the viewer's next states and what is published."""

    entry: EntryState
    viewer: ViewerState
    announce: Announcement | None
    reason: LeftReason | None
    rows: tuple[tuple[State, Event], ...]  # the table rows this step used


def step(entry: EntryState, event: EntryEvent, other_entries: int) -> Step:
    """Apply ``event`` to an entry in state ``entry`` whose user has ``other_entries`` other entries on the
    task (each of them live: no other entry changes)."""
    row = transition(entry, event)
    present = int(row.next is not _E.ABSENT)
    viewer = _V.VIEWING if other_entries + present else _V.NOT_VIEWING
    if row.change is None:
        return Step(row.next, viewer, None, None, ((entry, event),))
    before, vevent = viewer_event(row.change, other_entries + present)
    vrow = transition(before, vevent)
    reason = row.reason if vrow.announce is Announcement.LEFT else None
    return Step(row.next, viewer, vrow.announce, reason, ((entry, event), (before, vevent)))


# --- the rendering for docs/protocol.md §9 ------------------------------------------------------------------
BEGIN, END = "<!-- presence-table:begin -->", "<!-- presence-table:end -->"


def _effect(row: Transition) -> tuple[str, str]:
    """The "store" and "announces" cells of one row."""
    if row.announce is Announcement.JOINED:
        return "", f"`{row.announce}`"
    if row.announce is Announcement.LEFT:
        return "", f"`{row.announce}` (the removal's reason)"
    if isinstance(row.next, ViewerState):
        return "", "nothing"
    if row.change is Change.ADDED:
        return "adds it", f"`{Announcement.JOINED}` if `FIRST_ADDED`"
    if row.change is Change.REMOVED:
        return "removes it", f"`{Announcement.LEFT}` (`{row.reason}`) if `LAST_REMOVED`"
    return "", "nothing"


def markdown() -> str:
    """:data:`TABLE` and :data:`MEANINGS` as Markdown (what ``scripts/presence_table.py`` writes into §9)."""
    lines = [f"Generated from `rtlib/protocol/presence_table.py` (`make schema`); {len(TABLE)} rows.", ""]
    for title, kinds in (("States", (EntryState, ViewerState)), ("Events", (EntryEvent, ViewerEvent))):
        lines.append(f"{title}:")
        lines.append("")
        for kind in kinds:
            machine = "entry" if kind in (EntryState, EntryEvent) else "viewer"
            lines += [f"* {machine} `{member}`: {MEANINGS[member]}" for member in kind]
        lines.append("")
    lines += ["| state | event | next state | entry | announces | why |", "|---|---|---|---|---|---|"]
    for (state, event), row in TABLE.items():
        machine = "entry" if isinstance(state, EntryState) else "viewer"
        store, announces = _effect(row)
        lines.append(f"| {machine} `{state}` | `{event}` | `{row.next}` | {store} | {announces} | {row.why} |")
    return "\n".join(lines) + "\n"


def with_table(doc: str) -> str:
    """``doc`` with the text between the :data:`BEGIN` and :data:`END` markers replaced by :func:`markdown`."""
    head, begin, rest = doc.partition(BEGIN)
    _, end, tail = rest.partition(END)
    if not begin or not end:
        raise ValueError(f"the document has no {BEGIN} ... {END} markers")
    return f"{head}{BEGIN}\n{markdown()}{END}{tail}"
