"""rtlib on one Redis against rtlib on a 3-master Redis Cluster (issue 22 item 2), measured in the same run.

Each case is :mod:`bench.cost.server_cost`'s (one ``rtlib serve`` process, receiver and sender workers, an
open-loop send phase; :mod:`bench.harness.case`), with the Redis side swapped: a fresh redis-server, or a fresh
local cluster of 3 masters (:class:`~rtlib.server.redis_cluster.RedisClusterProcess`, no replicas) that the
server finds from one node's URL. Backends alternate, so drift favours neither.

Redis CPU is summed over the cluster's nodes from the scheduler's nanosecond runtime
(:func:`bench.harness.procstat.precise_cpu_seconds`): tick-based ``/proc/<pid>/stat`` moves in 10 ms steps,
which at 100 updates/s over 10 s is already a 10 µs/update step per node. Before each send phase the case
idles ``IDLE_S`` seconds with every connection open, and that background (Redis's cron on every node, the
cluster bus pinging between nodes, the server's timers) is reported, then subtracted over the send + drain
window: the **net** cost is what an update adds. A cluster of 3 nodes idles at 3 crons plus its bus, which a
single Redis does not have; the gross figure keeps it, the net one answers "does an update cost more on a
cluster?". Per shard is the cluster's sum / 3 (the scenario's workspaces spread over the three masters' slots).

With ``--equal-shard-load`` the cluster runs each scenario at 3 x its rate, so every master carries what the
single Redis carries: per update per shard is then compared at the same load per Redis process. (At the same
*total* rate each master sees a third of the traffic, and a Redis event-loop turn, a reply ``write`` and a
pub/sub ``write`` are shared by fewer commands: a per-update cost that falls with load reads as cluster overhead.)

Run: ``python -m bench.cost.cluster_cost [--duration 15] [--scenarios B,B400] [--repeat 4] [--equal-shard-load]``
Writes ``bench/results/cluster_cost.json`` and ``.md`` (``cluster_cost.quick.*`` with ``--quick``).
"""

from __future__ import annotations

import argparse
import json
import signal
import statistics
import subprocess
import sys
import time
from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path
from typing import Any
from unittest import mock

from bench.cost.server_cost import SCENARIOS
from bench.harness import case, procstat
from bench.harness.case import Options, Scenario, background_load, connect_all, machine_info, raise_fd_limit
from bench.harness.targets import ServerProcess, rtlib_target
from rtlib.server.redis_cluster import RedisClusterProcess
from rtlib.server.redis_process import RedisProcess, free_port

BENCH_DIR = Path(__file__).resolve().parents[1]
BACKENDS = ("redis", "cluster3")
SHARDS = 3
IDLE_S = 10.0  # seconds of idle background measured before each send phase
#: The issue's bar: Redis CPU per update and server CPU per delivery on the cluster within 10 % of one Redis.
TOLERANCE = 0.10


class _Nodes:
    """The Redis side of a case for :func:`bench.harness.case.measure`: its probes sum every node's CPU."""

    def __init__(self, pids: list[int]) -> None:
        self.pids, self.pid = pids, pids[0]


def _probes(server: Any, redis: _Nodes, receivers: Any, sender: Any) -> dict[str, Any]:
    probes = _original_probes(server, redis, receivers, sender)
    probes["redis"] = procstat.summed(redis.pids, procstat.precise_cpu_seconds)
    return probes


_original_probes = case.cpu_probes


def run_backend(backend: str, scenario: Scenario, opts: Options) -> dict[str, Any]:
    """Fresh Redis (or cluster) and server, connect, warm up, measure; everything stopped on the way out."""
    target = rtlib_target()
    with ExitStack() as stack:
        if backend == "redis":
            single = stack.enter_context(RedisProcess())
            url, pids = single.url, [single.pid]
        else:
            cluster = stack.enter_context(RedisClusterProcess(masters=SHARDS))
            url, pids = cluster.url, [node.pid for node in cluster.nodes]
        port = free_port()
        server = stack.enter_context(ServerProcess(target.command(port, url), port))
        receivers, sender = case.start_workers(stack, target, port, scenario, opts)
        t = time.monotonic()
        connect_all(receivers, sender, scenario)
        connect_s = time.monotonic() - t
        case.warm_up(receivers, sender, server, scenario, opts)
        with mock.patch.object(case, "cpu_probes", _probes):
            result = case.measure(receivers, sender, server, _Nodes([p for p in pids if p]), scenario, opts)
        result.update(backend=backend, connect_s=round(connect_s, 2), **net_costs(result, backend))
        return result


