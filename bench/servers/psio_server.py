"""Notebook 06's Python peer: python-socketio with ``AsyncRedisManager``, served by aiohttp.

A client connects to ``ws://HOST:PORT/socket.io/?EIO=4&transport=websocket&workspace=W`` and is put in room
W; every ``task.update`` event it emits is emitted as ``task.updated`` to room W through the Redis manager
(published on Redis; every instance, this one included, delivers it to its local sockets when it comes back
from the subscription). Like the toy forwarder (``toy_forwarder.py``): no schema, no auth, no versions;
websocket transport only.

Run: ``python -m bench.servers.psio_server --port 8765 --redis redis://127.0.0.1:6379/0``
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from urllib.parse import parse_qs

import socketio
from aiohttp import web

__all__ = ["make_server", "main"]


def make_server(redis_url: str) -> socketio.AsyncServer:
    """The Socket.IO server: rooms per workspace, one event handler, the Redis manager for fan-out."""
    sio = socketio.AsyncServer(async_mode="aiohttp", client_manager=socketio.AsyncRedisManager(redis_url),
                               transports=["websocket"], cors_allowed_origins="*")

    @sio.event
    async def connect(sid: str, environ: dict, auth: object = None) -> bool:
        workspace = parse_qs(environ.get("QUERY_STRING", "")).get("workspace", [""])[0]
        if not workspace:
            return False  # refused: no workspace
        await sio.save_session(sid, {"workspace": workspace})
        await sio.enter_room(sid, workspace)
        return True

    @sio.on("task.update")
    async def task_update(sid: str, envelope: object) -> None:
        session = await sio.get_session(sid)
        await sio.emit("task.updated", envelope, room=session["workspace"])

    return sio


async def main(host: str, port: int, redis_url: str) -> None:
    sio = make_server(redis_url)
    app = web.Application()
    sio.attach(app)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    print(f"python-socketio listening on ws://{host}:{port}/socket.io/", flush=True)
    stop = asyncio.get_running_loop().create_future()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, lambda: stop.done() or stop.set_result(None))
    await stop
    await runner.cleanup()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--redis", required=True, help="redis://host:port/db")
    args = parser.parse_args()
    asyncio.run(main(args.host, args.port, args.redis))
