"""The clients and the loss check of the failover benchmark (:mod:`bench.resilience.failover`) and its test.

An :class:`Editor` is one WebSocket connection that sends a ``task.update`` every ``period`` seconds without
waiting for the previous answer (a steady rate, as a busy tab), each with a fresh ``ref`` and a unique token in
its changes, and records every answer: ``ack`` (with its version and latency), an ``error`` code
(``unavailable`` while the master is being replaced, ``not_replicated`` in replica mode) or nothing. It never
retries: each update is one sample. A close is recorded (the target is none) and followed by a reconnect.

:func:`acked_lost` is the check: an acked ``(task, version, token)`` is kept only if the workspace's history in
Redis (after the failover, on the promoted replica) holds that very event. A lost update's version number can be
handed out again after a failover, so the version counter alone cannot tell.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from dataclasses import dataclass, field
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

__all__ = ["Editor", "Sent", "acked_lost"]


@dataclass
class Sent:
    """One ``task.update`` and what came back."""

    ws: str
    task: str
    ref: str
    sent: float  # time.monotonic()
    outcome: str | None = None  # "ack", an error code, or None (no answer)
    version: int | None = None
    latency: float | None = None  # seconds, send to answer


@dataclass
class Editor:
    """One tab editing ``task`` of ``ws`` at a steady rate on server ``url``."""

    url: str
    token: str
    ws: str
    user: str
    task: str = "T"
    period: float = 0.05
    sent: dict[str, Sent] = field(default_factory=dict)
    closes: list[tuple[float, int | None, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._conn: ClientConnection | None = None
        self._stop = asyncio.Event()
        self._n = 0
        self._writer: asyncio.Future[None] | None = None

    async def run(self) -> None:
        """Connect (again after a close) and send until :meth:`stop`."""
        while not self._stop.is_set():
            try:
                conn = await connect(f"{self.url}?token={self.token}&workspace={self.ws}", compression=None,
                                     ping_interval=None, open_timeout=5)
            except (InvalidStatus, OSError, TimeoutError):
                await asyncio.sleep(0.5)
                continue
            self._conn = conn
            writer = self._writer = asyncio.ensure_future(self._write(conn))
            try:
                async for raw in conn:
                    self._read(json.loads(raw))
            except ConnectionClosed:
                pass
            finally:
                writer.cancel()
                self._conn = None
            if not self._stop.is_set():
                self.closes.append((time.time(), conn.close_code, conn.close_reason or ""))
                await asyncio.sleep(0.5)

    async def _write(self, conn: ClientConnection) -> None:
        with contextlib.suppress(ConnectionClosed):
            while True:
                await self._send_one(conn)
                await asyncio.sleep(self.period)

    def burst(self, n: int, pad: int = 0) -> None:
        """Send ``n`` more updates at once (a write burst), beside the steady ones, each with ``pad`` more bytes
        (a bigger replication stream: the replica falls further behind the acks)."""
        conn = self._conn
        if conn is not None:
            asyncio.ensure_future(self._burst(conn, n, pad))

    async def _burst(self, conn: ClientConnection, n: int, pad: int) -> None:
        with contextlib.suppress(ConnectionClosed):
            for _ in range(n):
                await self._send_one(conn, pad)

    async def _send_one(self, conn: ClientConnection, pad: int = 0) -> None:
        self._n += 1
        ref = f"{self.user}-{self._n}"
        self.sent[ref] = Sent(self.ws, self.task, ref, time.monotonic())
        changes: dict[str, str] = {"u": ref, "pad": "x" * pad} if pad else {"u": ref}
        await conn.send(json.dumps({"type": "task.update", "workspaceId": self.ws,
                                    "payload": {"taskId": self.task, "changes": changes, "ref": ref}}))

    def _read(self, frame: dict[str, Any]) -> None:
        payload = frame.get("payload", {})
        sent = self.sent.get(payload.get("ref", "")) if frame["type"] in ("ack", "error") else None
        if sent is None or sent.outcome is not None:
            return
        sent.latency = time.monotonic() - sent.sent
        if frame["type"] == "ack":
            sent.outcome, sent.version = "ack", int(payload["version"])
        else:
            sent.outcome = payload.get("code", "error")

    async def stop(self, drain: float = 1.5) -> None:
        """Stop sending; wait ``drain`` s for the last answers, then close."""
        self._stop.set()
        if self._writer is not None:
            self._writer.cancel()
        await asyncio.sleep(drain)
        if self._conn is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._conn.close(), 2)


def acked_lost(redis_url: str, editors: list[Editor]) -> tuple[int, int, list[Sent]]:
    """``(acked, lost, the lost ones)``: an ack is lost if its workspace's history (read through a cluster
    client, so from the current masters) has no ``task.updated`` of that task with that version and token."""
    from redis.cluster import RedisCluster

    from rtlib.server import keyspace

    kept: set[tuple[str, str, int, str]] = set()
    workspaces = {e.ws for e in editors}
    with RedisCluster.from_url(redis_url) as r:
        for ws in workspaces:
            for _, fields in r.xrange(keyspace.history_key(ws)):
                event = keyspace.history_event(fields)
                if event["type"] == "task.updated":
                    p = event["payload"]
                    kept.add((ws, p["taskId"], int(p["version"]), str(p["changes"].get("u"))))
    acked = [s for e in editors for s in e.sent.values() if s.outcome == "ack"]
    lost = [s for s in acked if (s.ws, s.task, s.version, s.ref) not in kept]
    return len(acked), len(lost), lost