def net_costs(result: dict[str, Any], backend: str) -> dict[str, float]:
    """Gross and net (idle background subtracted) Redis CPU per update and server CPU per delivery."""
    received, updates = result["received"], max(1, result["updates_sent"])
    window = result["send_phase_s"] + result["drain_s"]  # the span the CPU was read over (case.summarise)
    idle = result.get("idle_cpu_ms_per_s", {"server": 0.0, "redis": 0.0})
    redis_s = result["cpu_us_per_delivery"]["redis"] * received / 1e6
    server_s = result["cpu_us_per_delivery"]["server"] * received / 1e6
    shards = SHARDS if backend != "redis" else 1
    redis_us = 1e6 * redis_s / updates
    redis_net = 1e6 * (redis_s - idle["redis"] / 1e3 * window) / updates
    return {"redis_cpu_us_per_update": round(redis_us, 2),
            "redis_cpu_us_per_update_per_shard": round(redis_us / shards, 2),
            "redis_net_us_per_update": round(redis_net, 2),
            "redis_net_us_per_update_per_shard": round(redis_net / shards, 2),
            "server_net_us_per_delivery": round(1e6 * (server_s - idle["server"] / 1e3 * window) / max(1, received), 2)}


def _pair(result: dict[str, Any]) -> str:
    """The scenario a run is compared under (a cluster run at 3 x the rate is paired with its base scenario)."""
    return result.get("pair", result.get("scenario", "?"))


def _median_spread(values: list[float]) -> str:
    return f"{statistics.median(values):.1f} ({min(values):.1f}-{max(values):.1f})" if values else "-"


