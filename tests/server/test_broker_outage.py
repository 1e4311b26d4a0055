"""Riding through Redis outages (issue 20) on a real redis-server, with compressed timing.

Presence runs 100x faster than the defaults (heartbeat 0.3 s, timeout 0.6 s, sweep 0.05 s) and the pub/sub check
10x (a probe every 0.1 s, 0.3 s to come back), so a 2 s ``SIGSTOP`` of Redis is, relative to the timeout, a
200 s pause at the defaults: longer than timeout - heartbeat, where an instance that judged entries by the beats
Redis holds would announce every viewer as gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import pytest
from conftest import SECRET, Instances, token
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from rtlib.protocol.config import ServerConfig
from rtlib.server.driver import RealtimeServer
from rtlib.server.redis_process import RedisProcess

FAST = ServerConfig(heartbeat_interval=0.3, presence_timeout=0.6, sweep_interval=0.05, pubsub_check_interval=0.1,
                    pubsub_check_timeout=0.3, broker_retry_after=0.2)


class Tab:
    """A client that records every frame with its arrival time, and can beat on its own timer."""

    def __init__(self, ws: ClientConnection, user: str, workspace: str) -> None:
        self.ws, self.user, self.workspace = ws, user, workspace
        self.frames: list[tuple[float, dict[str, Any]]] = []
        self.closed_at: float | None = None
        self._reader = asyncio.ensure_future(self._read())
        self._beater: asyncio.Task[None] | None = None

    @classmethod
    async def open(cls, server: RealtimeServer, user: str, workspace: str = "w1") -> Tab:
        ws = await connect(f"{server.url}?token={token(user, workspace)}&workspace={workspace}", compression=None,
                           ping_interval=None)  # a browser does not ping: only the server's behaviour counts
        tab = cls(ws, user, workspace)
        await tab.wait_for("session.welcome")
        return tab

    async def _read(self) -> None:
        with contextlib.suppress(ConnectionClosed):
            async for raw in self.ws:
                self.frames.append((time.monotonic(), json.loads(raw)))
        self.closed_at = time.monotonic()

    def of(self, type_: str, **match: Any) -> list[dict[str, Any]]:
        return [f for _, f in self.frames if f["type"] == type_ and all(f["payload"].get(k) == v
                                                                          for k, v in match.items())]

    async def wait_for(self, type_: str, timeout: float = 5.0, **match: Any) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while not (found := self.of(type_, **match)):
            assert time.monotonic() < deadline, f"{self.user}: no {type_} {match} in {timeout} s"
            await asyncio.sleep(0.01)
        return found[-1]

    async def send(self, type_: str, payload: dict[str, Any]) -> None:
        await self.ws.send(json.dumps({"type": type_, "workspaceId": self.workspace, "payload": payload}))

    async def view(self, task: str, every: float) -> None:
        """Join ``task`` and beat it every ``every`` seconds until :meth:`crash` or close."""
        await self.send("presence.join", {"taskId": task})

        async def beat() -> None:
            with contextlib.suppress(ConnectionClosed):
                while True:
                    await asyncio.sleep(every)
                    await self.send("presence.heartbeat", {"taskId": task})
                    self.last_beat = time.monotonic()

        self.last_beat = time.monotonic()
        self._beater = asyncio.ensure_future(beat())

    def crash(self) -> None:
        """Go silent without closing: only the presence timeout can tell."""
        if self._beater is not None:
            self._beater.cancel()

    async def update(self, task: str, changes: dict[str, Any], ref: str, timeout: float = 10.0) -> int:
        """Send until acked, waiting ``retryAfter`` after each `unavailable` error; the acked version."""
        deadline = time.monotonic() + timeout
        while True:
            seen = len(self.frames)
            await self.send("task.update", {"taskId": task, "changes": changes, "ref": ref})
            while True:
                assert time.monotonic() < deadline, f"{ref} never acked"
                replies = [f for _, f in self.frames[seen:] if f["payload"].get("ref") == ref]
                if replies:
                    break
                await asyncio.sleep(0.01)
            if replies[0]["type"] == "ack":
                return replies[0]["payload"]["version"]
            assert replies[0]["payload"]["code"] == "unavailable", replies[0]
            await asyncio.sleep(replies[0]["payload"]["retryAfter"])

    async def close(self) -> None:
        self.crash()
        await self.ws.close()
        self._reader.cancel()


@pytest.fixture
async def redis() -> AsyncIterator[RedisProcess]:
    """A Redis of the test's own: it is paused, killed and restarted."""
    proc = RedisProcess().start()
    yield proc
    if proc.proc is not None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.proc.pid, signal.SIGCONT)
    proc.stop()


