"""rtlib serve on a real 3-master Redis Cluster (issue 22 item 2): sharded pub/sub with one subscriber connection
per master whatever the number of workspaces, and rooms re-subscribed on their new master when a slot moves."""

from __future__ import annotations

import asyncio
from dataclasses import replace

from cluster_slots import begin_move, finish_move, owner_port
from conftest import SECRET, Instances

from rtlib.protocol.config import ServerConfig
from rtlib.server import keyspace
from rtlib.server.cluster_client import slot_of
from rtlib.server.cluster_fanout import ClusterFanout
from rtlib.server.driver import RealtimeServer
from rtlib.server.redis_cluster import RedisClusterProcess


async def _pair(url: str, config: ServerConfig) -> Instances:
    return Instances([await RealtimeServer(url, SECRET, replace(config, server_id=f"i{i}")).start()
                      for i in range(2)])


async def test_one_subscriber_connection_per_master_for_any_number_of_workspaces(
        redis_cluster_url: str, redis_cluster: RedisClusterProcess, server_config: ServerConfig) -> None:
    instances = await _pair(redis_cluster_url, server_config)
    try:
        fanout = instances.servers[0].fanout
        assert isinstance(fanout, ClusterFanout)
        workspaces = [f"ws{n}" for n in range(12)]
        assert len({fanout.topology.node_of(slot_of(ws)) for ws in workspaces}) == 3  # on every master
        clients = [await instances.client(f"u{n}", ws, instance=0) for n, ws in enumerate(workspaces)]
        assert sorted(port for _, port in fanout.nodes) == sorted(redis_cluster.ports[:redis_cluster.masters])
        for client, ws in zip(clients, workspaces, strict=True):  # each from the other instance, on its shard
            writer = await instances.client(f"w-{ws}", ws, instance=1)
            await writer.send("task.update", {"taskId": "t", "changes": {"ws": ws}})
            assert (await client.expect("task.updated"))["payload"]["changes"] == {"ws": ws}
    finally:
        await instances.close()


async def test_a_room_follows_its_slot_to_another_master(redis_cluster_url: str,
                                                         redis_cluster: RedisClusterProcess,
                                                         server_config: ServerConfig) -> None:
    ports = redis_cluster.ports[:redis_cluster.masters]
    slot = slot_of(keyspace.channel("w1"))
    src = owner_port(ports, slot)
    dst = next(p for p in ports if p != src)
    instances = await _pair(redis_cluster_url, server_config)
    try:
        reader = await instances.client("reader", "w1", instance=0)
        writer = await instances.client("writer", "w1", instance=1)
        await writer.send("task.update", {"taskId": "t", "changes": {"n": 1}})
        await reader.expect("task.updated", version=1)
        begin_move(slot, src, dst)
        finish_move(ports, slot, dst)  # src drops the channel's subscribers (sunsubscribe), updates get MOVED
        for _ in range(200):  # both instances subscribe w1 on dst again
            if all(s.fanout._where.get(keyspace.channel("w1").encode(), ("", 0))[1] == dst  # type: ignore
                   for s in instances.servers):
                break
            await asyncio.sleep(0.01)
        await writer.send("task.update", {"taskId": "t", "changes": {"n": 2}, "ref": "after"})
        assert (await writer.expect("ack", ref="after"))["payload"]["version"] == 2
        assert (await reader.expect("task.updated", version=2))["payload"]["changes"] == {"n": 2}
    finally:
        await instances.close()
        if owner_port(ports, slot) != src:
            begin_move(slot, dst, src)
            finish_move(ports, slot, src)


async def test_updates_streaming_through_a_slot_move_arrive_without_gap_or_duplicate(
        redis_cluster_url: str, redis_cluster: RedisClusterProcess, server_config: ServerConfig) -> None:
    """Events published between the old master's sunsubscribe and the new subscription are caught up from
    history (the room's live events are held meanwhile): the reader sees every version once, in order."""
    ports = redis_cluster.ports[:redis_cluster.masters]
    slot = slot_of(keyspace.channel("w1"))
    src = owner_port(ports, slot)
    dst = next(p for p in ports if p != src)
    instances = await _pair(redis_cluster_url, server_config)
    total = 60
    try:
        reader = await instances.client("reader", "w1", instance=0)
        writer = await instances.client("writer", "w1", instance=1)

        acked = 0

        async def write() -> None:  # one update every 5 ms, whatever the move is doing meanwhile
            nonlocal acked
            for n in range(1, total + 1):
                await writer.send("task.update", {"taskId": "t", "changes": {"n": n}, "ref": f"u{n}"})
                await writer.expect("ack", ref=f"u{n}")
                acked = n
                await asyncio.sleep(0.005)

        async def move() -> None:
            while acked < total // 4:
                await asyncio.sleep(0.001)
            await asyncio.to_thread(begin_move, slot, src, dst)
            await asyncio.to_thread(finish_move, ports, slot, dst)

        jobs = asyncio.gather(write(), move())
        seen = [(await reader.expect("task.updated", timeout=10))["payload"]["version"] for _ in range(total)]
        await jobs
        assert seen == list(range(1, total + 1))
        assert not await reader.silent(0.2, "task.updated")
    finally:
        await instances.close()
        if owner_port(ports, slot) != src:
            begin_move(slot, dst, src)
            finish_move(ports, slot, src)
