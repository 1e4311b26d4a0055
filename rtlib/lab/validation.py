"""The model against live runs of the lab's cluster: one validation case (``rtlib.model.live.VALIDATION_CASES``)
run live and compared, as the tests, notebook 05 and ``bench/presence/model_validation.py`` do it.

A live run in compressed time (40 ms per design second) on a shared 2-core machine can be disturbed: a
neighbouring job that holds the CPU for 100 ms moves detections by sweeps, and the comparison then fails for a
reason that says nothing about the model. So a case whose run disagrees is run **once more** (the same seeded
plan), and the row says so (``attempts``) together with what the first attempt missed
(``first_failed``): a model that is wrong disagrees both times.
"""

from __future__ import annotations

from typing import Any

from rtlib.lab.cluster import Cluster
from rtlib.lab.scenario import Scenario
from rtlib.lab.sim import plan_clients
from rtlib.model.live import VALIDATION_CASES, compare_run

__all__ = ["validate_case"]


def validate_case(cluster: Cluster, case: str, *, clients: int, seed: int, time_scale: float,
                  short: float | None = None, retries: int = 1, instances: int = 2) -> dict[str, Any]:
    """Run validation case ``case`` live on ``cluster`` (``instances`` servers), every client a viewer of one of
    6 tasks, and compare it with the model (:func:`rtlib.model.live.compare_run`). ``short``: the duration of the
    cases without throttled tabs (those keep theirs: tabs throttle after 300 s). Returns the row of the last
    attempt with ``case``, ``attempts`` and ``first_failed`` (the checks the first attempt missed, if any)."""
    fields = VALIDATION_CASES[case]
    if short is not None and not fields["heartbeat"].startswith("background"):
        fields = {**fields, "duration": short}
    sc = Scenario(clients=clients, workspaces=1, tasks=6, update_rate=0.5, viewers=1.0, time_scale=time_scale,
                  seed=seed, drain=0.5, **fields)
    first_failed: list[str] = []
    for attempt in range(1, retries + 2):
        row = compare_run(cluster.run(sc, progress=False), plan_clients(sc, instances), instances)
        if attempt == 1:
            first_failed = row["failed_checks"]
        if not row["failed_checks"]:
            break
    return {"case": case, **row, "attempts": attempt, "first_failed": first_failed}
