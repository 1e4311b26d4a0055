"""Broker outages (issue 20): what clients see when Redis pauses, restarts, or an instance stalls.

Each case is a fresh real ``redis-server`` and ``rtlib serve`` instances with the **defaults** (heartbeat 30 s,
timeout 60 s, sweep 5 s, ``--broker-grace`` 30 s, the pub/sub check every 1 s with 2 s to answer), and clients
that behave like the browser client (:mod:`bench.resilience.outage_clients`): workspace ``w0`` has 20 viewers
of one task (half on each instance, beating from their own timers at random phases), 2 editors (one update a
second each, retried after ``unavailable``) and 2 observers; ``w1`` and ``w2`` have 3 viewers and an editor each.
One viewer per instance *crashes* (goes silent, socket open) a second after the fault starts. After a warm-up
(35 s: every viewer has beaten), the fault:

* ``pause-N``: Redis ``SIGSTOP`` for N s, then ``SIGCONT`` (a failover, a fork, a blip);
* ``restart-empty`` / ``restart-aof``: Redis ``SIGKILL``ed, started again 5 s later on the same port without /
  with its append-only file;
* ``stall-N`` / ``solo-stall-N``: instance ``i1`` (of two) / the only instance ``SIGSTOP``ed for N s (60 s:
  past timeout - heartbeat, where the other instance cannot tell the stall from a crash; alone, the instance's
  own stall rule is all there is).

Then the run goes on for timeout + sweep + 10 s (75 s), long enough for any false departure to show. All cases
run at once (each on its own ports), so the whole benchmark takes the longest case (about 3 minutes); the
durations are real, not compressed (``--scale`` compresses everything, for a smoke run).

    python -m bench.resilience.broker_outage                         # writes bench/results/broker_outage.{md,json}
    python -m bench.resilience.broker_outage --cases pause-5,restart-empty --scale 0.1 --out /tmp/bo   # smoke
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import secrets
import signal
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench.harness.targets import ServerProcess
from bench.resilience.outage_clients import Tab
from bench.resilience.outage_report import analyse, markdown
from rtlib.server.auth import issue_token
from rtlib.server.redis_process import RedisProcess, free_port

__all__ = ["CASES", "Case", "main", "run_case"]

RESULTS = Path(__file__).resolve().parents[1] / "results"
WARM, AFTER, CRASH_AFTER = 35.0, 75.0, 1.0  # design seconds


@dataclass(frozen=True)
class Case:
    """One fault: ``kind`` pause / restart / stall, lasting ``seconds``."""

    name: str
    kind: str
    seconds: float
    persist: bool = False
    instances: int = 2


CASES = [
    Case("pause-1", "pause", 1), Case("pause-5", "pause", 5), Case("pause-15", "pause", 15),
    Case("pause-30", "pause", 30), Case("pause-60", "pause", 60),
    Case("restart-empty", "restart", 5), Case("restart-aof", "restart", 5, persist=True),
    Case("stall-20", "stall", 20), Case("stall-60", "stall", 60), Case("solo-stall-60", "stall", 60, instances=1),
]
#: The server defaults the benchmark runs (design seconds; --scale multiplies them).
HEARTBEAT, TIMEOUT, SWEEP, GRACE = 30.0, 60.0, 5.0, 30.0


def _tabs(urls: list[str], secret: str, scale: float, rng: random.Random) -> list[Tab]:
    """w0: 20 viewers, 2 editors, 2 observers; w1, w2: 3 viewers and an editor; spread over the instances."""
    tabs: list[Tab] = []

    def tab(user: str, ws: str, role: str, home: int) -> None:
        order = urls[home % len(urls):] + urls[:home % len(urls)]
        tabs.append(Tab(user, ws, role, order, issue_token(secret, user, [ws], 3600), heartbeat=HEARTBEAT * scale,
                        period=1.0 * scale, rng=random.Random(rng.random())))

    for i in range(20):
        tab(f"v{i}", "w0", "viewer", i)
    for i in range(2):
        tab(f"e{i}", "w0", "editor", i)
        tab(f"o{i}", "w0", "observer", i)
    for ws in ("w1", "w2"):
        for i in range(3):
            tab(f"{ws}v{i}", ws, "viewer", i)
        tab(f"{ws}e", ws, "editor", 1)
    return tabs


async def run_case(case: Case, scale: float = 1.0, seed: int = 1) -> dict[str, Any]:
    """Run one case on its own Redis and instances; its measurements (:func:`outage_report.analyse`)."""
    secret = secrets.token_hex(32)
    redis = await asyncio.to_thread(RedisProcess(persist=case.persist).start)
    servers: list[ServerProcess] = []
    tabs: list[Tab] = []
    jobs: list[asyncio.Future[None]] = []
    times: dict[str, float] = {}
    try:
        for i in range(case.instances):
            port = free_port()
            argv = [sys.executable, "-m", "rtlib.cli", "serve", "--port", str(port), "--redis", redis.url,
                    "--secret", secret, "--server-id", f"i{i}", "--log-level", "WARNING",
                    "--heartbeat-interval", str(HEARTBEAT * scale), "--presence-timeout", str(TIMEOUT * scale),
                    "--sweep-interval", str(SWEEP * scale), "--broker-grace", str(GRACE * scale)]
            servers.append(await asyncio.to_thread(ServerProcess(argv, port).start))
        urls = [f"ws://127.0.0.1:{s.port}/ws" for s in servers]
        tabs = _tabs(urls, secret, scale, random.Random(f"{seed}-{case.name}"))
        jobs = [asyncio.ensure_future(t.run()) for t in tabs]
        times["start"] = time.time()
        await asyncio.sleep(WARM * scale)
        times["fault"] = time.time()
        crash = asyncio.get_running_loop().call_later(CRASH_AFTER * scale, _crash, tabs, case)
        await _fault(case, redis, servers, scale)
        times["back"] = time.time()
        await asyncio.sleep(AFTER * scale)
        times["end"] = time.time()
        crash.cancel()
        for t in tabs:  # the editors stop before Redis is read: every ack is older than the read
            t.halt()
        for job in jobs:
            job.cancel()
        await asyncio.gather(*jobs, return_exceptions=True)
        history = await asyncio.to_thread(_history_tokens, redis.url)
    finally:
        for t in tabs:
            await t.stop()
        for job in jobs:
            job.cancel()
        await asyncio.gather(*jobs, return_exceptions=True)
        logs = [s.log_tail(100_000) for s in servers]
        for s in servers:
            await asyncio.to_thread(s.stop)
        await asyncio.to_thread(redis.stop)
    return analyse(case.name, case.kind, case.seconds * scale, tabs, logs, times, history,
                   timeout=TIMEOUT * scale, sweep=SWEEP * scale, design=case.seconds)


def _crash(tabs: list[Tab], case: Case) -> None:
    """One viewer per instance goes silent (``v0`` and ``v1``), a second into the fault."""
    for t in tabs:
        if t.user in ("v0", "v1"):
            t.crash()


async def _fault(case: Case, redis: RedisProcess, servers: list[ServerProcess], scale: float) -> None:
    seconds = case.seconds * scale
    if case.kind == "pause":
        assert redis.pid is not None
        os.kill(redis.pid, signal.SIGSTOP)
        try:
            await asyncio.sleep(seconds)
        finally:
            os.kill(redis.pid, signal.SIGCONT)
    elif case.kind == "restart":
        await asyncio.to_thread(redis.crash)
        await asyncio.sleep(seconds)
        await asyncio.to_thread(redis.start)
    elif case.kind == "stall":
        target = servers[-1]
        os.kill(target.pid, signal.SIGSTOP)
        try:
            await asyncio.sleep(seconds)
        finally:
            os.kill(target.pid, signal.SIGCONT)
    else:
        raise ValueError(case.kind)


def _history_tokens(url: str) -> dict[str, set[str]]:
    """The update tokens each workspace's history holds at the end (what Redis kept)."""
    import redis as sync_redis

    from rtlib.server import keyspace

    out: dict[str, set[str]] = {}
    with sync_redis.Redis.from_url(url) as r:
        for ws in ("w0", "w1", "w2"):
            out[ws] = set()
            for _, fields in r.xrange(keyspace.history_key(ws)):
                event = keyspace.history_event(fields)
                if event["type"] == "task.updated":
                    out[ws].add(event["payload"]["changes"]["u"])
    return out


