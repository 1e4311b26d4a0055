"""Integration: history and resume across two instances, and idempotent updates over real sockets."""

from __future__ import annotations

import asyncio
import json

import pytest
from conftest import SECRET, Instances, WsClient, close_draining, token
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from rtlib.protocol.config import ServerConfig


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
