"""Flow control of one client connection: pausing its reads, and closing it while still reading.

Both work on a websockets ``ServerConnection`` from its handler task; neither refuses or drops anything the
client sent.
"""

from __future__ import annotations

import asyncio
import contextlib

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from rtlib.server.tasks import spawn

__all__ = ["close_draining", "pause_reading"]

_DRAIN_TURN = 16  # frames drained per loop turn by a closing connection


async def pause_reading(connection: ServerConnection, seconds: float) -> None:
    """Wait ``seconds`` without reading from ``connection`` (called between two frames by its handler), or less
    if it closes meanwhile: a stopping server must not wait out a paused connection.

    The unread frames queue in websockets (which pauses the transport past its queue limit), then in the
    kernel and in the client: TCP backpressure slows the sender, and nothing it sent is lost.
    """
    closed = asyncio.ensure_future(connection.wait_closed())
    try:
        await asyncio.wait([closed], timeout=seconds)
    finally:
        closed.cancel()


async def close_draining(connection: ServerConnection, code: int, reason: str) -> None:
    """Close, while still reading: frames already queued by a flooding client would otherwise stall the
    reader (websockets pauses reading when its queue is full), hide the client's close frame, and hold the
    connection open until the close timeout."""
    closing = spawn(connection.close(code, reason))
    with contextlib.suppress(ConnectionClosed):
        drained = 0
        async for _ in connection:
            drained += 1
            if drained % _DRAIN_TURN == 0:
                # Fair turns: frames already parsed are returned without yielding, and each time the queue
                # runs low websockets reads (and parses) the next ~32 KiB. A flood closed with thousands of
                # frames still queued, drained in one go, was a 4-5 ms read per loop turn per closing flood;
                # several closing at once stalled every neighbour for tens of ms.
                await asyncio.sleep(0)
    await closing
