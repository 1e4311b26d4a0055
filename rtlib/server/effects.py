"""Carrying out effects on Redis and the sockets: the driver's one ``execute()``.

The rules decide (:func:`rtlib.protocol.requests.plan` for a client request,
:class:`~rtlib.protocol.presence_machine.PresenceMachine` for presence and its timers); this module only does.
The dispatch is one table from effect type to the code that carries it out, so a new effect is one entry here,
not a branch in the driver. Effects of one kind that follow each other run together (a pong's upserts, a
closing connection's removals: one round trip each), in the order the rules returned them.

Each run returns the bytes it made the servers write, which the connection's fan-out budget is charged with
(``docs/protocol.md`` §10): an update's event times the workspace's other connections on every instance, a
reply times one, a presence request its frame times the others (a change is broadcast at most once).

While Redis cannot be reached (:class:`~rtlib.server.broker.Broker`, ``docs/protocol.md`` §11b), or the Redis
Cluster master of the request's workspace is lost (:meth:`Fanout.serves`), a task request is answered with a
retryable ``unavailable`` error, never an ``ack`` for something not stored; a presence
operation the outage cut short is handed back to the presence machine (:meth:`PresenceMachine.requeue`), which
holds it until Redis answers; a missed sweep is simply skipped (the next one pops what it would have).
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from rtlib.protocol import events
from rtlib.protocol.errors import ErrorCode
from rtlib.protocol.presence_machine import Deferred, PresenceMachine, Send
from rtlib.protocol.presence_protocol import Expire, Hold, Remove, Upsert
from rtlib.protocol.requests import GetTask, ListTasks, RequestEffect, UpdateTask
from rtlib.protocol.session import Session
from rtlib.server.broker import Broker, BrokerUnavailable, is_outage, unguarded
from rtlib.server.durability import NotReplicated
from rtlib.server.fanout import Fanout, Peer
from rtlib.server.store import RedisStore

__all__ = ["Executor", "Requester"]

log = logging.getLogger("rtlib.server.effects")


@dataclass(frozen=True, slots=True)
class Requester:
    """The connection whose request the effects serve: where replies go, and what its frame cost."""

    session: Session
    peer: Peer
    type: str  # the request's wire type
    size: int  # the request frame's bytes
    others: int  # the workspace's other connections, on every instance


class Executor:
    """Runs effects: store operations on :class:`RedisStore`, frames through :class:`Fanout`."""

    def __init__(self, machine: PresenceMachine, store: RedisStore, fanout: Fanout, broker: Broker | None = None,
                 retry_after: float = 1.0) -> None:
        self.machine, self.store, self.fanout = machine, store, fanout
        self.broker = broker or Broker()
        self.retry_after = retry_after  # the hint in `unavailable` errors
        self._runs: dict[type, Callable[[list[Any], Requester | None, float], Awaitable[int]]] = {
            UpdateTask: self._updates, GetTask: self._gets, ListTasks: self._lists,
            Upsert: self._upserts, Remove: self._removes, Hold: self._holds, Expire: self._expires,
            Send: self._sends, Deferred: self._deferred,
        }

    async def execute(self, effects: Sequence[RequestEffect], now: float, requester: Requester | None = None) -> int:
        """Carry out ``effects`` in order, consecutive ones of a kind in one batch; the bytes written."""
        written = 0
        for kind, group in itertools.groupby(effects, type):
            written += await self._runs[kind](list(group), requester, now)
        return written

    # --- tasks ----------------------------------------------------------------------------------------------
    async def _updates(self, ops: list[UpdateTask], requester: Requester | None, now: float) -> int:
        assert requester is not None
        written = 0
        for op in ops:
            ws, session = op.session.workspace_id, op.session
            if not self._reachable(ws):  # known down: answered at once, nothing sent to Redis
                self._unavailable(requester, op.update.ref, "task.update not carried out: Redis is unreachable; "
                                  "retry", now)
                continue
            try:
                # Not guarded (the hot path): its connection is the pub/sub one, aborted when Redis is declared
                # down, which fails this call; without RESP3 the lean connection is aborted the same way.
                version, retry = await self.store.update_task(
                    ws, op.update.taskId, op.update.changes, op.prefix, op.suffix, publish=op.atomic,
                    user=session.user_id, ref=op.update.ref)
                if not op.atomic and not retry:  # the study mode: a second round trip, so publishes can overtake
                    await self.store.publish(ws, op.prefix + str(version).encode() + op.suffix)
            except NotReplicated as exc:  # --durability replica: applied and broadcast, but not on a replica in time
                self.fanout.send(requester.peer, events.error(
                    session.workspace_id, session.user_id, ErrorCode.NOT_REPLICATED,
                    f"task.update applied on the master as version {exc.version} but no replica confirmed it in "
                    "time: a failover could still lose it; retry with the same ref to wait again",
                    op.update.ref, now))
                written += (len(op.prefix) + len(op.suffix) + 4) * requester.others
                continue
            except Exception as exc:
                if not is_outage(exc):
                    raise
                self._unavailable(requester, op.update.ref, "Redis stopped answering while this task.update was "
                                  "in flight: its outcome is unknown; retry with the same ref", now)
                continue
            self.fanout.send(requester.peer, session.ack(op.update, version, now))
            written += (len(op.prefix) + len(op.suffix) + 4) * requester.others
        return written

    async def _gets(self, ops: list[GetTask], requester: Requester | None, now: float) -> int:
        assert requester is not None
        written = 0
        for op in ops:
            try:
                if not self._reachable(op.session.workspace_id):
                    raise BrokerUnavailable("the workspace's Redis Cluster master is lost")
                version, fields = await self.broker.guard(self.store.get_task(op.session.workspace_id, op.get.taskId))
            except BrokerUnavailable:
                self._unavailable(requester, op.get.ref, "task.get not carried out: Redis is unreachable", now)
                continue
            written += self._reply(requester, op.session.snapshot(op.get, version, fields, now))
        return written

    async def _lists(self, ops: list[ListTasks], requester: Requester | None, now: float) -> int:
        assert requester is not None
        written = 0
        for op in ops:
            try:
                if not self._reachable(op.session.workspace_id):
                    raise BrokerUnavailable("the workspace's Redis Cluster master is lost")
                tasks, cursor = await self.broker.guard(
                    self.store.list_tasks(op.session.workspace_id, op.request.cursor, op.request.limit))
            except BrokerUnavailable:
                self._unavailable(requester, op.request.ref, "task.list not carried out: Redis is unreachable", now)
                continue
            written += self._reply(requester, op.session.task_page(op.request, tasks, cursor, now))
        return written

    def _reachable(self, workspace_id: str) -> bool:
        """Redis is up for this workspace: the broker is, and (on a Redis Cluster) so is its slot's master."""
        return self.broker.up and self.fanout.serves(workspace_id)

    def _reply(self, requester: Requester, frame: bytes) -> int:
        self.fanout.send(requester.peer, frame)
        return len(frame)

    def _unavailable(self, requester: Requester, ref: str | None, message: str, now: float) -> None:
        session = requester.session
        self.fanout.send(requester.peer, events.error(session.workspace_id, session.user_id, ErrorCode.UNAVAILABLE,
                                                      message, ref, now, self.retry_after))

    # --- presence -------------------------------------------------------------------------------------------
    async def _upserts(self, ops: list[Upsert], requester: Requester | None, now: float) -> int:
        try:
            results = await self.broker.guard(self.store.presence_upsert_many(ops))
        except BrokerUnavailable:
            self._hand_back(ops, requester.type if requester is not None else "presence.heartbeat")
            return 0
        if requester is None:
            return 0
        for fact, viewers in results:
            for frame in self.machine.stored(requester.session, requester.type, fact, viewers, now):
                self.fanout.send(requester.peer, frame)
        return _presence_charge(requester)

    async def _removes(self, ops: list[Remove], requester: Requester | None, now: float) -> int:
        try:
            await self.broker.guard(self.store.presence_remove_many(ops))
        except BrokerUnavailable:
            self._hand_back(ops, requester.type if requester is not None else "close")
            return 0
        return _presence_charge(requester)

    async def _holds(self, ops: list[Hold], requester: Requester | None, now: float) -> int:
        try:
            await self.broker.guard(self.store.presence_hold_many(ops))
        except BrokerUnavailable:
            self._hand_back(ops, "close")
        return 0

    async def _expires(self, ops: list[Expire], requester: Requester | None, now: float) -> int:
        for op in ops:
            try:
                await self.broker.guard(self.store.presence_expire(op))
            except BrokerUnavailable:  # the next sweep pops what this one would have
                log.info("presence sweep skipped: Redis is unreachable")
        return 0

    async def _deferred(self, held: list[Deferred], requester: Requester | None, now: float) -> int:
        """Carry out what the presence machine held while Redis was unreachable, kind by kind in order; an
        upsert's replies (``presence.state`` of a join, or of a beat that re-created its entry) go to its
        connection if it is still open. Raises :class:`BrokerUnavailable` (the rest is handed back) if Redis
        fails again."""
        done = 0
        for kind, group in itertools.groupby(held, lambda d: type(d.op)):
            batch = list(group)
            ops: list[Any] = [d.op for d in batch]
            try:  # run by the recovery while the broker is still down (inputs wait behind it): not guarded
                if kind is Upsert:
                    results = await unguarded(self.store.presence_upsert_many(ops))
                elif kind is Remove:
                    await unguarded(self.store.presence_remove_many(ops))
                else:
                    await unguarded(self.store.presence_hold_many(ops))
            except BrokerUnavailable:
                self.machine.requeue(held[done:])
                raise
            done += len(batch)
            if kind is Upsert:
                for d, (fact, viewers) in zip(batch, results, strict=True):
                    session = self.machine.sessions.get(d.op.conn_id)
                    peer = self._peer(d.op.conn_id)
                    if session is not None and peer is not None:
                        for frame in self.machine.stored(session, d.cause, fact, viewers, now):
                            self.fanout.send(peer, frame)
        return 0

    def _hand_back(self, ops: Sequence[Upsert | Remove | Hold], cause: str) -> None:
        """Presence operations an outage cut short: held by the machine until Redis answers (if it is blind by
        now, i.e. the outage was declared); otherwise a lone failure, dropped like before (a beat comes again)."""
        if not self.machine.requeue([Deferred(op, cause) for op in ops]):
            log.warning("dropped %d presence operations: a Redis call failed outside an outage", len(ops))

    def _peer(self, conn_id: str) -> Peer | None:
        session = self.machine.sessions.get(conn_id)
        return self.fanout.rooms.get(session.workspace_id, {}).get(conn_id) if session else None

    async def _sends(self, sends: list[Send], requester: Requester | None, now: float) -> int:
        written = 0
        for send in sends:
            peer = self._peer(send.conn_id)
            if peer is not None:
                self.fanout.send(peer, send.frame)
                written += len(send.frame)
        return written


def _presence_charge(requester: Requester | None) -> int:
    """A presence request is charged its frame per recipient: a change it causes is broadcast at most once."""
    return requester.size * requester.others if requester is not None else 0
