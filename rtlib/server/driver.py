"""The live server instance: a thin websockets + redis.asyncio driver of the sans-I/O rules.

This module is the instance's lifecycle: its Redis clients, its listening socket, its background tasks,
shutdown. The rest is in parts it wires together:

* the handshake path (:mod:`rtlib.server.handshake`): admission, checks, pacing;
* the per-connection path (:mod:`rtlib.server.connection`): frames in, one clock read per frame,
  :func:`rtlib.protocol.requests.plan` for the effects, :class:`rtlib.server.effects.Executor` to carry them out;
* presence: one :class:`~rtlib.protocol.presence_machine.PresenceMachine` (what each connection views, the
  sweep and probe schedules) woken by one timer task (:class:`~rtlib.server.loops.PresenceTimer`);
* losing and regaining Redis (:mod:`rtlib.server.outage`): connections stay open through an outage up to
  ``--broker-grace`` and are caught up server-side once Redis answers (``docs/protocol.md`` §11b).

Several instances sharing one Redis form one cluster. ``--redis`` may also name any node of a Redis Cluster
(Redis >= 7): detected at start, the instance then routes by slot and uses sharded pub/sub
(:mod:`rtlib.server.cluster_client`, :mod:`rtlib.server.cluster_fanout`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import socket
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace

from redis.asyncio import BlockingConnectionPool, Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from websockets.asyncio.server import Server as WsServer
from websockets.asyncio.server import serve

from rtlib.protocol.config import ServerConfig
from rtlib.protocol.presence_machine import PresenceMachine
from rtlib.protocol.session import Session
from rtlib.server.admission import AdmissionGate, gated
from rtlib.server.broker import Broker
from rtlib.server.cluster_client import ClusterConnection, ClusterProbe, RedisClusterClient, Topology, cluster_mode
from rtlib.server.cluster_fanout import ClusterFanout
from rtlib.server.connection import Connections
from rtlib.server.durability import ReplicaAcks, check_replicas, replica_acks
from rtlib.server.effects import Executor
from rtlib.server.fanout import Fanout
from rtlib.server.handshake import WS_PATH, Handshakes
from rtlib.server.keyspace import probe_channel
from rtlib.server.loops import PresenceTimer, keep_counts, watch_pubsub
from rtlib.server.members import ClusterCounts
from rtlib.server.outage import Outages
from rtlib.server.resp import RETRY, RespConnection, parse_redis_url
from rtlib.server.static import StaticFiles
from rtlib.server.store import RedisStore

__all__ = ["WS_PATH", "ClusterClients", "RealtimeServer", "cluster_clients"]

log = logging.getLogger("rtlib.server.driver")


@dataclass
class ClusterClients:
    """What the driver builds on a Redis Cluster instead of its single-Redis clients: one slot map for all."""

    redis: RedisClusterClient
    fast: ClusterConnection
    fanout: ClusterFanout
    probe: ClusterProbe


async def cluster_clients(url: str, max_write_buffer: int) -> ClusterClients:
    """The instance's clients for the cluster whose node ``url`` is."""
    topology = Topology(parse_redis_url(url))
    await topology.refresh()
    fanout = ClusterFanout(topology, max_write_buffer)
    return ClusterClients(RedisClusterClient.from_url(url), ClusterConnection(topology, fanout.node_connection),
                          fanout, ClusterProbe(topology, fanout.probe_channels))


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
        self._user_conns: Counter[str] = Counter()  # open connections per user on this instance
        # Up, or down since when (docs/protocol.md §11b): new handshakes are refused (503) while Redis is down.
        self.broker = Broker()
        self.handshakes = Handshakes(config, secret, self._user_conns, lambda: self.broker.up,
                                     lambda ws: self.fanout.serves(ws))
        # Presence: what each connection views, the sweep and (mode "probe") probe schedules, and blindness while
        # Redis is unreachable, as one sans-I/O machine; the timer task wakes it, the executor carries out its
        # effects. A timer wake more than a sweep interval late means this loop stalled: not held against viewers.
        self.machine = PresenceMachine(config.presence, stall_after=config.sweep_interval)
        self.outages: Outages | None = None
        self.executor: Executor | None = None
        self.connections: Connections | None = None
        self._timer: PresenceTimer | None = None
        self._ws: WsServer | None = None
        self._presence_task: asyncio.Task[None] | None = None
        self._watchdog: asyncio.Task[None] | None = None
        self._probe_redis: Redis | None = None
        self.members: ClusterCounts | None = None  # connection counts across the cluster (fan-out budget)
        self._beating: asyncio.Task[None] | None = None
        self._acks: ReplicaAcks | None = None  # --durability replica: the update path that WAITs for a replica

    # --- lifecycle ----------------------------------------------------------------------------------------
    async def start(self) -> RealtimeServer:
        # Retry a command on a dropped connection (rtlib's one retry policy, resp.RETRY): after a Redis restart
        # the pool still holds dead sockets, and the first command on each would otherwise fail a client request.
        # A blocking pool: in a reconnect storm (hundreds of clients failing over at once) callers wait for a
        # connection instead of failing with MaxConnectionsError and closing healthy sockets.
        publish = "PUBLISH"
        if await cluster_mode(self.redis_url):  # once, at start: routed commands and sharded pub/sub instead
            clients = await cluster_clients(self.redis_url, self.config.max_write_buffer)
            self.redis, fast, self.fanout, self._probe_redis = (  # type: ignore[assignment]
                clients.redis, clients.fast, clients.fanout, clients.probe)
            publish = "SPUBLISH"
            await self.redis.ping()  # type: ignore[union-attr]
        else:
            pool = BlockingConnectionPool.from_url(self.redis_url, max_connections=64, timeout=10,
                                                   retry=RETRY,
                                                   retry_on_error=[RedisConnectionError])
            self.redis = Redis(connection_pool=pool)
            await self.redis.ping()
            # The pub/sub check publishes on a connection of its own: behind the request pool, a burst of
            # requests (2,000 joins at once) made its probe wait for a pool connection past the timeout, and a
            # healthy subscriber was dropped, closing every client.
            self._probe_redis = Redis.from_url(self.redis_url, retry=RETRY, retry_on_error=[RedisConnectionError])
            # The hot path's commands share the pub/sub connection when it speaks RESP3 (command_connection).
            fast = RespConnection(self.redis_url, shared=lambda: self.fanout.command_connection)
        if self.config.durability == "replica":  # refused at start where no replica could ever confirm a write
            await check_replicas(self.redis_url, fast)
            self._acks = replica_acks(self.redis_url, fast, self.config.replica_timeout)
        self.store = RedisStore(self.redis, fast, self.config.history, self.config.idempotency_ttl,  # type: ignore
                                publish, self._acks)
        await self.store.load_scripts()
        self.members = ClusterCounts(self.redis, self.server_id, refresh=self.config.member_count_refresh)
        await self.members.beat()
        self.fanout.on_room_size = self.members.changed
        self.fanout.probe_channel = probe_channel(self.server_id).encode()
        await self.fanout.connect(self.redis_url)
        self.executor = Executor(self.machine, self.store, self.fanout, self.broker, self.config.broker_retry_after)
        self._timer = PresenceTimer(self.machine, self.executor.execute, self.server_id)
        self.outages = Outages(self.config, self.redis_url, self.broker, self.machine, self.fanout, self.store,
                               self._execute, self._timer.poke)
        self.fanout.on_lost = self.outages.lost
        if isinstance(self.fanout, ClusterFanout):  # a room whose slot moved is caught up as after an outage
            self.fanout.follow_moves(self.store, self.config.history, self.machine.sessions)
        self.connections = Connections(self.config, self.machine, self.executor, self._timer, self.store,
                                       self.fanout, self.members, self._user_conns)
        self._ws = await serve(
            self.connections.handle, self.host, self._port,
            process_request=self.handshakes.process_request,
            max_size=self.config.max_frame_bytes,
            compression=None,  # frames must be byte-identical per receiver to be encoded once
            create_connection=gated(self.handshakes.admission),
            server_header="rtlib",
        )
        if self.config.receive_buffer:  # accepted sockets inherit it from the listening socket (Linux)
            for sock in self._ws.sockets:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.config.receive_buffer)
        self._presence_task = asyncio.create_task(self._timer.run(), name=f"{self.server_id}-presence")
        assert self._probe_redis is not None
        self._watchdog = asyncio.create_task(
            watch_pubsub(self.fanout, self._probe_redis, self.config, self.server_id, self.broker.answered),
            name=f"{self.server_id}-pubsub-check")
        self._beating = asyncio.create_task(keep_counts(self.members, self.server_id), name=f"{self.server_id}-counts")
        log.info("%s listening on %s", self.server_id, self.url)
        return self

    async def stop(self) -> None:
        """Close every connection with 1001 (their presence is removed, ``reason: disconnect``), then Redis."""
        if self.outages is not None:
            await self.outages.stop()
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
            self.handshakes.admission.close()  # connections still waiting for admission have no handler yet
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
        if self._acks is not None:
            self._acks.close()
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
    def admission(self) -> AdmissionGate:
        return self.handshakes.admission

    @property
    def static(self) -> StaticFiles:
        return self.handshakes.static

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

    async def _execute(self, effects: Sequence[object], now: float) -> int:
        assert self.executor is not None
        return await self.executor.execute(effects, now)  # type: ignore[arg-type]
