"""The presence protocol, sans-I/O: what a join, heartbeat, leave, disconnect and sweep do.

In the style of ``websockets``' ``protocol.py``: data in, effects out. :class:`PresenceProtocol` takes a
client's presence request (or a disconnect, or a sweep), the store's facts and ``now``, and returns what to
do: a store operation to run, and afterwards the replies for the connection. It never reads a clock, sleeps
or touches Redis; a driver carries the effects out:

* the live server (:mod:`rtlib.server.driver`) runs each operation as one Redis script
  (:mod:`rtlib.server.store`), which also **publishes** the operation's event in the same atomic step;
* :class:`BookStore` runs them on the in-memory :class:`~rtlib.protocol.presence.PresenceBook` and records
  what it would publish, for virtual-time models and tests.

Publishing is part of the store operation, not a second step, because a second round trip lets a
``presence.joined`` and a ``presence.left`` of one user on one task (two tabs on two instances) reach
observers in the wrong order. Each operation carries its event: ``Upsert.announce`` is published when the
user's *first* entry on the task was added, ``Remove.announce`` when their *last* was removed, and
``Expire.template`` (placeholders ``{ws}``, ``{task}``, ``{user}``, which no id can contain) once per user
whose last entry expired.

Two presence alternatives are rules here too (``docs/protocol.md`` §9): :meth:`PresenceProtocol.pong` turns
the answer to a server probe (:mod:`rtlib.protocol.probes`) into heartbeats, and with a leave grace an
unclean disconnect becomes a :class:`Hold` instead of a removal: the entry is left to expire ``leave_grace``
seconds later, so a client that reconnects and re-joins within the grace never flaps.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from rtlib.protocol import events
from rtlib.protocol.presence import (
    EntryFact,
    LeftReason,
    PresenceBook,
    PresenceChange,
    PresenceConfig,
    joined_change,
    left_change,
)
from rtlib.protocol.session import Session

__all__ = [
    "BookStore",
    "Expire",
    "Hold",
    "PresenceProtocol",
    "Published",
    "Remove",
    "Upsert",
    "fill_template",
]


@dataclass(frozen=True, slots=True)
class Upsert:
    """Join or heartbeat one connection's entry at ``now``; publish ``announce`` (to every connection of the
    workspace but ``conn``) if it made the user a viewer."""

    workspace_id: str
    task_id: str
    conn_id: str
    user_id: str
    now: float
    announce: bytes


@dataclass(frozen=True, slots=True)
class Remove:
    """Remove one connection's entry; publish ``announce`` if the user stopped being a viewer."""

    workspace_id: str
    task_id: str
    conn_id: str
    user_id: str
    announce: bytes


@dataclass(frozen=True, slots=True)
class Hold:
    """Back-date one connection's entry (if it is still there) to ``score`` unless it is older already: a
    sweep then pops it after the leave grace, unless the user re-joined meanwhile. Publishes nothing."""

    workspace_id: str
    task_id: str
    conn_id: str
    user_id: str
    score: float


@dataclass(frozen=True, slots=True)
class Expire:
    """Pop every entry whose last heartbeat is ``<= cutoff``; publish ``template`` (filled in) per user gone."""

    cutoff: float
    template: bytes


@dataclass(frozen=True, slots=True)
class Published:
    """One event a store published: the workspace channel, the connection it skips ('' for none), the event."""

    workspace_id: str
    exclude_conn: str
    event: bytes


def fill_template(template: bytes, ws: str, task: str, user: str) -> bytes:
    """The event of :attr:`Expire.template` for one user (the Redis script does the same with ``gsub``)."""
    return template.replace(b"{ws}", ws.encode()).replace(b"{task}", task.encode()).replace(b"{user}", user.encode())


