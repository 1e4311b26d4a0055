"""What the workspace history costs: Redis and server CPU per update, and delivery latency, with and without.

Each case is a fresh redis-server and one ``rtlib serve`` (``--history-length 1000`` or ``0``); one editor
sends ``--updates`` small ``task.update`` s at ``--rate`` per second to ``--receivers`` connections of its
workspace. Cases alternate (off, on, off, on, ...) so both see the same machine noise; the table keeps every
run and the medians. Centrifugo reports history roughly doubling Redis CPU; this measures rtlib's.

    python -m bench.cost.history_cost [--updates 2000 --rate 400 --receivers 20 --repeat 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from websockets.asyncio.client import connect

from bench.harness.procstat import process_cpu_seconds
from rtlib.server.auth import issue_token
from rtlib.server.redis_process import RedisProcess, die_with_parent, free_port, stop_process

RESULTS = Path(__file__).resolve().parents[1] / "results"
SECRET = "history-cost-bench-secret-0123456789abcdef"


async def _drive(url: str, updates: int, rate: float, receivers: int) -> list[float]:
    """Latencies (ms) of every delivery to every receiver."""
    tok = issue_token(SECRET, "editor", ["w"], ttl=600)
    conns = [await connect(f"{url}?token={issue_token(SECRET, f'r{i}', ['w'], 600)}&workspace=w",
                           compression=None) for i in range(receivers)]
    editor = await connect(f"{url}?token={tok}&workspace=w", compression=None)
    for c in [*conns, editor]:
        await c.recv()  # session.welcome
    latencies: list[float] = []

    async def read(c: Any) -> None:
        got = 0
        while got < updates:
            raw = await c.recv(decode=False)
            if b'"task.updated"' in raw:
                got += 1
                sent = json.loads(raw)["payload"]["changes"]["sentNs"]
                latencies.append((time.monotonic_ns() - sent) / 1e6)

    readers = [asyncio.ensure_future(read(c)) for c in conns]
    start = time.monotonic()
    for n in range(updates):
        await asyncio.sleep(max(0.0, start + n / rate - time.monotonic()))
        await editor.send(json.dumps({"type": "task.update", "workspaceId": "w", "payload": {
            "taskId": f"t{n % 10}", "changes": {"n": n, "sentNs": time.monotonic_ns()}}}))
    await asyncio.wait_for(asyncio.gather(*readers), 60)
    for c in [*conns, editor]:
        await c.close()
    return latencies


def run_case(history: int, args: argparse.Namespace) -> dict[str, Any]:
    with RedisProcess() as redis:
        port = free_port()
        server = subprocess.Popen(
            [sys.executable, "-m", "rtlib.cli", "serve", "--port", str(port), "--redis", redis.url,
             "--history-length", str(history), "--rate-limit", "10000", "--rate-burst", "10000",
             "--byte-rate", "100000000", "--log-level", "WARNING"],
            env={**os.environ, "RTLIB_SECRET": SECRET}, stdout=subprocess.PIPE, text=True,
            preexec_fn=die_with_parent)
        try:
            assert server.stdout is not None and "serving" in server.stdout.readline()
            assert redis.pid is not None
            before = process_cpu_seconds(redis.pid), process_cpu_seconds(server.pid)
            lat = asyncio.run(_drive(f"ws://127.0.0.1:{port}/ws", args.updates, args.rate, args.receivers))
            after = process_cpu_seconds(redis.pid), process_cpu_seconds(server.pid)
        finally:
            stop_process(server)
    lat.sort()
    return {"history": history, "redis_us_per_update": round((after[0] - before[0]) / args.updates * 1e6, 1),
            "server_us_per_update": round((after[1] - before[1]) / args.updates * 1e6, 1),
            "p50_ms": round(lat[len(lat) // 2], 3), "p99_ms": round(lat[int(len(lat) * 0.99)], 3),
            "deliveries": len(lat), "loadavg": round(os.getloadavg()[0], 2)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--updates", type=int, default=2000)
    p.add_argument("--rate", type=float, default=400.0)
    p.add_argument("--receivers", type=int, default=20)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--out", type=Path, default=RESULTS / "history_cost")
    args = p.parse_args(argv)
    runs = []
    for r in range(args.repeat):
        for history in (0, 1000):
            runs.append(run_case(history, args))
            print(f"run {r + 1}: {runs[-1]}", flush=True)
    med = {h: {k: statistics.median(x[k] for x in runs if x["history"] == h)
               for k in ("redis_us_per_update", "server_us_per_update", "p50_ms", "p99_ms")} for h in (0, 1000)}
    lines = ["# What the workspace history costs", "",
             f"{args.updates} updates at {args.rate:g}/s to {args.receivers} receivers per case, cases alternating, "
             f"{args.repeat} runs each; 2 shared cores (load average per run below), so read the medians.", "",
             "| history | Redis µs/update | server µs/update | p50 ms | p99 ms |", "|---|---|---|---|---|"]
    lines += [f"| {'1000 events' if h else 'off'} (median) | {m['redis_us_per_update']} | "
              f"{m['server_us_per_update']} | {m['p50_ms']} | {m['p99_ms']} |" for h, m in med.items()]
    ratio = med[1000]["redis_us_per_update"] / max(med[0]["redis_us_per_update"], 1e-9)
    lines += ["", f"Redis CPU per update with history: **{ratio:.2f} ×** without.", "", "| run | history | Redis µs "
              "| server µs | p50 ms | p99 ms | load avg |", "|---|---|---|---|---|---|---|"]
    lines += [f"| {i // 2 + 1} | {x['history']} | {x['redis_us_per_update']} | {x['server_us_per_update']} | "
              f"{x['p50_ms']} | {x['p99_ms']} | {x['loadavg']} |" for i, x in enumerate(runs)]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps({"runs": runs, "median": med, "redis_ratio": ratio,
                                                         "params": vars(args) | {"out": str(args.out)}}, indent=1))
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
