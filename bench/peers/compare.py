"""Notebook 06's measurements: rtlib against Socket.IO (Node and Python) and two plain forwarders.

The same open-loop load driver as :mod:`bench.cost.server_cost` and :mod:`bench.cost.scenarios` (worker
processes on raw sockets, latency from the *scheduled* send time, CPU of the server and redis-server from /proc),
against every target in :data:`TARGET_ORDER`, with a fresh redis-server and server per case:

* S1: 1,000 receivers / 50 workspaces / 100 updates/s, and S2: 200 receivers / 1 workspace / 100 updates/s
  (p50/p99 latency, server + Redis CPU per delivery);
* the S3 knee: 200 receivers in one workspace, updates/s stepped up until p99 > 50 ms, a loss, or < 95% of
  the offered deliveries/s; then one bisection step; the knee is the last passing deliveries/s;
* idle memory: server RSS per idle connection (:func:`bench.cost.idle_memory.idle_case`);
* the Socket.IO client bundle, minified and gzipped, as npm ships it (:func:`bench.servers.node_peers.bundle_sizes`).

Targets alternate inside each scenario, so a drift of the (shared, 2-core) machine favours none of them, and S1/S2
run ``Plan.rounds`` times (alternating rounds); the tables keep each target's median-CPU run
(:func:`median_run`). One run is not enough to order rtlib and Node ``ws`` at S2: CPU per delivery falls when a
server runs behind, and rtlib's fell further (it writes the events that queued up meanwhile in one ``write`` per
socket, Node ``ws`` writes each): one loaded run ranked rtlib ahead, the quiet ones behind
(``bench/results/hot_path.md``, 2026-12-08).
Node targets need ``node`` and ``npm`` (:func:`bench.servers.node_peers.node_status`); without them they are
skipped and the reason is recorded. Results: a JSON-able dict (``bench/results/websockets_vs_socketio.json``
for a full run).

Run alone: ``python -m bench.peers.compare [--ci]``
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from bench.cost import idle_memory
from bench.cost.scenarios import S3_RTLIB_ARGS, FixedSenders, s3_verdict, wait_for_quiet
from bench.cost.scenarios_report import background_pct
from bench.harness.case import Options, Scenario, background_load, machine_info, raise_fd_limit, run_case
from bench.harness.targets import BENCH_DIR, PEERS, Target, rtlib_target, toy_target
from bench.peers import compare_report as cr
from bench.peers.compare_report import LABELS, TARGET_ORDER
from bench.servers import node_peers
from rtlib.lab.progress import step as progress_step

__all__ = ["LABELS", "RESULTS", "TARGET_ORDER", "Plan", "load", "median_run", "run", "save"]

NODE_TARGETS = ("socketio-node", "ws-node")
RESULTS = BENCH_DIR / "results" / "websockets_vs_socketio.json"


@dataclass(frozen=True)
class Plan:
    """What to measure. The defaults are the full size (``make demo``); :meth:`ci` is a smoke run."""

    targets: tuple[str, ...] = TARGET_ORDER
    s1: tuple[int, int, float] = (1000, 50, 100.0)  # receivers, workspaces, updates/s
    s2: tuple[int, int, float] = (200, 1, 100.0)
    duration: float = 5.0  # S1/S2 send phase, s
    s3_rates: tuple[int, ...] = (50, 100, 200, 400, 800, 1600)
    s3_step: float = 2.0  # send phase per S3 rate, s
    s3_refine: int = 1  # bisection steps between the last pass and the first failure
    s3_receivers: int = 200
    idle_connections: int = 2000
    idle_workspaces: int = 20
    warmup_min: float = 1.0
    #: A case during which other processes used more than this % of a core is run again (the machine is shared),
    #: up to ``retries`` times, and the quietest attempt is kept; S3 reruns only failures.
    noisy_pct: float = 30.0
    retries: int = 1
    wait_quiet: float = 0.0  # before each case, wait up to this many seconds for other jobs to quieten down
    #: S1/S2 runs of every target (alternating rounds); the tables keep the median-CPU run of each. 1 at CI size:
    #: its orderings are not claims (see compare_report.claims); ``make bench-socketio`` records with 3.
    rounds: int = 1

    @classmethod
    def ci(cls, targets: tuple[str, ...] = TARGET_ORDER) -> Plan:
        return cls(targets=targets, s1=(200, 10, 50.0), s2=(50, 1, 50.0), duration=1.0, s3_rates=(200,),
                   s3_step=1.0, s3_refine=0, s3_receivers=50, idle_connections=200, idle_workspaces=10,
                   warmup_min=0.5, retries=0)


#: rtlib paces handshakes (200/s): lifted so that opening 1,000-2,000 connections takes as long as for the peers
#: (nothing is measured while connecting).
HANDSHAKES = ("--handshake-rate", "100000", "--handshake-burst", "100000")


def make_target(name: str, s3: bool = False) -> Target:
    if name == "rtlib":
        # S3's 4 senders exceed rtlib's per-connection limit (100 frames/s): lift it (the bucket costs the same).
        return rtlib_target(extra_args=(*HANDSHAKES, *(S3_RTLIB_ARGS if s3 else ())))
    if name == "toy":
        return toy_target()
    return PEERS[name]()


def _options(plan: Plan, duration: float, receiver_procs: int = 1) -> Options:
    return Options(duration=duration, warmup_min=plan.warmup_min, warmup_timeout=30.0, drain_timeout=5.0,
                   receiver_procs=receiver_procs, quick=False,
                   latency_resamples=400)  # p99 with its 95 % interval over the case's deliveries


def _once(name: str, scenario: Scenario, opts: Options, s3: bool = False) -> dict[str, Any]:
    try:
        return run_case(make_target(name, s3), scenario, opts)
    except Exception as exc:  # one broken target must not hide the others' numbers
        return {"target": name, "scenario": scenario.name, "rate": scenario.rate,
                "error": f"{type(exc).__name__}: {exc}"}


def _case(name: str, scenario: Scenario, opts: Options, plan: Plan, say: Callable[[str], None], s3: bool = False,
          rerun_if: Callable[[dict[str, Any]], bool] = lambda r: True) -> dict[str, Any]:
    """One case; rerun (``plan.retries`` times at most) while another job was busy during it and ``rerun_if``
    holds; keep the attempt with the least background load."""
    def attempt() -> dict[str, Any]:
        if plan.wait_quiet:
            wait_for_quiet(plan.wait_quiet)
        return _once(name, scenario, opts, s3)

    attempts = [attempt()]
    if "error" in attempts[0]:
        # A case that failed (e.g. Socket.IO/Node had 920 of 1,000 receivers warmed up after 30 s in one make demo,
        # 2026-12-08) is tried once more whatever ``retries`` says: that is not a noisy measurement to re-draw but a
        # run that measured nothing, and notebook 06 asserts that every target ran.
        say(f"   {scenario.name} {name}: failed ({attempts[0]['error'].splitlines()[0][:120]}), trying once more")
        attempts.append(attempt())
    while (len(attempts) <= plan.retries and rerun_if(attempts[-1])
           and plan.noisy_pct < background_pct(attempts[-1]) < math.inf):
        say(f"   {scenario.name} {name}: other load {background_pct(attempts[-1]):.0f}% of a core, rerunning")
        attempts.append(attempt())
    ok = [a for a in attempts if "error" not in a]  # the quietest attempt that measured something
    best = min(ok, key=background_pct) if ok else attempts[-1]
    best["attempts_other_pct"] = [round(background_pct(a), 1) for a in attempts]
    return best


def _brief(r: dict[str, Any]) -> str:
    if "error" in r:
        return f"FAILED: {r['error'].splitlines()[0][:200]}"
    return (f"{r['cpu_us_per_delivery']['total']:.1f} µs/delivery, p50/p99 {r['latency_ms']['p50']:.1f}/"
            f"{r['latency_ms']['p99']:.1f} ms, lost {r['lost']}, other load {r['cpu_pct']['other']:.0f}%")


def _s3_knee(name: str, plan: Plan, say: Callable[[str], None]) -> dict[str, Any]:
    """Step the rate up until the first failure, then bisect ``s3_refine`` times; the knee is the last pass."""
    steps: list[dict[str, Any]] = []

    def attempt(rate: float) -> bool:
        scenario = FixedSenders("S3", plan.s3_receivers, 1, float(rate), f"S3 at {rate:g} updates/s")
        progress_step(f"S3 {name} at {rate:g} updates/s")
        r = _case(name, scenario, _options(plan, plan.s3_step, receiver_procs=2), plan, say, s3=True,
                  rerun_if=lambda r: not s3_verdict(r)["pass"])  # only a failure is worth a quieter retry
        r.update(s3_verdict(r))
        steps.append(r)
        say(f"   S3 {name} {rate:g}/s: {'pass' if r['pass'] else 'FAIL (' + r['why'] + ')'}")
        return r["pass"]

    for rate in plan.s3_rates:
        if not attempt(rate):
            break
    for _ in range(plan.s3_refine):
        passed = [s["rate"] for s in steps if s["pass"]]
        failed = [s["rate"] for s in steps if not s["pass"]]
        if not passed or not failed:
            break
        mid = round((max(passed) + min(failed)) / 2 / 25) * 25
        if mid in (max(passed), min(failed)):
            break
        attempt(mid)
    steps.sort(key=lambda s: s["rate"])
    first_fail = next((s["rate"] for s in steps if not s["pass"]), math.inf)
    passing = [s for s in steps if s["pass"] and s["rate"] < first_fail]
    knee = passing[-1] if passing else None
    return {"steps": steps, "knee_rate": knee["rate"] if knee else None,
            "knee_deliveries_per_s": knee["deliveries_per_s"] if knee else 0.0, "capped": first_fail == math.inf}


def run(plan: Plan, say: Callable[[str], None] = print) -> dict[str, Any]:
    """Measure every case of ``plan``; a JSON-able dict (see the module docstring)."""
    raise_fd_limit()
    idle_memory.raise_fd_limit(plan.idle_connections * 2 + 1024)
    started = time.monotonic()
    node_ok, node_why = node_peers.node_status() if any(t in NODE_TARGETS for t in plan.targets) else (True, "")
    targets = [t for t in plan.targets if node_ok or t not in NODE_TARGETS]
    data: dict[str, Any] = {
        **machine_info(), "plan": asdict(plan), "targets": targets, "node": node_why if node_ok else None,
        "skipped": {t: node_why for t in plan.targets if t not in targets}, "versions": node_peers.node_versions(),
        "background_load_pct": background_load(), "latency_cases": [], "s3": {}, "idle": [],
        "bundle": node_peers.bundle_sizes(),
    }
    data["versions"].update(_python_versions())
    data["latency_runs"] = []
    for key, (receivers, workspaces, rate) in (("S1", plan.s1), ("S2", plan.s2)):
        scenario = Scenario(key, receivers, workspaces, rate,
                            f"{receivers:,} receivers / {workspaces} workspace(s), {rate:g} updates/s")
        runs: dict[str, list[dict[str, Any]]] = {name: [] for name in targets}
        for round_no in range(max(1, plan.rounds)):
            for name in targets:  # alternating: a drift of the machine during the rounds favours no target
                progress_step(f"{key} {name}" + (f" (round {round_no + 1})" if plan.rounds > 1 else ""))
                r = _case(name, scenario, _options(plan, plan.duration), plan, say)
                r["round"] = round_no
                say(f"   {key} {name}: {_brief(r)}")
                runs[name].append(r)
        for name in targets:
            data["latency_runs"] += runs[name]
            data["latency_cases"].append(median_run(runs[name]))
    for name in targets:
        data["s3"][name] = _s3_knee(name, plan, say)
    for name in targets:
        progress_step(f"idle memory {name}")
        try:
            case = idle_memory.idle_case(make_target(name), plan.idle_connections, plan.idle_workspaces)
        except Exception as exc:
            case = {"target": name, "error": f"{type(exc).__name__}: {exc}"}
        say(f"   idle {name}: " + (f"{case['kib_per_connection']:.1f} KiB/connection" if "error" not in case
                                   else case["error"][:200]))
        data["idle"].append(case)
    data["background_load_pct_after"] = background_load()
    data["seconds"] = round(time.monotonic() - started, 1)
    return data


def median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Of one target's runs of a scenario, the one with the median CPU per delivery (the lower middle of an even
    count), with every run's CPU and other load beside it (``cpu_us_runs``, ``other_pct_runs``); the last run if
    none succeeded."""
    ok = sorted((r for r in runs if "error" not in r), key=lambda r: r["cpu_us_per_delivery"]["total"])
    if not ok:
        return runs[-1]
    return {**ok[(len(ok) - 1) // 2], "rounds": len(runs),
            "cpu_us_runs": [r["cpu_us_per_delivery"]["total"] for r in ok],
            "other_pct_runs": [r["cpu_pct"]["other"] for r in ok]}


def _python_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("websockets", "python-socketio", "python-engineio", "aiohttp", "redis"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            pass
    return out


def save(data: dict[str, Any], path: Path = RESULTS) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1, default=str) + "\n")
    return path


