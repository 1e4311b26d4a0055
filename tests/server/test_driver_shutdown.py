"""stop() returns even when the sweeper's cancel is swallowed inside a Redis call (as redis-py can do)."""

from __future__ import annotations

import asyncio

from conftest import SECRET

from rtlib.protocol.config import ServerConfig
from rtlib.server.driver import RealtimeServer


async def test_stop_returns_when_a_sweep_swallows_the_cancel(redis_url: str) -> None:
    server = await RealtimeServer(redis_url, SECRET, ServerConfig(sweep_interval=0.01)).start()
    assert server.store is not None
    inside = asyncio.Event()

    async def swallowing_expire(op, *args, **kwargs):  # what redis-py does when cancelled mid-command
        inside.set()
        try:
            await asyncio.sleep(0.2)
        except asyncio.CancelledError:
            pass
        return []

    real_expire = server.store.presence_expire
    server.store.presence_expire = swallowing_expire  # type: ignore[method-assign]
    await inside.wait()  # the sweeper is now inside the "Redis call"
    stopping = asyncio.ensure_future(server.stop())
    done, _ = await asyncio.wait([stopping], timeout=5)
    if not done:  # the bug: the sweeper loops on; end it so the test fails instead of hanging
        server.store.presence_expire = real_expire  # type: ignore[method-assign]
        while not stopping.done():
            assert server._presence_task is not None
            server._presence_task.cancel()
            await asyncio.sleep(0.05)
    assert done, "stop() waited for a sweeper whose cancel was swallowed"
