"""Speed of the virtual-time presence model (rtlib.model), against issue 9's and issue 21's targets.

* 10,000 viewers x 8 h at 30 s heartbeats, full rules, <= 3 s on one core: with simple client models (exact,
  jittered, lossy timers, a background tab) and with Chrome's hidden tabs (``chrome:30:60``, drawn in bulk by
  rtlib.model.chrome_beats);
* a grid of 100 configurations x 1,000 viewers x 8 h: <= 30 s;
* for scale, the plain event-by-event executor (PresenceProtocol + BookStore) on a small input;
* exactness at that size: from the 10,000-viewer ``chrome:30:60`` run, a seeded sample of 500 viewers is cut out
  and checked twice: their bulk-drawn beats equal ``ChromeHiddenTab.beats`` (the per-viewer model, each viewer's
  own ``random.Random``), and run_fast's events (and sweeps, writes, metrics) equal run_engine's on them.

    python -m bench.presence.model_speed [--rounds 4] [--max-load 1.5] [--quick]

Writes bench/results/model_speed.{json,md}. CPU seconds (process_time) of one process, and wall seconds. The
machine is shared (2 cores, several engineers) and its speed drifts by up to 40 %, so each case runs once per
round, the cases in alternating order (forward, then backward), for ``--rounds`` rounds: the headline is the
median, with the spread (min-max) beside it; the load average is recorded at every round.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from rtlib.clientmodels.heartbeat import parse_model
from rtlib.model import ModelScenario, PresenceConfig, grid, sweep
from rtlib.model.beats import Timelines
from rtlib.model.engine import run_engine
from rtlib.model.fast import run_fast
from rtlib.model.metrics import metrics
from rtlib.model.timelines import generate

__all__ = ["main"]

RESULTS = Path(__file__).resolve().parents[1] / "results"
CLIENTS = ["interval:{hb}", "jitter:{hb}:5", "lossy:0.1:interval:{hb}", "background:{hb}:300", "chrome:{hb}:60"]
DEPARTURES = " + 30 % silent departures, 0.5 s skew, 50 ms jitter"
LOOKAHEAD = 24 * 3600.0  # rtlib.model.beats runs a per-viewer model this far past a viewer's end


def _timed(fn: Callable[[], Any]) -> tuple[Any, float, float]:
    c, w = time.process_time(), time.perf_counter()
    out = fn()
    return out, time.process_time() - c, time.perf_counter() - w


def _single(sc: ModelScenario, cfg: PresenceConfig) -> tuple[dict[str, Any], Timelines]:
    """One full run (draw the timelines, run the vectorised executor, the metrics), timed."""
    tl, draw_cpu, draw_wall = _timed(lambda: generate(sc, cfg))
    m, cpu, wall = _timed(lambda: metrics(run_fast(tl, cfg, sc), tl, sc))
    return {"cpu": draw_cpu + cpu, "draw_cpu": draw_cpu, "wall": draw_wall + wall, "heartbeats": int(len(tl.beat_t)),
            "mistakes": m["mistakes"], "td_p99": m["td_p99"]}, tl


def _wait_for_load(limit: float, patience: float) -> float:
    """Wait (up to ``patience`` s) for the 1-minute load average to fall below ``limit``; returns it."""
    deadline = time.monotonic() + patience
    while (load := os.getloadavg()[0]) >= limit and time.monotonic() < deadline:
        time.sleep(10)
    return load


def _summary(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def _cut(tl: Timelines, sample: np.ndarray) -> Timelines:
    """The timelines of ``sample``'s viewers only (renumbered 0..), as the big run drew them."""
    lo, hi = tl.offsets[sample], tl.offsets[sample + 1]
    idx = np.concatenate([np.arange(a, b) for a, b in zip(lo.tolist(), hi.tolist(), strict=True)])
    offsets = np.zeros(len(sample) + 1, dtype=np.int64)
    np.cumsum(hi - lo, out=offsets[1:])
    return Timelines(tl.start[sample], tl.depart[sample], tl.instance[sample], tl.beat_t[idx], tl.beat_ok[idx],
                     offsets, tl.end, tl.beat_away[idx], tl.open_away[sample])


