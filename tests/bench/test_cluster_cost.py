"""bench.cost.cluster_cost's arithmetic (net of the idle background, medians, ratios) and the precise CPU probe."""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # bench/ is a package of the repository, not installed

from bench.cost import cluster_cost  # noqa: E402
from bench.harness import procstat  # noqa: E402


def _result(backend: str, redis_us_per_delivery: float, idle_redis: float, server: float = 10.0,
            idle_server: float = 0.0) -> dict:
    # 1,000 updates to 20 receivers each over a 10 s send phase + 0.5 s drain.
    return {"backend": backend, "scenario": "B", "rate": 100.0, "received": 20_000, "updates_sent": 1_000,
            "send_phase_s": 10.0, "drain_s": 0.5,
            "cpu_us_per_delivery": {"redis": redis_us_per_delivery, "server": server},
            "idle_cpu_ms_per_s": {"redis": idle_redis, "server": idle_server}, "deliveries_per_s": 2000.0, "lost": 0,
            "latency_ms": {"p50": 1.0, "p99": 5.0}}


def test_net_cost_subtracts_the_idle_background_over_the_whole_window() -> None:
    # Redis spent 20,000 x 10 us = 0.2 s; idle 2 ms/s over 10.5 s = 0.021 s; net 0.179 s / 1,000 updates.
    r = _result("cluster3", 10.0, 2.0, server=10.0, idle_server=1.0)
    costs = cluster_cost.net_costs(r, "cluster3")
    assert costs["redis_cpu_us_per_update"] == 200.0
    assert costs["redis_net_us_per_update"] == 179.0
    assert costs["redis_net_us_per_update_per_shard"] == round(179.0 / 3, 2)
    assert costs["server_net_us_per_delivery"] == round(1e6 * (0.2 - 0.0105) / 20_000, 2)
    single = cluster_cost.net_costs(_result("redis", 10.0, 2.0), "redis")
    assert single["redis_cpu_us_per_update_per_shard"] == 200.0  # one shard: nothing divided


def test_summary_ratio_is_of_medians_and_fails_a_cluster_that_costs_more() -> None:
    runs = []
    for single, cluster in ((9.0, 11.0), (10.0, 12.0), (11.0, 13.0), (10.0, 12.0)):
        for backend, us in (("redis", single), ("cluster3", cluster)):
            r = _result(backend, us, 0.0)
            r.update(cluster_cost.net_costs(r, backend))
            runs.append(r)
    row = cluster_cost.summary(runs)[0]
    assert row["runs"] == {"redis": 4, "cluster3": 4}
    assert row["redis_net_us_per_update_ratio"] == 1.2  # 240 / 200: outside the 10 % bar
    md = cluster_cost.markdown({"date": "d", "commit": "c", "nproc": 2, "cpu_model": "x", "background_load_pct": 0,
                                "duration": 10.0, "idle_s": 10.0}, runs)
    assert ("| B (100/100 updates/s) | 4+4 | Redis µs/update, net of idle | 200.0 (180.0-220.0) | "
            "240.0 (220.0-260.0) | 1.20 | no |") in md


def test_precise_probe_counts_this_process_in_nanoseconds() -> None:
    before = procstat.precise_cpu_seconds(os.getpid())
    sum(i * i for i in range(200_000))  # a few ms of CPU
    after = procstat.precise_cpu_seconds(os.getpid())
    assert after > before
    # Not compared with process_cpu_seconds: /proc/<pid>/stat keeps the time of threads that have exited, which
    # no task's schedstat does (an xdist worker that ran lab threads differed by 6.5 s).
    assert procstat.precise_cpu_seconds(2**22 + 12345) == 0.0  # no such process


def test_equal_shard_load_pairs_a_cluster_at_three_times_the_rate_with_its_base_scenario() -> None:
    single = _result("redis", 10.0, 0.0)
    cluster = {**_result("cluster3", 10.0, 0.0), "scenario": "Bx3", "rate": 300.0, "pair": "B"}
    for r in (single, cluster):
        r.update(cluster_cost.net_costs(r, r["backend"]))
    (row,) = cluster_cost.summary([single, cluster])
    assert row["scenario"] == "B" and row["rate"] == {"redis": 100.0, "cluster3": 300.0}
    assert row["runs"] == {"redis": 1, "cluster3": 1}
