"""Integration: history and resume across two instances, and idempotent updates over real sockets."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal

import pytest
from conftest import SECRET, Instances, WsClient, close_draining, token
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from rtlib.protocol.config import ServerConfig
from rtlib.server.redis_process import RedisProcess


async def _resume(cluster: Instances, user: str, offset: str, epoch: str, instance: int = 0) -> WsClient:
    url = (f"{cluster.servers[instance].url}?token={token(user, 'w1')}&workspace=w1"
           f"&offset={offset}&epoch={epoch}")
    client = WsClient(await connect(url, compression=None), "w1", user)
    client.welcome = await client.expect("session.welcome")
    cluster._clients.append(client)
    return client


async def test_a_reconnecting_client_is_caught_up_without_gap_or_duplicate(cluster: Instances) -> None:
    writer = await cluster.client("writer", instance=1)
    reader = await cluster.client("reader", instance=0)
    assert reader.welcome["payload"]["offset"] == "0-0" and reader.welcome["payload"]["epoch"]
    await writer.send("task.update", {"taskId": "t", "changes": {"n": 1}})
    first = await reader.expect("task.updated", version=1)
    await close_draining(reader)
    for n in range(2, 6):  # missed while away
        await writer.send("task.update", {"taskId": "t", "changes": {"n": n}})
        await writer.expect("ack")
    back = await _resume(cluster, "reader", first["offset"], first["epoch"], instance=1)
    assert back.welcome["payload"]["recovered"] is True
    await writer.send("task.update", {"taskId": "t", "changes": {"n": 6}})  # live again
    got = [(await back.expect("task.updated"))["payload"]["version"] for _ in range(5)]
    assert got == [2, 3, 4, 5, 6]
    assert await back.silent(0.3, "task.updated") == []


async def test_resume_while_updates_stream_loses_nothing(cluster: Instances) -> None:
    """Disconnect and resume repeatedly, on both instances, while a writer keeps updating: the reader sees
    every version exactly once, in order."""
    writer = await cluster.client("writer", instance=0)
    total = 120

    async def write() -> None:
        for n in range(total):
            await writer.send("task.update", {"taskId": "hot", "changes": {"n": n}})
            await asyncio.sleep(0.004)

    reader = await cluster.client("reader", instance=1)
    offset, epoch = reader.welcome["payload"]["offset"], reader.welcome["payload"]["epoch"]
    job = asyncio.ensure_future(write())
    seen: list[int] = []
    hop = 0
    while len(seen) < total:
        try:
            event = await reader.expect("task.updated", timeout=0.05 if not job.done() else 3.0)
        except TimeoutError:
            event = None
        if event is not None:
            seen.append(event["payload"]["version"])
            offset = event["offset"]
        if event is None or len(seen) % 17 == 0:  # drop the connection now and then, resume elsewhere
            await close_draining(reader)
            hop += 1
            reader = await _resume(cluster, "reader", offset, epoch, instance=hop % 2)
            assert reader.welcome["payload"]["recovered"] is True
    await job
    assert seen == list(range(1, total + 1)) and hop > 3


@pytest.mark.parametrize("server_config", [ServerConfig(heartbeat_interval=0.3, presence_timeout=0.6,
                                                        sweep_interval=0.05, history_length=5, max_replay=3)])
async def test_resume_beyond_the_history_says_recovered_false(cluster: Instances) -> None:
    writer = await cluster.client("writer")
    reader = await cluster.client("reader", instance=1)
    start = reader.welcome["payload"]
    await close_draining(reader)
    for n in range(4):
        await writer.send("task.update", {"taskId": "t", "changes": {"n": n}})
        await writer.expect("ack")
    too_many = await _resume(cluster, "reader", start["offset"], start["epoch"])
    assert too_many.welcome["payload"]["recovered"] is False  # 4 missed > max_replay 3
    assert await too_many.silent(0.3, "task.updated") == []  # nothing replayed: the client resyncs
    other_epoch = await _resume(cluster, "reader", start["offset"], "123")
    assert other_epoch.welcome["payload"]["recovered"] is False


async def test_resume_parameters_are_validated(cluster: Instances) -> None:
    base = f"{cluster.servers[0].url}?token={token('u', 'w1')}&workspace=w1"
    for query in ("&offset=12", "&offset=1-2&epoch=x", "&epoch=1", "&offset=1-2%0A&epoch=1"):
        with pytest.raises(InvalidStatus) as refused:
            await connect(base + query)
        assert refused.value.response.status_code == 400


async def test_a_retried_update_gets_the_original_ack(cluster: Instances) -> None:
    a = await cluster.client("alice")
    watcher = await cluster.client("bob", instance=1)
    frame = json.dumps({"type": "task.update", "workspaceId": "w1",
                        "payload": {"taskId": "t", "changes": {"x": 1}, "ref": "u-1"}})
    await a.ws.send(frame)
    await a.ws.send(frame)  # the retry, e.g. after a reconnect with no ack
    acks = [(await a.expect("ack"))["payload"] for _ in range(2)]
    assert acks == [{"ref": "u-1", "taskId": "t", "version": 1}] * 2
    await watcher.expect("task.updated", version=1)
    assert await watcher.silent(0.3, "task.updated") == []
    assert SECRET  # the same signing secret on both instances


class _Reader:
    """A client that follows one task and resumes (on any instance) whenever its connection drops."""

    def __init__(self, cluster: Instances, first: WsClient) -> None:
        self.cluster, self.ws = cluster, first
        self.offset, self.epoch = first.welcome["payload"]["offset"], first.welcome["payload"]["epoch"]
        self.versions: list[int] = []
        self.resumes: list[bool] = []

    async def follow(self, until: int, timeout: float = 15.0) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        hop = 0
        while (not self.versions or self.versions[-1] < until) and loop.time() < deadline:
            try:
                event = await self.ws.expect("task.updated", timeout=0.5)
            except TimeoutError:
                continue
            except ConnectionClosed:
                hop += 1
                await asyncio.sleep(0.1)
                try:
                    self.ws = await _resume(self.cluster, "reader", self.offset, self.epoch, instance=hop % 2)
                except (InvalidStatus, OSError):
                    continue  # 503 while the instance rebuilds its subscriber: retry
                self.resumes.append(self.ws.welcome["payload"]["recovered"])
                continue
            self.versions.append(event["payload"]["version"])
            self.offset = event["offset"]


@pytest.mark.parametrize("server_config", [ServerConfig(heartbeat_interval=0.3, presence_timeout=0.6,
                                                        sweep_interval=0.05, pubsub_check_interval=0.2,
                                                        pubsub_check_timeout=0.5)])
@pytest.mark.parametrize("fault", ["client kill", "output buffer limit", "redis paused"])
async def test_a_dropped_or_deaf_subscriber_is_replaced_and_clients_lose_nothing_without_reconnecting(
        cluster: Instances, redis_url: str, redis_process: RedisProcess, fault: str) -> None:
    """Issue 20: the subscriber is replaced and every open connection caught up from the history, server-side:
    the reader is never closed (it would resume if it were), and sees every version once, in order."""
    import redis as sync_redis

    writer = await cluster.client("writer", instance=1)
    reader = _Reader(cluster, await cluster.client("reader", instance=0))
    follow = asyncio.ensure_future(reader.follow(until=30))
    admin = sync_redis.Redis.from_url(redis_url)

    async def write(n: int) -> None:
        """Send update n until acked, retrying after an `unavailable` error (Redis unreachable from the writer's
        instance meanwhile) or reconnecting if it were closed. The ref makes a retry of an update that did land
        a no-op (idempotent), so versions stay 1..30."""
        nonlocal writer
        for _ in range(100):
            try:
                await writer.send("task.update", {"taskId": "t", "changes": {"n": n}, "ref": f"u{n}"})
                while True:
                    reply = await writer.recv(timeout=3)
                    if reply["type"] == "ack" and reply["payload"]["ref"] == f"u{n}":
                        return
                    if reply["type"] == "error" and reply["payload"].get("ref") == f"u{n}":
                        assert reply["payload"]["code"] == "unavailable", reply
                        await asyncio.sleep(reply["payload"]["retryAfter"])
                        break
            except (ConnectionClosed, TimeoutError):
                await asyncio.sleep(0.1)
                with contextlib.suppress(InvalidStatus, OSError, ConnectionClosed, TimeoutError):
                    writer = await cluster.client("writer", instance=1)
        raise AssertionError(f"update {n} never acknowledged")

    try:
        for n in range(1, 31):
            if n == 10:
                if fault == "client kill":
                    admin.client_kill_filter(_type="pubsub")
                elif fault == "output buffer limit":  # Redis itself drops a subscriber that falls behind
                    admin.config_set("client-output-buffer-limit", "pubsub 32kb 0 0")
                    burst = admin.pipeline(transaction=False)
                    for _ in range(100):  # 10 MB at once per subscriber, more than the kernel buffers hold
                        burst.publish("rt:probe:i0", "x" * 100_000).publish("rt:probe:i1", "x" * 100_000)
                    burst.execute()
                    admin.config_set("client-output-buffer-limit", "pubsub 32mb 8mb 60")
                else:  # connected but silent: only the end-to-end probe can tell
                    os.kill(redis_process.pid, signal.SIGSTOP)
                    try:
                        await asyncio.sleep(1.2)
                    finally:
                        os.kill(redis_process.pid, signal.SIGCONT)
            await write(n)
        await follow
    finally:
        follow.cancel()
        admin.config_set("client-output-buffer-limit", "pubsub 32mb 8mb 60")
        admin.close()
    assert sum(s.outages.outages for s in cluster.servers if s.outages) >= 1  # the subscriber really went...
    assert reader.resumes == []  # ...and came back without closing anyone
    assert reader.versions == list(range(1, 31))
