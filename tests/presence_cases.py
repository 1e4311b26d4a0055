"""Every entry row of the presence lifecycle table as a runnable case, for any store.

A case is one entry row, ``(state, event)``, with the user alone on the task or with one other live entry
(another tab), so that each viewer row is reached too. :func:`run_case` builds the precondition through the
presence protocol on an injected clock (no sleeping), applies the event, and reports what the store reached:
the entry's state read back from its score, the viewer's state from the viewer list, and every event the store
published. ``tests/protocol/test_presence_table.py`` runs it on the in-memory :class:`BookStore`;
``tests/server/test_presence_table_redis.py`` on the Lua scripts of a real Redis as well.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any, Protocol

import msgspec

from rtlib.protocol import events
from rtlib.protocol.config import ServerConfig
from rtlib.protocol.history import without_offset
from rtlib.protocol.presence import EntryFact, PresenceChange, member
from rtlib.protocol.presence_protocol import BookStore, Expire, Hold, PresenceProtocol, Remove, Upsert
from rtlib.protocol.presence_table import TABLE, Announcement, EntryEvent, EntryState, Step, ViewerState, step
from rtlib.protocol.session import Session
from rtlib.server import keyspace
from rtlib.server.store import RedisStore

__all__ = ["CONFIG", "BookAdapter", "Case", "Outcome", "RedisAdapter", "Store", "cases", "run_case"]
#: Fence messages of RedisAdapter.published, unique within a test run.
_fences = itertools.count()

#: timeout 10 s + leave grace 4 s: an entry expires 14 s after its last beat; a lost one is held.
CONFIG = ServerConfig(heartbeat_interval=3, presence_timeout=10, sweep_interval=1, leave_grace=4)
NOW = 1_000.0
WS, TASK, USER, CONN, OTHER = "w1", "t1", "alice", "c1", "c2"


class Store(Protocol):
    """The store primitives a case needs, as coroutines (the Redis store is asynchronous)."""

    async def upsert(self, op: Upsert) -> tuple[EntryFact, list[str]]: ...
    async def remove(self, ops: list[Remove]) -> list[EntryFact]: ...
    async def hold(self, ops: list[Hold]) -> None: ...
    async def expire(self, op: Expire) -> list[EntryFact]: ...
    async def score(self, entry: str) -> float | None: ...
    async def viewers(self) -> list[str]: ...
    async def published(self) -> list[tuple[str, Any]]:
        """``(exclude_conn, decoded event)`` of everything published since the last call, in order."""
        ...


class BookAdapter:
    """:class:`Store` over the in-memory :class:`BookStore` (what the models run)."""

    def __init__(self) -> None:
        self.store, self._seen = BookStore(), 0

    async def upsert(self, op: Upsert) -> tuple[EntryFact, list[str]]:
        return self.store.upsert(op)

    async def remove(self, ops: list[Remove]) -> list[EntryFact]:
        return [self.store.remove(op) for op in ops]

    async def hold(self, ops: list[Hold]) -> None:
        for op in ops:
            self.store.hold(op)

    async def expire(self, op: Expire) -> list[EntryFact]:
        return self.store.expire(op)

    async def score(self, entry: str) -> float | None:
        return self.store.book.entries.get((WS, TASK), {}).get(entry)

    async def viewers(self) -> list[str]:
        return self.store.book.viewers(WS, TASK)

    async def published(self) -> list[tuple[str, Any]]:
        new, self._seen = self.store.published[self._seen:], len(self.store.published)
        return [(p.exclude_conn, msgspec.json.decode(p.event)) for p in new]


class RedisAdapter:
    """The case runner's store over :class:`RedisStore`: the live server's scripts, read back from Redis.

    Events are read from the workspace channel behind a fence published on ``publisher`` after the scripts
    (Redis delivers one channel's messages in order), so nothing waits on a guessed timeout. ``publisher`` is
    the Redis itself, or on a cluster the node owning the workspace's slot (a script's classic PUBLISH is local
    there before the bus copies it), and ``pubsub`` is subscribed to the channel there."""

    def __init__(self, store: RedisStore, pubsub: Any, publisher: Any) -> None:
        self.store, self.pubsub, self.publisher = store, pubsub, publisher

    async def upsert(self, op: Upsert) -> tuple[EntryFact, list[str]]:
        return await self.store.presence_upsert(op)

    async def remove(self, ops: list[Remove]) -> list[EntryFact]:
        return await self.store.presence_remove_many(ops)

    async def hold(self, ops: list[Hold]) -> None:
        await self.store.presence_hold_many(ops)

    async def expire(self, op: Expire) -> list[EntryFact]:
        return await self.store.presence_expire(op)

    async def score(self, entry: str) -> float | None:
        return await self.store.redis.zscore(keyspace.presence_key(WS, TASK), entry)

    async def viewers(self) -> list[str]:
        return sorted(v.decode() for v in await self.store.redis.hkeys(keyspace.presence_counts_key(WS, TASK)))

    async def published(self) -> list[tuple[str, Any]]:
        fence = f"fence-{next(_fences)}".encode()
        await self.publisher.publish(keyspace.channel(WS), fence)
        got = []
        while True:
            msg = await self.pubsub.get_message(ignore_subscribe_messages=True, timeout=5.0)
            assert msg is not None, "the fence never arrived"
            if msg["data"] == fence:
                return got
            exclude, event = keyspace.split_frame(msg["data"])
            got.append((exclude or "", msgspec.json.decode(without_offset(event))))


@dataclass(frozen=True)
class Case:
    """One entry row with ``others`` (0 or 1) other live entries of the same user on the task."""

    state: EntryState
    event: EntryEvent
    others: int

    @property
    def id(self) -> str:
        return f"{self.state}-{self.event}-{'with-other-tab' if self.others else 'alone'}"

    @property
    def expected(self) -> Step:
        return step(self.state, self.event, self.others)


def cases() -> list[Case]:
    """Every entry row of :data:`TABLE`, alone and with another tab."""
    return [Case(s, e, others) for (s, e) in TABLE if isinstance(s, EntryState) for others in (0, 1)]


@dataclass(frozen=True)
class Outcome:
    """What a store reached: comparable with the table's :class:`Step`."""

    before: EntryState
    entry: EntryState
    viewer: ViewerState
    published: list[tuple[str, Any]]