def check_sample(tl: Timelines, sc: ModelScenario, cfg: PresenceConfig, size: int) -> dict[str, Any]:
    """Exactness at full size, on a seeded sample of the big run's viewers (see the module docstring)."""
    sample = np.sort(np.random.default_rng([sc.seed, 21]).choice(tl.n, size=min(size, tl.n), replace=False))
    model = parse_model(sc.client_spec(cfg.heartbeat_interval))
    stop = np.minimum(tl.depart, tl.end)
    same_beats = True
    for i in sample.tolist():  # the per-viewer model, as rtlib.model.beats.per_viewer_beats runs it
        beats = model.beats(float(tl.start[i]), float(stop[i]) + LOOKAHEAD, random.Random(f"{sc.seed}:{i}"))
        want = [b.t for b in beats if b.t <= stop[i]]
        same_beats &= tl.beat_t[tl.offsets[i]:tl.offsets[i + 1]].tolist() == want
    part = _cut(tl, sample)
    small = sc.replace(viewers=len(sample))
    fast, fcpu, _ = _timed(lambda: run_fast(part, cfg, small))
    plain, ecpu, _ = _timed(lambda: run_engine(part, cfg, small))
    same_events = fast.events() == plain.events()
    same_rest = (fast.sweeps == plain.sweeps and sorted(fast.writes_t.tolist()) == sorted(plain.writes_t.tolist())
                 and metrics(fast, part, small) == metrics(plain, part, small))
    return {"viewers": len(sample), "of": tl.n, "hours": sc.hours, "client": model.spec,
            "heartbeats": int(len(part.beat_t)), "events": len(plain.events()), "beats_equal_per_viewer": same_beats,
            "events_equal": same_events, "sweeps_writes_metrics_equal": same_rest, "engine_cpu_s": ecpu,
            "fast_cpu_s": fcpu}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=4, help="alternating rounds (each case once per round)")
    ap.add_argument("--max-load", type=float, default=1.5, help="wait (up to --patience s) for a lower load first")
    ap.add_argument("--patience", type=float, default=600.0)
    ap.add_argument("--sample", type=int, default=500, help="viewers of the chrome run checked against the engine")
    ap.add_argument("--quick", action="store_true", help="1,000 viewers, 1 h: a smoke run")
    args = ap.parse_args()
    viewers, hours = (1000, 1.0) if args.quick else (10_000, 8.0)
    cfg = PresenceConfig(30, 60, 5)
    big = ModelScenario(viewers=viewers, hours=hours, departures=0.0, instances=2, seed=1)
    cases: dict[str, ModelScenario] = {c.replace("{hb}", "30"): big.replace(client=c) for c in CLIENTS}
    cases["interval:30" + DEPARTURES] = big.replace(client="interval:{hb}", departures=0.3, skew=0.5, jitter=0.05)
    configs = grid([10, 15, 20, 25, 30], [20, 30, 40, 45, 50, 55, 60, 65, 70, 75, 80, 90, 100, 110, 120, 130, 150,
                                           160, 180, 200, 240], [5])[:100]
    gsc = ModelScenario(viewers=1000 if not args.quick else 200, hours=hours, departures=0.3, seed=2)
    load_before = _wait_for_load(args.max_load, 0 if args.quick else args.patience)
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in [*cases, "grid"]}
    loads, chrome_tl = [], None
    for r in range(args.rounds):
        order = list(runs) if r % 2 == 0 else list(reversed(runs))
        for name in order:
            if name == "grid":
                _, cpu, wall = _timed(lambda: sweep(configs, gsc, progress=False))
                runs[name].append({"cpu": cpu, "wall": wall})
            else:
                row, tl = _single(cases[name], cfg)
                runs[name].append(row)
                if name.startswith("chrome:"):
                    chrome_tl = tl
                del tl
            print(f"round {r + 1} {name}: {runs[name][-1]['cpu']:.2f} s CPU", flush=True)
        loads.append(os.getloadavg())
    assert chrome_tl is not None
    check = check_sample(chrome_tl, cases["chrome:30:60"], cfg, args.sample if not args.quick else 100)
    del chrome_tl
    print(check, flush=True)

    small = ModelScenario(viewers=200, hours=1.0, departures=0.3, instances=2, seed=3)
    tl = generate(small, cfg)
    _, ecpu, _ = _timed(lambda: run_engine(tl, cfg, small))
    _, fcpu, _ = _timed(lambda: run_fast(tl, cfg, small))
    events = int(len(tl.beat_t) + tl.n + 2 * small.horizon / cfg.sweep_interval)
    engine_row = {"viewers": 200, "hours": 1.0, "events": events, "engine_cpu_s": ecpu, "fast_cpu_s": fcpu,
                  "engine_us_per_event": 1e6 * ecpu / events}

    single = [{"client": name, "viewers": cases[name].viewers, "hours": cases[name].hours,
               "heartbeats": rows[0]["heartbeats"], "cpu_s": _summary([x["cpu"] for x in rows]),
               "draw_cpu_s": _summary([x["draw_cpu"] for x in rows]), "wall_s": _summary([x["wall"] for x in rows]),
               "cpu_s_rounds": [x["cpu"] for x in rows], "mistakes": rows[0]["mistakes"], "td_p99": rows[0]["td_p99"]}
              for name, rows in runs.items() if name != "grid"]
    grid_row = {"configs": len(configs), "viewers": gsc.viewers, "hours": gsc.hours,
                "cpu_s": _summary([x["cpu"] for x in runs["grid"]]),
                "wall_s": _summary([x["wall"] for x in runs["grid"]]),
                "cpu_s_rounds": [x["cpu"] for x in runs["grid"]]}
    meta = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "python": sys.version.split()[0],
            "numpy": np.__version__, "machine": platform.machine(), "cpus": os.cpu_count(), "quick": args.quick,
            "rounds": args.rounds, "load_at_start": load_before, "loadavg_after_each_round": loads}
    out = {"meta": meta, "single": single, "grid": grid_row, "engine": engine_row, "sample_check": check}
    suffix = ".quick" if args.quick else ""
    (RESULTS / f"model_speed{suffix}.json").write_text(json.dumps(out, indent=2) + "\n")
    lines = _report(meta, single, grid_row, engine_row, check)
    (RESULTS / f"model_speed{suffix}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def _spread(s: dict[str, float]) -> str:
    return f"{s['median']:.2f} ({s['min']:.2f}-{s['max']:.2f})"


def _report(meta: dict[str, Any], single: list[dict[str, Any]], grid_row: dict[str, Any], engine_row: dict[str, Any],
            check: dict[str, Any]) -> list[str]:
    one_min = [f"{x[0]:.2f}" for x in meta["loadavg_after_each_round"]]
    lines = [
        "# rtlib.model speed", "",
        f"{meta['date']}, Python {meta['python']}, numpy {meta['numpy']}, {meta['cpus']} CPUs shared with other "
        f"work: 1-minute load average {meta['load_at_start']:.2f} at the start, {', '.join(one_min)} after each "
        f"round (it counts this benchmark's own process, about 1). CPU seconds of one process (single-threaded "
        f"numpy): the **median of {meta['rounds']} rounds** and "
        "the spread (min-max); each round runs every case once, in alternating order (the machine's speed drifts "
        "by up to 40 %). `python -m bench.presence.model_speed` wrote this.", "",
        "## One configuration (30 s / 60 s / sweep 5 s, 2 instances), full rules", "",
        "Drawing the timelines, the vectorised executor and the metrics; \"drawing\" is the first part alone.", "",
        "| client model | viewers x hours | heartbeats | CPU s median (min-max) | of which drawing | wall s median "
        "(min-max) | target |",
        "|---|---|---|---|---|---|---|"]
    for r in single:
        target = "<= 3 s" if r["client"] in ("interval:30", "chrome:30:60") and not meta["quick"] else ""
        lines.append(f"| {r['client']} | {r['viewers']:,} x {r['hours']:g} | {r['heartbeats']:,} | "
                     f"{_spread(r['cpu_s'])} | {r['draw_cpu_s']['median']:.2f} | {_spread(r['wall_s'])} | {target} |")
    ok = check["beats_equal_per_viewer"] and check["events_equal"] and check["sweeps_writes_metrics_equal"]
    lines += ["", "## Exact at that size", "",
              f"From the {check['of']:,}-viewer `{check['client']}` run above, {check['viewers']} viewers (a seeded "
              f"sample, {check['heartbeats']:,} heartbeats, {check['hours']:g} h): their bulk-drawn beats equal "
              "`ChromeHiddenTab.beats` viewer by viewer (each with its own `random.Random`): "
              f"**{check['beats_equal_per_viewer']}**; run_fast's {check['events']:,} presence events equal "
              f"run_engine's (PresenceProtocol + BookStore, event by event): **{check['events_equal']}**; sweeps, "
              f"Redis writes and metrics too: **{check['sweeps_writes_metrics_equal']}** (engine "
              f"{check['engine_cpu_s']:.1f} s, vectorised {check['fast_cpu_s']:.2f} s). "
              + ("All equal." if ok else "**NOT EQUAL: the fast path is wrong.**"),
              "", "## A grid", "",
              f"{grid_row['configs']} configurations (heartbeat 10-30 s x timeout 20-240 s, sweep 5 s) x "
              f"{grid_row['viewers']:,} viewers x {grid_row['hours']:g} h, interval timers, 30 % silent departures: "
              f"**{_spread(grid_row['cpu_s'])} s CPU**, {_spread(grid_row['wall_s'])} s wall (target <= 30 s).", "",
              "## The plain executor, for scale", "",
              f"{engine_row['events']:,} events (200 viewers x 1 h): event by event through PresenceProtocol and "
              f"BookStore {engine_row['engine_cpu_s']:.2f} s ({engine_row['engine_us_per_event']:.1f} us/event), "
              f"vectorised {engine_row['fast_cpu_s']:.3f} s; same events (tests/model/test_equivalence.py)."]
    return lines


if __name__ == "__main__":
    main()
