"""rtlib.server.flow against a real websockets server: a paused handler does not read, and ends its pause when
the connection closes."""

from __future__ import annotations

import asyncio
import contextlib

from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from rtlib.server.flow import pause_reading


async def test_pause_reading_holds_frames_then_resumes_and_ends_early_on_close() -> None:
    got: list[tuple[str, float]] = []
    paused: list[float] = []

    async def handler(conn: ServerConnection) -> None:
        loop = asyncio.get_running_loop()
        async for msg in conn:
            got.append((str(msg), loop.time()))
            if msg == "first":
                t0 = loop.time()
                await pause_reading(conn, 0.3)
                paused.append(loop.time() - t0)
            elif msg == "long":
                t0 = loop.time()
                await pause_reading(conn, 30)  # the client closes meanwhile
                paused.append(loop.time() - t0)

    async with serve(handler, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        async with connect(f"ws://127.0.0.1:{port}") as ws:
            await ws.send("first")
            await ws.send("second")  # sent at once, read only after the pause
            await asyncio.sleep(0.5)
            await ws.send("long")
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.2)
    assert [m for m, _ in got] == ["first", "second", "long"]
    assert got[1][1] - got[0][1] >= 0.29
    assert paused[0] >= 0.29 and paused[1] < 5


async def test_close_draining_gives_other_tasks_turns_while_it_drains_a_flood() -> None:
    from rtlib.server.flow import close_draining

    turns_during: list[int] = []
    turns = 0
    stop = asyncio.Event()

    async def ticker() -> None:
        nonlocal turns
        while not stop.is_set():
            turns += 1
            await asyncio.sleep(0)

    async def handler(conn: ServerConnection) -> None:
        await conn.recv()  # the flood's first frame; the rest are queued behind it
        await asyncio.sleep(0.2)  # let the whole flood arrive
        t0 = turns
        await close_draining(conn, 1008, "rate limit exceeded")
        turns_during.append(turns - t0)

    tick = asyncio.create_task(ticker())
    async with serve(handler, "127.0.0.1", 0, max_queue=4096) as server:
        port = server.sockets[0].getsockname()[1]
        async with connect(f"ws://127.0.0.1:{port}") as ws:
            for i in range(1000):
                await ws.send(f"flood {i}")
            with contextlib.suppress(ConnectionClosed):
                async for _ in ws:
                    pass
        assert ws.close_code == 1008
    stop.set()
    await tick
    # 999 queued frames drained 16 per turn: the ticker ran at least ~60 times in between (not once).
    assert turns_during and turns_during[0] >= 50, turns_during
