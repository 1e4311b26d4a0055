"""A simulated tab reconnects through whatever a dying instance does to a handshake: here, one that accepts the
TCP connection and closes it before any HTTP response (an instance SIGKILLed mid-handshake, or a server that
stops with connections still waiting for admission). websockets raises InvalidMessage for it; the tab must move
on to the next instance, as a browser's reconnect loop does, instead of losing its reader task."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace

from conftest import SECRET, token

from rtlib.lab.recorder import Recorder
from rtlib.lab.scenario import Scenario
from rtlib.lab.sim import SimClient, plan_clients
from rtlib.protocol.config import ServerConfig
from rtlib.server.driver import RealtimeServer


async def test_a_handshake_cut_before_the_response_moves_to_the_next_instance(redis_url: str) -> None:
    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1)  # the request arrived; die before answering
        writer.transport.abort()

    dying = await asyncio.start_server(hang_up, "127.0.0.1", 0)
    dead_url = f"ws://127.0.0.1:{dying.sockets[0].getsockname()[1]}/ws"
    server = await RealtimeServer(redis_url, SECRET, ServerConfig()).start()
    try:
        sc = Scenario(clients=1, workspaces=1, tasks=4, hot_tasks=1, duration=1, seed=3)
        plan = replace(plan_clients(sc, 2)[0], instance=0)
        rec = Recorder()
        client = SimClient(plan, sc, [dead_url, server.url], token(plan.user, plan.workspace), rec,
                           time.monotonic(), ["T-1"])
        await asyncio.wait_for(client.connect(), 10)
        assert client.instance == 1 and client.connected.is_set()
        assert [c[3] for c in rec.connections] == ["connected"]
        await client.ws.close()
    finally:
        await server.stop()
        dying.close()
