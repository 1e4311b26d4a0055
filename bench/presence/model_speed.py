"""Speed of the virtual-time presence model (rtlib.model), against issue 9's targets.

* 10,000 viewers x 8 h at 30 s heartbeats (~9.6 M heartbeats), full rules: <= 3 s on one core;
* a grid of 100 configurations x 1,000 viewers x 8 h: <= 30 s;
* for scale, the plain event-by-event executor (PresenceProtocol + BookStore) on a small input.

    python -m bench.presence.model_speed [--repeat 3] [--quick]

Writes bench/results/model_speed.{json,md}. CPU seconds (process_time) and wall seconds; the machine is shared
(2 cores, several engineers), so wall times are noisy; the best of --repeat runs is the headline, the first
(cold) run is shown too.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

from rtlib.model import ModelScenario, PresenceConfig, grid, sweep
from rtlib.model.engine import run_engine
from rtlib.model.fast import run_fast
from rtlib.model.metrics import metrics
from rtlib.model.timelines import generate

RESULTS = Path(__file__).resolve().parents[1] / "results"


def _timed(fn):  # noqa: ANN001, ANN202
    c, w = time.process_time(), time.perf_counter()
    out = fn()
    return out, time.process_time() - c, time.perf_counter() - w


def one_run(sc: ModelScenario, cfg: PresenceConfig, repeat: int) -> dict:
    runs = []
    for _ in range(repeat):
        def go():  # noqa: ANN202
            tl = generate(sc, cfg)
            out = run_fast(tl, cfg, sc)
            return tl, metrics(out, tl, sc)
        (tl, m), cpu, wall = _timed(go)
        runs.append((cpu, wall))
    cpu = [r[0] for r in runs]
    return {"client": sc.client_spec(cfg.heartbeat_interval), "viewers": sc.viewers, "hours": sc.hours,
            "heartbeats": int(len(tl.beat_t)), "cpu_s_best": min(cpu), "cpu_s_first": cpu[0],
            "wall_s_best": min(r[1] for r in runs), "mistakes": m["mistakes"], "td_p99": m["td_p99"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="1,000 viewers, 1 h: a smoke run")
    args = ap.parse_args()
    viewers, hours = (1000, 1.0) if args.quick else (10_000, 8.0)
    cfg = PresenceConfig(30, 60, 5)
    big = ModelScenario(viewers=viewers, hours=hours, departures=0.0, instances=2, seed=1)
    rows = []
    for client in ("interval:{hb}", "jitter:{hb}:5", "lossy:0.1:interval:{hb}", "background:{hb}:300"):
        rows.append(one_run(big.replace(client=client), cfg, args.repeat))
        print(rows[-1], flush=True)
    rows.append(one_run(big.replace(client="interval:{hb}", departures=0.3, skew=0.5, jitter=0.05), cfg, args.repeat))
    rows[-1]["client"] += " + 30 % silent departures, 0.5 s skew, 50 ms jitter"
    print(rows[-1], flush=True)
    generic = one_run(big.replace(viewers=max(1, viewers // 10), client="chrome:{hb}:60"), cfg, 1)
    generic["client"] += " (per-viewer Python generator: 1/10 of the viewers)"
    rows.append(generic)
    print(rows[-1], flush=True)

    configs = grid([10, 15, 20, 25, 30], [20, 30, 40, 45, 50, 55, 60, 65, 70, 75, 80, 90, 100, 110, 120, 130, 150,
                                           160, 180, 200, 240], [5])[:100]
    gsc = ModelScenario(viewers=1000 if not args.quick else 200, hours=hours, departures=0.3, seed=2)
    df, gcpu, gwall = _timed(lambda: sweep(configs, gsc, progress=False))
    grid_row = {"configs": len(configs), "viewers": gsc.viewers, "hours": gsc.hours, "cpu_s": gcpu, "wall_s": gwall,
                "heartbeats": None}
    print(grid_row, flush=True)

    small = ModelScenario(viewers=200, hours=1.0, departures=0.3, instances=2, seed=3)
    tl = generate(small, cfg)
    _, ecpu, _ = _timed(lambda: run_engine(tl, cfg, small))
    _, fcpu, _ = _timed(lambda: run_fast(tl, cfg, small))
    events = int(len(tl.beat_t) + tl.n + 2 * small.horizon / cfg.sweep_interval)
    engine_row = {"viewers": 200, "hours": 1.0, "events": events, "engine_cpu_s": ecpu, "fast_cpu_s": fcpu,
                  "engine_us_per_event": 1e6 * ecpu / events}
    print(engine_row, flush=True)

    meta = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "python": sys.version.split()[0],
            "numpy": np.__version__, "machine": platform.machine(), "cpus": os.cpu_count(),
            "loadavg": os.getloadavg(), "quick": args.quick, "repeat": args.repeat}
    out = {"meta": meta, "single": rows, "grid": grid_row, "engine": engine_row}
    suffix = ".quick" if args.quick else ""
    (RESULTS / f"model_speed{suffix}.json").write_text(json.dumps(out, indent=2) + "\n")
    lines = [
        "# rtlib.model speed", "",
        f"{meta['date']}, Python {meta['python']}, numpy {meta['numpy']}, {meta['cpus']} CPUs shared with other "
        f"work (load average {', '.join(f'{x:.1f}' for x in meta['loadavg'])}): times are noisy. CPU seconds of "
        "one process (single-threaded numpy); best of "
        f"{args.repeat} and the first (cold) run. `python -m bench.presence.model_speed` wrote this.", "",
        "## One configuration (30 s / 60 s / sweep 5 s, 2 instances), full rules", "",
        "| client model | viewers x hours | heartbeats | CPU s best | CPU s first | wall s best | target |",
        "|---|---|---|---|---|---|---|"]
    for r in rows:
        target = "<= 3 s" if r["client"] == "interval:30" and not args.quick else ""
        lines.append(f"| {r['client']} | {r['viewers']:,} x {r['hours']:g} | {r['heartbeats']:,} | "
                     f"{r['cpu_s_best']:.2f} | {r['cpu_s_first']:.2f} | {r['wall_s_best']:.2f} | {target} |")
    lines += ["", "## A grid", "",
              f"{grid_row['configs']} configurations (heartbeat 10-30 s x timeout 20-240 s, sweep 5 s) x "
              f"{grid_row['viewers']:,} viewers x {grid_row['hours']:g} h, interval timers, 30 % silent departures: "
              f"**{grid_row['cpu_s']:.1f} s CPU**, {grid_row['wall_s']:.1f} s wall (target <= 30 s).", "",
              "## The plain executor, for scale", "",
              f"{engine_row['events']:,} events (200 viewers x 1 h): event by event through PresenceProtocol and "
              f"BookStore {engine_row['engine_cpu_s']:.2f} s ({engine_row['engine_us_per_event']:.1f} us/event), "
              f"vectorised {engine_row['fast_cpu_s']:.3f} s; same events (tests/model/test_equivalence.py)."]
    (RESULTS / f"model_speed{suffix}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
