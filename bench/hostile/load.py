"""The load phase: floods (frames, bytes), big broadcasts, slow readers, half-open sockets, connection storms,
the per-user connection cap and a token expiring while open, all at once while the neighbour measures.

Each part returns ``(class, ok, observed)`` rows; ``ok`` is judged against ``CLASSES`` in :mod:`bench.hostile.classes`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
from dataclasses import dataclass
from typing import Any

from bench.hostile.server import ServerUnderTest
from bench.hostile.wire import OP_TEXT, HandshakeRefused, RawWs, frame_bytes, open_ws
from rtlib.protocol.config import ServerConfig

__all__ = ["LoadPlan", "run_load"]

Row = tuple[str, bool, str]
BIG = 60_000


@dataclass(frozen=True)
class LoadPlan:
    """How much of each attack (0 turns a part off); ``ci()`` is small enough for ``make test``."""

    frame_floods: int = 4
    flood_frames: int = 3000
    byte_floods: int = 2
    byte_flood_frames: int = 1000
    broadcasters: int = 10
    # In total, > --max-write-buffer (1 MiB in this harness) + kernel buffers: the slow readers are closed. The
    # server paces the broadcasters (--fanout-rate): ~9 updates each take ~8 s in the attacked workspace.
    broadcast_bytes: int = 5 * 1024 * 1024
    slow_readers: int = 2
    half_open: int = 30
    storm: int = 400
    # The storm's workspace. Not the attacked one: there, every big broadcast would be re-sent to each of the
    # storm's connections too (400 x 16 MiB), a fan-out no 2-core server absorbs; set it to ws-a to try.
    storm_workspace: str = "ws-c"
    token_ttl: float = 3.0

    @classmethod
    def ci(cls) -> LoadPlan:
        return cls(frame_floods=2, flood_frames=1500, byte_floods=1, byte_flood_frames=600, broadcasters=4,
                   broadcast_bytes=5 * 1024 * 1024, slow_readers=1, half_open=6, storm=60, token_ttl=2.0)


def _env(type_: str, payload: dict[str, Any], ws: str = "ws-a") -> bytes:
    return json.dumps({"type": type_, "workspaceId": ws, "payload": payload}, separators=(",", ":")).encode()


def _errors(ws: RawWs) -> list[str]:
    """Error codes among the small frames a connection kept."""
    codes = []
    while not ws.texts.empty():
        raw = ws.texts.get_nowait()
        if len(raw) < 4096 and b'"type":"error"' in raw:
            codes.append(json.loads(raw.decode("utf-8", "replace"))["payload"]["code"])
    return codes


async def _flood(srv: ServerUnderTest, user: str, frame: bytes, count: int, cls: str) -> Row:
    """Write frames as fast as the socket takes them, until the server closes (or ``count`` were sent):
    ``rate_limited`` errors, then close 1008. (A flood slower than the refill is not a flood: it never earns
    51 refusals in a row.)"""
    ws = await open_ws(srv.url(user))
    wire = frame_bytes(OP_TEXT, frame)
    batch = max(1, 256 * 1024 // len(wire))
    sent = 0
    while sent < count and not ws.closed.is_set():
        n = min(batch, count - sent)
        if not await ws.send_raw(wire * n):
            break
        sent += n
    code = await ws.wait_closed(15)
    codes = _errors(ws)
    limited = codes.count("rate_limited")
    observed = f"close {code} {ws.close_reason}".strip() if code else "open after 15 s"
    observed += f" after {limited} rate_limited ({sent} frames sent)"
    ok = code == 1008 and ws.close_reason == "rate limit exceeded" and limited >= 1
    await ws.close(0.5)
    return cls, ok, observed


async def _broadcaster(srv: ServerUnderTest, user: str, total: int) -> Row:
    """60 KB updates at 3/4 of the server's default inbound byte budget (burst and rate): all must be acked,
    none rate_limited. Their fan-out is far over ``--fanout-rate``, so the server reads them slowly (the time to
    the last ack shows it)."""
    ws = await open_ws(srv.url(user))
    sent, spent, t0 = 0, 0, time.monotonic()
    blob = "b" * BIG
    budget = ServerConfig()
    burst, rate = 0.75 * budget.byte_burst, 0.75 * budget.byte_rate
    while spent < total and not ws.closed.is_set():
        allowed = burst + (time.monotonic() - t0) * rate
        if spent + BIG > allowed:
            await asyncio.sleep((spent + BIG - allowed) / rate)
            continue
        sent += 1
        frame = _env("task.update", {"taskId": f"big-{user}", "changes": {"blob": blob}, "ref": f"b{sent}"})
        await ws.send(OP_TEXT, frame)
        spent += len(frame)
    acks = errors = 0
    deadline = time.monotonic() + 60  # paced: ~1 s per update in a workspace of 20 at the default 1 MiB/s
    while acks + errors < sent and time.monotonic() < deadline:
        raw = await ws.next_text(deadline - time.monotonic())
        if raw is None:
            break
        if len(raw) < 4096:
            kind = json.loads(raw.decode("utf-8", "replace"))["type"]
            acks += kind == "ack"
            errors += kind == "error"
    ok = acks == sent and errors == 0 and not ws.closed.is_set()
    observed = (f"{acks}/{sent} acked, {errors} errors, last ack after {time.monotonic() - t0:.1f} s"
                + (f", close {ws.close_code}" if ws.closed.is_set() else ""))
    await ws.close(1.0)
    return "big-broadcast-paced", ok, observed


async def _half_open(srv: ServerUnderTest, n: int, hold: asyncio.Event) -> Row:
    """TCP connections that stall: nothing sent, half a request, half a frame after a good handshake."""
    socks: list[socket.socket] = []
    stalled: list[RawWs] = []
    loop = asyncio.get_running_loop()
    for i in range(n):
        kind = i % 3
        if kind == 2:
            with contextlib.suppress(HandshakeRefused, OSError):
                ws = await open_ws(srv.url(f"half{i}"))
                await ws.send_raw(frame_bytes(OP_TEXT, b'{"type":"task.get"}')[:5])
                stalled.append(ws)
            continue
        sock = socket.socket()
        sock.setblocking(False)
        await loop.sock_connect(sock, ("127.0.0.1", srv.port))
        if kind == 1:
            await loop.sock_sendall(sock, b"GET /ws?token=x HTTP/1.1\r\nHost: x\r\n")
        socks.append(sock)
    opened = time.monotonic()
    await hold.wait()
    ended = 0  # the server may time a stalled handshake out (websockets' open_timeout, 10 s); not judged
    for sock in socks:
        try:
            ended += sock.recv(4096, socket.MSG_DONTWAIT) is not None
        except BlockingIOError:
            pass
        except OSError:
            ended += 1
        sock.close()
    for ws in stalled:
        ws.abort()
    return "half-open", True, (f"{len(socks) + len(stalled)} held for {time.monotonic() - opened:.1f} s while the "
                               f"others were served; the server ended {ended} of the {len(socks)} stalled handshakes")


async def _storm(srv: ServerUnderTest, n: int, workspace: str) -> list[Row]:
    """``n`` connections at once (20 per user, the cap), then the 21st of one user."""
    users = [f"storm{i // 20}" for i in range(n)]

    async def one(user: str) -> RawWs | str:
        try:
            ws = await open_ws(srv.url(user, workspace), timeout=20)
        except (HandshakeRefused, OSError) as exc:
            return f"refused: {exc}"
        raw = await ws.next_text(20)
        return ws if raw is not None and b"session.welcome" in raw else f"no welcome (close {ws.close_code})"

    t0 = time.monotonic()
    got = await asyncio.gather(*(one(u) for u in users))
    took = time.monotonic() - t0
    opened = [g for g in got if isinstance(g, RawWs)]
    failures = [g for g in got if isinstance(g, str)]
    rows: list[Row] = [("connection-storm", not failures,
                        f"{len(opened)}/{n} welcomed in {took:.1f} s"
                        + (f"; first failure: {failures[0]}" if failures else ""))]
    # The cap: user storm0 holds 20 now (if n >= 20); one more must be refused 429 (or closed 1008 after a race).
    if n >= 20:
        try:
            extra = await open_ws(srv.url("storm0", workspace))
            code = await extra.wait_closed(3)
            ok = code == 1008 and extra.close_reason == "too many connections"
            rows.append(("connections-over-user-cap", ok, f"accepted, then close {code} {extra.close_reason}" if code
                         else "accepted, and still open 3 s later"))
            await extra.close(0.5)
        except HandshakeRefused as exc:
            ok = exc.status == 429 and exc.body.startswith("too many connections")
            rows.append(("connections-over-user-cap", ok, f"HTTP {exc.status} {exc.body.strip()}"))
    for ws in opened:
        ws.keep = False
    await asyncio.gather(*(ws.close(2.0) for ws in opened))
    return rows


async def _token_expiry(srv: ServerUnderTest, ttl: float) -> Row:
    ws = await open_ws(srv.url("shortlived", ttl=ttl))
    ws.keep = False
    code = await ws.wait_closed(ttl + 5)
    ok = code == 1008 and ws.close_reason == "token expired"
    return "token-expires-while-open", ok, f"close {code} {ws.close_reason}" if code else f"open {ttl + 5:.0f} s later"


async def run_load(srv: ServerUnderTest, plan: LoadPlan) -> list[Row]:
    """Every attack of the load phase at once; slow readers are judged after the broadcasts ended."""
    hold = asyncio.Event()
    slow = [await open_ws(srv.url(f"slow{i}"), reading=False, rcvbuf=4096) for i in range(plan.slow_readers)]
    half = asyncio.ensure_future(_half_open(srv, plan.half_open, hold))
    get = _env("task.get", {"taskId": "flood"})
    pad = _env("task.get", {"taskId": "flood", "pad": "x" * BIG})  # invalid_payload, but the bytes count first
    per = plan.broadcast_bytes // max(1, plan.broadcasters)
    jobs: list[Any] = [
        *(_flood(srv, f"flood{i}", get, plan.flood_frames, "frame-flood") for i in range(plan.frame_floods)),
        *(_flood(srv, f"bytes{i}", pad, plan.byte_flood_frames, "byte-flood") for i in range(plan.byte_floods)),
        *(_broadcaster(srv, f"bcast{i}", per) for i in range(plan.broadcasters)),
        *([_token_expiry(srv, plan.token_ttl)] if plan.token_ttl > 0 else []),
    ]
    storm = asyncio.ensure_future(_storm(srv, plan.storm, plan.storm_workspace))
    rows: list[Row] = list(await asyncio.gather(*jobs))
    rows += [r for r in await storm if plan.storm]
    hold.set()
    rows.append(await half)
    for i, ws in enumerate(slow):
        ws.keep = False
        code = await ws.wait_closed(20)
        rows.append(("slow-reader", code == 1013, f"slow{i}: close {code} {ws.close_reason}" if code else
                     f"slow{i}: still open after {plan.broadcast_bytes / 2**20:g} MiB broadcast"))
        await ws.close(0.5)
    return rows
