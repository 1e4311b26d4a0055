"""The per-connection path: one task per open WebSocket, from welcome to cleanup.

For each frame the clock is read once; :meth:`Session.receive` turns the frame into a request (or an error
frame), :func:`rtlib.protocol.requests.plan` turns the request into effects, and the instance's
:class:`~rtlib.server.effects.Executor` carries them out. This module decides nothing about requests; it owns
the connection's lifecycle: the per-user cap, the token's expiry, the welcome (with a resume from history),
the fan-out budget's pauses, fair turns on the event loop, and closing (presence removed, or held when lost).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections import Counter

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from rtlib.protocol.config import ServerConfig
from rtlib.protocol.errors import CloseCode, ConnectionMustClose
from rtlib.protocol.history import decide_resume, offset_key, offset_of, with_offset
from rtlib.protocol.presence_machine import PresenceMachine
from rtlib.protocol.requests import plan
from rtlib.protocol.session import Session
from rtlib.server.broker import is_outage
from rtlib.server.effects import Executor, Requester
from rtlib.server.fanout import Fanout, Peer, slow_consumer_closer
from rtlib.server.flow import close_draining, pause_reading
from rtlib.server.handshake import Accepted
from rtlib.server.loops import PresenceTimer
from rtlib.server.members import ClusterCounts
from rtlib.server.store import RedisStore
from rtlib.server.tasks import spawn

__all__ = ["Connections"]

log = logging.getLogger("rtlib.server.connection")
_FAIR_TURN_BYTES = 8192  # a frame bigger than this ends its connection's turn on the event loop


class Connections:
    """Serves the open connections of one instance (``handler`` for websockets' ``serve``)."""

    def __init__(self, config: ServerConfig, machine: PresenceMachine, executor: Executor, timer: PresenceTimer,
                 store: RedisStore, fanout: Fanout, members: ClusterCounts, user_conns: Counter[str]) -> None:
        self.config, self.machine, self.executor, self.timer = config, machine, executor, timer
        self.store, self.fanout, self.members, self.user_conns = store, fanout, members, user_conns
        self._ids = itertools.count(1)

    async def handle(self, connection: ServerConnection) -> None:
        accepted: Accepted = connection.rtlib  # type: ignore[attr-defined]  # set by Handshakes.check
        user_id, workspace = accepted.user_id, accepted.workspace
        conn_id = f"{self.config.server_id}-{next(self._ids)}"
        # A token is checked at the handshake only; the connection must not outlive it.
        expiry = asyncio.get_running_loop().call_later(
            max(0.0, accepted.expires_at - time.time()),
            lambda: spawn(connection.close(CloseCode.POLICY_VIOLATION, "token expired")))
        session = Session(conn_id, user_id, workspace, self.config)
        peer = Peer(conn_id, workspace, connection, on_slow=slow_consumer_closer)
        self.machine.open(session)
        self.user_conns[user_id] += 1
        try:
            if self.user_conns[user_id] > self.config.max_connections_per_user:
                # Handshakes racing each other can all pass the 429 check before any handler runs.
                await connection.close(CloseCode.POLICY_VIOLATION, "too many connections")
                return
            await self._welcome(session, peer, accepted.resume)
            await self._serve(connection, session, peer)
        except ConnectionClosed:
            pass
        except Exception as exc:
            if is_outage(exc):
                # Only a welcome gets here (requests answer `unavailable` and go on): Redis went away before this
                # connection could be subscribed and placed in the history. Nothing to keep: try again later.
                await close_draining(connection, CloseCode.TRY_AGAIN_LATER, "redis unavailable")
            else:
                log.exception("%s: unexpected fault on %s", self.config.server_id, conn_id)
                self.fanout.flush_peer(peer)
                await close_draining(connection, CloseCode.INTERNAL_ERROR, "internal error")  # no internals sent
        finally:
            expiry.cancel()
            self.user_conns[user_id] -= 1
            if not self.user_conns[user_id]:
                del self.user_conns[user_id]
            await self.fanout.remove(peer)
            # Clean = the client sent a close frame (it left, or answered our close); otherwise the connection
            # was lost, which a leave grace holds instead of announcing at once.
            await self._close_presence(session, clean=connection.protocol.close_rcvd is not None)

    async def _serve(self, connection: ServerConnection, session: Session, peer: Peer) -> None:
        ws = session.workspace_id
        async for frame in connection:
            now = time.time()  # read once per frame: the request, its store operations and its replies use it
            try:
                outcome = session.receive(frame, now)
            except ConnectionMustClose as exc:
                self.fanout.flush_peer(peer)
                await close_draining(connection, exc.code, exc.reason)
                return
            pause = 0.0
            if isinstance(outcome, bytes):  # refused: the error frame goes back, nothing else happens
                self.fanout.send(peer, outcome)
            else:
                others = self.members.others(ws, len(self.fanout.rooms.get(ws, ())))
                requester = Requester(session, peer, outcome.type, len(frame), others)
                written = await self.executor.execute(plan(session, self.machine, outcome, now), now, requester)
                self.timer.poke()  # a first join may have scheduled a probe before the timer's next wake
                pause = session.fanout(written, 1, now)
            if pause:
                # Over its fan-out budget: this connection is not read for a while (its frames wait in the
                # kernel, then in the client), so it cannot make this instance write without bound.
                await pause_reading(connection, pause)
            elif isinstance(outcome, bytes) or len(frame) > _FAIR_TURN_BYTES:
                # Fair turns: frames already buffered are returned without yielding to the loop, so a
                # flood of refused or big frames would run back to back while the neighbours wait.
                await asyncio.sleep(0)

    async def _welcome(self, session: Session, peer: Peer, resume: tuple[str, str] | None) -> None:
        """Join the workspace room and send ``session.welcome``; when resuming, catch up from history in
        between. Room events are held while the history is read, then those after the replay are released:
        no gap, no duplicate."""
        history = self.config.history
        if not history.length:
            await self.fanout.add(peer)
            self.fanout.send(peer, session.welcome(time.time()))
            peer.since = peer.epoch = None
            return
        peer.held = []
        try:
            await self.fanout.add(peer)
            epoch, first, last, entries = await self.store.history_since(
                session.workspace_id, resume[0] if resume else None, history.max_replay)
            outcome = decide_resume(resume[0], resume[1], epoch, first, last, len(entries), history.max_replay
                                    ) if resume else None
            self.fanout.send(peer, session.welcome(time.time(), epoch, last or "0-0",
                                                   outcome.recovered if outcome else None))
            seen = offset_key(last or "0-0")
            peer.since, peer.epoch = last or "0-0", epoch  # what it has been sent: a catch-up starts from here
            if outcome is not None and outcome.recovered:
                for entry_id, event in entries:
                    self.fanout.send(peer, with_offset(event, entry_id, epoch))
            for event in peer.held:  # published after the history was read: not in the replay
                offset = offset_of(event)
                if offset is None or offset_key(offset) > seen:
                    self.fanout.send(peer, event)
        finally:
            peer.held = None

    async def _close_presence(self, session: Session, clean: bool) -> None:
        now = time.time()
        effects = self.machine.close(session, now, clean)
        if not effects:
            return
        try:
            await self.executor.execute(effects, now)
        except Exception:  # Redis gone: the entries expire by timeout on another instance instead
            log.exception("%s: could not remove presence of %s", self.config.server_id, session.conn_id)
