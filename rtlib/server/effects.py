"""Carrying out the presence machine's effects on Redis and the sockets: the driver's one ``execute()``.

:class:`~rtlib.protocol.presence_machine.PresenceMachine` decides; this module only does. Effects of one kind
that follow each other run together (a pong's upserts, a closing connection's removals: one round trip), in
the order the machine returned them. The dispatch is one table from effect type to the store call, so a new
effect is one entry here, not a branch in the driver.
"""

from __future__ import annotations

import itertools
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from rtlib.protocol.presence_machine import Effect, PresenceMachine, Send
from rtlib.protocol.presence_protocol import Expire, Hold, Remove, Upsert
from rtlib.protocol.session import Session
from rtlib.server.fanout import Fanout, Peer
from rtlib.server.store import RedisStore

__all__ = ["PresenceExecutor", "Requester"]

#: Who asked (the requester's session, its peer, the request type): where an upsert's replies go.
Requester = tuple[Session, Peer, str]


class PresenceExecutor:
    """Runs presence effects: store operations on :class:`RedisStore`, frames through :class:`Fanout`."""

    def __init__(self, machine: PresenceMachine, store: RedisStore, fanout: Fanout) -> None:
        self.machine, self.store, self.fanout = machine, store, fanout
        self._runs: dict[type, Callable[[list[Any], Requester | None, float], Awaitable[None]]] = {
            Upsert: self._upserts, Remove: self._removes, Hold: self._holds, Expire: self._expires, Send: self._sends,
        }

    async def execute(self, effects: Sequence[Effect], now: float, requester: Requester | None = None) -> None:
        """Carry out ``effects`` in order, consecutive ones of a kind in one batch."""
        for kind, group in itertools.groupby(effects, type):
            await self._runs[kind](list(group), requester, now)

    async def _upserts(self, ops: list[Upsert], requester: Requester | None, now: float) -> None:
        results = await self.store.presence_upsert_many(ops)
        if requester is None:
            return
        session, peer, type_ = requester
        for fact, viewers in results:
            for frame in self.machine.stored(session, type_, fact, viewers, now):
                self.fanout.send(peer, frame)

    async def _removes(self, ops: list[Remove], requester: Requester | None, now: float) -> None:
        await self.store.presence_remove_many(ops)

    async def _holds(self, ops: list[Hold], requester: Requester | None, now: float) -> None:
        await self.store.presence_hold_many(ops)

    async def _expires(self, ops: list[Expire], requester: Requester | None, now: float) -> None:
        for op in ops:
            await self.store.presence_expire(op)

    async def _sends(self, sends: list[Send], requester: Requester | None, now: float) -> None:
        for send in sends:
            session = self.machine.sessions.get(send.conn_id)
            if session is None:
                continue
            peer = self.fanout.rooms.get(session.workspace_id, {}).get(send.conn_id)
            if peer is not None:
                self.fanout.send(peer, send.frame)
