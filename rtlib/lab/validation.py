"""The model against live runs of the lab's cluster, with negative controls: one validation case
(``rtlib.model.live.VALIDATION_CASES``) run live, compared event by event with the right model and with each
deliberately wrong one (``rtlib.model.live.WRONG_MODELS``), under the rule of :mod:`rtlib.model.acceptance`.

The rule's tolerance is fixed in advance (the lab's lateness budget and its measured clock error); the run's own
lateness is *measured* (sweep stamps against the design's sweep instants, re-joins against the planned beats, the
simulated clients' wakes: nothing from the model) and decides one thing only: whether the run was a valid trial.
A run whose comparison fails **and** whose lateness exceeded the budget was disturbed (a shared 2-core machine: a
neighbour held the CPU), so it says nothing about the model and is run again (up to twice more), and the row says
so (``attempts``, ``retried``, what the first attempt missed and how late it was); if every attempt is disturbed
the verdict is ``inconclusive``, not a pass. A failure on an undisturbed run is final: ``FAIL``. The wrong models
are judged on the final run, the one the right model was judged on.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pandas as pd

from rtlib.lab.cluster import Cluster
from rtlib.lab.results import Results
from rtlib.lab.scenario import Scenario
from rtlib.lab.sim import plan_clients
from rtlib.model.acceptance import LATE_SHARE, Comparison, Event
from rtlib.model.live import VALIDATION_CASES, WRONG_MODELS, ModelRun, ModelSpec, RunFacts, model_of_run, right_spec
from rtlib.model.metrics import poisson_interval

__all__ = ["budget", "judge", "late_fields", "lateness", "live_events", "power_table", "run_live", "validate_case",
           "validate_cases", "verdict"]

#: The events part A compares: every presence.left by timeout (detections and mistakes) and every re-join.
#: The joins at (re)connection are the model's input; the clean leaves are the clients' own requests.
TIMEOUT_EVENTS = frozenset({("left", "timeout"), ("joined", "")})


def live_events(results: Results) -> list[Event]:
    """Each event the servers published, once (every observer records it; its stamp identifies it), at the
    server's clock (design s since the run's start)."""
    p = results.presence.dropna(subset=["t_server"]).drop_duplicates(["subject", "task", "kind", "reason",
                                                                      "t_server"])
    return [Event(s, k, r if isinstance(r, str) else "", float(t))
            for s, k, r, t in zip(p["subject"], p["kind"], p["reason"], p["t_server"], strict=True)]


def run_live(cluster: Cluster, sc: Scenario) -> tuple[Results, RunFacts]:
    """Run ``sc`` on ``cluster`` and measure what the model needs: where design second 0 fell on the wall clock
    and how far the wall and monotonic clocks drifted apart meanwhile (the clients schedule on one, the servers
    stamp and sweep on the other)."""
    before = time.time() - time.monotonic()
    results = cluster.run(sc, progress=False)
    drift = (time.time() - time.monotonic()) - before
    assert cluster.started_at is not None
    return results, RunFacts(sc.time_scale, cluster.started_at, abs(drift), sc.duration + sc.drain / sc.time_scale)


def lateness(sc: Scenario, plans: list[Any], facts: RunFacts, live: list[Event], model: ModelRun,
             wakes: Any = ()) -> dict[str, np.ndarray]:
    """The run's measured lateness, real seconds, by what was late: ``sweep`` (each timeout's stamp after its
    design sweep instant), ``beat`` (each re-join by a beat after the planned beat or probe tick that caused it),
    ``wake`` (each scheduled wake of the simulated clients: ``Results.lateness``, rtlib.lab.realtime) and
    ``request`` (joins, clean leaves and disconnects after their planned instants: the model's input, so
    reported, never judged). The first three are what the rule's ``late`` bound must cover."""
    tol = model.tolerance(facts, sc.sweep_interval)
    ctx = model.context(tol)
    planned = {(p.user, "leave"): sc.duration for p in plans}
    planned.update({(p.user, "disconnect"): p.churn_at for p in plans if p.churn_at is not None})
    view_at = {p.user: p.view_at for p in plans}
    out: dict[str, list[float]] = {"sweep": [], "beat": [], "request": []}
    for e in live:
        if (e.kind, e.reason) == ("left", "timeout"):
            out["sweep"].append(e.t - tol.sweep_before(e.t))
        elif (e.subject, e.reason) in planned:
            out["request"].append(e.t - planned[(e.subject, e.reason)])
        elif e.kind == "joined" and e.subject in ctx.writes:
            ws = ctx.writes[e.subject]
            i = int(np.searchsorted(ws, e.t + 1e-9, side="right")) - 1
            if i >= 0 and ws[i] != e.t:  # a given (re)join is its own write
                out["beat"].append(e.t - ws[i])
            elif i >= 0 and abs(e.t - view_at.get(e.subject, math.inf)) < sc.heartbeat_interval:
                out["request"].append(e.t - view_at[e.subject])
    out["wake"] = list(wakes)
    return {k: np.array(v, dtype=float) * sc.time_scale for k, v in out.items()}


