"""The failure-detector metrics on hand-made timelines whose answers are known."""

from __future__ import annotations

import math

import numpy as np
import pytest

from rtlib.clientmodels.heartbeat import Beat
from rtlib.model.fast import run_fast
from rtlib.model.metrics import metrics, poisson_interval, poisson_upper
from rtlib.model.scenario import ModelScenario, PresenceConfig
from rtlib.model.timelines import Timelines

CFG = PresenceConfig(30, 60, 5)
SC = ModelScenario(viewers=3, hours=1.0, instances=1, delay=0.0, jitter=0.0, redis_rtt=0.0)


def _run(beats, depart, start=(0.0, 0.0, 0.0)):  # noqa: ANN001, ANN202
    tl = Timelines.from_beats(list(start), depart, [0] * len(depart), beats, end=3600.0 + 200)
    return metrics(run_fast(tl, CFG, SC), tl, SC)


def test_detection_mistake_and_absence() -> None:
    every30 = [Beat(30.0 * k) for k in range(1, 126)]
    crash = [Beat(30.0 * k) for k in range(1, 11)]  # last beat 300, gone at 310: popped at 360
    gap = [Beat(t) for t in (30, 60, 150, 180)] + [Beat(30.0 * k) for k in range(7, 126)]  # 90 s gap: one flap
    m = _run([every30, crash, gap], [math.inf, 310.0, math.inf])
    assert m["departures"] == m["detected"] == 1 and m["td_p50"] == pytest.approx(50.0)
    assert m["mistakes"] == 1 and m["tm_mean"] == pytest.approx(30.0)  # left at 120, back at 150
    hours = (3600 + 310 + 3600) / 3600
    assert m["mistakes_per_hour"] == pytest.approx(1 / hours)
    assert m["p_a"] == pytest.approx(1 - 30 / (3600 + 310 + 3600))
    slept = [Beat(t) for t in (30, 60)] + [Beat(400.0, True, 70.0)] + [Beat(400.0 + 30 * k) for k in range(1, 120)]
    m = _run([every30, slept, every30], [math.inf] * 3)
    assert m["mistakes"] == 0 and m["absences_detected"] == 1 and m["absence_td_p50"] == pytest.approx(50.0)


def test_poisson_bounds() -> None:
    assert poisson_upper(0) == pytest.approx(2.9957, abs=1e-3)
    low, high = poisson_interval(5)
    assert low == pytest.approx(1.6235, abs=1e-3) and high == pytest.approx(11.6683, abs=1e-3)
    low, high = poisson_interval(400)
    assert low == pytest.approx(361.8, abs=0.5) and high == pytest.approx(441.1, abs=0.5)
    assert np.isfinite(poisson_upper(10_000))
