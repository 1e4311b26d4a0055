"""The lab's ``("master", shard, at)`` failure (issue 22): a Redis Cluster master SIGKILLed mid-run, its replica
promoted, and what the clients of its workspaces saw next to the others'."""

from __future__ import annotations

import pytest

from rtlib.lab.cluster import Cluster
from rtlib.lab.failures import check_failures, failover_table, shard_workspaces
from rtlib.lab.scenario import Scenario
from rtlib.server.redis_cluster import RedisClusterProcess


def test_a_killed_master_closes_no_socket_and_every_client_converges() -> None:
    """24 clients in 6 workspaces on 3 masters (a replica each, cluster-node-timeout 1 s), 2 instances; shard 1's
    master (3 of the 6 workspaces) is SIGKILLed at 3 s of 10 (real time). Its replica is promoted; no client socket
    closes, every client ends with Redis's state, and the results tell the killed shard's workspaces from the
    others'."""
    on = shard_workspaces(RedisClusterProcess(3).slot_ranges(), 6)
    killed = sorted(ws for ws, shard in on.items() if shard == 1)
    assert killed and len(killed) < 6  # both groups have workspaces (the slot map is fixed: CRC16 of the names)
    sc = Scenario(clients=24, workspaces=6, tasks=4, duration=10, update_rate=30, viewers=0.3, time_scale=1.0,
                  seed=5, drain=1.0)
    with Cluster(instances=2, redis_shards=3, replicas=1, node_timeout=1.0) as lab:
        results = lab.run(sc, failures=[("master", 1, 3.0)], progress=False)
    s = results.summary()
    (failover,) = results.meta["failovers"]
    assert failover["shard"] == 1 and failover["workspaces"] == killed
    assert failover["promoted"] not in (None, failover["killed"]) and 0 < failover["promoted_after_s"] < 10
    table = failover_table(results)
    print(table.to_string())
    assert table["sockets_lost"].tolist() == [0, 0]  # the ride-through: no socket closed on either side
    assert table.loc["killed master", "workspaces"] == len(killed)
    assert table.loc["killed master", "unavailable"] > 0  # the kill was felt where it happened
    assert (table["acked"] > 20).all()
    assert s["lost_updates"] == 0 and s["lost"] == 0 and s["converged"] is True and s["cross_workspace"] == 0
    assert table["lost_updates"].sum() == 0


def test_a_master_kill_needs_a_cluster_lab_with_replicas() -> None:
    with pytest.raises(ValueError, match="local Redis Cluster"):
        check_failures([("master", 0, 1.0)], None, 0)
    with pytest.raises(ValueError, match="replicas >= 1"):
        check_failures([("master", 0, 1.0)], 3, 0)
    with pytest.raises(ValueError, match="not one of the 3 shards"):
        check_failures([("master", 3, 1.0)], 3, 1)
    with pytest.raises(ValueError, match="unknown or malformed"):
        check_failures([("master", 0)], 3, 1)  # type: ignore[list-item]
    check_failures([("master", 2, 1.0), ("kill", 0, 2.0)], 3, 1)
