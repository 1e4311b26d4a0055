"""The model against the live system (issue 9 §2, issue 10 §1 for the presence alternatives), CI-sized: for each
validation case (client timers, server probes, a leave grace), a live 2-instance
``Cluster`` run in compressed time and the model on the same seeded plan must agree: T_D quantiles within
5 % (crash by crash when there are only a handful), and the model's mistake count inside the live count's exact
95 % Poisson interval. The full-size table
is ``bench/model_validation.py`` -> ``bench/results/model_validation.md``."""

from __future__ import annotations

import warnings

import pytest

from rtlib.lab.cluster import Cluster
from rtlib.lab.scenario import Scenario
from rtlib.lab.sim import plan_clients
from rtlib.model.live import VALIDATION_CASES, compare_run

CLIENTS, TIME_SCALE, SEED = 50, 0.04, 11  # at 0.02 (20 ms a design second) scheduling noise on a loaded
SHORT = 150.0  # machine moves single detections by a sweep; the cases without throttling run this long


@pytest.fixture(scope="module")
def cluster():  # noqa: ANN201
    warnings.filterwarnings("ignore", message="IProgress not found")
    with Cluster(instances=2) as c:
        yield c


@pytest.mark.timeout(180)
@pytest.mark.parametrize("case", list(VALIDATION_CASES))
def test_model_matches_live(cluster: Cluster, case: str) -> None:
    fields = VALIDATION_CASES[case]
    if not fields["heartbeat"].startswith("background"):
        fields = {**fields, "duration": SHORT}
    sc = Scenario(clients=CLIENTS, workspaces=1, tasks=6, update_rate=0.5, viewers=1.0, time_scale=TIME_SCALE,
                  seed=SEED, drain=0.5, **fields)
    row = compare_run(cluster.run(sc, progress=False), plan_clients(sc, 2), 2)
    # the same crashes announced (a crasher already shown gone by a flap when it crashed has no later left)
    assert row["live_detected"] == row["model_detected"] > 0
    # T_D quantiles within 5 %; with a handful of crashes (p90/p99 then hinge on one crash), crash by crash:
    # each within 1 s, or one sweep off where its expiry fell within the run's own measured scheduling noise of
    # a sweep instant (its live beat or sweep landed a few ms the other way: a race no model can call).
    assert row["td_agrees"], {k: v for k, v in row.items() if "td" in k or "paired" in k or "race" in k}
    # Server probes land just after probe ticks, and every fifth tick is a sweep instant: in compressed time whether
    # that sweep pops an entry is a race of a few ms between two processes' wake-ups, which the model draws from
    # the run's measured noise but cannot call crash by crash. So fewer crashes match to the second there.
    probe = fields.get("presence_mode", "timer") == "probe"
    assert row["paired"] == row["live_detected"] and row["paired_within_1s"] >= (0.7 if probe else 0.8)
    assert row["mistakes_within"], (row["live_mistakes"], row["model_mistakes"])
    if case == "Chrome intensive throttling":
        assert row["live_mistakes"] > 0  # the case is not vacuous
    if case.startswith("grace"):  # detection waits for the grace
        assert row["live_td_p50"] > 15.0 + 30.0