async def _servers(redis: RedisProcess, n: int = 2, **options: Any) -> list[RealtimeServer]:
    return [await RealtimeServer(redis.url, SECRET, replace(FAST, server_id=f"i{i}", **options)).start()
            for i in range(n)]


async def _stop(servers: list[RealtimeServer], tabs: list[Tab]) -> None:
    for tab in tabs:
        with contextlib.suppress(Exception):
            await tab.close()
    for server in servers:
        await server.stop()


async def test_a_pause_longer_than_the_timeout_keeps_everyone_open_present_and_caught_up(redis: RedisProcess
                                                                                         ) -> None:
    servers = await _servers(redis)
    tabs: list[Tab] = []
    try:
        observer = await Tab.open(servers[0], "observer")
        writer = await Tab.open(servers[1], "writer")
        viewers = [await Tab.open(servers[i % 2], f"v{i}") for i in range(4)]
        tabs = [observer, writer, *viewers]
        for v in viewers:
            await v.view("t", every=0.15)
        assert await writer.update("t", {"n": 1}, "u-1") == 1
        await asyncio.sleep(0.5)
        os.kill(redis.pid, signal.SIGSTOP)  # type: ignore[arg-type]
        paused = time.monotonic()
        while any(s.broker.up for s in servers):  # detected by the probe within interval + timeout
            await asyncio.sleep(0.01)
        assert time.monotonic() - paused < 1.0
        await writer.send("task.update", {"taskId": "t", "changes": {"n": 2}, "ref": "u-2"})
        refused = await writer.wait_for("error", ref="u-2")
        assert refused["payload"]["code"] == "unavailable" and refused["payload"]["retryAfter"] == 0.2
        await observer.send("task.get", {"taskId": "t", "ref": "g-1"})
        await observer.send("task.list", {"ref": "l-1"})
        assert (await observer.wait_for("error", ref="g-1"))["payload"]["code"] == "unavailable"
        assert (await observer.wait_for("error", ref="l-1"))["payload"]["code"] == "unavailable"
        await asyncio.sleep(2.0 - (time.monotonic() - paused))
        os.kill(redis.pid, signal.SIGCONT)  # type: ignore[arg-type]
        assert await writer.update("t", {"n": 2}, "u-2") == 2  # the retry lands once Redis answers
        for tab in [observer, *viewers]:
            await tab.wait_for("task.updated", version=2)
        await asyncio.sleep(1.5)  # > timeout + sweep after the outage: any false departure would be out now
        assert all(tab.closed_at is None for tab in tabs)
        assert observer.of("presence.left") == []
        for tab in [observer, writer, *viewers]:
            assert [f["payload"]["version"] for f in tab.of("task.updated")] == [1, 2]
        assert writer.of("ack", ref="u-2") and len(writer.of("ack")) == 2  # never an ack for the refused attempt
    finally:
        await _stop(servers, tabs)


async def test_a_viewer_that_crashes_during_the_outage_is_announced_within_timeout_plus_outage_plus_sweep(
        redis: RedisProcess) -> None:
    servers = await _servers(redis)
    tabs: list[Tab] = []
    try:
        observer = await Tab.open(servers[0], "observer")
        alive, crashed = await Tab.open(servers[0], "alive"), await Tab.open(servers[1], "crashed")
        tabs = [observer, alive, crashed]
        for v in (alive, crashed):
            await v.view("t", every=0.15)
        await asyncio.sleep(0.4)
        os.kill(redis.pid, signal.SIGSTOP)  # type: ignore[arg-type]
        paused = time.monotonic()
        await asyncio.sleep(0.3)
        crashed.crash()
        last_beat = crashed.last_beat
        await asyncio.sleep(2.0 - (time.monotonic() - paused))
        os.kill(redis.pid, signal.SIGCONT)  # type: ignore[arg-type]
        outage = time.monotonic() - paused
        left = await observer.wait_for("presence.left", timeout=5.0, userId="crashed")
        announced = next(t for t, f in observer.frames if f is left)
        assert left["payload"]["reason"] == "timeout"
        # The bound of the issue, plus the probe interval (blindness counts from the last probe that came back)
        # and delivery slack.
        assert announced - last_beat <= 0.6 + outage + 0.05 + 0.1 + 0.3, announced - last_beat
        await asyncio.sleep(1.0)
        assert observer.of("presence.left", userId="alive") == []
    finally:
        await _stop(servers, tabs)