def load(path: Path = RESULTS) -> dict[str, Any]:
    return json.loads(path.read_text())


def markdown(data: dict[str, Any]) -> str:
    """The tables of notebook 06 as text (:mod:`bench.peers.compare_report`), for ``bench/results/*.md`` and the
    terminal."""
    text, headline, verdict = cr.answer(data)
    blocks = [("S1 and S2", cr.latency_table(data)), ("Ratios: peer / rtlib (> 1: rtlib better)", cr.ratios(data)),
              ("S3 knee", cr.knee_table(data)), ("Idle memory", cr.idle_table(data)),
              ("Client bundle", cr.bundle_table(data))]
    versions = ", ".join(f"{k} {v}" for k, v in data.get("versions", {}).items())
    return "\n".join([
        "# rtlib vs Socket.IO (notebook 06)", "",
        f"{data['date']} · {data['nproc']} cores ({data['cpu_model']}) · Python {data['python']} · "
        f"{data['redis_server'].split(' sha=')[0]} · {versions}", "",
        f"Background load {data['background_load_pct']:.0f}% of a core before the run, "
        f"{data['background_load_pct_after']:.0f}% after (the machine is shared: the `other load %` column says "
        f"how much else ran during each case). {data['seconds']:.0f} s in all. Skipped: {data['skipped'] or 'none'}.",
        "", text, "", f"Verdict on \"ws, not Socket.IO\": **{verdict[0]}**: {verdict[1]}.", "",
        *[f"## {title}\n\n```\n{frame.to_string(index=False)}\n```\n" for title, frame in blocks],
    ])


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ci", action="store_true", help="a smoke run (about 2 minutes)")
    parser.add_argument("--targets", default=",".join(TARGET_ORDER))
    parser.add_argument("--out", type=Path, help=f"default {RESULTS} (full size only)")
    parser.add_argument("--retries", type=int, default=1, help="reruns of a case disturbed by other jobs (default 1)")
    parser.add_argument("--rounds", type=int, default=None,
                        help="S1/S2 runs per target, alternating; the median-CPU run is kept (default 3; --ci: 1)")
    parser.add_argument("--wait-quiet", type=float, default=0.0, metavar="S",
                        help="before each case, wait up to S seconds for background load below 10%% of a core")
    args = parser.parse_args()
    names = tuple(args.targets.split(","))
    plan = Plan.ci(names) if args.ci else Plan(targets=names)
    rounds = args.rounds if args.rounds is not None else (1 if args.ci else 3)
    result = run(replace(plan, retries=args.retries, wait_quiet=args.wait_quiet, rounds=rounds))
    print(markdown(result))
    if args.out or not args.ci:
        path = save(result, args.out or RESULTS)
        path.with_suffix(".md").write_text(markdown(result))
        print(f"wrote {path} and {path.with_suffix('.md')}")
