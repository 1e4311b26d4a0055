"""``rtlib tune``: its options, and running the model's search over designs and numbers for a browser population.

The parser is built without the lab extra (``rtlib --help`` must work on a server install), so the grid's
defaults are written here as text; ``tests/model/test_tune.py`` checks they are
:data:`rtlib.model.search.DEFAULT_GRID`.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any

from rtlib.cli.errors import fail
from rtlib.protocol.presence import PRESENCE_MODES

__all__ = ["DEFAULTS", "add_tune_arguments", "run_tune"]

#: The default grid as ``rtlib tune`` options (rtlib.model.search.DEFAULT_GRID, checked by a test).
DEFAULTS = {"heartbeats": "10,20,30", "timeouts": "20,30,45,60,90", "sweeps": "5", "graces": "0,15",
            "presence_modes": ",".join(PRESENCE_MODES), "visibility_beat": "off,on"}
_ON_OFF = {"off": False, "on": True, "false": False, "true": True, "no": False, "yes": True, "0": False, "1": True}


def add_tune_arguments(tune: argparse.ArgumentParser) -> None:
    """The options of ``rtlib tune``."""
    tune.add_argument("--max-detection", type=float, default=60.0, metavar="S",
                      help="p99 of the delay from a silent departure to its presence.left")
    tune.add_argument("--max-mistakes", type=float, default=0.01, metavar="RATE",
                      help="false departures per present viewer-hour (judged on the 95 %% upper bound)")
    tune.add_argument("--population", metavar="SHARE:SPEC,...",
                      help="the viewers as shares of client models, e.g. 65%%:interval:{hb},31.5%%:chrome:{hb}:60,"
                           "3.5%%:frozen:{hb} (default: that mix, with its sources printed); frozen:{hb} is a tab "
                           "that Chrome's Energy Saver freezes, bfcache:{hb} a page left and restored from the "
                           "back/forward cache, discard:{hb} a discarded tab (each [:PRESENT_MEAN[:AWAY_MEAN]] s; "
                           "all three count as not viewing while away)")
    tune.add_argument("--client-model", action="append", metavar="SPEC",
                      help="instead of a population: repeatable, every model must meet the requirement; {hb} = "
                           "the heartbeat interval being tried, e.g. interval:{hb}, lossy:0.1:interval:{hb}, "
                           "chrome:{hb}:60 (hidden Chrome tabs), ios:{hb}, sleep:{hb}")
    tune.add_argument("--heartbeats", default=DEFAULTS["heartbeats"], metavar="S,S,...",
                      help="heartbeat intervals to try")
    tune.add_argument("--timeouts", default=DEFAULTS["timeouts"], metavar="S,S,...", help="presence timeouts to try")
    tune.add_argument("--sweeps", default=DEFAULTS["sweeps"], metavar="S,S,...", help="sweep intervals to try")
    tune.add_argument("--graces", default=DEFAULTS["graces"], metavar="S,S,...",
                      help="leave graces to try (docs/protocol.md §9)")
    tune.add_argument("--presence-modes", "--presence-mode", default=DEFAULTS["presence_modes"], metavar="MODE,...",
                      help=f"presence modes to try, of {', '.join(PRESENCE_MODES)} (probe: the server's probes "
                           f"drive the beats)")
    tune.add_argument("--visibility-beat", nargs="?", const="on", default=DEFAULTS["visibility_beat"],
                      metavar="off,on", help="visibility beats to try in timer mode (alone: on only)")
    # 4,000 x 4 h: the viewer-hours of 2,000 x 8 h and twice the departures in half the time (a run's fixed
    # cost is its sweeps, one per 5 s of simulated time, whatever the number of viewers).
    tune.add_argument("--viewers", type=int, default=4000, help="simulated viewers per run (split by the shares)")
    tune.add_argument("--hours", type=float, default=4.0, help="simulated hours per run")
    tune.add_argument("--departures", type=float, default=0.3, help="share of viewers that vanish silently")
    tune.add_argument("--instances", type=int, default=2, help="server instances")
    tune.add_argument("--skew", type=float, default=0.0, help="clock skew between instances, seconds")
    tune.add_argument("--delay", type=float, default=0.02, help="one-way network delay, seconds")
    tune.add_argument("--jitter", type=float, default=0.0, help="+ U(0, jitter) per frame, seconds")
    tune.add_argument("--loss", type=float, default=0.0, help="network loss of heartbeat frames")
    tune.add_argument("--point-estimate", action="store_true",
                      help="judge mistakes by the measured rate instead of its 95 %% upper bound")
    tune.add_argument("--conservative", action="store_true",
                      help="judge mistakes by their 95 %% upper bound: the default now, kept for old scripts")
    tune.add_argument("--seed", type=int, default=0, help="the same seed gives the same answer")
    tune.add_argument("--workers", type=int, default=_cores(), metavar="N",
                      help="processes for the model runs (default: one per usable core; 1: in this process; the "
                           "numbers do not depend on it)")


def _cores() -> int:
    """The cores this process may run on (a container or ``taskset`` may allow fewer than the machine has)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _numbers(text: str, what: str) -> list[float]:
    try:
        values = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ValueError(f"--{what}: {text!r} is not a comma-separated list of seconds") from None
    if not values:
        raise ValueError(f"--{what}: no value given")
    return values


