"""The model against the live system (issue 9 §2), CI-sized: for each validation case, a live 2-instance
``Cluster`` run in compressed time and the model on the same seeded plan must agree: T_D quantiles within
5 %, and the model's mistake count inside the live count's exact 95 % Poisson interval. The full-size table
is ``bench/model_validation.py`` -> ``bench/results/model_validation.md``."""

from __future__ import annotations

import warnings

import pytest

from rtlib.lab.cluster import Cluster
from rtlib.lab.scenario import Scenario
from rtlib.lab.sim import plan_clients
from rtlib.model.live import VALIDATION_CASES, compare_run

CLIENTS, TIME_SCALE, SEED = 50, 0.02, 11


@pytest.fixture(scope="module")
def cluster():  # noqa: ANN201
    warnings.filterwarnings("ignore", message="IProgress not found")
    with Cluster(instances=2) as c:
        yield c


@pytest.mark.timeout(180)
@pytest.mark.parametrize("case", list(VALIDATION_CASES))
def test_model_matches_live(cluster: Cluster, case: str) -> None:
    sc = Scenario(clients=CLIENTS, workspaces=1, tasks=6, update_rate=0.5, viewers=1.0, time_scale=TIME_SCALE,
                  seed=SEED, drain=0.5, **VALIDATION_CASES[case])
    row = compare_run(cluster.run(sc, progress=False), plan_clients(sc, 2), 2)
    assert row["live_detected"] == row["model_detected"] == row["crashes"] > 0
    for q in ("td_p50", "td_p90", "td_p99"):
        assert row[f"{q}_rel"] <= 0.05, (q, row[f"live_{q}"], row[f"model_{q}"])
    assert row["mistakes_within"], (row["live_mistakes"], row["model_mistakes"])
    if case == "Chrome intensive throttling":
        assert row["live_mistakes"] > 0  # the case is not vacuous
