"""``--durability``: a master killed mid-run on a 3x1 Redis Cluster (issue 22 item 4).

Clients of an ``async`` and a ``replica`` instance send updates at a steady rate through the kill of the master
that owns their workspaces; a replica is promoted (``cluster-node-timeout`` 500 ms). No client socket closes
(the outage ride-through), and every update the ``replica`` instance acked is in the promoted replica's history.
On one Redis with a replica: what a stalled replica makes of an update in ``replica`` mode (``not_replicated``).
"""

from __future__ import annotations

import asyncio
import os
import signal
import time

import pytest
import redis

from bench.resilience.failover_clients import Editor, acked_lost
from rtlib.protocol.config import ServerConfig
from rtlib.server import keyspace
from rtlib.server.cluster_client import slot_of
from rtlib.server.driver import RealtimeServer
from rtlib.server.redis_cluster import RedisClusterProcess
from rtlib.server.redis_process import RedisProcess
from tests.conftest import SECRET, Instances, token


def _workspaces(lo: int, hi: int, n: int, prefix: str) -> list[str]:
    """``n`` workspace ids whose slot is in ``[lo, hi]`` (the killed master's range)."""
    out, k = [], 0
    while len(out) < n:
        ws, k = f"{prefix}{k}", k + 1
        if lo <= slot_of(keyspace.history_key(ws)) <= hi:
            out.append(ws)
    return out


async def test_replica_durability_is_refused_on_a_redis_without_a_replica(redis_url: str) -> None:
    server = RealtimeServer(redis_url, SECRET, ServerConfig(durability="replica"))
    with pytest.raises(RuntimeError, match="at least one connected replica"):
        await server.start()
    await server.stop()


async def test_a_killed_master_closes_no_socket_and_loses_no_replica_acked_update() -> None:
    cluster = await asyncio.to_thread(RedisClusterProcess(masters=3, replicas=1, node_timeout=0.5).start)
    servers: list[RealtimeServer] = []
    try:
        opts = {"history_length": 100_000, "history_age": 3600.0}
        for mode in ("async", "replica"):
            servers.append(await RealtimeServer(cluster.url, SECRET, ServerConfig(durability=mode, **opts)).start())
        lo, hi = cluster.slot_ranges()[0]
        editors = [Editor(s.url, token(f"u{m}{k}", ws), ws, f"u{m}{k}", period=0.02)
                   for m, s in enumerate(servers)
                   for k, ws in enumerate(_workspaces(lo, hi, 2, f"m{m}-") + _workspaces(hi + 1, 16383, 1, f"o{m}-"))]
        jobs = [asyncio.ensure_future(e.run()) for e in editors]
        await asyncio.sleep(1.5)
        killed_at = time.monotonic()
        cluster.nodes[0].crash()  # SIGKILL the master of slots lo..hi; its replica is promoted
        # Updates to the killed shard are acked again once the replica is promoted and rtlib re-routes.
        while time.monotonic() - killed_at < 12:
            await asyncio.sleep(0.2)
            if any(s.outcome == "ack" and s.sent > killed_at + 0.1 and s.ws.startswith("m0-")
                   for e in editors for s in e.sent.values()):
                break
        await asyncio.sleep(1.0)
        for e in editors:
            await e.stop(drain=0)
        await asyncio.sleep(1.5)  # the last answers (a not_replicated takes the replica timeout)
        for job in jobs:
            job.cancel()
        assert [c for e in editors for c in e.closes] == []
        resumed = [s for e in editors[:2] for s in e.sent.values() if s.outcome == "ack" and s.sent > killed_at]
        assert resumed, "the async instance's updates to the killed shard were acked again after the failover"
        replica_editors = editors[3:]
        acked, lost, missing = await asyncio.to_thread(acked_lost, cluster.nodes[1].url, replica_editors)
        assert acked > 100 and lost == 0, missing[:5]
        # The shards that kept their master acked all along in replica mode too.
        assert any(s.outcome == "ack" and s.sent > killed_at for s in replica_editors[2].sent.values())
    finally:
        for s in servers:
            await s.stop()
        await asyncio.to_thread(cluster.stop)


async def test_a_stalled_replica_gets_not_replicated_and_a_retry_is_acked_once_it_is_back() -> None:
    """One Redis with one replica: acked while the replica answers; with the replica stopped the update is applied
    and broadcast but answered ``not_replicated``; the same ref again, the replica back, is acked, same version."""
    # the replica's first sync at once (Redis waits 5 s by default for more replicas to share a diskless sync)
    master = await asyncio.to_thread(RedisProcess(extra_args=["--repl-diskless-sync-delay", "0"]).start)
    replica = await asyncio.to_thread(RedisProcess(extra_args=["--replicaof", "127.0.0.1", str(master.port)]).start)
    server = None
    try:
        # The replica streamed to (the master waits for its first ACK after the sync, up to a second): a write
        # of the test's own confirmed by WAIT.
        with redis.Redis(port=master.port) as r:
            while not (r.set("probe", "1") and r.execute_command("WAIT", 1, 100) == 1):
                await asyncio.sleep(0.05)
        server = await RealtimeServer(master.url, SECRET, ServerConfig(durability="replica",
                                                                      replica_timeout=0.3)).start()
        instances = Instances([server])
        writer, reader = await instances.client("ann", "w1"), await instances.client("bob", "w1")
        await writer.send("task.update", {"taskId": "T", "changes": {"a": 1}, "ref": "r1"})
        first = await writer.recv()
        while first["type"] not in ("ack", "error"):
            first = await writer.recv()
        assert first["type"] == "ack" and first["payload"]["version"] == 1, first
        assert replica.pid is not None
        os.kill(replica.pid, signal.SIGSTOP)
        try:
            await writer.send("task.update", {"taskId": "T", "changes": {"a": 2}, "ref": "r2"})
            error = await writer.expect("error", ref="r2")
            assert error["payload"]["code"] == "not_replicated"
            assert (await reader.expect("task.updated"))["payload"]["version"] == 1
            assert (await reader.expect("task.updated"))["payload"]["version"] == 2  # applied and broadcast
        finally:
            os.kill(replica.pid, signal.SIGCONT)
        for _ in range(20):  # as a client does: the same ref again until acked (the replica catches up first)
            await writer.send("task.update", {"taskId": "T", "changes": {"a": 2}, "ref": "r2"})
            answer = await writer.recv()
            while answer["type"] not in ("ack", "error"):
                answer = await writer.recv()
            if answer["type"] == "ack":
                break
            assert answer["payload"]["code"] == "not_replicated"
            await asyncio.sleep(0.1)
        assert answer["type"] == "ack" and answer["payload"]["version"] == 2  # the same update, not a third
        await instances.close()
    finally:
        if server is not None:
            await server.stop()
        await asyncio.to_thread(replica.stop)
        await asyncio.to_thread(master.stop)
