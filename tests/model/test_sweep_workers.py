"""``sweep`` on several processes gives the serial sweep's numbers, row for row (seeded runs reproduce exactly)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from rtlib.model import ModelScenario, grid, sweep, sweep_many
from rtlib.model.population import DEFAULT_POPULATION, sweep_population

SMALL = ModelScenario(viewers=60, hours=0.5, departures=0.5, seed=3)
#: Every design, two intervals, graces (shared runs) and two sweeps (timelines drawn anew within an interval).
CONFIGS = grid([10, 30], [30, 45, 60], [5, 10], [0, 15], ["timer", "probe"], [False, True])


def _same(serial: pd.DataFrame, parallel: pd.DataFrame) -> None:
    """Equal in every column but ``seconds`` (CPU time, which no two runs share); ``td_samples`` element-wise."""
    assert list(serial.columns) == list(parallel.columns) and len(serial) == len(parallel)
    arrays = [c for c in serial.columns if c == "td_samples"]
    plain = [c for c in serial.columns if c not in ("seconds", *arrays)]
    pd.testing.assert_frame_equal(serial[plain], parallel[plain], check_exact=True)
    for column in arrays:
        for a, b in zip(serial[column], parallel[column], strict=True):
            np.testing.assert_array_equal(a, b)
    assert ((serial["seconds"] == 0) == (parallel["seconds"] == 0)).all()  # the same rows share a run


def test_two_workers_give_the_serial_numbers() -> None:
    scenarios = [SMALL.replace(client=spec) for spec in ("lossy:0.1:interval:{hb}", "chrome:{hb}:60")]
    serial = [sweep(CONFIGS, sc, progress=False, samples=True) for sc in scenarios]
    parallel = sweep_many(CONFIGS, scenarios, progress=False, samples=True, workers=2)
    for s, p in zip(serial, parallel, strict=True):
        _same(s, p)
    _same(serial[0], sweep(CONFIGS, scenarios[0], progress=False, samples=True, workers=2))


def test_a_population_on_two_workers() -> None:
    configs = grid([30], [45, 60], [5], [0, 15], ["timer", "probe"], [False])
    base = SMALL.replace(viewers=120)
    for one, two in zip(sweep_population(configs, DEFAULT_POPULATION, base),
                        sweep_population(configs, DEFAULT_POPULATION, base, workers=2), strict=True):
        _same(one, two)
