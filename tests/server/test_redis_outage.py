"""A Redis outage: clients are told (1011), new ones are refused (503), the instance recovers by itself."""

from __future__ import annotations

import asyncio

import pytest
from conftest import SECRET, Instances, token
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from rtlib.server.driver import RealtimeServer
from rtlib.server.redis_process import RedisProcess


async def test_instance_survives_a_redis_restart() -> None:
    redis = RedisProcess().start()
    server = await RealtimeServer(redis.url, SECRET).start()
    cluster = Instances([server])
    try:
        alice = await cluster.client("alice")
        redis.stop()
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                await alice.recv(timeout=5)
        assert closed.value.rcvd.code == 1011 and closed.value.rcvd.reason == "redis unavailable"
        url = f"{server.url}?token={token('bob', 'w1')}&workspace=w1"
        with pytest.raises(InvalidStatus) as refused:
            await connect(url)
        assert refused.value.response.status_code == 503
        redis = RedisProcess(port=redis.port).start()  # Redis is back on the same address
        for _ in range(100):
            if server.fanout.connected:
                break
            await asyncio.sleep(0.05)
        bob = await cluster.client("bob")
        carol = await cluster.client("carol")
        await bob.send("task.update", {"taskId": "t1", "changes": {"x": 1}})
        assert (await carol.expect("task.updated"))["payload"]["version"] == 1
    finally:
        await cluster.close()
        redis.stop()
