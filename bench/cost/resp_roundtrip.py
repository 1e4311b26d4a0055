"""Does the hand-written RESP connection pay? One round trip through redis-py's asyncio client vs
:class:`rtlib.server.resp.RespConnection`, same run, same redis-server, alternating.

Per client and command (PING; the hot path's EVALSHA of ``task.update``'s script with its publish), ``--n``
sequential awaited calls are timed; wall time per call and this process's CPU time per call (client cost; the
redis-server's is the same for both) are reported as min / median over ``--repeat`` rounds. Both event loops
(asyncio's default and uvloop, if installed) are measured.

Run: ``python -m bench.cost.resp_roundtrip`` -> ``bench/results/resp_roundtrip.{json,md}``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from pathlib import Path

from redis.asyncio import Redis

from rtlib.server.redis_process import RedisProcess
from rtlib.server.resp import RespConnection, script_sha
from rtlib.server.scripts import update_keys
from rtlib.server.store import RedisStore

BENCH_DIR = Path(__file__).resolve().parents[1]

# The update script's layout (see rtlib.server.store): workspace, prefix, suffix, publish, ref TTL, task id,
# field, value; keys: version, fields, ref key ('' = no ref), task index.
ARGS = ["w1", b'{"type":"task.updated","payload":{"version":', b"}}", b"1", 300, "t1", "title", b'"x"']


async def one_round(url: str, n: int) -> dict[str, dict[str, float]]:
    pyredis = Redis.from_url(url)
    lean = RespConnection(url)
    text = RedisStore(pyredis)._update_text  # the script as the server runs it (history bounds filled in)
    script = pyredis.register_script(text)
    sha = script_sha(text.decode())
    keys = update_keys("w1", "t1")  # the script's KEYS as the store passes them (no ref)
    calls = {
        ("redis-py", "PING"): lambda: pyredis.ping(),
        ("lean", "PING"): lambda: lean.call("PING"),
        ("redis-py", "EVALSHA"): lambda: script(keys=keys, args=ARGS),
        ("lean", "EVALSHA"): lambda: lean.evalsha(text, sha, keys, ARGS),
    }
    for call in calls.values():  # connect, load the script, warm up
        for _ in range(200):
            await call()
    out: dict[str, dict[str, float]] = {}
    for (client, command), call in calls.items():
        wall, cpu = time.perf_counter(), time.process_time()
        for _ in range(n):
            await call()
        out[f"{client} {command}"] = {"wall_us": (time.perf_counter() - wall) / n * 1e6,
                                      "cpu_us": (time.process_time() - cpu) / n * 1e6}
    await pyredis.aclose()
    lean.close()
    return out


def run_loop(loop_name: str, url: str, n: int) -> dict[str, dict[str, float]]:
    if loop_name == "uvloop":
        import uvloop

        return uvloop.run(one_round(url, n))
    return asyncio.run(one_round(url, n))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=3000, help="calls per client, command and round")
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--out", type=Path, default=BENCH_DIR / "results" / "resp_roundtrip")
    args = parser.parse_args()
    loops = ["asyncio"]
    try:
        import uvloop  # noqa: F401

        loops.append("uvloop")
    except ImportError:
        pass
    samples: dict[str, dict[str, list[dict[str, float]]]] = {loop: {} for loop in loops}
    load = os.getloadavg()
    with RedisProcess() as redis:
        for _ in range(args.repeat):
            for loop in loops:  # alternate, so drift of the machine favours neither
                for key, value in run_loop(loop, redis.url, args.n).items():
                    samples[loop].setdefault(key, []).append(value)
    load_after = os.getloadavg()
    rows = []
    for loop, by_key in samples.items():
        for key, values in by_key.items():
            wall = [v["wall_us"] for v in values]
            cpu = [v["cpu_us"] for v in values]
            rows.append({"loop": loop, "client_command": key, "wall_us_min": min(wall),
                         "wall_us_median": statistics.median(wall), "cpu_us_min": min(cpu),
                         "cpu_us_median": statistics.median(cpu)})
    meta = {"date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "n": args.n, "repeat": args.repeat,
            "loadavg_before": load, "loadavg_after": load_after, "nproc": os.cpu_count()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps({**meta, "rows": rows}, indent=2) + "\n")
    lines = [
        "# One Redis round trip: redis-py vs rtlib's lean connection (same run)",
        "",
        f"{meta['date']} · {meta['nproc']} cores · {args.repeat} rounds × {args.n} sequential awaited calls per "
        f"client and command, loops and clients alternating · load average (1/5/15 min) before "
        f"{' / '.join(f'{x:.2f}' for x in load)}, after {' / '.join(f'{x:.2f}' for x in load_after)} "
        "(a shared 2-core machine: compare rows of the same run, not with other runs).",
        "",
        "| loop | client, command | wall µs/call min | median | client CPU µs/call min | median |",
        "|---|---|---|---|---|---|",
        *(f"| {r['loop']} | {r['client_command']} | {r['wall_us_min']:.1f} | {r['wall_us_median']:.1f} | "
          f"{r['cpu_us_min']:.1f} | {r['cpu_us_median']:.1f} |" for r in rows),
        "",
        "Wall = one awaited round trip (client + kernel + redis-server); client CPU = this process's CPU time per "
        "call (user + system), which is what the server pays per `task.update` on the hot path.",
        "",
    ]
    args.out.with_suffix(".md").write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
