"""The lab on a local Redis Cluster (issue 22 item 3): ``Cluster(redis_shards=3, replicas=1)`` starts six
redis-server processes in cluster mode, creates the cluster, and its ``rtlib serve`` instances run on it."""

from __future__ import annotations

import redis

from rtlib.lab.cluster import Cluster
from rtlib.lab.redis_access import flush, is_cluster, redis_client
from rtlib.lab.scenario import Scenario
from rtlib.server import keyspace


def test_three_shards_with_a_replica_each_lose_nothing_and_converge() -> None:
    sc = Scenario(clients=24, workspaces=6, tasks=4, duration=10, update_rate=10, viewers=0.3, time_scale=0.1,
                  seed=7, drain=0.5)
    lab = Cluster(instances=2, redis_shards=3, replicas=1).start(sc)  # started with the run's server options
    try:
        assert lab.redis_url is not None and is_cluster(lab.redis_url)
        with redis.Redis.from_url(lab.redis_url) as node:
            roles = [n["flags"] for n in node.execute_command("CLUSTER NODES").values()]
        assert sum("master" in f for f in roles) == 3 and sum("slave" in f for f in roles) == 3
        assert len(lab._process_groups()["redis"]) == 6  # the lab's CPU accounting sees every node
        summary = lab.run(sc, progress=False).summary()
    finally:
        lab.close()
    assert summary["updates_sent"] > 20 and summary["expected"] > 100
    assert summary["lost"] == 0 and summary["converged"] is True
    assert summary["out_of_order"] == 0


def test_flush_and_reads_reach_every_master(redis_cluster_url: str, redis_url: str) -> None:
    for url in (redis_cluster_url, redis_url):
        with redis_client(url) as r:
            for ws in ("w1", "w2", "w3"):
                r.set(keyspace.epoch_key(ws), ws)
            assert r.get(keyspace.epoch_key("w2")) == b"w2"
        flush(url)
        with redis_client(url) as r:
            assert all(r.get(keyspace.epoch_key(ws)) is None for ws in ("w1", "w2", "w3"))
