"""The frame phase: probers send each hostile frame, then a sync, and compare the direct replies with the contract.

Replies to one connection's requests come back in request order (``docs/protocol.md`` section 11), so what
arrives between a hostile frame and the ``task.snapshot`` of the sync that follows it is that frame's outcome.
The sync reads the probe's own task (``h<n>``): its version must be 0 for every refused frame (nothing was
stored) and 1 for an accepted update. Broadcasts (``task.updated``, ``presence.*``) are set aside and checked on
their own: the sender's own ``task.updated`` must arrive, stamped with the sender's ``userId``. Each prober paces
itself below both rate budgets, so no frame of this phase may be answered ``rate_limited``.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from bench.hostile.frames import Probe
from bench.hostile.wire import OP_TEXT, HandshakeRefused, RawWs, frame_bytes, open_ws

__all__ = ["FrameResults", "Pacer", "run_frames"]

BROADCAST = {"task.updated", "presence.joined", "presence.left"}
NO_REF = {"invalid_json", "invalid_envelope", "rate_limited"}


class Pacer:
    """The client side of the server's budgets, with margin: frames/s and bytes/s token buckets."""

    def __init__(self, rate: float = 80.0, burst: float = 150.0, byte_rate: float = 192 * 1024,
                 byte_burst: float = 768 * 1024) -> None:
        self.spec = (rate, burst, byte_rate, byte_burst)
        self.reset()

    def reset(self) -> None:
        rate, burst, byte_rate, byte_burst = self.spec
        self.frames, self.bytes, self.last = burst, byte_burst, time.monotonic()

    async def take(self, frames: int, size: int) -> None:
        rate, burst, byte_rate, byte_burst = self.spec
        while True:
            now = time.monotonic()
            self.frames = min(burst, self.frames + (now - self.last) * rate)
            self.bytes = min(byte_burst, self.bytes + (now - self.last) * byte_rate)
            self.last = now
            if self.frames >= frames and self.bytes >= min(size, byte_burst):
                self.frames -= frames
                self.bytes -= size
                return
            await asyncio.sleep(max((frames - self.frames) / rate, (min(size, byte_burst) - self.bytes) / byte_rate,
                                    0.001))


@dataclass
class FrameResults:
    """What the frame phase saw: counts by class, mismatches with their evidence."""

    sent: Counter[str] = field(default_factory=Counter)
    mismatched: Counter[str] = field(default_factory=Counter)
    mismatches: list[dict[str, Any]] = field(default_factory=list)
    reconnects: int = 0
    bad_utf8: int = 0
    seconds: float = 0.0

    def miss(self, probe: Probe, observed: str, detail: str = "") -> None:
        self.mismatched[probe.cls] += 1
        first = probe.frames[0].data if probe.frames else b""
        self.mismatches.append({"n": probe.n, "class": probe.cls, "expected": probe.expect, "observed": observed,
                                "detail": detail[:300], "frame": repr(first[:160]), "bytes": probe.size})


