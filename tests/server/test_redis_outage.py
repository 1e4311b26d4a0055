"""Redis killed and restarted (issue 20): connections stay open, requests are answered `unavailable`, new
handshakes are refused (503) until Redis is back, and every client is told to resync when the new Redis has
lost the history (no persistence) or caught up when it kept it (append-only file)."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest
import redis.asyncio as aioredis
from conftest import SECRET, Instances, token
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

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


async def test_redis_restarted_without_persistence_tells_every_client_to_resync() -> None:
    redis = RedisProcess().start()
    servers = [await RealtimeServer(redis.url, SECRET, replace(FAST, server_id=f"i{i}")).start() for i in range(2)]
    cluster = Instances(servers)
    try:
        alice = await cluster.client("alice")
        carol = await cluster.client("carol", instance=1)
        await alice.send("task.update", {"taskId": "t1", "changes": {"x": 1}, "ref": "a-1"})
        await carol.expect("task.updated", version=1)
        old_epoch = alice.welcome["payload"]["epoch"]
        redis.crash()
        await _until(lambda: not servers[0].broker.up and not servers[1].broker.up)
        await alice.send("task.update", {"taskId": "t1", "changes": {"x": 2}, "ref": "a-2"})
        error = await alice.expect("error", ref="a-2")
        assert error["payload"]["code"] == "unavailable" and error["payload"]["retryAfter"] == 0.2
        await alice.send("task.get", {"taskId": "t1", "ref": "g-1"})
        assert (await alice.expect("error", ref="g-1"))["payload"]["code"] == "unavailable"
        with pytest.raises(InvalidStatus) as refused:  # new connections: 503 until Redis is back
            await connect(f"{servers[0].url}?token={token('bob', 'w1')}&workspace=w1")
        assert refused.value.response.status_code == 503
        redis = RedisProcess(port=redis.port).start()  # back on the same address, empty
        for client in (alice, carol):
            resync = await client.expect("session.resync")
            assert resync["payload"]["epoch"] != old_epoch and resync["payload"]["offset"] == "0-0"
            assert client.ws.close_code is None
        await _until(lambda: servers[0].broker.up)
        bob = await cluster.client("bob")
        await bob.send("task.update", {"taskId": "t1", "changes": {"x": 3}})
        assert (await carol.expect("task.updated"))["payload"]["version"] == 1  # a new Redis: a new history
        assert (await alice.expect("task.updated"))["offset"]
        assert [r.resynced for r in servers[0].outages.reports] == [1]  # type: ignore[union-attr]
    finally:
        await cluster.close()
        redis.stop()


async def test_redis_restarted_with_its_data_catches_clients_up_without_a_resync() -> None:
    redis = RedisProcess(persist=True).start()
    servers = [await RealtimeServer(redis.url, SECRET, replace(FAST, server_id=f"i{i}")).start() for i in range(2)]
    cluster = Instances(servers)
    try:
        alice = await cluster.client("alice")
        carol = await cluster.client("carol", instance=1)
        await alice.send("task.update", {"taskId": "t1", "changes": {"x": 1}})
        await carol.expect("task.updated", version=1)
        await alice.expect("task.updated", version=1)
        await asyncio.sleep(1.2)  # the append-only file is synced every second
        redis.crash()
        await _until(lambda: not servers[0].broker.up)
        redis.start()  # the same directory: its data and history come back
        await _until(lambda: servers[0].broker.up and servers[1].broker.up)
        await carol.send("task.update", {"taskId": "t1", "changes": {"x": 2}})
        assert (await alice.expect("task.updated"))["payload"]["version"] == 2  # the same history goes on
        assert [e["type"] for e in await alice.silent(0.3)] == ["ack"]  # no resync, no duplicate (its own ack)
        assert alice.ws.close_code is None
    finally:
        await cluster.close()
        redis.stop()


# Found by the soak (issue 21 item 7, 2026-12-08): after a Redis restart with its append-only file, the catch-up
# of the first recovery attempts failed while Redis was still loading; each attempt had opened and subscribed a
# new pub/sub connection without closing the one before, and every later event reached the instance once per
# leaked connection (1,845,972 duplicate deliveries to 997 clients that rode the outage through).
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
