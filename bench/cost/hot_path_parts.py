"""How much of S1's per-update budget do the parts rtlib cannot skip already take? (issue 8, item 8)

Item 8 asks for S1 CPU per delivery <= 1.5x the floor (a bare server that only writes the same frames to the same
sockets). At 20 receivers per update that leaves rtlib 0.5 x floor x 20 per update for everything the floor does
not do. This measures, in one process, the parts no design of this server can drop:

* ``ws_parse``: websockets reading one masked client frame (``Protocol.receive_data`` + ``events_received``);
* ``session``: rtlib's ``Session.receive`` (UTF-8/JSON/shape checks, rate buckets) and building event and ack;
* ``redis``: redis-server's own CPU per ``task.update`` script call with its PUBLISH to one subscriber (what the
  instance's pub/sub connection is), read from ``/proc`` over ``--n`` calls, one at a time (S1's case: 100
  updates/s never overlap) and 200 in flight;
* ``redis paced``: the same at S1's pace (one call every 10 ms, so Redis sleeps between calls, as it does at
  S1), for the script as configured, the script with the history stream off, and a bare ``PUBLISH`` of the
  same size (all the toy forwarder asks of Redis): what Redis costs per update at S1 whoever calls it.

Run: ``python -m bench.cost.hot_path_parts --floor-us 20`` (the floor's S1 CPU per delivery measured in the
same session with ``bench.cost.server_cost``) -> ``bench/results/hot_path_parts.{json,md}``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path

from redis.asyncio import Redis
from websockets.frames import Frame, Opcode
from websockets.protocol import Protocol, Side

from bench.harness import procstat
from rtlib.protocol import events
from rtlib.protocol.config import HistoryConfig, ServerConfig
from rtlib.protocol.session import Request, Session
from rtlib.server import keyspace
from rtlib.server.redis_process import RedisProcess
from rtlib.server.resp import RespConnection
from rtlib.server.store import RedisStore

BENCH_DIR = Path(__file__).resolve().parents[1]

FRAME = json.dumps({"type": "task.update", "workspaceId": "w1", "payload": {
    "taskId": "t-17", "changes": {"title": "Ship the release notes", "status": "doing"}, "ref": "r-1"}})
RECEIVERS = 20  # S1: 20 receivers per update


def _open_protocol() -> Protocol:
    """A server-side websockets protocol past its handshake (state OPEN: its parser reads frames)."""
    return Protocol(Side.SERVER, max_size=65536)


def ws_parse_us(n: int) -> float:
    """CPU per frame for websockets to parse one masked ~200-byte text frame."""
    proto = _open_protocol()
    wire = Frame(Opcode.TEXT, FRAME.encode()).serialize(mask=True)
    t = time.process_time()
    for _ in range(n):
        proto.receive_data(wire)
        [event] = proto.events_received()
        proto.data_to_send()
    assert event.data == FRAME.encode()
    return (time.process_time() - t) / n * 1e6


def session_us(n: int) -> float:
    """CPU per update for Session.receive plus building the task.updated event and the ack."""
    session = Session("c1", "alice", "w1", ServerConfig(rate_limit=1e12, rate_burst=10**12, byte_rate=1e15,
                                                         byte_burst=10**15))
    t = time.process_time()
    for i in range(n):
        request = session.receive(FRAME, 1.0 + i * 1e-6)
        assert isinstance(request, Request)
        p = request.payload
        prefix, suffix = events.task_updated_parts("w1", "alice", p.taskId, p.changes, 1.0)  # type: ignore[union-attr]
        session.ack(p, 7, 1.0)  # type: ignore[arg-type]
        _ = prefix + b"7" + suffix
    return (time.process_time() - t) / n * 1e6


async def redis_us(n: int, batch: int, gap: float = 0.0, variant: str = "script") -> float:
    """redis-server CPU per task.update script call (version, fields, history, PUBLISH to one subscriber),
    ``batch`` calls in flight at once (1: each awaited before the next, as at S1's 100 updates/s), ``gap``
    seconds of sleep after each batch. ``variant``: ``script``, ``no-history`` (the script with the history
    stream off) or ``publish`` (a bare PUBLISH of the event's size instead of the script)."""
    with RedisProcess() as rp:
        client, sub = Redis.from_url(rp.url), Redis.from_url(rp.url)
        fast = RespConnection(rp.url)  # the hot path's lean connection, pipelined, as the server uses it
        store = RedisStore(client, fast, history=HistoryConfig(length=0) if variant == "no-history" else None)
        await store.load_scripts()
        pubsub = sub.pubsub()
        await pubsub.subscribe(keyspace.channel("w1"))

        async def drain() -> None:
            async for _ in pubsub.listen():
                pass

        reader = asyncio.create_task(drain())
        prefix, suffix = events.task_updated_parts("w1", "alice", "t-17", {}, 1.0)
        pid = rp.proc.pid  # type: ignore[union-attr]
        before = procstat.process_cpu_seconds(pid)
        event = prefix + b"1" + suffix
        for start in range(0, n, batch):
            if variant == "publish":
                await asyncio.gather(*(fast.call(b"PUBLISH", keyspace.channel("w1"), keyspace.frame(event))
                                       for _ in range(start, min(n, start + batch))))
            else:
                await asyncio.gather(*(store.update_task("w1", f"t-{i % 50}", {"title": b'"x"'}, prefix, suffix)
                                       for i in range(start, min(n, start + batch))))
            if gap:
                await asyncio.sleep(gap)
        await asyncio.sleep(0.2)
        used = procstat.process_cpu_seconds(pid) - before
        reader.cancel()
        fast.close()
        await pubsub.aclose()
        await client.aclose()
        await sub.aclose()
    return used / n * 1e6


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=20_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--paced", type=int, default=1000, help="calls per paced Redis round (10 ms apart)")
    ap.add_argument("--floor-us", type=float, required=True, help="the floor's S1 CPU per delivery, same session")
    ap.add_argument("--out", type=Path, default=BENCH_DIR / "results" / "hot_path_parts")
    a = ap.parse_args()
    runs = {"ws_parse": [ws_parse_us(a.n) for _ in range(a.repeat)],
            "session": [session_us(a.n) for _ in range(a.repeat)],
            "redis (one at a time)": [asyncio.run(redis_us(a.n, 1)) for _ in range(a.repeat)],
            "redis (200 in flight)": [asyncio.run(redis_us(a.n, 200)) for _ in range(a.repeat)],
            **{f"redis paced 10 ms: {v}": [asyncio.run(redis_us(a.paced, 1, 0.01, v)) for _ in range(a.repeat)]
               for v in ("script", "no-history", "publish")}}
    med = {k: statistics.median(v) for k, v in runs.items()}
    budget = 0.5 * a.floor_us * RECEIVERS  # rtlib's allowance beyond the floor, per update, at 1.5x the floor
    parts = med["ws_parse"] + med["session"] + med["redis paced 10 ms: script"]
    result = {"runs_us": runs, "median_us": med, "floor_us_per_delivery": a.floor_us, "receivers": RECEIVERS,
              "budget_us_per_update": budget, "parts_us_per_update": parts, "share_of_budget": parts / budget}
    lines = [
        "# The parts of an update rtlib cannot skip, against item 8's budget", "",
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {a.n:,} calls x {a.repeat} rounds; median µs per "
        "update (CPU).", "",
        "| part | µs per update (median) | rounds |", "|---|---|---|",
        *(f"| {k} | {med[k]:.1f} | {' / '.join(f'{x:.1f}' for x in v)} |" for k, v in runs.items()),
        f"| **sum** (parse + session + redis paced: script) | **{parts:.1f}** | |", "",
        f"Budget at 1.5x the floor ({a.floor_us:g} µs per delivery, {RECEIVERS} receivers per update): "
        f"0.5 x {a.floor_us:g} x {RECEIVERS} = **{budget:.0f} µs per update** for everything the floor does not do. "
        f"These parts alone take {parts / budget:.0%} of it, before the event loop's wake-ups for the Redis reply "
        "and the pub/sub message, the RESP encoding and parsing, and the fan-out bookkeeping. Redis at S1's pace "
        f"costs {med['redis paced 10 ms: script']:.0f} µs per update for the script, "
        f"{med['redis paced 10 ms: publish']:.0f} µs for the toy's bare PUBLISH.",
    ]
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    a.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