def _grid_args(args: argparse.Namespace) -> dict[str, list[Any]]:
    modes = [m.strip() for m in args.presence_modes.split(",") if m.strip()]
    bad = [m for m in modes if m not in PRESENCE_MODES]
    if bad or not modes:
        raise ValueError(f"--presence-modes: {', '.join(bad) or 'none given'}; choose from {', '.join(PRESENCE_MODES)}")
    beats = [v.strip().lower() for v in args.visibility_beat.split(",") if v.strip()]
    if not beats or any(v not in _ON_OFF for v in beats):
        raise ValueError(f"--visibility-beat: {args.visibility_beat!r}; expected off, on or off,on")
    return {"heartbeat_interval": _numbers(args.heartbeats, "heartbeats"),
            "timeout": _numbers(args.timeouts, "timeouts"), "sweep_interval": _numbers(args.sweeps, "sweeps"),
            "leave_grace": _numbers(args.graces, "graces"), "presence_mode": modes,
            "visibility_beat": sorted({_ON_OFF[v] for v in beats})}


def _describe(grid_args: dict[str, list[Any]], count: int) -> str:
    def nums(values: list[float]) -> str:
        return ", ".join(f"{v:g}" for v in values)

    beats = ", ".join("on" if v else "off" for v in grid_args["visibility_beat"])
    return (f"grid: {count} configurations: presence modes {', '.join(grid_args['presence_mode'])}; visibility beat "
            f"{beats} (timer mode); heartbeats {nums(grid_args['heartbeat_interval'])} s; timeouts "
            f"{nums(grid_args['timeout'])} s; leave graces {nums(grid_args['leave_grace'])} s; sweep "
            f"{nums(grid_args['sweep_interval'])} s (widen with --heartbeats/--timeouts/--graces/--presence-modes/"
            f"--visibility-beat)")


def run_tune(args: argparse.Namespace) -> None:
    """Sweep the grid over the population (or the client models), print the report; exit 2 if nothing meets it."""
    started = time.perf_counter()
    try:  # the model needs numpy, pandas and tqdm: the lab extra
        import pandas as pd  # noqa: PLC0415

        from rtlib.clientmodels.heartbeat import parse_model  # noqa: PLC0415
        from rtlib.model import ModelScenario, grid, sweep_many  # noqa: PLC0415
        from rtlib.model.population import DEFAULT_POPULATION, parse_population, sweep_population  # noqa: PLC0415
        from rtlib.model.tune import report  # noqa: PLC0415
    except ImportError as exc:
        fail(f"rtlib tune needs the lab extra ({exc.name} is missing): pip install 'rtlib[lab]'")

    try:
        if args.population and args.client_model:
            raise ValueError("give a --population or --client-model, not both")
        grid_args = _grid_args(args)
        configs = grid(**grid_args)
        if not configs:
            raise ValueError("the grid is empty: every timeout is below every heartbeat interval")
        base = ModelScenario(viewers=args.viewers, hours=args.hours, departures=args.departures,
                             instances=args.instances, skew=args.skew, delay=args.delay, jitter=args.jitter,
                             loss=args.loss, seed=args.seed)
        population = None if args.client_model else \
            parse_population(args.population) if args.population else DEFAULT_POPULATION
        for model in args.client_model or ():
            parse_model(base.replace(client=model).client_spec(30.0))
        if args.workers < 1:
            raise ValueError(f"--workers: {args.workers}; at least 1")
    except ValueError as exc:
        fail(f"rtlib tune: {exc}")
    progress = sys.stderr.isatty()
    conservative = not args.point_estimate
    if population is not None:
        results, parts = sweep_population(configs, population, base, progress=progress, workers=args.workers)
        who = f"a population of {len(population.parts)} parts"
        preamble = [f"population (shares of the {args.viewers} viewers; each part runs as its own scenario, "
                    f"pooled):", *population.describe(args.viewers)]
    else:
        results = pd.concat(sweep_many(configs, [base.replace(client=m) for m in args.client_model],
                                       progress=progress, workers=args.workers), ignore_index=True)
        parts, who, preamble = None, f"{len(args.client_model)} client models", []
    text, found = report(results, max_detection_p99=args.max_detection, max_mistakes_per_hour=args.max_mistakes,
                         conservative=conservative, parts=parts, preamble=preamble)
    print(f"rtlib tune: {len(configs)} configurations x {who}, {args.viewers} viewers x {args.hours:g} h, "
          f"{args.instances} instances, seed {args.seed}; {time.perf_counter() - started:.1f} s")
    print(_describe(grid_args, len(configs)))
    print(text)
    if not found:
        sys.exit(2)
