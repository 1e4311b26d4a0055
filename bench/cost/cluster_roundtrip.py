"""One routed round trip on a Redis Cluster: redis-py's cluster client vs rtlib's (issue 22 item 2), same run.

Why the hot path on a cluster stays on rtlib's own RESP connection (:mod:`rtlib.server.cluster_client`) instead
of redis-py's ``RedisCluster``: this times what one ``task.update`` asks of the client, an ``EVALSHA`` routed to
the master of its workspace's slot, for both clients on the same fresh 3-master cluster, rounds alternating.
Client CPU per call is what an rtlib instance pays per update; wall time adds the kernel and redis-server.

Run: ``python -m bench.cost.cluster_roundtrip [--calls 2000] [--rounds 5]``; writes
``bench/results/cluster_roundtrip.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import statistics
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from redis.asyncio.cluster import RedisCluster

from rtlib.server import keyspace
from rtlib.server.cluster_client import ClusterConnection, Topology
from rtlib.server.redis_cluster import RedisClusterProcess
from rtlib.server.resp import parse_redis_url

RESULTS = Path(__file__).resolve().parents[1] / "results"
SCRIPT = b"return redis.call('INCR', KEYS[1])"
WORKSPACES = [f"w{i}" for i in range(30)]  # spread over the three masters' slots


async def _timed(call: Callable[[list[str]], Awaitable[Any]], calls: int) -> tuple[float, float]:
    """(wall µs per call, client CPU µs per call) of ``calls`` sequential awaited calls."""
    keys = [[keyspace.epoch_key(WORKSPACES[i % len(WORKSPACES)])] for i in range(calls)]
    cpu, wall = time.process_time(), time.perf_counter()
    for k in keys:
        await call(k)
    return 1e6 * (time.perf_counter() - wall) / calls, 1e6 * (time.process_time() - cpu) / calls


async def measure(url: str, calls: int, rounds: int) -> dict[str, dict[str, list[float]]]:
    sha = hashlib.sha1(SCRIPT).hexdigest()
    pyredis = RedisCluster.from_url(url)
    await pyredis.initialize()
    await pyredis.script_load(SCRIPT)
    lean = ClusterConnection(Topology(parse_redis_url(url)))
    clients: dict[str, Callable[[list[str]], Awaitable[Any]]] = {
        "redis-py RedisCluster EVALSHA": lambda k: pyredis.evalsha(sha, 1, *k),
        "rtlib ClusterConnection EVALSHA": lambda k: lean.evalsha(SCRIPT, sha, k, []),
    }
    out: dict[str, dict[str, list[float]]] = {name: {"wall": [], "cpu": []} for name in clients}
    for call in clients.values():  # warm up: connections, slot maps, scripts
        await _timed(call, 200)
    for _ in range(rounds):
        for name, call in clients.items():
            wall, cpu = await _timed(call, calls)
            out[name]["wall"].append(wall)
            out[name]["cpu"].append(cpu)
    await pyredis.aclose()
    lean.close()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Routed EVALSHA round trip: redis-py cluster client vs rtlib's.")
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    load_before = os.getloadavg()
    with RedisClusterProcess(masters=3) as cluster:
        result = asyncio.run(measure(cluster.url, args.calls, args.rounds))
    meta = {"date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "calls": args.calls,
            "rounds": args.rounds, "loadavg_before": load_before, "loadavg_after": os.getloadavg(),
            "nproc": len(os.sched_getaffinity(0))}
    (RESULTS / "cluster_roundtrip.json").write_text(json.dumps({"meta": meta, "results": result}, indent=1) + "\n")
    lines = ["# One routed round trip on a 3-master Redis Cluster: redis-py vs rtlib (same run)", "",
             f"{meta['date']} · {meta['nproc']} cores · {args.rounds} rounds x {args.calls} sequential awaited "
             f"EVALSHA calls per client over 30 workspaces (all three masters), clients alternating · load "
             f"average before {load_before[0]:.2f}, after {meta['loadavg_after'][0]:.2f} (a shared machine: "
             "compare rows of this run). `python -m bench.cost.cluster_roundtrip`", "",
             "| client | wall µs/call min | median | client CPU µs/call min | median |", "|---|---|---|---|---|"]
    for name, r in result.items():
        lines.append(f"| {name} | {min(r['wall']):.1f} | {statistics.median(r['wall']):.1f} | "
                     f"{min(r['cpu']):.1f} | {statistics.median(r['cpu']):.1f} |")
    (RESULTS / "cluster_roundtrip.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
