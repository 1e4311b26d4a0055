"""bench/resilience/soak.py's own logic, on synthetic samples (the soak itself takes minutes:
`python -m bench.resilience.soak`)."""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # bench/ is a package of the repository

from bench.resilience import soak  # noqa: E402
from rtlib.server import keyspace  # noqa: E402
from rtlib.server.redis_process import RedisProcess  # noqa: E402


def test_rss_growth_compares_the_ends_of_the_window_for_processes_alive_throughout() -> None:
    t = list(range(0, 101))
    rows = [(x, "i0", 100.0 + (10.0 if x > 90 else 0.0)) for x in t]  # +10 % in the last tenth
    rows += [(x, "i1", 50.0) for x in t if x < 40]  # killed at 40 s: not alive through the window
    rows += [(x, "i1'", 60.0) for x in t if x >= 45]  # started at 45 s
    growth = soak.rss_growth(pd.DataFrame(rows, columns=["t", "process", "rss_mib"]), 50.0, 100.0)
    assert set(growth) == {"i0", "i1'"}
    assert growth["i0"]["growth_pct"] == 10.0 and growth["i1'"]["growth_pct"] == 0.0


def test_presence_keys_left_counts_sets_counts_and_the_due_index() -> None:
    with RedisProcess() as r:
        import redis

        with redis.Redis.from_url(r.url) as c:
            assert soak.presence_keys_left(r.url) == {"keys": 0, "entries": 0, "dueMembers": 0}
            c.zadd(keyspace.presence_key("w1", "t1"), {"i0-1:u1": 1.0})
            c.hset(keyspace.presence_counts_key("w1", "t1"), "u1", 1)
            c.zadd(keyspace.due_key("w1"), {"t1": 1.0})
            c.set(keyspace.task_keys("w1", "t1")[0], 3)  # not presence
        assert soak.presence_keys_left(r.url) == {"keys": 3, "entries": 1, "dueMembers": 1}


def test_markdown_states_every_target_and_flags_a_miss() -> None:
    report = {"clients": 10, "minutes": 0.1, "instances": 2, "workspaces": 2, "updatesPerS": 5, "churns": 1,
              "crashes": 1, "reconnectsRecovered": 4, "reconnectsResynced": 1, "seed": 1, "timeScale": 0.1,
              "lostUpdates": 0, "acked": 30, "crossWorkspace": 0, "deliveries": 300,
              "presenceLeft": {"keys": 0, "entries": 0}, "maxRssGrowthPct": 7.5, "divergedClients": 0,
              "converged": True, "timeToRecoverS": {"recovered": {"n": 4, "p50": 1.0, "p99": 2.0}},
              "latencyMs": {"p50": 1, "p99": 2, "max": 3}, "incidents": [{"what": "Redis restarted", "t": 2.0}],
              "warmupS": 3.0, "rssGrowth": {"i0": {"from_mib": 40, "to_mib": 43, "growth_pct": 7.5}}}
    text = soak.markdown(report)
    assert "| RSS growth after warm-up (max over processes) | +7.50 % | < 5 % | **missed** |" in text
    assert "0 over ≥ 1,000,000 | **missed** |" in text  # 300 deliveries are too few to claim the target
    assert "| lost updates (acked, missing from a client that stayed) | 0 of 30 acked | 0 | met |" in text
