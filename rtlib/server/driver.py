"""The live server: a thin websockets + redis.asyncio driver of the sans-I/O rules.

Per connection: the handshake check (:func:`rtlib.server.auth.verify_token`, workspace, Origin), a
:class:`~rtlib.protocol.session.Session` that turns frames into requests, and this module carrying requests
out on :class:`~rtlib.server.store.RedisStore` and writing the results through
:class:`~rtlib.server.fanout.Fanout`. Per instance: one :class:`~rtlib.protocol.presence_machine.PresenceMachine`
(what each connection views, the sweep and probe schedules), woken by one timer task
(:class:`~rtlib.server.loops.PresenceTimer`), its effects carried out by :mod:`rtlib.server.effects`.
Several instances sharing one Redis form one cluster.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import secrets
import socket
import time
from collections import Counter
from dataclasses import replace
from http import HTTPStatus
from urllib.parse import parse_qs, urlsplit

from redis.asyncio import BlockingConnectionPool, Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from websockets.asyncio.server import Server as WsServer
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from rtlib.protocol import events
from rtlib.protocol.config import ServerConfig
from rtlib.protocol.errors import CloseCode, ConnectionMustClose, HandshakeError
from rtlib.protocol.history import EPOCH_RE, OFFSET_RE, decide_resume, offset_key, offset_of, with_offset
from rtlib.protocol.presence_machine import PresenceMachine
from rtlib.protocol.ratelimit import Pacer
from rtlib.protocol.schema import PresencePong, PresenceRequest, TaskGet, TaskList, TaskUpdate
from rtlib.protocol.session import Request as ClientRequest
from rtlib.protocol.session import Session
from rtlib.server.admission import AdmissionGate, gated
from rtlib.server.auth import verify_token
from rtlib.server.effects import PresenceExecutor
from rtlib.server.fanout import Fanout, Peer, slow_consumer_closer
from rtlib.server.flow import close_draining, pause_reading
from rtlib.server.keyspace import probe_channel
from rtlib.server.loops import PresenceTimer, keep_counts, watch_pubsub
from rtlib.server.members import ClusterCounts
from rtlib.server.resp import RETRY, RespConnection, backoff
from rtlib.server.static import StaticFiles
from rtlib.server.store import RedisStore
from rtlib.server.tasks import spawn

__all__ = ["WS_PATH", "RealtimeServer"]

log = logging.getLogger("rtlib.server.driver")
WS_PATH = "/ws"
_FAIR_TURN_BYTES = 8192  # a frame bigger than this ends its connection's turn on the event loop


class RealtimeServer:
    """One server instance. ``await start()``, then ``port``/``url``; ``await stop()`` shuts down gracefully."""

    def __init__(self, redis_url: str, secret: str, config: ServerConfig | None = None,
                 host: str = "127.0.0.1", port: int = 0) -> None:
        if not secret:
            raise ValueError("a signing secret is required (--secret or RTLIB_SECRET)")
        config = config or ServerConfig()
        if not config.server_id:
            config = replace(config, server_id=f"srv-{secrets.token_hex(3)}")
        self.config = config
        self.redis_url = redis_url
        self.secret = secret
        self.host, self._port = host, port
        self.redis: Redis | None = None
        self.store: RedisStore | None = None
        self.fanout = Fanout(config.max_write_buffer)
        self.static = StaticFiles()
        self._user_conns: Counter[str] = Counter()  # open connections per user on this instance
        # Presence: what each connection views, the sweep schedule and (mode "probe") the probe schedule, as
        # one sans-I/O machine; the timer task wakes it, the executor carries out its effects.
        self.machine = PresenceMachine(
            config.presence, config.heartbeat_interval if config.presence_mode == "probe" else None)
        self.effects: PresenceExecutor | None = None
        self._timer: PresenceTimer | None = None
        self._handshakes = Pacer(config.handshake_rate, config.handshake_burst, config.handshake_max_wait)
        self.admission = AdmissionGate(config.handshake_concurrency)
        self._ids = itertools.count(1)
        self._ws: WsServer | None = None
        self._presence_task: asyncio.Task[None] | None = None
        self._watchdog: asyncio.Task[None] | None = None
        self._reconnect: asyncio.Future[None] | None = None
        self._probe_redis: Redis | None = None
        self.members: ClusterCounts | None = None  # connection counts across the cluster (fan-out budget)
        self._beating: asyncio.Task[None] | None = None

    # --- lifecycle ----------------------------------------------------------------------------------------
    async def start(self) -> RealtimeServer:
        # Retry a command on a dropped connection (rtlib's one retry policy, resp.RETRY): after a Redis restart
        # the pool still holds dead sockets, and the first command on each would otherwise fail a client request.
        # A blocking pool: in a reconnect storm (hundreds of clients failing over at once) callers wait for a
        # connection instead of failing with MaxConnectionsError and closing healthy sockets.
        pool = BlockingConnectionPool.from_url(self.redis_url, max_connections=64, timeout=10,
                                               retry=RETRY,
                                               retry_on_error=[RedisConnectionError])
        self.redis = Redis(connection_pool=pool)
        await self.redis.ping()
        # The pub/sub check publishes on a connection of its own: behind the request pool, a burst of requests
        # (2,000 joins at once) made its probe wait for a pool connection past the timeout, and a healthy
        # subscriber was dropped, closing every client.
        self._probe_redis = Redis.from_url(self.redis_url, retry=RETRY, retry_on_error=[RedisConnectionError])
        # The hot path's commands share the pub/sub connection when it speaks RESP3 (Fanout.command_connection).
        fast = RespConnection(self.redis_url, shared=lambda: self.fanout.command_connection)
        self.store = RedisStore(self.redis, fast, self.config.history, self.config.idempotency_ttl)
        await self.store.load_scripts()
        self.members = ClusterCounts(self.redis, self.server_id, refresh=self.config.member_count_refresh)
        await self.members.beat()
        self.fanout.on_room_size = self.members.changed
        self.fanout.on_lost = self._on_redis_lost
        self.fanout.probe_channel = probe_channel(self.server_id).encode()
        await self.fanout.connect(self.redis_url)
        self._ws = await serve(
            self._handle, self.host, self._port,
            process_request=self._process_request,
            max_size=self.config.max_frame_bytes,
            compression=None,  # frames must be byte-identical per receiver to be encoded once
            create_connection=gated(self.admission),
            server_header="rtlib",
        )
        if self.config.receive_buffer:  # accepted sockets inherit it from the listening socket (Linux)
            for sock in self._ws.sockets:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.config.receive_buffer)
        self.effects = PresenceExecutor(self.machine, self.store, self.fanout)
        self._timer = PresenceTimer(self.machine, self.effects.execute, self.server_id)
        self._presence_task = asyncio.create_task(self._timer.run(), name=f"{self.server_id}-presence")
        assert self._probe_redis is not None
        self._watchdog = asyncio.create_task(watch_pubsub(self.fanout, self._probe_redis, self.config, self.server_id),
                                             name=f"{self.server_id}-pubsub-check")
        self._beating = asyncio.create_task(keep_counts(self.members, self.server_id), name=f"{self.server_id}-counts")
        log.info("%s listening on %s", self.server_id, self.url)
        return self

    async def stop(self) -> None:
        """Close every connection with 1001 (their presence is removed, ``reason: disconnect``), then Redis."""
        if self._reconnect is not None:
            self._reconnect.cancel()
        if self._watchdog is not None:
            self._watchdog.cancel()
        if self._beating is not None:
            self._beating.cancel()
        if self._presence_task is not None:
            self._presence_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._presence_task
            self._presence_task = None
        if self._ws is not None:
            self.fanout.flush()
            self._ws.close(close_connections=True)  # 1001 going away; handlers run their cleanup
            self.admission.close()  # connections still waiting for admission have no handler yet
            await self._ws.wait_closed()
            self._ws = None
        await self.fanout.close()
        if self._beating is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._beating  # before close(): a last beat must not write the counts back
            self._beating = None
        if self.members is not None:
            with contextlib.suppress(Exception):  # Redis gone or paused: the alive key's TTL cleans up then
                async with asyncio.timeout(2):
                    await self.members.close()
        if self.store is not None and self.store.fast is not None:
            self.store.fast.close()
        if self._probe_redis is not None:
            await self._probe_redis.aclose()
            self._probe_redis = None
        if self.redis is not None:
            await self.redis.aclose(close_connection_pool=True)  # the pool is ours (made in start)
            self.redis = None

    async def __aenter__(self) -> RealtimeServer:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def sessions(self) -> dict[str, Session]:
        """This instance's open connections (the presence machine holds them: it probes and removes by them)."""
        return self.machine.sessions

    @property
    def server_id(self) -> str:
        return self.config.server_id

    @property
    def port(self) -> int:
        assert self._ws is not None, "server not started"
        return self._ws.sockets[0].getsockname()[1]

    @property
    def url(self) -> str:
        return f"ws://{self.host}:{self.port}{WS_PATH}"

    def _on_redis_lost(self, exc: Exception | None) -> None:
        # Without pub/sub this instance would silently stop delivering: end every connection so clients
        # reconnect (to another instance, or here once Redis is back) and resync; refuse new ones with 503
        # until the pub/sub link is back.
        for peer in [p for room in self.fanout.rooms.values() for p in room.values()]:
            spawn(peer.connection.close(CloseCode.INTERNAL_ERROR, "redis unavailable"))
        if self._ws is not None and (self._reconnect is None or self._reconnect.done()):
            self._reconnect = asyncio.ensure_future(self._reconnect_pubsub())

    async def _reconnect_pubsub(self) -> None:
        failures = 0
        while self._ws is not None:
            try:
                await self.fanout.reconnect(self.redis_url)
                log.warning("%s: redis pub/sub reconnected", self.server_id)
                return
            except OSError as exc:  # the same backoff as every Redis retry (resp.backoff), for as long as it takes
                failures += 1
                delay = backoff(failures)
                log.warning("%s: redis pub/sub reconnect failed (%s); retry in %.2fs", self.server_id, exc, delay)
                await asyncio.sleep(delay)

    # --- handshake --------------------------------------------------------------------------------------------
    async def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        refusal = self._check_request(connection, request)
        connection.checked()  # type: ignore[attr-defined]  # its admission slot (rtlib.server.admission)
        if refusal is not None:
            return refusal
        # Refusals above are cheap; an accepted handshake goes on to cost a subscription, a welcome and a
        # session, so accepted ones are paced: a storm waits here instead of stalling the open connections.
        wait = self._handshakes.reserve(time.monotonic())
        if wait is None:
            return connection.respond(HTTPStatus.SERVICE_UNAVAILABLE,
                                      "too many new connections on this instance; retry with backoff\n")
        if wait > 0:
            await asyncio.sleep(wait)
        return None

    def _check_request(self, connection: ServerConnection, request: Request) -> Response | None:
        url = urlsplit(request.path)
        if self.static.handles(url.path):  # the board page: plain GETs, no token, no Origin rule
            return self.static.respond(connection, url.path)
        if url.path != WS_PATH:
            log.info("%s: refused a request from %s: 404 Not Found (no endpoint at %s)", self.server_id,
                     connection.remote_address, url.path)
            return connection.respond(HTTPStatus.NOT_FOUND, f"no endpoint at {url.path}; use {WS_PATH}\n")
        query = parse_qs(url.query)
        try:
            if not self.fanout.connected:
                raise HandshakeError.unavailable("this instance lost Redis and is reconnecting; try another")
            claims = verify_token(self.secret, (query.get("token") or [None])[0])
            workspace = (query.get("workspace") or [""])[0]
            if not workspace:
                raise HandshakeError.forbidden("missing workspace parameter")
            if workspace not in claims.workspaces:  # token workspaces are valid ids, so W is one too
                raise HandshakeError.forbidden(f"user is not a member of workspace {workspace!r}")
            if self._user_conns[claims.user_id] >= self.config.max_connections_per_user:
                raise HandshakeError.too_many("too many connections for this user on this instance")
            origin = request.headers.get("Origin")
            allowed = self.config.allowed_origins
            if origin is not None and allowed is not None and origin not in allowed:
                raise HandshakeError.forbidden(f"origin {origin!r} is not allowed")
        except HandshakeError as exc:  # logged with its reason (the query, with its token, never is)
            log.info("%s: refused a handshake from %s: %d %s (%s)", self.server_id, connection.remote_address,
                     exc.status, exc.status.phrase, exc.message)
            return connection.respond(exc.status, exc.message + "\n")
        resume = None
        if "offset" in query or "epoch" in query:
            offset, epoch = (query.get("offset") or [""])[0], (query.get("epoch") or [""])[0]
            if not OFFSET_RE.fullmatch(offset) or not EPOCH_RE.fullmatch(epoch):
                log.info("%s: refused a handshake from %s: 400 Bad Request (resume needs both offset=MS-SEQ and "
                         "epoch=DIGITS)", self.server_id, connection.remote_address)
                return connection.respond(HTTPStatus.BAD_REQUEST, "resume needs both offset=MS-SEQ and epoch=DIGITS\n")
            resume = (offset, epoch)
        connection.rtlib = (claims.user_id, workspace, claims.expires_at, resume)  # type: ignore[attr-defined]
        return None

    # --- one connection ------------------------------------------------------------------------------------------
    async def _handle(self, connection: ServerConnection) -> None:
        user_id, workspace, expires_at, resume = connection.rtlib  # type: ignore[attr-defined]
        conn_id = f"{self.server_id}-{next(self._ids)}"
        # A token is checked at the handshake only; the connection must not outlive it.
        expiry = asyncio.get_running_loop().call_later(
            max(0.0, expires_at - time.time()),
            lambda: spawn(connection.close(CloseCode.POLICY_VIOLATION, "token expired")))
        session = Session(conn_id, user_id, workspace, self.config)
        peer = Peer(conn_id, workspace, connection, on_slow=slow_consumer_closer)
        self.machine.open(session)
        self._user_conns[user_id] += 1
        try:
            if self._user_conns[user_id] > self.config.max_connections_per_user:
                # Handshakes racing each other can all pass the 429 check before any handler runs.
                await connection.close(CloseCode.POLICY_VIOLATION, "too many connections")
                return
            await self._subscribe(session, peer, resume)
            async for frame in connection:
                now = time.time()  # read once per frame: the request, its store operation and its replies use it
                try:
                    outcome = session.receive(frame, now)
                except ConnectionMustClose as exc:
                    self.fanout.flush_peer(peer)
                    await close_draining(connection, exc.code, exc.reason)
                    break
                pause = 0.0
                if isinstance(outcome, bytes):
                    self.fanout.send(peer, outcome)
                else:
                    size, recipients = await self._carry_out(session, peer, outcome, len(frame), now)
                    pause = session.fanout(size, recipients, now)
                if pause:
                    # Over its fan-out budget: this connection is not read for a while (its frames wait in the
                    # kernel, then in the client), so it cannot make this instance write without bound.
                    await pause_reading(connection, pause)
                elif isinstance(outcome, bytes) or len(frame) > _FAIR_TURN_BYTES:
                    # Fair turns: frames already buffered are returned without yielding to the loop, so a
                    # flood of refused or big frames would run back to back while the neighbours wait.
                    await asyncio.sleep(0)
        except ConnectionClosed:
            pass
        except (ConnectionError, RedisConnectionError):
            # Redis went away mid-request: _on_redis_lost closes the other connections the same way.
            await close_draining(connection, CloseCode.INTERNAL_ERROR, "redis unavailable")
        except Exception:
            log.exception("%s: unexpected fault on %s", self.server_id, conn_id)
            self.fanout.flush_peer(peer)
            await close_draining(connection, CloseCode.INTERNAL_ERROR, "internal error")  # no internals sent
        finally:
            expiry.cancel()
            self.sessions.pop(conn_id, None)  # _drop_presence closes it in the machine; this covers a failed start
            self._user_conns[user_id] -= 1
            if not self._user_conns[user_id]:
                del self._user_conns[user_id]
            await self.fanout.remove(peer)
            # Clean = the client sent a close frame (it left, or answered our close); otherwise the connection
            # was lost, which a leave grace holds instead of announcing at once.
            await self._drop_presence(session, clean=connection.protocol.close_rcvd is not None)

    async def _subscribe(self, session: Session, peer: Peer, resume: tuple[str, str] | None) -> None:
        """Join the workspace room and send ``session.welcome``; when resuming, catch up from history in
        between. Room events are held while the history is read, then those after the replay are released:
        no gap, no duplicate."""
        history = self.config.history
        if not history.length:
            await self.fanout.add(peer)
            self.fanout.send(peer, session.welcome(time.time()))
            return
        assert self.store is not None
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
            if outcome is not None and outcome.recovered:
                for entry_id, event in entries:
                    self.fanout.send(peer, with_offset(event, entry_id, epoch))
            for event in peer.held:  # published after the history was read: not in the replay
                offset = offset_of(event)
                if offset is None or offset_key(offset) > seen:
                    self.fanout.send(peer, event)
        finally:
            peer.held = None

    async def _carry_out(self, session: Session, peer: Peer, request: ClientRequest, size: int, now: float
                         ) -> tuple[int, int]:
        """Serve one request; return what it made the servers write, as (bytes, recipients), for the connection's
        fan-out budget: an update's event x the workspace's other connections on every instance
        (:class:`~rtlib.server.members.ClusterCounts`), a reply x 1. Presence requests are charged their frame's
        ``size`` per recipient (a change is broadcast at most once)."""
        store, fanout, members, ws = self.store, self.fanout, self.members, session.workspace_id
        assert store is not None and members is not None
        payload = request.payload
        others = members.others(ws, len(fanout.rooms.get(ws, ())))
        if isinstance(payload, TaskUpdate):
            prefix, suffix = events.task_updated_parts(ws, session.user_id, payload.taskId, payload.changes, now)
            atomic = self.config.publish_mode == "atomic"
            version, retry = await store.update_task(ws, payload.taskId, payload.changes, prefix, suffix,
                                                     publish=atomic, user=session.user_id, ref=payload.ref)
            if not atomic and not retry:  # the study mode: a second round trip, so publishes can overtake each other
                await store.publish(ws, prefix + str(version).encode() + suffix)
            fanout.send(peer, session.ack(payload, version, now))
            return len(prefix) + len(suffix) + 4, others
        if isinstance(payload, TaskGet):
            version, fields = await store.get_task(ws, payload.taskId)
            reply = session.snapshot(payload, version, fields, now)
            fanout.send(peer, reply)
            return len(reply), 1
        if isinstance(payload, TaskList):
            tasks, next_cursor = await store.list_tasks(ws, payload.cursor, payload.limit)
            reply = session.task_page(payload, tasks, next_cursor, now)
            fanout.send(peer, reply)
            return len(reply), 1
        assert self.effects is not None and self._timer is not None
        if isinstance(payload, PresenceRequest):
            effects = self.machine.receive(session, request.type, payload.taskId, now)
            await self.effects.execute(effects, now, (session, peer, request.type))
            self._timer.poke()  # a first join may have scheduled a probe before the timer's next wake
        elif isinstance(payload, PresencePong):  # a heartbeat of every task the connection views: one round trip
            await self.effects.execute(self.machine.pong(session, now), now, (session, peer, "presence.heartbeat"))
        return size, others

    async def _drop_presence(self, session: Session, clean: bool = True) -> None:
        now = time.time()
        effects = self.machine.close(session, now, clean)
        if not effects or self.effects is None:
            return
        try:
            await self.effects.execute(effects, now)
        except Exception:  # Redis gone: the entries expire by timeout on another instance instead
            log.exception("%s: could not remove presence of %s", self.server_id, session.conn_id)
