"""The clients of the broker-outage benchmark (:mod:`bench.resilience.broker_outage`): what a browser tab does.

Each :class:`Tab` is one logical client of ``docs/protocol.md`` §13 on real sockets: it connects to one instance
(the other one after a close), resumes with its last ``offset``/``epoch`` on every reconnect, backs off (1 s
doubling to 10 s, jittered, never less than the last ``retryAfter``), reloads its task on ``session.resync`` or a
``recovered: false`` welcome, and plays one role:

* ``viewer``: joins the task and beats every heartbeat interval from its own timer (a random phase), until the
  benchmark makes it *crash* (it goes silent and keeps its socket: only the timeout can tell);
* ``editor``: sends a ``task.update`` every ``period`` seconds, each with a fresh ``ref`` and a unique token in
  its changes, and retries the same ``ref`` after an ``unavailable`` error (``retryAfter``), a close or 5 s
  without an answer, until acked;
* ``observer``: only listens.

Everything each tab receives is recorded with the wall time it arrived (the servers stamp events with the
same host's wall clock), so delivery delays, losses and presence departures are computed afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from dataclasses import dataclass, field
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

__all__ = ["Ack", "Tab"]

ACK_TIMEOUT = 5.0


@dataclass
class Ack:
    """An acknowledged update: its token, the version it got, when it was first sent and acked, and how many
    sends it took."""

    token: str
    version: int
    first: float
    at: float
    attempts: int


@dataclass
class Tab:
    """One logical client (it may reconnect many times). ``urls``: the instances, the first one preferred."""

    user: str
    workspace: str
    role: str
    urls: list[str]
    token: str  # signed for ``user``, with ``workspace``
    heartbeat: float = 30.0
    period: float = 1.0
    task: str = "T"
    rng: random.Random = field(default_factory=random.Random)
    # --- what happened, for the report ----------------------------------------------------------------------
    received: list[tuple[float, dict[str, Any]]] = field(default_factory=list)
    closes: list[tuple[float, int | None, str]] = field(default_factory=list)  # (when, code, reason)
    connects: list[tuple[float, bool | None]] = field(default_factory=list)  # (when welcomed, recovered)
    refused: int = 0  # failed (re)connection attempts (503, connection refused...)
    resyncs: list[float] = field(default_factory=list)  # when told to reload (resync, or recovered: false)
    acks: list[Ack] = field(default_factory=list)
    unavailable: int = 0  # `unavailable` errors received
    beats: list[float] = field(default_factory=list)
    crashed_at: float | None = None

    def __post_init__(self) -> None:
        self.offset: str | None = None
        self.epoch: str | None = None
        self.ws: ClientConnection | None = None
        self._connected = asyncio.Event()
        self._replies: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._retry_after = 0.0
        self._stop = False

    # --- lifecycle ----------------------------------------------------------------------------------------------
    async def run(self) -> None:
        """Connect, and reconnect after every close, until :meth:`stop`."""
        jobs = [asyncio.ensure_future(self._beat() if self.role == "viewer" else self._edit())] \
            if self.role in ("viewer", "editor") else []
        failures = 0
        try:
            while not self._stop:
                url = self.urls[(len(self.closes) + failures) % len(self.urls)]
                query = f"?token={self.token}&workspace={self.workspace}"
                if self.offset and self.epoch:
                    query += f"&offset={self.offset}&epoch={self.epoch}"
                try:
                    ws = await asyncio.wait_for(connect(url + query, compression=None, ping_interval=None,
                                                        open_timeout=5), 6)
                except (InvalidStatus, OSError, TimeoutError):
                    self.refused += 1
                    failures += 1
                    await asyncio.sleep(self._backoff(failures))
                    continue
                failures = 0
                await self._session(ws)
                if not self._stop:
                    await asyncio.sleep(self._backoff(1))
        finally:
            for job in jobs:
                job.cancel()

    def _backoff(self, failures: int) -> float:
        base = min(10.0, 1.0 * 2 ** (failures - 1))
        return max(self._retry_after, base) * self.rng.uniform(1.0, 1.5)

    def halt(self) -> None:
        """From now on a close is the benchmark's own doing: not recorded, not followed by a reconnect."""
        self._stop = True

    async def stop(self) -> None:
        self._stop = True
        if self.ws is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.ws.close(), 2)

    def crash(self) -> None:
        """Go silent, socket open: no more beats (a frozen tab, a laptop lid closed without a network drop)."""
        self.crashed_at = time.time()

    # --- one connection -----------------------------------------------------------------------------------------
    async def _session(self, ws: ClientConnection) -> None:
        self.ws = ws
        try:
            async for raw in ws:
                now = time.time()
                frame = json.loads(raw)
                self.received.append((now, frame))
                if "offset" in frame:
                    self.offset, self.epoch = frame["offset"], frame["epoch"]
                kind, payload = frame["type"], frame["payload"]
                if kind == "session.welcome":
                    self._welcomed(now, payload)
                elif kind == "session.resync":
                    self.offset, self.epoch = payload.get("offset"), payload.get("epoch")
                    self.resyncs.append(now)
                    await self._reload()
                elif kind in ("ack", "error") and (ref := payload.get("ref")) in self._replies:
                    if kind == "error" and payload["code"] == "unavailable":
                        self.unavailable += 1
                        self._retry_after = payload.get("retryAfter", 0.0)
                    self._replies.pop(ref).set_result(frame)
                elif kind == "error" and payload.get("code") == "unavailable":
                    self.unavailable += 1
                    self._retry_after = payload.get("retryAfter", 0.0)
        except ConnectionClosed:
            pass
        finally:
            self._connected.clear()
            self.ws = None
            if not self._stop:
                self.closes.append((time.time(), ws.close_code, ws.close_reason or ""))
            for fut in self._replies.values():
                if not fut.done():
                    fut.set_exception(ConnectionError("closed"))
            self._replies.clear()

    def _welcomed(self, now: float, payload: dict[str, Any]) -> None:
        recovered = payload.get("recovered")
        self.connects.append((now, recovered))
        if recovered is not True:
            self.offset, self.epoch = payload.get("offset"), payload.get("epoch")
        if recovered is False:
            self.resyncs.append(now)
        self._connected.set()
        self._retry_after = 0.0
        asyncio.ensure_future(self._reload())

    async def _reload(self) -> None:
        """What a client does after (re)connecting without a replay: read its task, re-join what it views."""
        with contextlib.suppress(ConnectionClosed, AttributeError):
            await self._send("task.get", {"taskId": self.task})
            if self.role == "viewer" and self.crashed_at is None:
                await self._send("presence.join", {"taskId": self.task})
                self.beats.append(time.time())

    async def _send(self, type_: str, payload: dict[str, Any]) -> None:
        assert self.ws is not None
        await self.ws.send(json.dumps({"type": type_, "workspaceId": self.workspace, "payload": payload}))

    # --- roles ----------------------------------------------------------------------------------------------------
    async def _beat(self) -> None:
        await self._connected.wait()
        await asyncio.sleep(self.rng.uniform(0, self.heartbeat))  # each tab's timer has its own phase
        while True:
            if self.crashed_at is None and self._connected.is_set():
                with contextlib.suppress(ConnectionClosed, AttributeError):
                    await self._send("presence.heartbeat", {"taskId": self.task})
                    self.beats.append(time.time())
            await asyncio.sleep(self.heartbeat)

    async def _edit(self) -> None:
        await self._connected.wait()
        await asyncio.sleep(self.rng.uniform(0, self.period))
        k = 0
        while True:
            k += 1
            token = f"{self.user}-{k}"
            attempts, first = 0, time.time()
            while True:
                await self._connected.wait()
                attempts += 1
                fut = self._replies[token] = asyncio.get_running_loop().create_future()
                try:
                    await self._send("task.update", {"taskId": self.task, "changes": {"u": token}, "ref": token})
                    reply = await asyncio.wait_for(fut, ACK_TIMEOUT)
                except (ConnectionClosed, ConnectionError, AttributeError, TimeoutError):
                    self._replies.pop(token, None)
                    await asyncio.sleep(0.2)
                    continue
                if reply["type"] == "ack":
                    self.acks.append(Ack(token, reply["payload"]["version"], first, time.time(), attempts))
                    break
                await asyncio.sleep(reply["payload"].get("retryAfter", 1.0))
            await asyncio.sleep(self.period)
