"""Server cost and latency: rtlib against a minimal forwarder (the "toy"), measured in the same run.

For each scenario and target, a fresh redis-server and a fresh server process are started and measured by
:func:`bench.harness.case.run_case`: receiver and sender worker processes connect, warm up, then the sender sends
``task.update`` frames open-loop for ``--duration`` seconds. Reported per case: CPU µs per delivery (server +
redis, and each), deliveries/s, lost deliveries, latency p50/p90/p99/max, and the CPU use of everything else on
the machine (is the load generator in the way?).

Scenarios:
  A  one workspace, 200 receivers, 100 updates/s            -> 20,000 deliveries/s
  B  50 workspaces x 20 receivers, 100 updates/s in total   ->  2,000 deliveries/s over 1,000 connections

Run: ``python -m bench.cost.server_cost [--duration 10] [--scenarios A,B] [--targets toy,rtlib] [--quick]``
Writes ``bench/results/server_cost.json`` and ``.md`` (``server_cost.quick.*`` with ``--quick``).
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from bench.harness.case import (
    SENDER_RATE_CAP,
    Options,
    Scenario,
    background_load,
    machine_info,
    raise_fd_limit,
    run_case,
)
from bench.harness.targets import TARGETS

BENCH_DIR = Path(__file__).resolve().parents[1]

SCENARIOS = {
    "A": Scenario("A", 200, 1, 100.0, "1 workspace x 200 receivers, 100 updates/s"),
    "B": Scenario("B", 1000, 50, 100.0, "50 workspaces x 20 receivers, 100 updates/s in total"),
    # A diagnostic, not in the suite: S1 at four times the rate (what a wake-up costs shows in the difference).
    "B400": Scenario("B400", 1000, 50, 400.0, "50 workspaces x 20 receivers, 400 updates/s in total"),
}


COLUMNS = [
    ("target", lambda r: r["target"]),
    ("scen.", lambda r: r["scenario"]),
    ("conns/ws", lambda r: f"{r['receivers']}/{r['workspaces']}"),
    ("deliveries/s", lambda r: f"{r['deliveries_per_s']:,.0f}"),
    ("lost", lambda r: f"{r['lost']:,}"),
    ("CPU µs/del", lambda r: f"**{r['cpu_us_per_delivery']['total']:.1f}**"),
    ("server µs", lambda r: f"{r['cpu_us_per_delivery']['server']:.1f}"),
    ("redis µs", lambda r: f"{r['cpu_us_per_delivery']['redis']:.1f}"),
    ("p50 ms", lambda r: f"{r['latency_ms']['p50']:.2f}"),
    ("p90 ms", lambda r: f"{r['latency_ms']['p90']:.2f}"),
    ("p99 ms", lambda r: f"{r['latency_ms']['p99']:.2f}"),
    ("max ms", lambda r: f"{r['latency_ms']['max']:.2f}"),
    ("server %", lambda r: f"{r['cpu_pct']['server']:.0f}"),
    ("redis %", lambda r: f"{r['cpu_pct']['redis']:.0f}"),
    ("loadgen %", lambda r: f"{r['cpu_pct']['receivers'] + r['cpu_pct']['sender']:.0f}"),
    ("other %", lambda r: f"{r['cpu_pct']['other']:.0f}"),
    ("load avg", lambda r: f"{r.get('loadavg_1min_before', float('nan')):.2f}"),
]


def markdown_table(results: list[dict[str, Any]]) -> str:
    rows = ["| " + " | ".join(name for name, _ in COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for r in results:
        if "error" in r:
            rows.append(f"| {r['target']} | {r['scenario']} | failed: {r['error'].splitlines()[0][:200]} |")
        else:
            rows.append("| " + " | ".join(cell(r) for _, cell in COLUMNS) + " |")
    return "\n".join(rows)


def comparison(results: list[dict[str, Any]]) -> list[str]:
    """Per scenario and target: CPU µs/delivery and p99 over the runs (min / median), and each target's median
    CPU as a multiple of the toy's and of the floor's (same run)."""
    runs: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in results:
        if "error" not in r:
            runs.setdefault((r["scenario"], r["target"]), []).append(r)
    lines = []
    for scen in sorted({s for s, _ in runs}):
        medians = {t: float(np.median([r["cpu_us_per_delivery"]["total"] for r in rs]))
                   for (s, t), rs in runs.items() if s == scen}
        for (s, target), rs in runs.items():
            if s != scen:
                continue
            cpu = [r["cpu_us_per_delivery"]["total"] for r in rs]
            p99 = [r["latency_ms"]["p99"] for r in rs]
            ratios = "".join(f", {medians[target] / medians[ref]:.2f}x {ref}" for ref in ("toy", "floor")
                             if ref in medians and ref != target)
            lines.append(f"- Scenario {scen}, {target} ({len(rs)} runs): CPU µs/delivery min {min(cpu):.1f} / "
                         f"median {medians[target]:.1f}{ratios}; p99 ms min {min(p99):.2f} / "
                         f"median {float(np.median(p99)):.2f}")
    return lines


def markdown_report(meta: dict[str, Any], results: list[dict[str, Any]]) -> str:
    params = meta["parameters"]
    lines = [
        "# Server cost: rtlib vs the toy forwarder",
        "",
        (
            f"{meta['date']} · {meta['nproc']} cores ({meta['cpu_model']}) · Python {meta['python']} · "
            f"{meta['redis_server'].split(' sha=')[0]} · websockets {meta['websockets']}"
        ),
        "",
        (
            f"Send phase {params['duration']} s per case{' (quick smoke run)' if params['quick'] else ''}; "
            f"receiver processes: {params['receiver_procs']}; a fresh redis-server and server per case; "
            f"background load before the run: {meta['background_load_pct']:.0f}% of a core."
        ),
        "",
        *(f"- {s.name}: {s.description} ({s.senders_per_workspace} sender connection(s) per workspace)"
          for s in (SCENARIOS[n] for n in params["scenarios"])),
        "",
        markdown_table(results),
        "",
        *comparison(results),
        "",
        (
            "CPU µs/del = (server + redis-server CPU time from the start of the send phase until the last "
            "delivery) / deliveries received. Latency = receipt − *scheduled* send time (open loop). "
            "`%` columns: share of one core during the send phase; loadgen = receiver + sender processes; "
            "other = every other process on the machine (if it is large, another job was running and the "
            "numbers, latency most, are suspect). Deliveries count receiving connections only (the "
            "senders' own copies and acks are not counted)."
        ),
        "",
    ]
    return "\n".join(lines)


def with_suffix(prefix: Path, suffix: str) -> Path:
    """``prefix`` + ``suffix`` (Path.with_suffix would replace the ``.quick`` of ``server_cost.quick``)."""
    return prefix.with_name(prefix.name + suffix)


def write_results(prefix: Path, meta: dict[str, Any], results: list[dict[str, Any]]) -> None:
    prefix.parent.mkdir(parents=True, exist_ok=True)
    with_suffix(prefix, ".json").write_text(json.dumps({**meta, "results": results}, indent=2) + "\n")
    with_suffix(prefix, ".md").write_text(markdown_report(meta, results))


# --- main ------------------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Server CPU cost and latency: rtlib vs a toy forwarder.")
    parser.add_argument("--duration", type=float, default=None, help="send phase in seconds (default 10)")
    parser.add_argument("--scenarios", default="A,B", help="comma-separated, of: " + ",".join(SCENARIOS))
    parser.add_argument("--targets", default="toy,rtlib", help="comma-separated, of: " + ",".join(TARGETS))
    parser.add_argument("--receiver-procs", type=int, default=1, help="receiver worker processes (default 1)")
    parser.add_argument("--quick", action="store_true", help="a short smoke run (2 s send phase)")
    parser.add_argument("--idle", type=float, default=0.0,
                        help="also measure server and Redis CPU for this many idle seconds before each send phase")
    parser.add_argument("--repeat", type=int, default=1, help="runs of every case, targets alternating (default 1)")
    parser.add_argument("--out", type=Path, default=None,
                        help="output path without suffix (default bench/results/server_cost[.quick])")
    args = parser.parse_args(argv)
    for name in args.scenarios.split(","):
        if name not in SCENARIOS:
            parser.error(f"unknown scenario {name!r}")
    for name in args.targets.split(","):
        if name not in TARGETS:
            parser.error(f"unknown target {name!r}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    opts = Options(
        duration=args.duration or (2.0 if args.quick else 10.0),
        warmup_min=0.5 if args.quick else 2.0,
        warmup_timeout=30.0,
        drain_timeout=2.0 if args.quick else 5.0,
        receiver_procs=args.receiver_procs,
        quick=args.quick,
        idle=args.idle,
    )
    prefix = args.out or BENCH_DIR / "results" / ("server_cost.quick" if args.quick else "server_cost")
    raise_fd_limit()
    # SIGTERM would end the harness without unwinding, orphaning redis-server and the server: turn it into
    # SystemExit so every `with` block stops its processes (the workers exit on their own when the pipe closes).
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    meta = {**machine_info(), "parameters": {
        **asdict(opts), "scenarios": args.scenarios.split(","), "targets": args.targets.split(","),
        "sender_rate_cap": SENDER_RATE_CAP, "repeat": args.repeat,
    }}
    meta["background_load_pct"] = background_load()
    if meta["background_load_pct"] > 20:
        print(f"warning: the machine is already {meta['background_load_pct']:.0f}% of a core busy; "
              "latencies (and, less so, CPU costs) will be disturbed: see the 'other %' column", flush=True)
    results: list[dict[str, Any]] = []
    # Targets alternate inside each scenario, so slow drift of the machine does not favour one of them.
    for scen_name in args.scenarios.split(","):
        for target_name in [t for _ in range(args.repeat) for t in args.targets.split(",")]:
            scenario = SCENARIOS[scen_name]
            print(f"== {target_name} / scenario {scen_name}: {scenario.description}", flush=True)
            try:
                result = run_case(TARGETS[target_name](), scenario, opts)
            except Exception as exc:  # one broken target must not hide the other's numbers
                result = {"target": target_name, "scenario": scen_name, "error": f"{type(exc).__name__}: {exc}"}
                print(f"   FAILED: {result['error']}", flush=True)
            else:
                print(f"   {result['received']:,}/{result['expected']:,} deliveries, "
                      f"{result['cpu_us_per_delivery']['total']:.1f} µs/delivery, "
                      f"p99 {result['latency_ms']['p99']:.2f} ms", flush=True)
            results.append(result)
    write_results(prefix, meta, results)
    print()
    print(markdown_table(results))
    print(*comparison(results), sep="\n")
    print(f"\nwrote {with_suffix(prefix, '.json')} and {with_suffix(prefix, '.md')}")
    return 1 if any("error" in r for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
