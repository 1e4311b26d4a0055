"""The benchmark's ``floor-redis`` target runs rtlib's own update script and delivers what it publishes, and
``perf_top`` sorts kernel stacks into the kinds its table reports. Real sockets, real Redis."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import redis
from websockets.asyncio.client import connect

from rtlib.server import keyspace
from rtlib.server.redis_process import free_port

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # bench/ is a package of the repository, not installed

from bench.cost import perf_top  # noqa: E402
from bench.harness.targets import ServerProcess, floor_target  # noqa: E402


async def test_floor_redis_versions_each_frame_and_fans_it_out(redis_url: str) -> None:
    port = free_port()
    with ServerProcess(floor_target(redis_script=True).command(port, redis_url), port):
        url = f"ws://127.0.0.1:{port}/ws?workspace=w1"
        async with connect(url) as sender, connect(url) as receiver, \
                connect(f"ws://127.0.0.1:{port}/ws?workspace=w2") as other:
            await asyncio.sleep(0.2)  # the SUBSCRIBE reaches Redis before the first publish
            for n in range(3):
                await sender.send(json.dumps({"type": "task.update", "n": n}))
            got = [json.loads(await asyncio.wait_for(receiver.recv(), 5)) for _ in range(3)]
            assert [e["n"] for e in got] == [0, 1, 2]
            assert all(e["type"] == "task.update" and e["version"] == 1 and e["offset"] for e in got)
            with redis.Redis.from_url(redis_url) as sync:
                assert sync.xlen(keyspace.history_key("w1")) == 3  # the history stream written by the script
            try:
                await asyncio.wait_for(other.recv(), 0.3)
                raise AssertionError("another workspace received w1's event")
            except TimeoutError:
                pass


def test_perf_top_sorts_stacks_by_kind() -> None:
    sample = (
        "rtlib 42\n\tffff tcp_sendmsg_locked ([kernel.kallsyms])\n\tffff tcp_sendmsg ([kernel.kallsyms])\n\n"
        "rtlib 42\n\tffff do_epoll_wait ([kernel.kallsyms])\n\n"
        "rtlib 42\n\t1234 _PyEval_EvalFrameDefault (/usr/lib/libpython3.11.so)\n\n"
        "redis-server 7\n\tffff __schedule ([kernel.kallsyms])\n\tffff schedule ([kernel.kallsyms])\n"
    )
    counts = perf_top.per_update(sample)
    assert counts["rtlib 42"] == {"send": 1, "epoll_wait": 1, "user": 1}
    assert counts["redis-server 7"] == {"sched": 1}
