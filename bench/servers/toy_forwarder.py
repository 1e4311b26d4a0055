"""The baseline for ``bench.cost.server_cost``: the simplest websockets + Redis pub/sub forwarder.

No schema, no auth, no versions. A client connects to ``ws://HOST:PORT/ws?workspace=W`` (other query
parameters, such as ``token``, are ignored); every text frame it sends is published unchanged on the Redis
channel ``toy:W``, and every message on ``toy:W`` is broadcast to this process's connections in W. The process
holds one subscription per workspace that has (or had) a local connection.

This is deliberately the natural, unoptimised implementation (redis.asyncio pub/sub + ``websockets.broadcast``):
it is what rtlib's own cost is compared against, so making it faster would flatter nothing but the baseline.

Run: ``python -m bench.servers.toy_forwarder --port 8765 --redis redis://127.0.0.1:6379/0``
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from urllib.parse import parse_qs, urlsplit

import redis.asyncio as aioredis
from websockets.asyncio.server import ServerConnection, broadcast, serve

CHANNEL_PREFIX = "toy:"


class Forwarder:
    """Local connections by workspace, one shared pub/sub connection, and the task that forwards from it."""

    def __init__(self, redis: aioredis.Redis) -> None:
        self.redis = redis
        self.pubsub = redis.pubsub()
        self.local: dict[str, set[ServerConnection]] = {}
        self.reader: asyncio.Task[None] | None = None
        # redis-py's PubSub opens its connection lazily on the first command, and two first commands racing
        # each open one (the second replaces the first, whose SUBSCRIBE is then never read): serialise them.
        self.subscribing = asyncio.Lock()

    async def join(self, workspace: str, ws: ServerConnection) -> None:
        """Add ``ws`` to its workspace, subscribing to the workspace's channel on its first connection."""
        conns = self.local.get(workspace)
        if conns is None:
            conns = self.local[workspace] = set()
            async with self.subscribing:
                await self.pubsub.subscribe(CHANNEL_PREFIX + workspace)
            # listen() ends when nothing is subscribed, so the reader starts after the first subscription.
            if self.reader is None:
                self.reader = asyncio.create_task(self.forward())
        conns.add(ws)

    def leave(self, workspace: str, ws: ServerConnection) -> None:
        """Forget ``ws``; the subscription stays (a toy: subscriptions live as long as the process)."""
        self.local.get(workspace, set()).discard(ws)

    async def forward(self) -> None:
        """Broadcast every pub/sub message to the local connections of the message's workspace."""
        async for message in self.pubsub.listen():
            if message["type"] != "message":
                continue  # subscribe confirmations
            workspace = message["channel"][len(CHANNEL_PREFIX):]
            broadcast(self.local.get(workspace, ()), message["data"])


def workspace_of(ws: ServerConnection) -> str:
    """The ``workspace`` query parameter of the handshake request ('' if absent)."""
    query = parse_qs(urlsplit(ws.request.path).query)
    return query.get("workspace", [""])[0]


async def main(host: str, port: int, redis_url: str) -> None:
    # decode_responses: pub/sub data arrives as str, so broadcast() sends text frames like the client sent.
    redis = aioredis.from_url(redis_url, decode_responses=True)
    forwarder = Forwarder(redis)

    async def handle(ws: ServerConnection) -> None:
        workspace = workspace_of(ws)
        if not workspace:
            await ws.close(1008, "workspace query parameter required")
            return
        await forwarder.join(workspace, ws)
        try:
            async for frame in ws:
                if isinstance(frame, str):
                    await redis.publish(CHANNEL_PREFIX + workspace, frame)
        finally:
            forwarder.leave(workspace, ws)

    stop = asyncio.get_running_loop().create_future()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, lambda: stop.done() or stop.set_result(None))
    async with serve(handle, host, port, compression=None):
        print(f"toy forwarder listening on ws://{host}:{port}/ws", flush=True)
        await stop
    await redis.aclose()


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--redis", required=True, help="redis://host:port/db")
    return parser.parse_args()


if __name__ == "__main__":
    args = parse_args()
    asyncio.run(main(args.host, args.port, args.redis))
