"""rtlib.model.capacity on hand-made unit costs: which resource binds, monotonic in load, bad input refused."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from rtlib.model.capacity import Limits, Load, UnitCosts, load_unit_costs, plan, subscribed_instances

UNITS = UnitCosts(server_request_us=100, server_delivery_us=10, server_update_us=50, server_heartbeat_us=100,
                  server_heartbeat_viewer_us=0, server_idle_conn_us=1, server_base_cores=0.01,
                  server_conn_bytes=16 * 1024, server_base_bytes=40 * 1024**2, redis_update_us=50,
                  redis_pubsub_msg_us=5, redis_heartbeat_us=40, redis_heartbeat_viewer_us=0, redis_sweep_us=100,
                  redis_base_cores=0.005)


def test_one_instance_and_shard_for_a_small_load() -> None:
    p = plan(Load(users=100, workspaces=10, updates_per_user=1), UNITS)
    assert (p.instances, p.shards) == (1, 1)
    # by hand: 1.667 updates/s x (10 recipients x 10 us + 100 + 50) + 1.667 heartbeats/s x 100 + 100 x 1 us
    assert p.server_cores == pytest.approx((166.7 + 166.7 + 83.3 + 166.7 + 100) / 1e6 + 0.01, rel=1e-3)
    assert p.redis_per_shard == pytest.approx((1.667 * 55 + 1.667 * 40 + 0.2 * 100) / 1e6 + 0.005, rel=1e-3)


def test_delivery_heavy_load_binds_on_server_cpu() -> None:
    p = plan(Load(users=20_000, workspaces=100, updates_per_user=6), UNITS)
    assert p.binding == "server CPU per instance"
    assert p.resource("server CPU per instance").used <= 0.7
    assert plan(Load(users=20_000, workspaces=100, updates_per_user=6), UNITS,
                Limits(headroom=0.35)).instances > p.instances


def test_idle_connections_bind_on_memory() -> None:
    units = replace(UNITS, server_conn_bytes=1024**2, server_idle_conn_us=0)
    p = plan(Load(users=10_000, workspaces=1_000, updates_per_user=0, viewing=0), units)
    assert p.binding == "server memory per instance"
    assert p.instances == 8  # 10,000 MiB / (0.7 x 2 GiB - 40 MiB) = 7.3


def test_redis_heavy_load_binds_on_redis_and_needs_shards() -> None:
    units = replace(UNITS, redis_heartbeat_us=2_000, server_heartbeat_us=1)
    p = plan(Load(users=10_000, workspaces=1_000, updates_per_user=0.1, viewing=1, heartbeat_interval=10), units)
    assert p.binding == "Redis CPU per shard"
    assert p.shards == 3  # 1,000 beats/s x 2 ms = 2 cores + updates, sweeps: 3 shards of <= 0.7
    assert p.resource("Redis CPU per shard").used <= 0.7


@pytest.mark.parametrize("field", ["users", "updates_per_user"])
def test_monotonic_in_load(field: str) -> None:
    base = dict(users=5_000, workspaces=50, updates_per_user=2.0)
    last = None
    for factor in (1, 2, 4, 8, 16):
        p = plan(Load(**{**base, field: base[field] * factor}), UNITS)
        if last is not None:
            assert p.instances >= last.instances and p.shards >= last.shards
            assert p.server_cores > last.server_cores and p.redis_cores > last.redis_cores
        last = p


def test_heartbeats_cost_more_with_more_viewers_per_task() -> None:
    units = replace(UNITS, redis_heartbeat_viewer_us=10, server_heartbeat_viewer_us=20)
    one, five = (plan(Load(users=1_000, workspaces=10, updates_per_user=0, viewing=1, viewers_per_task=v,
                           heartbeat_interval=1), units) for v in (1, 5))
    # 1,000 heartbeats/s x 4 more viewers x 10 us (Redis) and x 20 us (server)
    assert five.redis_cores - one.redis_cores == pytest.approx(0.040)
    assert five.server_cores - one.server_cores == pytest.approx(0.080)


def test_subscribed_instances() -> None:
    assert subscribed_instances(1, 50) == 1
    assert subscribed_instances(4, 1) == pytest.approx(1)
    assert subscribed_instances(4, 1000) == pytest.approx(4)
    assert 1 < subscribed_instances(4, 3) < 3


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"users": 0}, "users"), ({"workspaces": 0}, "workspaces"), ({"workspaces": 200}, "outnumber"),
    ({"updates_per_user": -1}, "updates"), ({"viewing": 1.5}, "viewing"), ({"heartbeat_interval": 0}, "heartbeat"),
    ({"recipients": 11}, "recipients"), ({"viewers_per_task": 0}, "viewers per task"),
    ({"viewers_per_task": 11}, "viewers per task")])
def test_bad_load_is_refused(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Load(**{"users": 100, "workspaces": 10, "updates_per_user": 1.0, **kwargs})


def test_bad_units_limits_and_impossible_loads() -> None:
    with pytest.raises(ValueError, match="redis_update_us"):
        replace(UNITS, redis_update_us=-1)
    with pytest.raises(ValueError, match="headroom"):
        Limits(headroom=0)
    with pytest.raises(ValueError, match="one workspace alone"):  # one hot workspace cannot be sharded
        plan(Load(users=10_000, workspaces=1, updates_per_user=120),
             replace(UNITS, server_delivery_us=0.001, server_update_us=0, server_request_us=0))
    with pytest.raises(ValueError, match="instances needed"):
        plan(Load(users=100_000, workspaces=100, updates_per_user=60), UNITS, Limits(max_instances=3))


def test_load_unit_costs(tmp_path: Path) -> None:
    fields = {k: {"median": v} for k, v in vars(UNITS).items() if k != "source"}
    path = tmp_path / "u.json"
    path.write_text(json.dumps({"meta": {"date": "2026-12-08", "machine": "test"}, "units": fields}))
    units = load_unit_costs(path)
    assert units == UNITS and units.source["machine"] == "test"
    with pytest.raises(ValueError, match="no unit costs"):
        load_unit_costs(tmp_path / "missing.json")
    path.write_text("{}")
    with pytest.raises(ValueError, match="not a unit_costs.json"):
        load_unit_costs(path)
