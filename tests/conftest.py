"""Shared fixtures: a real redis-server on a free port for the session, and server instances on it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import redis
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from rtlib.protocol.config import ServerConfig
from rtlib.server.auth import issue_token
from rtlib.server.driver import RealtimeServer
from rtlib.server.redis_cluster import RedisClusterProcess
from rtlib.server.redis_process import RedisProcess

# make test hands the longest test files to its xdist workers first (tests/schedule.py says why).
pytest_plugins = ["schedule"]

SECRET = "test-secret-that-is-long-enough-for-hs256"


@pytest.fixture(scope="session")
def redis_process() -> Iterator[RedisProcess]:
    """One real redis-server for the whole run (never skipped: the set-up installs a binary)."""
    with RedisProcess() as proc:
        yield proc


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[RedisClusterProcess]:
    """One real Redis Cluster for the whole run, started at its first use: 3 masters with a replica each."""
    with RedisClusterProcess(masters=3, replicas=1) as proc:
        yield proc


@pytest.fixture
def redis_cluster_url(redis_cluster: RedisClusterProcess) -> str:
    """The session's Redis Cluster (the URL of one node), every master emptied before each test."""
    for port in redis_cluster.ports[:redis_cluster.masters]:
        with redis.Redis(port=port) as client:
            client.flushall()
    return redis_cluster.url


@pytest.fixture
def redis_url(redis_process: RedisProcess) -> str:
    """The session's Redis, emptied before each test."""
    with redis.Redis.from_url(redis_process.url) as client:
        client.flushall()
    return redis_process.url


class WsClient:
    """A thin test client speaking the wire contract; keeps every frame it received, by type."""

    def __init__(self, ws: ClientConnection, workspace: str, user: str) -> None:
        self.ws, self.workspace, self.user = ws, workspace, user
        self.welcome: dict[str, Any] = {}
        self.backlog: list[dict[str, Any]] = []

    async def send(self, type_: str, payload: dict[str, Any], **extra: Any) -> None:
        await self.ws.send(json.dumps({"type": type_, "workspaceId": extra.pop("workspace", self.workspace),
                                       "payload": payload, **extra}))

    async def recv(self, timeout: float = 5.0) -> dict[str, Any]:
        return json.loads(await asyncio.wait_for(self.ws.recv(), timeout))

    async def expect(self, type_: str, timeout: float = 5.0, **payload_match: Any) -> dict[str, Any]:
        """The first frame of ``type_`` whose payload contains ``payload_match``; frames passed over are kept
        (in order) for later ``expect`` calls, so tests need not guess the interleaving of independent events."""

        def matches(event: dict[str, Any]) -> bool:
            return event["type"] == type_ and all(event["payload"].get(k) == v for k, v in payload_match.items())

        for i, event in enumerate(self.backlog):
            if matches(event):
                return self.backlog.pop(i)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            event = await self.recv(max(0.01, deadline - loop.time()))
            if matches(event):
                return event
            self.backlog.append(event)

    async def silent(self, seconds: float = 0.3, type_: str | None = None) -> list[dict[str, Any]]:
        """Frames received in the next ``seconds`` (of ``type_`` only, if given); tests assert it is empty."""
        got = [e for e in self.backlog if type_ is None or e["type"] == type_]
        self.backlog = [e for e in self.backlog if e not in got]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while (left := deadline - loop.time()) > 0:
            try:
                event = await self.recv(left)
            except TimeoutError:
                break
            if type_ is None or event["type"] == type_:
                got.append(event)
        return got


async def close_draining(client: WsClient) -> None:
    """Close while reading: a client that stopped reading would otherwise miss the server's close frame."""
    closing = asyncio.ensure_future(client.ws.close())
    with contextlib.suppress(ConnectionClosed):
        async for _ in client.ws:
            pass
    await closing


def missing(reason: str) -> None:
    """A test cannot run here (no Chromium, no Playwright...): skip it with the reason, except under CI=true,
    where nothing the README promises may be skipped, so it fails instead (.ci/run installs what is needed)."""
    if os.environ.get("CI"):
        pytest.fail(f"CI=true and {reason}", pytrace=False)
    pytest.skip(reason, allow_module_level=True)


def token(user: str, *workspaces: str, ttl: float = 600) -> str:
    return issue_token(SECRET, user, list(workspaces), ttl)


class Instances:
    """N server instances on one Redis, and a way to connect test clients to any of them."""

    def __init__(self, servers: list[RealtimeServer]) -> None:
        self.servers = servers
        self._clients: list[WsClient] = []

    async def client(self, user: str, workspace: str = "w1", instance: int = 0, **connect_kw: Any) -> WsClient:
        url = f"{self.servers[instance].url}?token={token(user, workspace)}&workspace={workspace}"
        ws = await connect(url, compression=None, **connect_kw)
        client = WsClient(ws, workspace, user)
        client.welcome = await client.expect("session.welcome")
        self._clients.append(client)
        return client

    async def close(self) -> None:
        for c in self._clients:
            await close_draining(c)
        for s in self.servers:
            await s.stop()


@pytest.fixture
def server_config() -> ServerConfig:
    """Presence compressed 100x (0.3 s heartbeat, 0.6 s timeout, 0.05 s sweep) so timeouts test quickly."""
    return ServerConfig(heartbeat_interval=0.3, presence_timeout=0.6, sweep_interval=0.05)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "before_redis: checks what the server decides before any Redis call "
                            "(handshake refusals, frame parsing, static files): run on one Redis only")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """The ``cluster`` fixture's backends: one Redis and a 3-master Redis Cluster (issue 22), for every test but
    those marked ``before_redis`` (on a cluster they would check the same code again, for ~6 s of ``make test``)."""
    defs = metafunc._arg2fixturedefs.get("cluster")  # the test's own "cluster" fixture, if any, is not ours
    if defs and getattr(defs[-1].func, "__module__", None) == __name__:
        # A test that reads or writes the single Redis itself (redis_url) has no cluster variant: not generated
        # rather than skipped, so a CI log's skips stay the ones that mean something is missing.
        single = (metafunc.definition.get_closest_marker("before_redis") is not None
                  or "redis_url" in metafunc.fixturenames)
        metafunc.parametrize("cluster", ["redis"] if single else ["redis", "redis-cluster"], indirect=True)


@pytest.fixture
async def cluster(request: pytest.FixtureRequest, server_config: ServerConfig) -> AsyncIterator[Instances]:
    """Two server instances sharing one real Redis, then the same on a 3-master Redis Cluster (issue 22: the
    tests of the wire contract that take this fixture run on both, :func:`pytest_generate_tests`)."""
    if request.param == "redis-cluster":
        redis_url = request.getfixturevalue("redis_cluster_url")
    else:
        redis_url = request.getfixturevalue("redis_url")
    servers = []
    for i in range(2):
        from dataclasses import replace

        servers.append(await RealtimeServer(redis_url, SECRET, replace(server_config, server_id=f"i{i}")).start())
    c = Instances(servers)
    yield c
    await c.close()
