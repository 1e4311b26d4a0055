"""bench.cost.capacity_validation's per-shard arithmetic agrees with the planner's (no live run here)."""

from __future__ import annotations

import pytest

from bench.cost.capacity_validation import placement, predict_per_shard
from rtlib.model.capacity import Load, UnitCosts, at

UNITS = UnitCosts(server_request_us=100, server_delivery_us=10, server_update_us=50, server_heartbeat_us=100,
                  server_heartbeat_viewer_us=1, server_idle_conn_us=1, server_base_cores=0.01,
                  server_conn_bytes=16 * 1024, server_base_bytes=40 * 1024**2, redis_update_us=90,
                  redis_pubsub_msg_us=15, redis_heartbeat_us=80, redis_heartbeat_viewer_us=0.5, redis_sweep_us=60,
                  redis_base_cores=0.002)


@pytest.mark.parametrize("shards", [1, 3])
def test_per_shard_prediction_adds_up_to_the_planners(shards: int) -> None:
    names = [f"ws{i}" for i in range(30)]
    ws_share, part_share = placement(names, shards)
    assert sum(ws_share) == pytest.approx(1) and sum(part_share) == pytest.approx(1)
    load = Load(users=300, workspaces=30, updates_per_user=40, viewing=0.5, viewers_per_task=5,
                heartbeat_interval=0.25, sweep_interval=1)
    per_shard = predict_per_shard(load, UNITS, 2, ws_share, part_share)
    assert sum(per_shard) == pytest.approx(at(load, UNITS, 2, shards).redis_cores)
