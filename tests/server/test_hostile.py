"""The hostile-client harness (issue 7) at CI size: a real ``rtlib serve`` process and real sockets.

The full run is a benchmark (``python -m bench.hostile.run --frames 10000 --seed 1``); here the same phases run
small: ~1,200 seeded frames, small floods and storms. Asserted: 0 mismatches with the contract table, 0
tracebacks in the server log, 0 cross-workspace deliveries, no invalid UTF-8 from the server. The neighbour's
latency is reported, never asserted (a shared CI machine makes timings noise).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # bench/ is a package of the repository, not installed

from bench.hostile import run as hostile  # noqa: E402
from bench.hostile.classes import CLASSES, WEIGHTS, doc_rows  # noqa: E402
from bench.hostile.frames import generate, is_json  # noqa: E402


def test_doc_table_is_the_harness_table() -> None:
    """docs/protocol.md's hostile-input table and the harness's expectations are one table."""
    assert doc_rows((ROOT / "docs" / "protocol.md").read_text()) == CLASSES


def test_every_weighted_class_is_in_the_table_and_can_be_drawn() -> None:
    assert set(WEIGHTS) <= set(CLASSES)
    drawn = {p.cls for p in generate(3, 20_000)}
    assert drawn == set(WEIGHTS)


def test_a_seed_reproduces_the_same_frames() -> None:
    a, b = generate(11, 400), generate(11, 400)
    assert [(p.cls, p.frames) for p in a] == [(p.cls, p.frames) for p in b]
    assert [(p.cls, p.frames) for p in generate(12, 400)] != [(p.cls, p.frames) for p in a]


def test_random_classes_never_draw_valid_json() -> None:
    for p in generate(5, 3000):
        if p.cls in ("random-bytes", "random-text", "truncated-envelope", "malformed-json"):
            assert not is_json(p.frames[0].data), p


@pytest.mark.timeout(240)
def test_ci_run_matches_the_contract() -> None:
    result = hostile.run(hostile.Options.ci(seed=1), log=lambda *_: None)
    s = result["summary"]
    misses = result.get("frames", {}).get("mismatches", []) + result.get("handshakes", {}).get("mismatches", [])
    misses += [row for row in result.get("load", []) if not row["ok"]]
    assert s["mismatches"] == 0, misses[:10]
    assert s["tracebacks"] == 0, result["server_log_errors"]
    assert s["cross_workspace_deliveries"] == 0, result["cross_workspace_examples"]
    assert s["server_invalid_utf8_frames"] == 0
    assert s["listener_open"] and s["listener_saw_control"] and not s["neighbour_closed"]
    assert result["server_alive"]
    assert sum(result["frames"]["sent"].values()) == 1200