async def _run_all(cases: list[Case], scale: float, seed: int) -> list[dict[str, Any]]:
    return list(await asyncio.gather(*(run_case(c, scale, seed) for c in cases)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--cases", default=",".join(c.name for c in CASES), help="comma-separated case names")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every duration (1 = real time)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, default=RESULTS, help="directory for broker_outage.{md,json}")
    args = parser.parse_args(argv)
    by_name = {c.name: c for c in CASES}
    cases = [by_name[n] for n in args.cases.split(",")]
    started = time.time()
    results = asyncio.run(_run_all(cases, args.scale, args.seed))
    meta = {"scale": args.scale, "seed": args.seed, "wall_seconds": round(time.time() - started, 1),
            "defaults": {"heartbeat": HEARTBEAT, "timeout": TIMEOUT, "sweep": SWEEP, "broker_grace": GRACE,
                         "pubsub_check": "every 1 s, 2 s to answer"},
            "cases": [asdict(c) for c in cases], "warm_up": WARM, "after": AFTER,
            "date": time.strftime("%Y-%m-%d %H:%M", time.gmtime())}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "broker_outage.json").write_text(json.dumps({"meta": meta, "results": results}, indent=2) + "\n")
    (args.out / "broker_outage.md").write_text(markdown(meta, results))
    print((args.out / "broker_outage.md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
