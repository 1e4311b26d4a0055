"""bench/resilience/failover: the loss-rate interval and the table built from runs (no cluster started here;
tests/server/test_durability.py kills a real master)."""

from __future__ import annotations

import json
from pathlib import Path

from bench.resilience.failover import markdown, summarise, wilson

RESULTS = Path(__file__).resolve().parents[2] / "bench" / "results" / "failover.json"


def test_wilson_interval_at_zero_is_about_the_rule_of_three() -> None:
    lo, hi = wilson(0, 10_000)
    assert lo == 0.0 and 2.5e-4 < hi < 4e-4  # 3/n = 3e-4
    lo, hi = wilson(50, 100)
    assert lo < 0.5 < hi
    assert wilson(0, 0) == (0.0, 0.0)


def test_committed_summary_is_what_its_runs_add_up_to() -> None:
    """bench/results/failover.json's table is recomputed from its own runs, and says what the docs say: no socket
    closed, nothing acked lost in replica mode, at least 3 runs of each mode per variant."""
    data = json.loads(RESULTS.read_text())
    rows = summarise(data["runs"])
    assert rows == json.loads(json.dumps(data["summary"]))
    assert all(r["runs"] >= 3 and r["closed"] == 0 for r in rows)
    assert all(r["lost"] == 0 for r in rows if r["mode"] == "replica")
    assert markdown(rows, data["meta"]) == RESULTS.with_suffix(".md").read_text()
