"""The admission gate: a storm's connections start as slots free, in arrival order, after the callbacks
already ready (unit, fake connections); and a real server behind it still welcomes every connection of a
storm, and clients that give up while waiting cost nothing (live)."""

from __future__ import annotations

import asyncio
import socket

import pytest
from conftest import SECRET, token
from websockets.asyncio.client import connect

from rtlib.protocol.config import ServerConfig
from rtlib.server.admission import AdmissionGate
from rtlib.server.driver import RealtimeServer


class FakeConn:
    def __init__(self, name: str, log: list[str]) -> None:
        self.name, self.log = name, log
        self.lost = self.aborted = False

    def admit(self) -> None:
        self.log.append(f"start {self.name}")

    def gone(self) -> bool:
        return self.lost

    def abort(self) -> None:
        self.aborted = True


def test_storm_is_admitted_as_slots_free_in_order_after_ready_callbacks() -> None:
    async def main() -> list[str]:
        log: list[str] = []
        gate = AdmissionGate(limit=2)
        loop = asyncio.get_running_loop()
        conns = [FakeConn(f"c{i}", log) for i in range(6)]
        assert [gate.enter(c) for c in conns] == [True, True, False, False, False, False]  # one accept batch
        conns[3].lost = True  # this client gave up while it waited: skipped, takes no slot
        loop.call_soon(log.append, "neighbour")  # an open connection's frame, already ready
        gate.release()  # c0 checked: one slot frees...
        await asyncio.sleep(0)
        assert log == ["neighbour", "start c2"] and gate.active == 2  # ...after the ready frame
        gate.release()
        gate.release()  # c1 and c2 checked: c3 is gone, c4 and c5 start
        await asyncio.sleep(0)
        assert log == ["neighbour", "start c2", "start c4", "start c5"]
        assert gate.active == 2 and not gate.waiting and gate.deferred == 4
        return log

    asyncio.run(main())


def test_close_aborts_the_waiting() -> None:
    async def main() -> None:
        gate = AdmissionGate(limit=1)
        a, b, c = (FakeConn(n, []) for n in "abc")
        assert gate.enter(a) and not gate.enter(b) and not gate.enter(c)
        gate.close()
        assert b.aborted and c.aborted and not a.aborted and not gate.waiting

    asyncio.run(main())


def test_limit_must_be_positive() -> None:
    with pytest.raises(ValueError, match="limit"):
        AdmissionGate(0)


async def test_live_storm_behind_the_gate(redis_url: str) -> None:
    """120 connections at once through a gate of 4: all welcomed, every slot given back; 20 raw sockets that
    connect and vanish without a request neither block nor leak a slot; the server keeps serving afterwards."""
    server = await RealtimeServer(redis_url, SECRET, ServerConfig(handshake_concurrency=4)).start()
    try:
        ghosts = [socket.create_connection((server.host, server.port)) for _ in range(20)]
        for g in ghosts:
            g.close()

        async def one(i: int) -> bytes:
            url = f"{server.url}?token={token(f'storm{i}', 'w1')}&workspace=w1"
            async with connect(url, compression=None, open_timeout=20) as ws:
                return await asyncio.wait_for(ws.recv(decode=False), 20)

        welcomes = await asyncio.gather(*(one(i) for i in range(120)))
        assert all(b"session.welcome" in w for w in welcomes)
        assert server.admission.deferred > 0  # the storm did queue
        assert not server.admission.waiting and server.admission.active == 0
        assert await one(999)  # and the server still serves
    finally:
        await server.stop()


async def test_idle_sockets_do_not_block_admission(redis_url: str) -> None:
    """Sockets that connect and send nothing (or half a request) take every slot, and more wait behind them:
    each gives its slot back after the gate's hold, so a real client is welcomed long before the idle ones hit
    the 10 s handshake timeout."""
    server = await RealtimeServer(redis_url, SECRET, ServerConfig(handshake_concurrency=2)).start()
    idle = [socket.create_connection((server.host, server.port)) for _ in range(10)]
    idle[0].sendall(b"GET /ws HTTP/1.1\r\nHost: x\r\n")  # half a request
    try:
        url = f"{server.url}?token={token('late', 'w1')}&workspace=w1"
        async with connect(url, compression=None, open_timeout=5) as ws:
            assert b"session.welcome" in await asyncio.wait_for(ws.recv(decode=False), 5)
        assert server.admission.deferred >= 8
    finally:
        for sock in idle:
            sock.close()
        await server.stop()