def late_fields(late: dict[str, np.ndarray], budget: float) -> dict[str, Any]:
    """The row fields of :func:`lateness`: quantiles per class (ms) and ``disturbed`` (a timed class over budget)."""
    row: dict[str, Any] = {}
    for name, x in late.items():
        row[f"{name}_late_n"] = int(len(x))
        for q, label in ((0.5, "p50"), (0.99, "p99"), (1.0, "max")):
            row[f"{name}_late_{label}_ms"] = 1e3 * float(np.quantile(x, q)) if len(x) else math.nan
    timed = np.concatenate([late["sweep"], late["beat"], late.get("wake", np.array([]))])
    row["lateness_max_ms"] = 1e3 * float(timed.max()) if len(timed) else math.nan
    row["budget_ms"] = 1e3 * budget
    row["disturbed"] = bool(len(timed) and timed.max() > budget)
    return row


def budget(sc: Scenario) -> float:
    """The lab's lateness budget for ``sc``, real seconds: the rule's ``late`` bound (``LATE_SHARE`` of the sweep
    interval) at the run's time scale (20 ms at 5 s and 0.05)."""
    return LATE_SHARE * sc.sweep_interval * sc.time_scale


def judge(sc: Scenario, plans: list[Any], instances: int, facts: RunFacts, live: list[Event],
          spec: ModelSpec | None = None, kinds: frozenset[tuple[str, str]] | None = TIMEOUT_EVENTS
          ) -> tuple[dict[str, Any], Comparison]:
    """Compare the live events with the model ``spec`` (default: the right one) under the rule; returns the
    summary row (the rule's numbers, counts, T_D and mistakes, live and model) and the event-level comparison."""
    model = model_of_run(plans, sc, instances, facts, live, spec)
    keep = (lambda e: (e.kind, e.reason) in kinds) if kinds is not None else (lambda e: True)
    comparison = model.compare(live, facts, sc.sweep_interval, keep)
    tol = comparison.tolerance
    row = {**comparison.summary(), **_qos(sc, plans, model, live)}
    row["tol_early_ms"], row["tol_late_ms"] = 1e3 * tol.early * sc.time_scale, 1e3 * tol.late * sc.time_scale
    row["max_delta_ms"] = 1e3 * row["max_delta"] * sc.time_scale
    row["unexplained_events"] = [(r["subject"], r["kind"], r["reason"], r["t_model"], r["t_live"])
                                 for r in comparison.unexplained][:10]
    return row, comparison


def _qos(sc: Scenario, plans: list[Any], model: ModelRun, live: list[Event]) -> dict[str, Any]:
    """T_D quantiles and mistakes, live and model, from the events (stamps): what the notebook charts."""
    crash = {p.user: p.crash_at for p in plans if p.view_task and p.crash_at is not None and p.crash_at < sc.duration}
    out: dict[str, Any] = {"crashes": len(crash), "viewers": len(set(model.users)),
                           "viewer_hours": float(np.sum(np.minimum(model.tl.depart, sc.duration) - model.tl.start))
                           / 3600}
    for side, events in (("live", live), ("model", model.events())):
        lefts = [e for e in events if (e.kind, e.reason) == ("left", "timeout")]
        td = [min((e.t for e in lefts if e.subject == u and e.t >= c), default=math.nan) - c for u, c in crash.items()]
        td = np.array([x for x in td if not math.isnan(x)])
        out[f"{side}_detected"] = len(td)
        for q in (50, 90, 99):
            out[f"{side}_td_p{q}"] = float(np.quantile(td, q / 100)) if len(td) else math.nan
        out[f"{side}_mistakes"] = sum(e.t < crash.get(e.subject, math.inf) and e.t <= sc.duration for e in lefts)
    out["live_mistakes_low95"], out["live_mistakes_high95"] = poisson_interval(out["live_mistakes"])
    out["mistakes_within"] = out["live_mistakes_low95"] <= out["model_mistakes"] <= out["live_mistakes_high95"]
    return out


def _scenario(case: str, clients: int, seed: int, time_scale: float, short: float | None) -> Scenario:
    fields = VALIDATION_CASES[case]
    if short is not None and not str(fields["heartbeat"]).startswith(("background", "chrome")):
        fields = {**fields, "duration": short}
    return Scenario(clients=clients, workspaces=1, tasks=6, update_rate=0.5, viewers=1.0, time_scale=time_scale,
                    seed=seed, drain=0.5, **fields)


def verdict(row: dict[str, Any]) -> str:
    """``pass`` (no event outside the rule), ``FAIL`` (events outside it on a run that kept the lab's budget: the
    model is wrong) or ``inconclusive`` (events outside it, but the run was later than the budget: no valid
    trial, whatever the model)."""
    return "pass" if row["passed"] else "inconclusive" if row["disturbed"] else "FAIL"