class _Prober:
    def __init__(self, k: int, url: str, results: FrameResults) -> None:
        self.k, self.user, self.url, self.results = k, f"p{k}", url, results
        self.pacer = Pacer()
        self.ws: RawWs | None = None
        self.acks: dict[tuple[str, int], Probe] = {}
        self.updated: dict[tuple[str, int], str] = {}  # (taskId, version) of own tasks -> envelope userId
        self.tasks: set[str] = set()

    async def connect(self) -> None:
        if self.ws is not None:
            self.results.bad_utf8 += self.ws.bad_utf8
            await self.ws.close(0.5)
        for attempt in range(50):  # the server may not have counted the last connection out yet (user cap)
            try:
                self.ws = await open_ws(self.url)
                break
            except HandshakeRefused:
                if attempt == 49:
                    raise
                await asyncio.sleep(0.1)
        self.pacer.reset()
        welcome = await self._next(10)
        assert welcome is not None and welcome.get("type") == "session.welcome", welcome

    async def _next(self, timeout: float) -> dict[str, Any] | None:
        """The next direct reply (broadcasts are recorded and skipped), or None on close/timeout."""
        assert self.ws is not None
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            raw = await self.ws.next_text(left)
            if raw is None:
                return None
            event = json.loads(raw.decode("utf-8", "replace"))  # bad UTF-8 is counted by RawWs
            if event.get("type") in BROADCAST:
                p = event.get("payload", {})
                if event["type"] == "task.updated" and p.get("taskId") in self.tasks:
                    self.updated[(p["taskId"], p["version"])] = event.get("userId")
                continue
            return event
        return None

    async def run(self, probes: list[Probe]) -> None:
        await self.connect()
        for probe in probes:
            await self.one(probe)
        self.results.bad_utf8 += self.ws.bad_utf8 if self.ws else 0

    async def one(self, probe: Probe) -> None:
        ws, res = self.ws, self.results
        assert ws is not None
        res.sent[probe.cls] += 1
        if probe.task:
            self.tasks.add(probe.task)
        closes = probe.expect.startswith("close")
        sync_ref = f"s{probe.n}"
        sync = json.dumps({"type": "task.get", "workspaceId": "ws-a",
                           "payload": {"taskId": f"h{probe.n}", "ref": sync_ref}}).encode()
        wire = b"".join(frame_bytes(f.opcode, f.data, f.fin, f.rsv, f.masked) for f in probe.frames)
        await self.pacer.take(len(probe.frames) + 1, probe.size + len(sync))
        await ws.send_raw(wire if closes else wire + frame_bytes(OP_TEXT, sync))
        if closes:
            code = await ws.wait_closed(10)
            observed = "open after 10 s" if code is None else f"close {code}"
            if observed != probe.expect:
                res.miss(probe, observed, ws.close_reason)
            await self._reconnect()
            return
        replies: list[dict[str, Any]] = []
        while True:
            event = await self._next(15)
            if event is None:
                code = ws.close_code if ws.closed.is_set() else None
                res.miss(probe, f"close {code}" if code else "no sync reply in 15 s",
                         ws.close_reason + " " + json.dumps(replies)[:200])
                await self._reconnect()
                return
            p = event.get("payload", {})
            if event.get("type") == "task.snapshot" and p.get("ref") == sync_ref:
                break
            replies.append(event)
        self._judge(probe, replies, p.get("version"))

    async def _reconnect(self) -> None:
        self.results.reconnects += 1
        await self.connect()

    def _judge(self, probe: Probe, replies: list[dict[str, Any]], stored_version: int | None) -> None:
        res, expect = self.results, probe.expect
        kinds = [(f"error {e['payload'].get('code')}" if e.get("type") == "error" else e.get("type")) for e in replies]
        observed = " + ".join(kinds) if kinds else "no reply"
        detail = replies[0]["payload"].get("message", "") if replies and replies[0].get("type") == "error" else ""
        if observed != expect:
            res.miss(probe, observed, detail)
            return
        want_version = 1 if expect == "ack" and probe.task == f"h{probe.n}" else 0
        if stored_version != want_version:
            res.miss(probe, f"{observed}, but task h{probe.n} is at version {stored_version}",
                     "a refused frame must not be stored" if want_version == 0 else "an acked update was not stored")
            return
        if not replies:
            return
        event = replies[0]
        p = event["payload"]
        if event.get("userId") != self.user:
            res.miss(probe, f"{observed} with userId {event.get('userId')!r}", "the server must stamp the sender")
        elif expect.startswith("error"):
            code = p.get("code")
            if code in NO_REF and "ref" in p:
                res.miss(probe, f"{observed} with ref {p['ref']!r}", f"{code} never carries a ref")
            elif code not in NO_REF and probe.ref is not None and p.get("ref") != probe.ref:
                res.miss(probe, f"{observed} with ref {p.get('ref')!r}", f"the valid ref {probe.ref!r} is echoed")
        elif expect == "ack":
            if p.get("ref") != f"r{probe.n}" or p.get("taskId") != probe.task:
                res.miss(probe, f"ack {p}", "ack must carry the update's ref and taskId")
            else:
                self.acks[(p["taskId"], p["version"])] = probe

    def check_broadcasts(self) -> None:
        """Every acked update came back to its sender as ``task.updated``, stamped with the sender's userId."""
        for key, probe in self.acks.items():
            user = self.updated.get(key)
            if user != self.user:
                self.results.miss(probe, "ack, but " + ("no own task.updated" if user is None else
                                                        f"task.updated stamped {user!r}"),
                                  "the sender receives its own task.updated with its userId")


async def run_frames(base_url_for: Any, probes: list[Probe], probers: int = 20) -> FrameResults:
    """Spread ``probes`` over ``probers`` connections (user ``p<k>``, workspace ``ws-a``), in probe order."""
    results = FrameResults()
    t0 = time.monotonic()
    workers = [_Prober(k, base_url_for(f"p{k}"), results) for k in range(probers)]
    await asyncio.gather(*(w.run(probes[k::probers]) for k, w in enumerate(workers)))
    await asyncio.sleep(1.0)  # own task.updated of the last acks
    for w in workers:
        while w.ws is not None and not w.ws.texts.empty():
            await w._next(0.01)
        w.check_broadcasts()
        if w.ws is not None:
            await w.ws.close(1.0)
    results.seconds = time.monotonic() - t0
    return results