async def test_a_deaf_subscriber_is_caught_and_every_connection_caught_up_reading_each_workspace_once(
        redis: RedisProcess) -> None:
    servers = await _servers(redis)
    workspaces = ["wa", "wb", "wc"]
    tabs: list[Tab] = []
    try:
        readers = {ws: [await Tab.open(servers[0], f"r{k}", ws) for k in range(4)] for ws in workspaces}
        writers = {ws: await Tab.open(servers[1], "writer", ws) for ws in workspaces}
        tabs = [*writers.values(), *(t for ts in readers.values() for t in ts)]
        transport = servers[0].fanout._protocol.transport  # type: ignore[union-attr]
        transport.pause_reading()  # connected and silent: a proxy that stopped forwarding
        deaf = time.monotonic()
        for n in range(1, 6):
            for ws in workspaces:
                assert await writers[ws].update("t", {"n": n}, f"{ws}-{n}") == n
        while not servers[0].outages.reports:  # type: ignore[union-attr]
            assert time.monotonic() - deaf < 2.0, "the deaf subscriber was not replaced within 2 s"
            await asyncio.sleep(0.01)
        report = servers[0].outages.reports[-1]  # type: ignore[union-attr]
        assert report.subscribe_commands == 1 and report.commands == {ws: 1 for ws in workspaces}
        assert report.connections == 12 and report.replayed == 12 * 5 - report.released * 4
        for ts in readers.values():
            for tab in ts:
                await tab.wait_for("task.updated", version=5)
        await asyncio.sleep(0.2)
        for tab in tabs:
            assert [f["payload"]["version"] for f in tab.of("task.updated")] == [1, 2, 3, 4, 5]
            assert tab.closed_at is None and tab.of("session.resync") == []
    finally:
        await _stop(servers, tabs)


async def test_past_the_grace_connections_close_spread_out_and_are_told_to_back_off(redis: RedisProcess) -> None:
    servers = await _servers(redis, n=1, broker_grace=0.3, broker_close_spread=1.0)
    tabs: list[Tab] = []
    try:
        tabs = [await Tab.open(servers[0], f"u{k}") for k in range(8)]
        redis.crash()
        lost = time.monotonic()
        while any(t.closed_at is None for t in tabs):
            assert time.monotonic() - lost < 5.0, "not every connection was closed past the grace"
            await asyncio.sleep(0.02)
        closes = sorted(t.closed_at - lost for t in tabs)  # type: ignore[operator]
        assert closes[0] >= 0.3 and closes[-1] <= 0.3 + 1.0 + 0.5
        assert closes[-1] - closes[0] > 0.2  # spread, not all at once
        for tab in tabs:
            assert tab.ws.close_code == 1013 and tab.ws.close_reason == "redis unavailable"
            last = tab.of("error")[-1]["payload"]
            assert last["code"] == "unavailable" and last["retryAfter"] == 1.0
        redis.start()
        while not servers[0].broker.up:
            assert time.monotonic() - lost < 10.0
            await asyncio.sleep(0.02)
        tabs.append(await Tab.open(servers[0], "again"))
    finally:
        await _stop(servers, tabs)


async def test_a_stalled_event_loop_does_not_expire_the_viewers_it_could_not_hear(redis: RedisProcess) -> None:
    """Everything in this process stops for 1.5 s (2.5 timeouts): the instances' first sweep after it must not
    judge viewers whose beats are still unread."""
    servers = await _servers(redis)
    tabs: list[Tab] = []
    try:
        observer = await Tab.open(servers[1], "observer")
        viewers = [await Tab.open(servers[i % 2], f"v{i}") for i in range(4)]
        tabs = [observer, *viewers]
        for v in viewers:
            await v.view("t", every=0.15)
        await asyncio.sleep(0.5)
        time.sleep(1.5)  # noqa: ASYNC251 - the point: a stopped loop (a long GC pause, a stopped VM)
        await asyncio.sleep(1.5)
        assert observer.of("presence.left") == []
        assert all(tab.closed_at is None for tab in tabs)
    finally:
        await _stop(servers, tabs)


async def test_an_instance_keeps_serving_its_cluster_when_another_loses_redis(redis_url: str) -> None:
    """The conftest cluster's Redis is not touched: the Instances helper still works (a smoke test that the
    outage machinery stays out of the way when nothing fails)."""
    servers = [await RealtimeServer(redis_url, SECRET, replace(FAST, server_id=f"s{i}")).start() for i in range(2)]
    cluster = Instances(servers)
    try:
        a, b = await cluster.client("a"), await cluster.client("b", instance=1)
        await a.send("task.update", {"taskId": "t", "changes": {"x": 1}})
        assert (await b.expect("task.updated"))["payload"]["version"] == 1
        assert all(s.broker.up and s.outages and s.outages.outages == 0 for s in servers)
    finally:
        await cluster.close()