def validate_case(cluster: Cluster, case: str, *, clients: int, seed: int, time_scale: float,
                  short: float | None = None, instances: int = 2, retries: int = 2) -> dict[str, Any]:
    """Run validation case ``case`` live on ``cluster`` (``instances`` servers), every client a viewer of one of
    6 tasks, and judge it with the right model and every wrong one. ``short``: the duration of the cases without
    throttled tabs (those keep theirs: tabs throttle after 300 s). A run that fails and was disturbed is run
    again, up to ``retries`` more times (an undisturbed failure is final). Returns the right model's row with
    ``case``, ``verdict``, ``attempts``, ``retried``, ``first_failed`` and ``first_lateness_max_ms``, the run's
    measured lateness (real ms) and ``wrong``: per wrong model ``"fail"``, ``"PASS"`` (the validation missed it)
    or ``"n/a"`` (it changes nothing in this case), judged on the final run."""
    sc = _scenario(case, clients, seed, time_scale, short)
    plans = plan_clients(sc, instances)
    first: dict[str, Any] = {}
    attempts = 0
    while True:
        attempts += 1
        results, facts = run_live(cluster, sc)
        live = live_events(results)
        row, comparison = judge(sc, plans, instances, facts, live)
        row.update({**late_fields(lateness(sc, plans, facts, live, comparison.model, results.lateness),
                                  budget(sc)), "clock_error_us": 1e6 * facts.clock_error})
        first = first or row
        if row["passed"] or not row["disturbed"] or attempts > retries:
            break
    wrong, missed = {}, {}
    for name, variation in WRONG_MODELS.items():
        spec = variation(right_spec(sc))
        if spec is None:
            wrong[name] = "n/a"
            continue
        w = judge(sc, plans, instances, facts, live, spec)[0]
        wrong[name] = "PASS" if w["passed"] else "fail"
        missed[name] = w["unexplained"]
    return {"case": case, "duration": sc.duration, "presence_mode": sc.presence_mode, "heartbeat": sc.heartbeat,
            "leave_grace": sc.leave_grace, **row, "verdict": verdict(row), "attempts": attempts,
            "retried": attempts > 1, "first_failed": [] if first["passed"] else first["unexplained_events"],
            "first_lateness_max_ms": first["lateness_max_ms"], "wrong": wrong, "wrong_unexplained": missed}


def validate_cases(cases: Sequence[str], *, clients: int, seed: int, time_scale: float, short: float | None = None,
                   lanes: int = 1, instances: int = 2, retries: int = 2) -> list[dict[str, Any]]:
    """:func:`validate_case` for each of ``cases``; the rows in the order of ``cases``. ``lanes`` > 1: that many
    clusters side by side (the runs are light: tens of clients, a beat per second or so of wall time each), each
    running its share of the cases one after another, longest first. Each lane's simulated clients run in a worker
    process of their own (``Cluster.workers = 1``), not in this one, where the other lane judges its last run (a
    few seconds of CPU): a run's timing is then disturbed only as much as the machine is, which its lateness
    measures, and a disturbed run that fails is run again exactly as in :func:`validate_case`. Lanes change how
    long the table takes, not what passes."""
    def run_lane(names: list[str], workers: int | None) -> dict[str, dict[str, Any]]:
        # A lane's cluster is made, used and closed in one thread: its servers die with the thread that started
        # them (rtlib.server.redis_process.die_with_parent).
        with Cluster(instances=instances) as cluster:
            cluster.workers = workers
            return {name: validate_case(cluster, name, clients=clients, seed=seed, time_scale=time_scale,
                                        short=short, instances=instances, retries=retries) for name in names}

    if lanes <= 1 or len(cases) <= 1:
        rows = run_lane(list(cases), None)  # in this thread, the clients on the cluster's loop thread, as always
        return [rows[name] for name in cases]
    share: list[list[str]] = [[] for _ in range(min(lanes, len(cases)))]
    load = [0.0] * len(share)
    duration = {name: _scenario(name, clients, seed, time_scale, short).duration for name in cases}
    for name in sorted(cases, key=lambda c: -duration[c]):
        k = load.index(min(load))  # the longest case left goes to the lane that finishes first
        share[k].append(name)
        load[k] += duration[name]
    with ThreadPoolExecutor(len(share), thread_name_prefix="validation-lane") as pool:
        futures = [pool.submit(run_lane, names, 1) for names in share]
        rows = {name: row for future in futures for name, row in future.result().items()}
    return [rows[name] for name in cases]


def power_table(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """What this validation can and cannot detect: per case the right model's verdict (retried cases marked)
    and each wrong model's (``fail (n events)`` = detected, by n events outside the rule; ``PASS`` = missed;
    ``n/a`` = the variation changes nothing in this case)."""
    table = []
    for r in rows:
        right = r["verdict"]
        if r["retried"]:
            right += (f" (run {r['attempts']} times: 1st disturbed, {r['first_lateness_max_ms']:.0f} ms late > "
                      f"{r['budget_ms']:g} ms)")
        wrong = {name: v if v != "fail" else f"fail ({r['wrong_unexplained'][name]} events)"
                 for name, v in r["wrong"].items()}
        table.append({"case": r["case"], "right model": right, **wrong})
    return pd.DataFrame(table).set_index("case")
