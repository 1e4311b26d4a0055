"""rtlib.server.cluster_client on a real 3-master Redis Cluster: detection, routing by slot, MOVED and ASK."""

from __future__ import annotations

import hashlib

import pytest
from cluster_slots import begin_move, finish_move, owner_port

from rtlib.server import keyspace
from rtlib.server.cluster_client import ClusterConnection, Topology, cluster_mode, slot_of
from rtlib.server.redis_cluster import RedisClusterProcess
from rtlib.server.resp import parse_redis_url


async def test_cluster_mode_is_detected_on_any_node_and_not_on_one_redis(redis_cluster: RedisClusterProcess,
                                                                          redis_url: str) -> None:
    for node in redis_cluster.nodes:
        assert await cluster_mode(node.url)
    assert not await cluster_mode(redis_url)


async def test_the_slot_map_names_every_master(redis_cluster_url: str,
                                               redis_cluster: RedisClusterProcess) -> None:
    topology = Topology(parse_redis_url(redis_cluster_url))
    await topology.refresh()
    masters = redis_cluster.ports[:redis_cluster.masters]
    assert sorted(port for _, port in topology.masters) == sorted(masters)
    assert None not in topology.owner
    for (lo, hi), port in zip(redis_cluster.slot_ranges(), masters, strict=True):
        assert topology.node_of(lo)[1] == topology.node_of(hi)[1] == port


async def test_commands_follow_ask_then_moved_when_a_slot_moves(redis_cluster_url: str,
                                                                redis_cluster: RedisClusterProcess
                                                                ) -> None:
    ports = redis_cluster.ports[:redis_cluster.masters]
    topology = Topology(parse_redis_url(redis_cluster_url))
    conn = ClusterConnection(topology)
    key = keyspace.task_keys("moving", "t1")[0]
    slot = slot_of(key)
    src = owner_port(ports, slot)
    dst = next(p for p in ports if p != src)
    try:
        assert await conn.call("SET", key, "1") == b"OK"
        begin_move(slot, src, dst)  # the key is on dst now, the slot still src's: src answers ASK
        assert await conn.call("INCR", key) == 2
        assert topology.node_of(slot)[1] == src  # ASK does not change the map
        finish_move(ports, slot, dst)  # now MOVED: the map is read again
        assert await conn.call("INCR", key) == 3
        assert topology.node_of(slot)[1] == dst
    finally:
        if owner_port(ports, slot) != src:
            begin_move(slot, dst, src)
            finish_move(ports, slot, src)
        conn.close()


async def test_a_missing_script_is_loaded_on_the_keys_node(redis_cluster_url: str) -> None:
    conn = ClusterConnection(Topology(parse_redis_url(redis_cluster_url)))
    script = b"return redis.call('INCR', KEYS[1])"
    sha = hashlib.sha1(script).hexdigest()
    try:
        for ws in ("w1", "w2", "w3"):  # three masters' slots
            assert await conn.evalsha(script, sha, [keyspace.epoch_key(ws)], []) == 1
    finally:
        conn.close()


@pytest.mark.parametrize("ws", ["w1", "acme"])
def test_slot_of_uses_the_hash_tag(ws: str) -> None:
    assert slot_of(keyspace.task_keys(ws, "t")[0]) == slot_of(keyspace.channel(ws)) == slot_of(ws)