def summary(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per scenario: each backend's medians (and ranges) over its runs, and cluster / single ratios."""
    out = []
    for name in dict.fromkeys(_pair(r) for r in results if "error" not in r):
        runs = {b: [r for r in results if _pair(r) == name and r["backend"] == b and "error" not in r]
                for b in BACKENDS}
        row: dict[str, Any] = {"scenario": name, "runs": {b: len(v) for b, v in runs.items()},
                               "rate": {b: v[0]["rate"] if v else None for b, v in runs.items()}}
        for key in ("redis_cpu_us_per_update", "redis_net_us_per_update", "server_net_us_per_delivery"):
            row[key] = {b: [r[key] for r in v] for b, v in runs.items()}
        row["server_us_per_delivery"] = {b: [r["cpu_us_per_delivery"]["server"] for r in v] for b, v in runs.items()}
        row["idle_redis_ms_per_s"] = {b: [r["idle_cpu_ms_per_s"]["redis"] for r in v] for b, v in runs.items()}
        for key in ("redis_cpu_us_per_update", "redis_net_us_per_update", "server_us_per_delivery",
                    "server_net_us_per_delivery"):
            single, cluster = row[key]["redis"], row[key]["cluster3"]
            row[f"{key}_ratio"] = (round(statistics.median(cluster) / statistics.median(single), 3)
                                   if single and cluster and statistics.median(single) > 0 else None)
        out.append(row)
    return out


def markdown(meta: dict[str, Any], results: list[dict[str, Any]]) -> str:
    lines = ["# rtlib on one Redis vs a 3-master Redis Cluster", "",
             f"{meta['date']}, commit {meta['commit']}, {meta['nproc']} x {meta['cpu_model']}; background load "
             f"{meta['background_load_pct']:.0f} % of a core before the run. Send phase {meta['duration']} s per "
             "case, backends alternating (`python -m bench.cost.cluster_cost`).", "",
             f"Each case idles {meta.get('idle_s', 0):g} s with every connection open first; that background is "
             "subtracted over the send + drain window for the net figures. Redis CPU: nanosecond scheduler runtime "
             "summed over the nodes.", "",
             "| backend | scen. | deliveries/s | lost | server µs/delivery | server net | Redis idle ms/s | "
             "Redis µs/update (all nodes) | Redis net µs/update | net per shard | p50 ms | p99 ms |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        if "error" in r:
            lines.append(f"| {r['backend']} | {r.get('scenario', '?')} | failed: {r['error']} ||||||||||")
            continue
        cost, lat = r["cpu_us_per_delivery"], r["latency_ms"]
        lines.append(f"| {r['backend']} | {r['scenario']} | {r['deliveries_per_s']:,.0f} | {r['lost']} | "
                     f"{cost['server']:.1f} | {r['server_net_us_per_delivery']:.1f} | "
                     f"{r['idle_cpu_ms_per_s']['redis']:.2f} | {r['redis_cpu_us_per_update']:.1f} | "
                     f"{r['redis_net_us_per_update']:.1f} | {r['redis_net_us_per_update_per_shard']:.1f} | "
                     f"{lat['p50']:.2f} | {lat['p99']:.2f} |")
    lines += ["", f"Medians over each backend's runs (range in brackets); ratio = cluster / one Redis; the issue's bar "
              f"is within {TOLERANCE:.0%}.", "",
              "| scen. | runs | measure | one Redis | 3-master cluster | ratio | at most +10 %? |",
              "|---|---|---|---|---|---|---|"]
    names = {"redis_cpu_us_per_update": "Redis µs/update, gross (idle included)",
             "redis_net_us_per_update": "Redis µs/update, net of idle",
             "server_us_per_delivery": "server µs/delivery, gross",
             "server_net_us_per_delivery": "server µs/delivery, net of idle"}
    for row in summary(results):
        for key, label in names.items():
            ratio = row[f"{key}_ratio"]
            verdict = "-" if ratio is None else "yes" if ratio <= 1 + TOLERANCE else "no"  # cheaper is fine
            rates = f"{row['rate']['redis']:g}/{row['rate']['cluster3']:g} updates/s"
            runs = f"{row['runs']['redis']}+{row['runs']['cluster3']}"
            lines.append(f"| {row['scenario']} ({rates}) | {runs} | {label} | "
                         f"{_median_spread(row[key]['redis'])} | {_median_spread(row[key]['cluster3'])} | "
                         f"{'-' if ratio is None else f'{ratio:.2f}'} | {verdict} |")
        lines.append(f"| {row['scenario']} ({rates}) | | Redis idle background, ms CPU/s (all nodes) | "
                     f"{_median_spread(row['idle_redis_ms_per_s']['redis'])} | "
                     f"{_median_spread(row['idle_redis_ms_per_s']['cluster3'])} | | |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="rtlib on one Redis vs a 3-master Redis Cluster.")
    parser.add_argument("--duration", type=float, default=None, help="send phase in seconds (default 15)")
    parser.add_argument("--scenarios", default="B,B400", help="comma-separated, of: " + ",".join(SCENARIOS))
    parser.add_argument("--repeat", type=int, default=4, help="runs of every case, backends alternating")
    parser.add_argument("--equal-shard-load", action="store_true",
                        help=f"run the cluster at {SHARDS} x each scenario's rate (the same load per Redis process)")
    parser.add_argument("--idle", type=float, default=None, help=f"idle seconds before each send phase "
                        f"(default {IDLE_S:g}; 1 with --quick)")
    parser.add_argument("--quick", action="store_true", help="a short smoke run (2 s send phase)")
    args = parser.parse_args(argv)
    opts = Options(duration=args.duration or (2.0 if args.quick else 15.0), warmup_min=0.5 if args.quick else 2.0,
                   warmup_timeout=30.0, drain_timeout=5.0, receiver_procs=1, quick=args.quick,
                   idle=args.idle if args.idle is not None else (1.0 if args.quick else IDLE_S))
    raise_fd_limit()
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=BENCH_DIR)
    meta = {**machine_info(), "duration": opts.duration, "idle_s": opts.idle, "background_load_pct": background_load(),
            "equal_shard_load": args.equal_shard_load,
            "commit": commit.stdout.strip() or "?"}
    results: list[dict[str, Any]] = []
    for name in args.scenarios.split(","):
        for backend in [b for _ in range(args.repeat) for b in BACKENDS]:
            scenario = SCENARIOS[name]
            if backend != "redis" and args.equal_shard_load:
                scenario = replace(scenario, name=f"{name}x{SHARDS}", rate=scenario.rate * SHARDS,
                                   description=f"{scenario.description}, x{SHARDS} the rate")
            print(f"== {backend} / scenario {scenario.name}: {scenario.description}", flush=True)
            try:
                result = run_backend(backend, scenario, opts)
                result["pair"] = name
            except Exception as exc:  # one broken case must not hide the others
                result = {"backend": backend, "scenario": name, "error": f"{type(exc).__name__}: {exc}"}
                print(f"   FAILED: {result['error']}", flush=True)
            else:
                print(f"   {result['received']:,}/{result['expected']:,} deliveries, server "
                      f"{result['cpu_us_per_delivery']['server']:.1f} µs/delivery, Redis "
                      f"{result['redis_cpu_us_per_update']:.1f} µs/update, p99 {result['latency_ms']['p99']:.2f} ms",
                      flush=True)
            results.append(result)
    prefix = BENCH_DIR / "results" / ("cluster_cost.quick" if args.quick else
                                      "cluster_cost_per_shard" if args.equal_shard_load else "cluster_cost")
    Path(f"{prefix}.json").write_text(json.dumps({"meta": meta, "results": results,
                                                     "summary": summary(results)}, indent=1) + "\n")
    Path(f"{prefix}.md").write_text(markdown(meta, results))
    print(f"wrote {prefix}.md", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
