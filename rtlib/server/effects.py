"""Carrying out effects on Redis and the sockets: the driver's one ``execute()``.

The rules decide (:func:`rtlib.protocol.requests.plan` for a client request,
:class:`~rtlib.protocol.presence_machine.PresenceMachine` for presence and its timers); this module only does.
The dispatch is one table from effect type to the code that carries it out, so a new effect is one entry here,
not a branch in the driver. Effects of one kind that follow each other run together (a pong's upserts, a
closing connection's removals: one round trip each), in the order the rules returned them.

Each run returns the bytes it made the servers write, which the connection's fan-out budget is charged with
(``docs/protocol.md`` §10): an update's event times the workspace's other connections on every instance, a
reply times one, a presence request its frame times the others (a change is broadcast at most once).
"""

from __future__ import annotations

import itertools
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from rtlib.protocol.presence_machine import PresenceMachine, Send
from rtlib.protocol.presence_protocol import Expire, Hold, Remove, Upsert
from rtlib.protocol.requests import GetTask, ListTasks, RequestEffect, UpdateTask
from rtlib.protocol.session import Session
from rtlib.server.fanout import Fanout, Peer
from rtlib.server.store import RedisStore

__all__ = ["Executor", "Requester"]


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

    def __init__(self, machine: PresenceMachine, store: RedisStore, fanout: Fanout) -> None:
        self.machine, self.store, self.fanout = machine, store, fanout
        self._runs: dict[type, Callable[[list[Any], Requester | None, float], Awaitable[int]]] = {
            UpdateTask: self._updates, GetTask: self._gets, ListTasks: self._lists,
            Upsert: self._upserts, Remove: self._removes, Hold: self._holds, Expire: self._expires,
            Send: self._sends,
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
            version, retry = await self.store.update_task(
                ws, op.update.taskId, op.update.changes, op.prefix, op.suffix, publish=op.atomic,
                user=session.user_id, ref=op.update.ref)
            if not op.atomic and not retry:  # the study mode: a second round trip, so publishes can overtake
                await self.store.publish(ws, op.prefix + str(version).encode() + op.suffix)
            self.fanout.send(requester.peer, session.ack(op.update, version, now))
            written += (len(op.prefix) + len(op.suffix) + 4) * requester.others
        return written

    async def _gets(self, ops: list[GetTask], requester: Requester | None, now: float) -> int:
        assert requester is not None
        written = 0
        for op in ops:
            version, fields = await self.store.get_task(op.session.workspace_id, op.get.taskId)
            written += self._reply(requester, op.session.snapshot(op.get, version, fields, now))
        return written

    async def _lists(self, ops: list[ListTasks], requester: Requester | None, now: float) -> int:
        assert requester is not None
        written = 0
        for op in ops:
            tasks, cursor = await self.store.list_tasks(op.session.workspace_id, op.request.cursor, op.request.limit)
            written += self._reply(requester, op.session.task_page(op.request, tasks, cursor, now))
        return written

    def _reply(self, requester: Requester, frame: bytes) -> int:
        self.fanout.send(requester.peer, frame)
        return len(frame)

    # --- presence -------------------------------------------------------------------------------------------
    async def _upserts(self, ops: list[Upsert], requester: Requester | None, now: float) -> int:
        results = await self.store.presence_upsert_many(ops)
        if requester is None:
            return 0
        for fact, viewers in results:
            for frame in self.machine.stored(requester.session, requester.type, fact, viewers, now):
                self.fanout.send(requester.peer, frame)
        return _presence_charge(requester)

    async def _removes(self, ops: list[Remove], requester: Requester | None, now: float) -> int:
        await self.store.presence_remove_many(ops)
        return _presence_charge(requester)

    async def _holds(self, ops: list[Hold], requester: Requester | None, now: float) -> int:
        await self.store.presence_hold_many(ops)
        return 0

    async def _expires(self, ops: list[Expire], requester: Requester | None, now: float) -> int:
        for op in ops:
            await self.store.presence_expire(op)
        return 0

    async def _sends(self, sends: list[Send], requester: Requester | None, now: float) -> int:
        written = 0
        for send in sends:
            session = self.machine.sessions.get(send.conn_id)
            peer = self.fanout.rooms.get(session.workspace_id, {}).get(send.conn_id) if session else None
            if peer is not None:
                self.fanout.send(peer, send.frame)
                written += len(send.frame)
        return written


def _presence_charge(requester: Requester | None) -> int:
    """A presence request is charged its frame per recipient: a change it causes is broadcast at most once."""
    return requester.size * requester.others if requester is not None else 0
