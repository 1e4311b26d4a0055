"""``--durability replica``: a ``task.update`` is acked only once at least one replica has the write.

Redis replicates asynchronously: the master answers the update script, then streams the write to its replicas.
A master killed in between takes an acked update with it when its replica is promoted (docs/protocol.md §2,
measured in ``bench/results/failover.md``). In ``replica`` mode the store runs the update script and then
``WAIT 1 <timeout ms>`` on the *same* connection (``WAIT`` counts the replicas that acknowledged every write
that connection made), on the master that owns the task's slot:

* a dedicated connection, not the hot path's shared pub/sub one: ``WAIT`` blocks its connection until a replica
  answers, which would hold back the pub/sub messages and the other updates queued on a shared one;
* ``async`` mode never builds a :class:`ReplicaAcks`: the store's update call is the same one as before.

One ``WAIT`` covers many updates (a group commit): ``WAIT`` blocks its connection, so one per update would make
the updates behind it wait a full ``WAIT`` each (a master whose replica is gone: the timeout each, in a row).
Instead an update whose script has answered joins the next ``WAIT`` of its master's connection, sent once the
one in flight (if any) returns: every script reply that came before it is covered, since ``WAIT`` counts the
connection's writes up to itself.

A master whose last ``WAIT`` timed out (its replica is gone: it was just promoted, or the replica died) is asked
with a short ``WAIT`` (:data:`PROBE_MS`) until one succeeds again: otherwise every update on it would wait the full
timeout in turn, and a connection's requests (handled one at a time) would pile up behind them.

A replica that has just synced is counted by ``INFO replication`` (``connected_slaves``, which
:func:`check_replicas` asks) but confirms writes only once the master has its first ``REPLCONF ACK`` (up to a
second later): updates in that second are answered ``not_replicated``, which is what they are.

Past the timeout the write stays applied (and broadcast) on the master; the store raises :class:`NotReplicated`
and the client gets the ``not_replicated`` error (a retry with the same ref is idempotent and waits again).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from rtlib.server.cluster_client import ClusterConnection, slot_of
from rtlib.server.resp import RedisAddress, RespConnection, open_connection, pack_command, parse_redis_url

__all__ = ["PROBE_MS", "NotReplicated", "ReplicaAcks", "check_replicas", "replica_acks"]

#: The ``WAIT`` timeout (ms) on a master whose last ``WAIT`` timed out, until a replica confirms again.
PROBE_MS = 10


class NotReplicated(Exception):
    """The update ran on the master (it has ``version``) but no replica confirmed it within the timeout."""

    def __init__(self, version: int, retry: bool) -> None:
        super().__init__(f"version {version} applied on the master, not confirmed by a replica")
        self.version, self.retry = version, retry


class ReplicaAcks:
    """The update path of ``replica`` mode: ``evalsha`` like :class:`RespConnection`'s, then ``WAIT``."""

    def __init__(self, connection: RespConnection | ClusterConnection, timeout: float, replicas: int = 1) -> None:
        self.connection = connection
        self.timeout_ms = max(1, round(timeout * 1000))
        self.replicas = replicas
        # Per master connection: the WAIT in flight, and the next one (not sent yet) that new replies join.
        self._flight: dict[int, asyncio.Future[int]] = {}
        self._next: dict[int, asyncio.Future[int]] = {}
        self._degraded: set[int] = set()  # connections whose last WAIT timed out

    async def evalsha(self, script: bytes, sha: str, keys: list[str], args: list[Any]) -> Any:
        """The update script's reply ``(version, retry)``; raises :class:`NotReplicated` if no replica has it
        in time, ``ConnectionError`` if the master went away (the outcome is then unknown, as in async mode)."""
        conn = self.connection
        if isinstance(conn, ClusterConnection):  # WAIT on the connection that ran the script: its owner's
            slot = slot_of(keys[0])
            node = conn.topology.owner[slot]
            reply = await conn.evalsha(script, sha, keys, args)
            if node is not None and conn.topology.owner[slot] != node:
                # the slot changed owner meanwhile (a failover): which master ran it is unknown, so is its fate
                raise ConnectionError("the task's slot moved while its update ran: outcome unknown")
            conn = conn.connection(conn.topology.node_of(slot))
        else:
            reply = await conn.evalsha(script, sha, keys, args)
        if await self._replicated(conn) < self.replicas:
            raise NotReplicated(int(reply[0]), bool(reply[1]))
        return reply

    async def _replicated(self, conn: RespConnection) -> int:
        """The replica count of the next ``WAIT`` sent on ``conn`` (joined, or started if none is pending)."""
        key = id(conn)
        group = self._next.get(key)
        if group is None:
            group = self._next[key] = asyncio.get_running_loop().create_future()
            asyncio.ensure_future(self._send_wait(conn, key, group))
        return await asyncio.shield(group)

    async def _send_wait(self, conn: RespConnection, key: int, group: asyncio.Future[int]) -> None:
        flight = self._flight.get(key)
        if flight is not None:
            with contextlib.suppress(BaseException):
                await asyncio.shield(flight)
        # From here on new replies start the next group: this WAIT is sent after every reply that joined it.
        self._next.pop(key, None)
        self._flight[key] = group
        try:
            timeout = PROBE_MS if key in self._degraded else self.timeout_ms
            count = int(await conn.call("WAIT", self.replicas, timeout))
            (self._degraded.add if count < self.replicas else self._degraded.discard)(key)
            group.set_result(count)
        except BaseException as exc:  # the master went away: every update of the group has an unknown outcome
            group.set_exception(exc if isinstance(exc, Exception) else ConnectionError("replica wait cancelled"))
            group.exception()  # its waiters raise it; marked retrieved so a group nobody awaits is not logged
            if not isinstance(exc, Exception):
                raise
        finally:
            if self._flight.get(key) is group:
                del self._flight[key]

    def close(self) -> None:
        self.connection.close()


