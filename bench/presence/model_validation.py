"""The model against the live system at full size (issue 9 §2): the benchmark table of model vs live.

For each validation case (rtlib.model.live.VALIDATION_CASES: exact 30/60, Chrome intensive throttling, 10 %
loss, crash-heavy; 2 instances), one live rtlib.lab Cluster run in compressed time and the model on the same
seeded plan. Criteria: T_D quantiles within 5 %; the model's mistakes inside the live count's exact 95 %
Poisson interval.

    python -m bench.presence.model_validation [--clients 200] [--scale 2] [--time-scale 0.05] [--seed 11] [--out NAME]

Writes bench/results/model_validation.{json,md}. ``--scale`` multiplies the CI durations (design seconds).
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

import pandas as pd

from rtlib.lab.cluster import Cluster
from rtlib.lab.scenario import Scenario
from rtlib.lab.sim import plan_clients
from rtlib.model.live import VALIDATION_CASES, compare_run

RESULTS = Path(__file__).resolve().parents[1] / "results"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", type=int, default=200)
    ap.add_argument("--scale", type=float, default=2.0, help="x the CI durations")
    ap.add_argument("--time-scale", type=float, default=0.05)
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--out", default="model_validation")
    args = ap.parse_args()
    warnings.filterwarnings("ignore", message="IProgress not found")
    rows = []
    started = time.monotonic()
    with Cluster(instances=2) as cluster:
        for name, case in VALIDATION_CASES.items():
            case = {**case, "duration": case["duration"] * args.scale}
            sc = Scenario(clients=args.clients, workspaces=max(1, args.clients // 100), tasks=10, update_rate=0.5,
                          viewers=1.0, time_scale=args.time_scale, seed=args.seed, drain=1.0, **case)
            t = time.monotonic()
            row = {"case": name, "duration": sc.duration, **compare_run(cluster.run(sc, progress=False),
                                                                        plan_clients(sc, 2), 2)}
            row["wall_s"] = time.monotonic() - t
            rows.append(row)
            print({k: (round(v, 3) if isinstance(v, float) else v) for k, v in row.items()}, flush=True)
    df = pd.DataFrame(rows)
    meta = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "clients": args.clients,
            "time_scale": args.time_scale, "seed": args.seed, "wall_s": time.monotonic() - started}
    (RESULTS / f"{args.out}.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2, default=str) + "\n")
    lines = ["# rtlib.model vs live rtlib.lab runs", "",
             f"{meta['date']}: {args.clients} clients (all viewers) on 2 instances, 30 s / 60 s / sweep 5 s, "
             f"time_scale {args.time_scale} (1 design s = {1000 * args.time_scale:g} ms), seed {args.seed}; "
             "the model runs the same seeded plan (joins, crashes, each client's beats) with the sweep grid's "
             "offset measured from the run's own timeout events. Shared 2-core machine. "
             "`python -m bench.presence.model_validation` wrote this.", "",
             "| case | design s | crashes | T_D p50 live / model | p90 live / model | p99 live / model | "
             "max rel. diff | crash by crash: within 1 s (max diff) | mistakes live [95 % CI] | model | within |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        rel = max(r["td_p50_rel"], r["td_p90_rel"], r["td_p99_rel"])
        lines.append(
            f"| {r['case']} | {r['duration']:g} | {r['crashes']} | {r['live_td_p50']:.2f} / {r['model_td_p50']:.2f} | "
            f"{r['live_td_p90']:.2f} / {r['model_td_p90']:.2f} | {r['live_td_p99']:.2f} / {r['model_td_p99']:.2f} | "
            f"{100 * rel:.1f} % | {100 * r['paired_within_1s']:.0f} % ({r['paired_max_diff']:.2f} s) | "
            f"{r['live_mistakes']} [{r['live_mistakes_low95']:.1f}, "
            f"{r['live_mistakes_high95']:.1f}] | {r['model_mistakes']} | "
            f"{'yes' if r['td_within_5pct'] and r['mistakes_within'] else 'NO'} |")
    (RESULTS / f"{args.out}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(df.shape)


if __name__ == "__main__":
    main()
