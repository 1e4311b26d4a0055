"""A recovery attempt that fails after its new pub/sub connection subscribed leaves no second subscriber behind.

Found by the soak (issue 21 item 7, 2026-12-08): after a Redis restart with its append-only file, the catch-up
of the first recovery attempts failed while Redis was still loading, each attempt had opened and subscribed a
new pub/sub connection without closing the one before, and every later event reached the instance once per
leaked connection: 1,845,972 duplicate deliveries to 997 clients that rode the outage through.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace

import redis.asyncio as aioredis
from conftest import SECRET, Instances

import rtlib.server.outage as outage
from rtlib.protocol.config import ServerConfig
from rtlib.server.driver import RealtimeServer
from rtlib.server.keyspace import channel
from rtlib.server.redis_process import RedisProcess

FAST = ServerConfig(heartbeat_interval=0.3, presence_timeout=0.6, sweep_interval=0.05, pubsub_check_interval=0.1,
                    pubsub_check_timeout=0.3, broker_retry_after=0.2)


async def _until(condition: object, timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():  # type: ignore[operator]
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def test_failed_catch_ups_leave_one_subscriber_and_each_event_arrives_once(monkeypatch) -> None:
    real_catch_up, failures = outage.catch_up, []

    async def flaky_catch_up(*args, **kwargs):  # the first two attempts fail after subscribing, as on LOADING
        if len(failures) < 2:
            failures.append(1)
            raise ConnectionError("LOADING Redis is loading the dataset in memory")
        return await real_catch_up(*args, **kwargs)

    monkeypatch.setattr(outage, "catch_up", flaky_catch_up)
    redis = RedisProcess().start()
    server = await RealtimeServer(redis.url, SECRET, replace(FAST, server_id="i0")).start()
    cluster = Instances([server])
    try:
        alice = await cluster.client("alice")
        bob = await cluster.client("bob")
        redis.crash()
        await _until(lambda: not server.broker.up)
        redis.start()  # back on the same port (empty: the clients are told to resync)
        await _until(lambda: server.broker.up)
        assert len(failures) == 2, "both failing attempts ran before the one that recovered"
        async with aioredis.Redis(port=redis.port) as r:
            numsub = dict(await r.pubsub_numsub(channel("w1")))
        assert numsub[channel("w1").encode()] == 1, "one subscriber for the room, not one per attempt"
        await alice.send("task.update", {"taskId": "t1", "changes": {"x": 1}, "ref": "a-1"})
        await bob.expect("task.updated", version=1)
        assert await bob.silent(0.5, "task.updated") == [], "the event arrived once"
    finally:
        await cluster.close()
        redis.stop()
