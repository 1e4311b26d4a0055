"""Issue 19's acceptance scenario, CI-sized: one scripted run (every client a viewer, a 15 s leave grace, a lossy
heartbeat so viewers flap, crashes and clean disconnect-and-reconnects in the middle, everyone else leaving at the
end), in presence modes timer and probe. The model's default executor (``run_fast``) and the reference executor
(``run_engine``) must publish identical events on the run's plan (``==``, float for float), and the live
2-instance cluster the same events under the validation rule (``rtlib.model.acceptance``). The full size (200
viewers x 1 design hour per mode) is ``python -m bench.presence.same_events`` -> ``bench/results/same_events.md``.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import pytest

from rtlib.lab.cluster import Cluster

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # bench/ is a package of the repository, not installed

from bench.presence.same_events import same_events, scenario  # noqa: E402

VIEWERS, DESIGN_S, TIME_SCALE, SEED = 40, 300.0, 0.05, 19  # 15 s of wall time per mode


@pytest.fixture(scope="module")
def cluster():  # noqa: ANN201
    warnings.filterwarnings("ignore", message="IProgress not found")
    with Cluster(instances=2) as c:
        yield c


@pytest.mark.timeout(200)
@pytest.mark.parametrize("mode", ["timer", "probe"])
def test_executors_and_live_cluster_publish_the_same_events(cluster: Cluster, mode: str) -> None:
    row = same_events(cluster, scenario(mode, viewers=VIEWERS, hours=DESIGN_S / 3600, time_scale=TIME_SCALE,
                                        seed=SEED))
    assert row["executors_identical"], "run_fast and run_engine disagree on the run's plan"
    assert row["passed"], (row["unexplained_events"], row["lateness_ms"], row["attempts"])
    # Not vacuous: every kind of event the scenario scripts is there, and the timed ones were compared.
    assert {"joined", "left timeout", "left disconnect", "left leave"} <= set(row["events_by_kind"])
    assert row["crashes"] > 0 and row["churned"] > 0 and row["compared"] >= row["crashes"]
