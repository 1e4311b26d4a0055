"""rtlib on one Redis against rtlib on a 3-master Redis Cluster (issue 22 item 2), measured in the same run.

Each case is :mod:`bench.cost.server_cost`'s (one ``rtlib serve`` process, receiver and sender workers, an
open-loop send phase; :mod:`bench.harness.case`), with the Redis side swapped: a fresh redis-server, or a fresh
local cluster of 3 masters (:class:`~rtlib.server.redis_cluster.RedisClusterProcess`, no replicas) that the
server finds from one node's URL. Redis CPU is summed over the cluster's nodes; per shard is that sum / 3 (the
scenario's workspaces spread over the three masters' slots). Backends alternate, so drift favours neither.

Run: ``python -m bench.cost.cluster_cost [--duration 10] [--scenarios B] [--repeat 2] [--quick]``
Writes ``bench/results/cluster_cost.json`` and ``.md`` (``cluster_cost.quick.*`` with ``--quick``).
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import time
from contextlib import ExitStack
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


class _Nodes:
    """The Redis side of a case for :func:`bench.harness.case.measure`: its probes sum every node's CPU."""

    def __init__(self, pids: list[int]) -> None:
        self.pids, self.pid = pids, pids[0]


def _probes(server: Any, redis: _Nodes, receivers: Any, sender: Any) -> dict[str, Any]:
    probes = _original_probes(server, redis, receivers, sender)
    probes["redis"] = procstat.summed(redis.pids)
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
        redis_us = result["cpu_us_per_delivery"]["redis"] * scenario.per_workspace  # per update
        result.update(backend=backend, connect_s=round(connect_s, 2), redis_cpu_us_per_update=round(redis_us, 2),
                      redis_cpu_us_per_update_per_shard=round(redis_us / (SHARDS if backend != "redis" else 1), 2))
        return result


def markdown(meta: dict[str, Any], results: list[dict[str, Any]]) -> str:
    lines = ["# rtlib on one Redis vs a 3-master Redis Cluster", "",
             f"{meta['date']}, commit {meta['commit']}, {meta['nproc']} x {meta['cpu_model']}; background load "
             f"{meta['background_load_pct']:.0f} % of a core before the run. Send phase {meta['duration']} s per "
             "case, backends alternating (`python -m bench.cost.cluster_cost`).", "",
             "| backend | scen. | deliveries/s | lost | server µs/delivery | Redis µs/update (all nodes) | "
             "Redis µs/update per shard | p50 ms | p99 ms |", "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        if "error" in r:
            lines.append(f"| {r['backend']} | {r.get('scenario', '?')} | failed: {r['error']} |||||||")
            continue
        cost, lat = r["cpu_us_per_delivery"], r["latency_ms"]
        lines.append(f"| {r['backend']} | {r['scenario']} | {r['deliveries_per_s']:,.0f} | {r['lost']} | "
                     f"{cost['server']:.1f} | {r['redis_cpu_us_per_update']:.1f} | "
                     f"{r['redis_cpu_us_per_update_per_shard']:.1f} | {lat['p50']:.2f} | {lat['p99']:.2f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="rtlib on one Redis vs a 3-master Redis Cluster.")
    parser.add_argument("--duration", type=float, default=None, help="send phase in seconds (default 10)")
    parser.add_argument("--scenarios", default="B", help="comma-separated, of: " + ",".join(SCENARIOS))
    parser.add_argument("--repeat", type=int, default=2, help="runs of every case, backends alternating")
    parser.add_argument("--quick", action="store_true", help="a short smoke run (2 s send phase)")
    args = parser.parse_args(argv)
    opts = Options(duration=args.duration or (2.0 if args.quick else 10.0), warmup_min=0.5 if args.quick else 2.0,
                   warmup_timeout=30.0, drain_timeout=5.0, receiver_procs=1, quick=args.quick)
    raise_fd_limit()
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=BENCH_DIR)
    meta = {**machine_info(), "duration": opts.duration, "background_load_pct": background_load(),
            "commit": commit.stdout.strip() or "?"}
    results: list[dict[str, Any]] = []
    for name in args.scenarios.split(","):
        for backend in [b for _ in range(args.repeat) for b in BACKENDS]:
            print(f"== {backend} / scenario {name}: {SCENARIOS[name].description}", flush=True)
            try:
                result = run_backend(backend, SCENARIOS[name], opts)
            except Exception as exc:  # one broken case must not hide the others
                result = {"backend": backend, "scenario": name, "error": f"{type(exc).__name__}: {exc}"}
                print(f"   FAILED: {result['error']}", flush=True)
            else:
                print(f"   {result['received']:,}/{result['expected']:,} deliveries, server "
                      f"{result['cpu_us_per_delivery']['server']:.1f} µs/delivery, Redis "
                      f"{result['redis_cpu_us_per_update']:.1f} µs/update, p99 {result['latency_ms']['p99']:.2f} ms",
                      flush=True)
            results.append(result)
    prefix = BENCH_DIR / "results" / ("cluster_cost.quick" if args.quick else "cluster_cost")
    Path(f"{prefix}.json").write_text(json.dumps({"meta": meta, "results": results}, indent=1) + "\n")
    Path(f"{prefix}.md").write_text(markdown(meta, results))
    print(f"wrote {prefix}.md", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