def expected_published(case: Case, now: float) -> list[tuple[str, Any]]:
    """The one event the table says the step publishes (or none), as a store would publish it at ``now``."""
    want = case.expected
    if want.announce is Announcement.JOINED:
        change = PresenceChange(WS, TASK, USER, "joined", exclude_conn=CONN)
        return [(CONN, msgspec.json.decode(events.presence_change(change, now)))]
    if want.announce is Announcement.LEFT:
        change = PresenceChange(WS, TASK, USER, "left", reason=want.reason)
        return [("", msgspec.json.decode(events.presence_change(change, now)))]
    return []


def _classify(score: float | None, now: float, last_beat: float) -> EntryState:
    """The entry's state read from the store: its score against the expiry rule and against its last beat."""
    if score is None:
        return EntryState.ABSENT
    if CONFIG.presence.is_expired(score, now):
        return EntryState.STALE
    return EntryState.HELD if score < last_beat else EntryState.LIVE


async def run_case(case: Case, store: Store) -> tuple[Outcome, float]:
    """Set up ``case.state`` (and the other tab), apply ``case.event``; the outcome and the event's time."""
    protocol, expiry = PresenceProtocol(CONFIG.presence), CONFIG.presence.expiry
    session, other = Session(CONN, USER, WS, CONFIG), Session(OTHER, USER, WS, CONFIG)
    entry = member(CONN, USER)

    async def beat(at: float) -> None:
        await store.upsert(protocol.request(session, "presence.heartbeat", TASK, at))

    # The precondition, built through the protocol (so session.tasks is what a server would hold).
    last_beat = {EntryState.ABSENT: NOW - 20, EntryState.LIVE: NOW - 1, EntryState.STALE: NOW - 15,
                 EntryState.HELD: NOW - 2}[case.state]
    await beat(last_beat)
    if case.state is EntryState.ABSENT:  # joined, then popped by a sweep; the connection still views the task
        await store.expire(protocol.sweep(last_beat + expiry))
    if case.state is EntryState.HELD:  # lost one second later, under the leave grace
        held = protocol.disconnect(session, NOW - 1, clean=False)
        assert held and all(isinstance(op, Hold) for op in held)
        await store.hold(held)
    score = await store.score(entry)
    # EXPIRY is time passing: the event's time is the entry's expiry instant (inclusive).
    at = score + expiry if case.event is EntryEvent.EXPIRY and score is not None else NOW
    before = _classify(score, at - 0.5 if case.event is EntryEvent.EXPIRY else at, last_beat)
    if case.others:  # another tab of the user beats last, so no event of the case touches it
        await store.upsert(protocol.request(other, "presence.join", TASK, at))
    await store.published()  # the set-up's own events are not the case's

    if case.event is EntryEvent.UPSERT:
        await store.upsert(protocol.request(session, "presence.heartbeat", TASK, at))
        last_beat = at
    elif case.event is EntryEvent.LEAVE:
        op = protocol.request(session, "presence.leave", TASK, at)
        assert isinstance(op, Remove)
        await store.remove([op])
    elif case.event is EntryEvent.DISCONNECT:
        ops = protocol.disconnect(session, at, clean=True)
        assert ops and all(isinstance(op, Remove) for op in ops)
        await store.remove(ops)  # type: ignore[arg-type]
    elif case.event is EntryEvent.LOST:
        ops = protocol.disconnect(session, at, clean=False)
        assert ops and all(isinstance(op, Hold) for op in ops)
        await store.hold(ops)  # type: ignore[arg-type]
    elif case.event is EntryEvent.SWEEP:
        await store.expire(protocol.sweep(at))
    viewer = ViewerState.VIEWING if USER in await store.viewers() else ViewerState.NOT_VIEWING
    outcome = Outcome(before, _classify(await store.score(entry), at, last_beat), viewer, await store.published())
    return outcome, at
