"""The well-behaved neighbour: an editor pair in the attacked workspace, in a process of its own.

Editor ``nbr-a`` sends a small ``task.update`` every ``1/rate`` s stamped with ``time.monotonic_ns()`` (system-wide
on Linux, so comparable with the harness's phase marks); ``nbr-b`` times its ``task.updated``. Its own process
and event loop, so the attacker's work in the harness does not delay its reads (the machine's cores are still
shared, as they would be in production). The harness reads ``(sent_ns, latency_ns)`` pairs and slices them by
phase.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing as mp
import time
from multiprocessing.connection import Connection
from typing import Any

from bench.hostile.wire import OP_TEXT, RawWs, open_ws

__all__ = ["Neighbour", "quantiles_ms"]

_MARK = b'"taskId":"nbr"'


def quantiles_ms(latencies_ns: list[int]) -> dict[str, float | int]:
    """n, p50, p99 and max in ms (nearest-rank), or NaN-free zeros for an empty list."""
    if not latencies_ns:
        return {"n": 0, "p50": 0.0, "p99": 0.0, "max": 0.0}
    s = sorted(latencies_ns)

    def q(p: float) -> float:
        return round(s[min(len(s) - 1, max(0, int(p * len(s) + 0.5) - 1))] / 1e6, 3)

    return {"n": len(s), "p50": q(0.50), "p99": q(0.99), "max": round(s[-1] / 1e6, 3)}


async def _main(url_a: str, url_b: str, rate: float, pipe: Connection) -> dict[str, Any]:
    samples: list[tuple[int, int]] = []
    sent: dict[int, int] = {}

    def on_b(ws: RawWs, payload: bytes, now: int) -> None:
        if len(payload) < 2048 and _MARK in payload:
            event = json.loads(payload.decode("utf-8", "replace"))
            if event.get("type") == "task.updated":
                seq = event["payload"]["changes"]["seq"]
                if (t0 := sent.pop(seq, None)) is not None:
                    samples.append((t0, now - t0))

    a = await open_ws(url_a)
    b = await open_ws(url_b, on_text=on_b)
    a.keep = b.keep = False
    await asyncio.sleep(0.3)  # welcome frames
    pipe.send("ready")
    seq, period = 0, 1.0 / rate
    next_at = time.monotonic()
    loop = asyncio.get_running_loop()
    while not pipe.poll():
        seq += 1
        body = json.dumps({"type": "task.update", "workspaceId": "ws-a",
                           "payload": {"taskId": "nbr", "changes": {"seq": seq}}}).encode()
        sent[seq] = time.monotonic_ns()
        await a.send(OP_TEXT, body)
        next_at += period
        await asyncio.sleep(max(0.0, next_at - loop.time()))
        if a.closed.is_set() or b.closed.is_set():
            break
    pipe.recv()
    await asyncio.sleep(0.5)  # the last deliveries
    out = {"samples": samples, "lost": len(sent), "closed": [w.close_code for w in (a, b) if w.closed.is_set()],
           "bad_utf8": a.bad_utf8 + b.bad_utf8}
    await a.close()
    await b.close()
    return out


def _run(url_a: str, url_b: str, rate: float, pipe: Connection) -> None:
    try:
        pipe.send(asyncio.run(_main(url_a, url_b, rate, pipe)))
    except Exception as exc:  # reported by the harness as a finding, not swallowed
        pipe.send({"error": f"{type(exc).__name__}: {exc}", "samples": [], "lost": 0, "closed": [], "bad_utf8": 0})


class Neighbour:
    """``start()`` (returns once both are welcomed), ``stop()`` -> the samples and what went wrong."""

    def __init__(self, url_a: str, url_b: str, rate: float = 50.0) -> None:
        ctx = mp.get_context("spawn")
        self._pipe, child = ctx.Pipe()
        self._proc = ctx.Process(target=_run, args=(url_a, url_b, rate, child), daemon=True, name="neighbour")

    def start(self) -> Neighbour:
        self._proc.start()
        if not self._pipe.poll(20):
            raise RuntimeError("the neighbour did not connect within 20 s")
        msg = self._pipe.recv()
        if msg != "ready":
            raise RuntimeError(f"the neighbour failed: {msg}")
        return self

    def stop(self) -> dict[str, Any]:
        self._pipe.send("stop")
        out = self._pipe.recv() if self._pipe.poll(30) else {"error": "no answer", "samples": []}
        self._proc.join(5)
        return out
