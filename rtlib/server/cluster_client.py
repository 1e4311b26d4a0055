"""``rtlib serve`` on a Redis Cluster (issue 22 item 2): detecting one, its slot map, and routed hot-path commands.

Selected once at startup (:func:`cluster_mode`, then :func:`rtlib.server.driver.cluster_clients`); on
one Redis nothing here runs, so the single-Redis hot path is the one it was. On a cluster the instance has:

* redis-py's ``RedisCluster`` for everything but the hot path (presence pipelines, the sweep, task lists, the
  connection counts, script loading): it routes by slot, follows ``MOVED``/``ASK`` and refreshes its node map;
  the keyspace that shards (:mod:`rtlib.server.keyspace`) makes every script single-slot;
* :class:`ClusterConnection` for the hot path (``task.update``'s script, the handshake's history read, publish):
  the project's own RESP connection (:mod:`rtlib.server.resp`, one per master), routed by the CRC16 slot of
  the first key (or channel), following ``MOVED`` (the slot map is read again, the command resent) and ``ASK``
  (``ASKING`` and the command, back to back, to the importing node). Why not redis-py's cluster client there:
  a routed ``EVALSHA`` costs this process 26 µs of CPU on this connection and 90 µs on redis-py's
  ``RedisCluster`` (``bench/results/cluster_roundtrip.md``, same run), and the hot path's call shape is one
  command per slot, which needs none of redis-py's multi-slot machinery;
* sharded pub/sub, one subscriber connection per master (:mod:`rtlib.server.cluster_fanout`; the connection
  is a :class:`ShardedProtocol`, which also carries the hot path's commands to that master). The scripts and
  :meth:`RedisStore.publish` publish with ``SPUBLISH`` (:func:`rtlib.server.scripts.sized`): classic
  ``PUBLISH`` on a cluster is copied to every node over the cluster bus, so it does not grow with shards.

:class:`Topology` is the one slot map of the instance, shared by the hot path and the subscribers: read with
``CLUSTER SLOTS`` from any node that answers, again after every redirect and every :data:`REFRESH_EVERY` s.
Redis >= 7 is required (sharded pub/sub); :func:`cluster_mode` says so in one line otherwise.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Container
from dataclasses import replace
from typing import Any

from redis.asyncio.cluster import RedisCluster
from redis.crc import key_slot

from rtlib.server.resp import (
    RedisAddress,
    RespConnection,
    RespError,
    RespProtocol,
    open_connection,
    pack_command,
    parse_redis_url,
)

__all__ = ["MAX_REDIRECTS", "REFRESH_EVERY", "SHARDED_PUBSUB", "TRYAGAIN_WAIT", "ClusterConnection", "ClusterProbe",
           "Node", "RedisClusterClient", "ShardedProtocol", "Topology", "cluster_mode", "slot_of"]

log = logging.getLogger("rtlib.server.cluster_client")

#: Seconds between two reads of the slot map when no redirect asked for one (a failover or a resharding that
#: no command of this instance has run into yet).
REFRESH_EVERY = 5.0
#: Redirects (and ``TRYAGAIN`` waits) one command goes through before it fails: a migrating slot answers ``ASK``
#: then ``TRYAGAIN`` until the migration has moved all of a script's keys.
MAX_REDIRECTS = 20
SLOTS = 16384
#: Seconds before a command refused with ``TRYAGAIN`` (its keys split by a slot migration) is sent again.
TRYAGAIN_WAIT = 0.05

#: A master, as ``(host, port)``.
Node = tuple[str, int]


class RedisClusterClient(RedisCluster):  # type: ignore[misc]
    """redis-py's async cluster client, closed like the single-Redis client the driver closes
    (``aclose(close_connection_pool=True)``: the cluster client always owns its connections)."""

    async def aclose(self, close_connection_pool: bool | None = None) -> None:  # type: ignore[override]
        await super().aclose()


#: What ``rtlib serve`` needs of a Redis Cluster's servers: sharded pub/sub (Redis >= 7).
SHARDED_PUBSUB = ("SPUBLISH", "SSUBSCRIBE")


async def _ask(address: RedisAddress, *parts: str) -> Any:
    protocol = await open_connection(address)
    try:
        return await protocol.send(pack_command(*parts))
    finally:
        protocol.close()


async def _lacking(address: RedisAddress, version: tuple[int, ...]) -> list[str]:
    """The sharded pub/sub commands the server at ``address`` does not know (``COMMAND INFO`` answers nil for
    an unknown command). A server that refuses ``COMMAND`` (renamed, or a proxy) is judged by its version."""
    try:
        known = await _ask(address, "COMMAND", "INFO", *SHARDED_PUBSUB)
    except RespError:
        return list(SHARDED_PUBSUB) if version < (7, 0) else []
    return [name for name, entry in zip(SHARDED_PUBSUB, known, strict=False) if not entry]


async def cluster_mode(url: str) -> bool:
    """Is the Redis at ``url`` a Redis Cluster node (``cluster_enabled:1``)? Raises RuntimeError (one line: what
    is wrong and what is needed) for a cluster whose server lacks sharded pub/sub (Redis < 7), ``OSError`` if it
    cannot be reached."""
    address = parse_redis_url(url)
    try:
        text = await _ask(address, "INFO")
    except RespError:  # no INFO (the fakeredis fallback): not a cluster
        return False
    info = dict(line.split(":", 1) for line in text.decode().splitlines() if ":" in line)
    if info.get("cluster_enabled", "0").strip() != "1":
        return False
    shown = info.get("redis_version", "?").strip()
    version = tuple(int(p) for p in shown.split(".")[:2] if p.isdigit())
    if lacking := await _lacking(address, version):
        where = f"{address.host}:{address.port}"  # not the URL: it may carry a password
        raise RuntimeError(f"the Redis Cluster at {where} (Redis {shown}) has no {'/'.join(lacking)}: rtlib needs "
                           "sharded pub/sub on a cluster, i.e. Redis >= 7 on every node; upgrade the cluster, or "
                           "point --redis at a Redis that is not a cluster")
    return True


class _Fence:
    """In a subscriber's reply queue, in place of a future, for a ``SSUBSCRIBE``/``SUNSUBSCRIBE`` sent with a
    ``PING`` behind it (:meth:`ShardedProtocol.fenced`): every non-push reply up to that ``PONG`` is the
    command's error (``MOVED``: the slot moved), handed to ``on_message``, never to a command's future."""

    __slots__ = ("protocol",)

    def __init__(self, protocol: RespProtocol) -> None:
        self.protocol = protocol

    def done(self) -> bool:
        return False

    def set_result(self, reply: Any) -> None:
        """The ``PONG``: the fenced command is over."""

    def set_exception(self, exc: BaseException) -> None:
        if self.protocol.transport is None:  # the connection is gone (connection_lost fails every waiter)
            return
        self.protocol.waiters.appendleft(self)  # type: ignore[arg-type]  # still waiting for the PONG
        if self.protocol.on_message is not None:
            self.protocol.on_message(exc)


PING = pack_command(b"PING")


class ShardedProtocol(RespProtocol):
    """A master's subscriber connection (RESP3) that also carries the hot path's commands for its slots. A
    subscribe command has no reply of its own when it succeeds (its confirmations are pushes) and an error
    reply when it fails: :meth:`fenced` sends it with a ``PING`` behind it and a :class:`_Fence` in the reply
    queue, so that the error cannot be taken for the reply to a command sent after it."""

    def fenced(self, command: bytes) -> None:
        if self.transport is None or self.transport.is_closing():
            raise ConnectionError("redis connection lost")
        self.waiters.append(_Fence(self))  # type: ignore[arg-type]
        self.transport.write(command + PING)


def slot_of(key: bytes | str) -> int:
    """The cluster slot of a key or shard channel (CRC16 of its hash tag, redis-py's implementation)."""
    return int(key_slot(key if isinstance(key, bytes) else key.encode()))


class Topology:
    """Which master owns each slot, read from the cluster (``CLUSTER SLOTS``) and shared by every connection of
    the instance. :meth:`refresh` is coalesced: callers that ask while a read is under way wait for it."""

    def __init__(self, address: RedisAddress) -> None:
        self.address = address  # login and TLS of every node; the seed's host and port
        self.seeds: list[Node] = [(address.host, address.port)]
        self.owner: list[Node | None] = [None] * SLOTS
        self.masters: list[Node] = []
        self.version = 0  # bumped whenever the map changes
        # Nodes asked last (the masters this instance lost: a paused one accepts the connection, then makes each
        # read wait out its timeout)
        self.suspect: Container[Node] = ()
        self._reading: asyncio.Task[None] | None = None

    def node_address(self, node: Node) -> RedisAddress:
        return replace(self.address, host=node[0], port=node[1], path=None)

    def node_of(self, slot: int) -> Node:
        node = self.owner[slot]
        if node is None:
            raise ConnectionError(f"no node of the Redis Cluster serves slot {slot} (CLUSTERDOWN?)")
        return node

    async def refresh(self) -> None:
        if self._reading is None or self._reading.done():
            self._reading = asyncio.ensure_future(self._read())
        await asyncio.shield(self._reading)

    async def _read(self) -> None:
        errors = []
        known = dict.fromkeys([*self.masters, *self.seeds])  # known masters first: a seed may be gone
        for node in sorted(known, key=lambda n: n in self.suspect):
            try:
                protocol = await asyncio.wait_for(open_connection(self.node_address(node)), 2.0)
            except (OSError, TimeoutError, RespError) as exc:
                errors.append(f"{node[0]}:{node[1]}: {exc}")
                continue
            try:
                ranges = await asyncio.wait_for(protocol.send(b"*2\r\n$7\r\nCLUSTER\r\n$5\r\nSLOTS\r\n"), 2.0)
            except (OSError, TimeoutError, RespError, ConnectionError) as exc:
                errors.append(f"{node[0]}:{node[1]}: {exc}")
                continue
            finally:
                protocol.close()
            self._apply(ranges, node)
            return
        raise ConnectionError("no Redis Cluster node answered CLUSTER SLOTS: " + "; ".join(errors))

    def _apply(self, ranges: list[Any], asked: Node) -> None:
        owner: list[Node | None] = [None] * SLOTS
        masters: dict[Node, None] = {}
        for lo, hi, master, *_replicas in ranges:
            host = master[0].decode() if isinstance(master[0], bytes) else str(master[0])
            node = (host or asked[0], int(master[1]))  # an empty host: the node we asked (Redis's "unknown")
            masters[node] = None
            owner[int(lo):int(hi) + 1] = [node] * (int(hi) - int(lo) + 1)
        if owner != self.owner:
            self.owner, self.masters = owner, list(masters)
            self.version += 1


def _redirect(exc: RespError) -> tuple[str, int, Node] | None:
    """``("MOVED" | "ASK", slot, node)`` of a redirect error, else None."""
    kind, _, rest = str(exc).partition(" ")
    if kind not in ("MOVED", "ASK"):
        return None
    slot, _, where = rest.partition(" ")
    host, _, port = where.rpartition(":")
    return kind, int(slot), (host, int(port))


class ClusterConnection:
    """The hot path's commands on a Redis Cluster: one lazily connected :class:`RespConnection` per master,
    each command sent to the owner of its first key's slot. The interface of :class:`RespConnection` that the
    store uses (``call``, ``evalsha``, ``close``)."""

    def __init__(self, topology: Topology, shared: Callable[[Node], RespProtocol | None] | None = None) -> None:
        self.topology = topology
        self._nodes: dict[Node, RespConnection] = {}
        # The master's subscriber connection, to send its commands on (as on one Redis, resp.RespConnection):
        # an update's reply and the event it published come back on one socket, in order, in one read.
        self._shared = shared

    def connection(self, node: Node) -> RespConnection:
        conn = self._nodes.get(node)
        if conn is None:
            conn = self._nodes[node] = RespConnection("", address=self.topology.node_address(node))
        return conn

    async def call(self, *parts: bytes | str | int | float) -> Any:
        """Send one keyed command (its key, or shard channel, second) to the owner of its slot."""
        return await self._routed(slot_of(parts[1]), parts)  # type: ignore[arg-type]

    async def _routed(self, slot: int, parts: tuple[Any, ...]) -> Any:
        if self.topology.owner[slot] is None:
            await self.topology.refresh()
        node, asking = self.topology.node_of(slot), False
        for _ in range(MAX_REDIRECTS):
            try:
                if asking:  # the slot is migrating and the key already moved: ask the importing node
                    return (await self.connection(node).call_many((b"ASKING",), parts))[1]
                if self._shared is not None and (protocol := self._shared(node)) is not None:
                    if not protocol.open:
                        raise ConnectionError("redis connection lost")
                    return await protocol.send(pack_command(*parts))
                return await self.connection(node).call(*parts)
            except RespError as exc:
                redirect = _redirect(exc)
                if redirect is not None and redirect[0] == "ASK":
                    node, asking = redirect[2], True
                    continue
                if redirect is not None:  # MOVED: the slot has a new owner; learn the whole map (others moved too)
                    await self.topology.refresh()
                elif str(exc).startswith("TRYAGAIN"):
                    # a script whose keys a migration has split between two nodes: refused before running, so
                    # safe to resend from the owner once the migration has moved the rest
                    await asyncio.sleep(TRYAGAIN_WAIT)
                else:
                    raise
                node, asking = self.topology.owner[slot] or (redirect[2] if redirect else node), False
        raise ConnectionError(f"slot {slot}: more than {MAX_REDIRECTS} redirects or TRYAGAIN replies")

    async def evalsha(self, script: bytes, sha: str, keys: list[str], args: list[Any]) -> Any:
        """Run a script on its keys' node by SHA1, loading it there first if that node has not seen it."""
        slot = slot_of(keys[0])
        parts = ("EVALSHA", sha, len(keys), *keys, *args)
        try:
            return await self._routed(slot, parts)
        except RespError as exc:
            if not str(exc).startswith("NOSCRIPT"):
                raise
            await self.connection(self.topology.node_of(slot)).call("SCRIPT", "LOAD", script)
            return await self._routed(slot, parts)

    def close(self) -> None:
        for conn in self._nodes.values():
            conn.close()


class ClusterProbe:
    """The pub/sub check's publisher on a cluster (``watch_pubsub``'s ``probe_redis``): a probe is published on
    every master's probe channel (``SPUBLISH``, on connections of its own, not the hot path's), and the fan-out
    counts it back only when every node's subscriber delivered it (:mod:`rtlib.server.cluster_fanout`)."""

    def __init__(self, topology: Topology, channels: Any) -> None:
        self.connection = ClusterConnection(topology)
        self._channels = channels  # () -> the current probe channels, one per master

    async def publish(self, channel: bytes, token: bytes) -> None:
        await asyncio.gather(*(self.connection.call("SPUBLISH", chan, token) for chan in self._channels()))

    async def aclose(self) -> None:
        self.connection.close()