async def _connected_replicas(address: RedisAddress) -> int:
    """``connected_slaves`` of ``INFO replication``: the replicas a ``WAIT`` on this Redis can count."""
    protocol = await open_connection(address)
    try:
        text = await protocol.send(pack_command("INFO", "replication"))
    finally:
        protocol.close()
    info = dict(line.split(":", 1) for line in text.decode().splitlines() if ":" in line)
    return int(info.get("connected_slaves", "0").strip() or 0)


async def check_replicas(redis_url: str, fast: RespConnection | ClusterConnection) -> None:
    """Raise RuntimeError (one line) if a master has no replica to wait for: every ``replica``-mode update would
    time out. Asked of each master (``INFO replication``; on a cluster every master of the slot map)."""
    if isinstance(fast, ClusterConnection):
        await fast.topology.refresh()
        nodes = list(fast.topology.masters)
        counts = [await _connected_replicas(fast.topology.node_address(node)) for node in nodes]
        bare = [f"{host}:{port}" for (host, port), n in zip(nodes, counts, strict=True) if n < 1]
        if bare:
            raise RuntimeError(f"--durability replica needs a connected replica for every master; {', '.join(bare)} "
                               "has none")
        return
    if await _connected_replicas(parse_redis_url(redis_url)) < 1:
        raise RuntimeError("--durability replica needs a Redis with at least one connected replica (this one has "
                           "none); use --durability async, or give it a replica")


def replica_acks(redis_url: str, fast: RespConnection | ClusterConnection, timeout: float) -> ReplicaAcks:
    """A :class:`ReplicaAcks` on a connection of its own (per master on a cluster)."""
    if isinstance(fast, ClusterConnection):
        return ReplicaAcks(ClusterConnection(fast.topology), timeout)
    return ReplicaAcks(RespConnection(redis_url), timeout)
