"""bench/peers/compare_report.claims: what notebook 06 asserts when it measures holds on the recorded full-size run
and fails on a run that contradicts the text (no measurement here: the recorded JSON, doctored)."""

from __future__ import annotations

import copy
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # bench/ is a package of the repository

from bench.peers import compare  # noqa: E402
from bench.peers import compare_report as cr  # noqa: E402


def _broken(data: dict[str, Any]) -> list[str]:
    return [c["claim"] for c in cr.claims(data) if not c["holds"]]


def _case(data: dict[str, Any], scenario: str, target: str) -> dict[str, Any]:
    return next(c for c in data["latency_cases"] if c["scenario"] == scenario and c["target"] == target)


def test_the_recorded_run_bears_out_every_claim() -> None:
    assert _broken(compare.load()) == []


def test_a_run_that_contradicts_the_text_breaks_its_claims() -> None:
    data = copy.deepcopy(compare.load())
    _case(data, "S1", "toy")["lost"] = 3
    _case(data, "S2", "rtlib")["cpu_us_per_delivery"]["total"] = 45.0  # dearer than both Socket.IOs
    assert _broken(data) == ["nothing lost (S1, S2: every target)",
                             "S2: rtlib not measurably dearer per delivery than socketio-node",
                             "S2: rtlib cheaper per delivery than python-socketio",
                             "S2: no target measurably dearer per delivery than python-socketio"]
    data = copy.deepcopy(compare.load())
    data["latency_cases"] = [c for c in data["latency_cases"] if c["target"] != "ws-node"]
    assert _broken(data) == ["every target ran S1, S2 and idle memory"]


def test_an_order_within_the_tick_resolution_is_not_claimed() -> None:
    data = copy.deepcopy(compare.load())
    # CI size (2,500 deliveries: 8 µs each): rtlib 5 µs dearer than Socket.IO/Node is "not measurably dearer";
    # 10 µs cheaper than python-socketio is not "cheaper" (16 µs resolution for the pair).
    for target, cpu in (("rtlib", 40.0), ("socketio-node", 35.0), ("python-socketio", 50.0)):
        case = _case(data, "S2", target)
        case["cpu_us_per_delivery"]["total"], case["received"] = cpu, 2500
    assert cr.cpu_resolution_us(_case(data, "S2", "rtlib")) == 8.0
    assert _broken(data) == ["S2: rtlib cheaper per delivery than python-socketio"]