@dataclass(frozen=True)
class PresenceProtocol:
    """Presence rules of one server instance. Requests mutate the :class:`Session`'s task set (the
    connection's presence state) and return store operations; :meth:`replies` turns an upsert's outcome
    into frames for the requesting connection."""

    config: PresenceConfig

    def request(self, session: Session, type_: str, task_id: str, now: float) -> Upsert | Remove:
        """``presence.join`` / ``presence.heartbeat`` (an upsert: a beat after an expiry re-joins) or
        ``presence.leave`` (a removal)."""
        ws, conn, user = session.workspace_id, session.conn_id, session.user_id
        if type_ == "presence.leave":
            session.tasks.discard(task_id)
            return Remove(ws, task_id, conn, user, self._left(ws, task_id, user, "leave", now))
        if type_ not in ("presence.join", "presence.heartbeat"):
            raise ValueError(f"not a presence request: {type_!r}")
        session.tasks.add(task_id)
        joined = PresenceChange(ws, task_id, user, "joined", exclude_conn=conn)
        return Upsert(ws, task_id, conn, user, now, events.presence_change(joined, now))

    def replies(self, session: Session, type_: str, fact: EntryFact, viewers: list[str], now: float
                ) -> list[bytes]:
        """Frames for the requester after its upsert: the viewer list on a join, and on a heartbeat that
        re-created an expired entry (the client's view may be stale)."""
        if type_ == "presence.join" or fact.changed:
            return [session.presence_state(fact.task_id, viewers, now)]
        return []

    def pong(self, session: Session, now: float) -> list[Upsert]:
        """``presence.pong`` (the answer to a probe): a heartbeat of every task the connection views."""
        return [self.request(session, "presence.heartbeat", t, now) for t in sorted(session.tasks)]

    def disconnect(self, session: Session, now: float, clean: bool = True) -> list[Remove] | list[Hold]:
        """The entries of a closing connection. A clean close (a close frame from either side) removes them
        at once (``reason: disconnect``). An unclean one (the connection was lost) with a leave grace holds
        them instead: back-dated so the sweep pops them ``leave_grace`` from ``now`` (``reason: timeout``)
        unless the user has re-joined by then, the way Pusher and Ably hold a lost member for a few seconds."""
        tasks, session.tasks = sorted(session.tasks), set()
        ws, conn, user = session.workspace_id, session.conn_id, session.user_id
        if not clean and self.config.leave_grace > 0:
            # Popped at the first sweep with cutoff >= score, i.e. now - timeout - grace + grace: grace from now.
            return [Hold(ws, t, conn, user, now - self.config.timeout) for t in tasks]
        return [Remove(ws, t, conn, user, self._left(ws, t, user, "disconnect", now)) for t in tasks]

    def sweep(self, now: float) -> Expire:
        """The sweep run at ``now``: pop what expired (``reason: timeout``)."""
        left = PresenceChange("{ws}", "{task}", "{user}", "left", reason="timeout")
        return Expire(self.config.cutoff(now), events.presence_change(left, now))

    def next_sweep(self, now: float) -> float:
        """When this instance sweeps next: :meth:`PresenceConfig.next_sweep`, the one schedule."""
        return self.config.next_sweep(now)

    @staticmethod
    def _left(ws: str, task: str, user: str, reason: LeftReason, now: float) -> bytes:
        return events.presence_change(PresenceChange(ws, task, user, "left", reason=reason), now)


@dataclass
class BookStore:
    """Runs presence operations on a :class:`PresenceBook`, publishing exactly as the Redis scripts do."""

    book: PresenceBook = field(default_factory=PresenceBook)
    published: list[Published] = field(default_factory=list)

    def upsert(self, op: Upsert) -> tuple[EntryFact, list[str]]:
        fact, viewers = self.book.upsert(op.workspace_id, op.task_id, op.conn_id, op.user_id, op.now)
        if joined_change(fact) is not None:
            self.published.append(Published(op.workspace_id, op.conn_id, op.announce))
        return fact, viewers

    def remove(self, op: Remove) -> EntryFact:
        fact = self.book.remove(op.workspace_id, op.task_id, op.conn_id, op.user_id)
        if left_change(fact, "leave") is not None:
            self.published.append(Published(op.workspace_id, "", op.announce))
        return fact

    def hold(self, op: Hold) -> None:
        self.book.hold(op.workspace_id, op.task_id, op.conn_id, op.user_id, op.score)

    def expire(self, op: Expire) -> list[EntryFact]:
        facts = self.book.expire(op.cutoff)
        for fact in facts:
            if left_change(fact, "timeout") is not None:
                event = fill_template(op.template, fact.workspace_id, fact.task_id, fact.user_id)
                self.published.append(Published(fact.workspace_id, "", event))
        return facts
