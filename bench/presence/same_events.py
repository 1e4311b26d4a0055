"""Same presence events from the model's two executors and a live cluster (issue 19, "Done when").

One scripted scenario (every client a viewer; joins spread over the first tenth of the run, crashes and clean
disconnect-and-reconnects in its middle, every remaining viewer leaving at the end; a leave grace; a lossy
heartbeat so that viewers flap), run in presence mode ``timer`` and in mode ``probe``:

* the model's default executor (``rtlib.model.fast.run_fast``) and the reference executor
  (``rtlib.model.engine.run_engine``, the presence machine event by event) on the run's plan must publish
  **identical** event lists (``Outcome.events()`` and the composed events, compared with ``==``);
* the live 2-instance ``Cluster`` run (compressed time) must publish the same events as the model, viewer by
  viewer, under the rule of ``rtlib.model.acceptance``: a live event at most the measured clock error early and
  the rule's late bound (8 % of the sweep interval: 40 ms of real time at time_scale 0.1) late, one sweep or tick
  off only at a race the model can see. The requests' stamps (joins at (re)connection, clean leaves, disconnects)
  are the model's input; every pop and re-join is compared in time. A run that fails *and* was measurably later
  than that budget is run again (up to three runs), and the result says so.

    python -m bench.presence.same_events [--viewers 200] [--hours 1] [--time-scale 0.1] [--seed 19]

Writes bench/results/same_events.{json,md} (``--out`` to change the name).
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import time
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from rtlib.lab.cluster import Cluster
from rtlib.lab.scenario import Scenario
from rtlib.lab.sim import plan_clients
from rtlib.lab.validation import budget, judge, late_fields, lateness, live_events, run_live, verdict
from rtlib.model.acceptance import LATE_SHARE
from rtlib.model.engine import run_engine
from rtlib.model.fast import run_fast
from rtlib.model.live import model_of_run

__all__ = ["scenario", "same_events"]

RESULTS = Path(__file__).resolve().parents[1] / "results"
INSTANCES = 2


def scenario(mode: str, *, viewers: int, hours: float, time_scale: float, seed: int, grace: float = 15.0,
             heartbeat: str = "lossy:0.1:interval:30", crash: float = 0.2, churn: float = 0.2) -> Scenario:
    """The scripted scenario in presence mode ``mode`` (``timer`` or ``probe``)."""
    return Scenario(clients=viewers, workspaces=max(1, viewers // 100), tasks=10, update_rate=0.0, viewers=1.0,
                    crash=crash, churn=churn, heartbeat=heartbeat, presence_mode=mode, leave_grace=grace,
                    duration=3600.0 * hours, time_scale=time_scale, seed=seed, drain=1.0)


def same_events(cluster: Cluster, sc: Scenario) -> dict[str, Any]:
    """Run ``sc`` live, model it with both executors (they must agree exactly), compare every event; a failed
    comparison of a run later than the lateness budget is run again, up to three runs (``attempts``)."""
    plans = plan_clients(sc, INSTANCES)
    attempts = 0
    while attempts < 3:
        attempts += 1
        started = time.monotonic()
        results, facts = run_live(cluster, sc)
        wall = time.monotonic() - started
        live = live_events(results)
        fast = model_of_run(plans, sc, INSTANCES, facts, live, executor=run_fast)
        plain = model_of_run(plans, sc, INSTANCES, facts, live, executor=run_engine)
        identical = fast.outcome.events() == plain.outcome.events() and fast.events() == plain.events()
        row, comparison = judge(sc, plans, INSTANCES, facts, live, kinds=None)
        late = lateness(sc, plans, facts, live, fast, results.lateness)
        row.update(late_fields(late, budget(sc)))
        if row["passed"] or not row["disturbed"]:
            break
    by_kind = Counter(f"{r['kind']} {r['reason']}".strip() for r in comparison.rows if r["t_model"] is not None)
    status = Counter(r["status"] for r in comparison.rows)
    return {"mode": sc.presence_mode, "viewers": sc.clients, "design_s": sc.duration, "time_scale": sc.time_scale,
            "leave_grace": sc.leave_grace, "heartbeat": sc.heartbeat, "crashes": row["crashes"],
            "churned": sum(p.churn_at is not None for p in plans), "attempts": attempts, "wall_s": wall,
            "executors_identical": identical, "model_events": len(fast.events()),
            "outcome_events": len(fast.outcome.events()), "events_by_kind": dict(sorted(by_kind.items())),
            "status": dict(sorted(status.items())), **{k: row[k] for k in (
                "events_model", "events_live", "given", "compared", "exact", "one_sweep", "one_tick", "one_beat",
                "race_model_only", "race_live_only", "unexplained", "unexplained_events", "max_delta",
                "max_delta_ms", "min_delta", "tol_early", "tol_late", "tol_early_ms", "tol_late_ms", "passed",
                "live_mistakes", "model_mistakes", "live_td_p50", "model_td_p50")},
            "lateness_ms": {name: _quantiles(x) for name, x in late.items()},
            "clock_error_us": 1e6 * facts.clock_error,
            "disturbed": row["disturbed"], "budget_ms": row["budget_ms"], "verdict": verdict(row)}


def _quantiles(x: np.ndarray) -> dict[str, float]:
    if not len(x):
        return {"n": 0}
    return {"n": int(len(x)), "p50": 1e3 * float(np.median(x)), "p99": 1e3 * float(np.quantile(x, 0.99)),
            "max": 1e3 * float(x.max())}


def _markdown(meta: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    lines = ["# Same presence events: fast executor, reference executor, live cluster", "",
             f"{meta['date']}, commit {meta['commit']}: {meta['viewers']} viewers x {meta['hours']:g} design h on "
             f"{INSTANCES} instances, time_scale {meta['time_scale']} (1 design h = "
             f"{3600 * meta['time_scale'] / 60:g} min), seed {meta['seed']}, leave grace {meta['grace']:g} s, "
             f"heartbeat `{meta['heartbeat']}`, 30 s / 60 s / sweep 5 s; crashes and disconnect-and-reconnects "
             "in the middle third, everyone else leaving at the end. `python -m bench.presence.same_events` wrote "
             "this; shared 2-core machine.", "",
             "Rule (`rtlib.model.acceptance`): each live event at the server's stamp, paired viewer by viewer "
             f"with the model's: at most the measured clock error early, at most {LATE_SHARE:g} x the sweep "
             f"interval late ({LATE_SHARE * 5 * meta['time_scale'] * 1e3:g} ms of real time at this time scale: "
             "the lab's lateness budget); one sweep or one probe tick off, or an event on one side only, only at a "
             "race the model can see (its own timing within early + late of the boundary). The requests' stamps "
             "(joins at (re)connection, clean leaves, disconnects) are the model's input: compared for being "
             "announced, not for their time; every sweep's pop and every beat's re-join is compared in time.", "",
             "| mode | executors identical | events model / live | input: joins, leaves, disconnects | compared "
             "| exact | one sweep / tick / beat off (race) | one side only (race) | unexplained | max deviation "
             "| tolerance | lateness max: sweeps / beats / client wakes | clock error | verdict |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lat = r["lateness_ms"]
        lines.append(
            f"| {r['mode']} | {'yes' if r['executors_identical'] else 'NO'} ({r['model_events']} events) | "
            f"{r['events_model']} / {r['events_live']} | {r['given']} | {r['compared']} | {r['exact']} | "
            f"{r['one_sweep']} / {r['one_tick']} / {r['one_beat']} | {r['race_model_only'] + r['race_live_only']} | "
            f"{r['unexplained']} | "
            f"{r['max_delta_ms']:.2f} ms ({r['max_delta']:.3f} design s) | -{r['tol_early_ms']:.4f} / "
            f"+{r['tol_late_ms']:g} ms | " + " / ".join(f"{lat[k].get('max', math.nan):.1f}" for k in
                                                      ("sweep", "beat", "wake")) + f" ms | "
            f"{r['clock_error_us']:.1f} us | "
            + {"pass": "same events", "FAIL": "DIFFERENT", "inconclusive": "inconclusive (every run disturbed)"}[
                r["verdict"]] + (f" ({r['attempts']} runs: the first disturbed)" if r["attempts"] > 1 else "") + " |")
    lines += ["", "Events per kind (model side): " + "; ".join(
        f"{r['mode']}: " + ", ".join(f"{k} {v}" for k, v in r["events_by_kind"].items()) for r in rows) + ".", "",
        "Mistakes (a viewer who was there shown gone) live / model: " + "; ".join(
        f"{r['mode']} {r['live_mistakes']} / {r['model_mistakes']}" for r in rows) + ". Crashes: " + "; ".join(
        f"{r['mode']} {r['crashes']}" for r in rows) + ". Disconnect-and-reconnects: " + "; ".join(
        f"{r['mode']} {r['churned']}" for r in rows) + ". Requests (the model's input) reached their server "
        "p99 / max after their plan: " + "; ".join(
        f"{r['mode']} {r['lateness_ms']['request'].get('p99', math.nan):.1f} / "
        f"{r['lateness_ms']['request'].get('max', math.nan):.1f} ms" for r in rows) + "."]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--viewers", type=int, default=200)
    ap.add_argument("--hours", type=float, default=1.0)
    ap.add_argument("--time-scale", type=float, default=0.1, help="0.1: 1 design h in 6 min; 40 ms budget")
    ap.add_argument("--seed", type=int, default=19)
    ap.add_argument("--grace", type=float, default=15.0)
    ap.add_argument("--heartbeat", default="lossy:0.1:interval:30")
    ap.add_argument("--out", default="same_events")
    args = ap.parse_args()
    warnings.filterwarnings("ignore", message="IProgress not found")
    started = time.monotonic()
    rows = []
    with Cluster(instances=INSTANCES) as cluster:
        for mode in ("timer", "probe"):
            sc = scenario(mode, viewers=args.viewers, hours=args.hours, time_scale=args.time_scale, seed=args.seed,
                          grace=args.grace, heartbeat=args.heartbeat)
            rows.append(same_events(cluster, sc))
            print({k: v for k, v in rows[-1].items() if k != "unexplained_events"}, flush=True)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=RESULTS).stdout.strip()
    meta = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "commit": commit, "viewers": args.viewers,
            "hours": args.hours, "time_scale": args.time_scale, "seed": args.seed, "grace": args.grace,
            "heartbeat": args.heartbeat, "wall_s": time.monotonic() - started}
    (RESULTS / f"{args.out}.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2, default=str) + "\n")
    text = _markdown(meta, rows)
    (RESULTS / f"{args.out}.md").write_text(text)
    print(text)
    if not all(r["executors_identical"] and r["passed"] for r in rows):
        raise SystemExit("the executors or the live run disagree: see the table")


if __name__ == "__main__":
    main()
