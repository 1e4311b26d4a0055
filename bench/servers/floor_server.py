"""The floor for ``bench.cost.server_cost``: a bare server that only writes the same frames to the same sockets.

No Redis, no websockets library, no JSON: an asyncio ``Protocol`` per connection does the RFC 6455 upgrade,
unmasks client text frames and, for each one, frames it **once** (unmasked, as a server frame) and writes that
frame to every connection of the sender's workspace (the sender included, like the toy), one
``transport.write`` per receiving socket. What is left is what any Python server on this event loop must pay
per delivery: the event loop's wake-ups and the write syscalls (on loopback the kernel's receive path runs
inside them). rtlib's and the toy's CPU per delivery are compared against this, in the same run.

Run: ``python -m bench.servers.floor_server --port 8765 [--loop asyncio|uvloop]`` (``--redis`` is accepted and ignored,
so the harness can start it like the other targets).

``--redis-script`` (target ``floor-redis``) is the floor of *this design*: the Redis work the architecture
review mandates and nothing else. Each sender frame becomes one ``EVALSHA`` of rtlib's own ``task.update``
script (version, fields, history stream, ``PUBLISH``) on one RESP3 connection that is also subscribed to the
workspace channels, as rtlib's is; the published event, framed once, is written to the workspace's sockets.
Still no websockets library, no JSON decoding, no session rules, no acks: what is left between it and rtlib
is rtlib's Python.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import signal
from urllib.parse import parse_qs, urlsplit

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def server_frame(opcode: int, payload: bytes) -> bytes:
    n = len(payload)
    if n < 126:
        header = bytes((0x80 | opcode, n))
    elif n < 1 << 16:
        header = bytes((0x80 | opcode, 126)) + n.to_bytes(2, "big")
    else:
        header = bytes((0x80 | opcode, 127)) + n.to_bytes(8, "big")
    return header + payload


def unmask(payload: bytes, key: bytes) -> bytes:
    n = len(payload)
    stream = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(stream, "big")).to_bytes(n, "big")


class RedisLink(asyncio.Protocol):
    """One RESP3 connection: ``EVALSHA`` calls go out (their replies are read and dropped) and the workspace
    channels' messages come back on it; a message's event is framed once and written to the room."""

    def __init__(self) -> None:
        import hiredis  # only this mode needs it (a dependency of rtlib's server)

        self.reader = hiredis.Reader()
        self.push_type = hiredis.PushNotification
        self.transport: asyncio.Transport | None = None
        self.ready = asyncio.get_running_loop().create_future()
        self.subscribed: set[str] = set()
        self.updates = 0
        from rtlib.server import keyspace  # rtlib's key and channel names, and its pub/sub framing
        from rtlib.server.resp import pack_command, script_sha
        from rtlib.server.scripts import update_keys, update_script  # the very script rtlib runs per update

        self.keyspace = keyspace
        self.pack = pack_command
        self.update_keys = update_keys
        text = update_script()
        self.script, self.sha = text.encode(), script_sha(text).encode()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.transport.write(self.pack(b"HELLO", b"3") + self.pack(b"SCRIPT", b"LOAD", self.script))  # type: ignore[union-attr]

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        while (reply := self.reader.gets()) is not False:
            if type(reply) is self.push_type:
                if reply[0] == b"message":
                    ws = self.keyspace.workspace_of_channel(reply[1])
                    frame = server_frame(0x1, self.keyspace.split_frame(reply[2])[1])
                    for peer in Floor.rooms.get(ws, ()):
                        if peer.transport is not None and not peer.transport.is_closing():
                            peer.transport.write(frame)
            elif not self.ready.done() and reply == self.sha:  # SCRIPT LOAD's reply (after HELLO's)
                self.ready.set_result(None)

    def subscribe(self, ws: str) -> None:
        if ws not in self.subscribed and self.transport is not None:
            self.subscribed.add(ws)
            self.transport.write(self.pack(b"SUBSCRIBE", self.keyspace.channel(ws)))

    def update(self, ws: str, payload: bytes) -> None:
        """The script's keys and arguments as rtlib passes them (no idempotency ref); the event is the sender's
        JSON with its version added, so the receivers still see a ``task.update`` frame."""
        assert self.transport is not None
        self.updates += 1
        task = f"t-{self.updates % 50}"
        keys = self.update_keys(ws, task)
        self.transport.write(self.pack(
            b"EVALSHA", self.sha, str(len(keys)).encode(), *keys, ws,
            payload[:-1] + b',"version":', b"}", b"1", b"300", task, b"title", b'"x"'))


class Floor(asyncio.Protocol):
    rooms: dict[str, set[Floor]] = {}
    redis: RedisLink | None = None  # --redis-script

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buf = b""
        self.upgraded = False
        self.workspace = ""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.rooms.get(self.workspace, set()).discard(self)

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if not self.upgraded:
            head, sep, rest = self.buf.partition(b"\r\n\r\n")
            if not sep:
                return
            self.buf = rest
            self.handshake(head)
        self.frames()

    def handshake(self, head: bytes) -> None:
        lines = head.decode("latin-1").split("\r\n")
        path = lines[0].split(" ")[1]
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        accept = base64.b64encode(hashlib.sha1(headers["sec-websocket-key"].encode() + _GUID).digest())
        assert self.transport is not None
        self.transport.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                             b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n")
        self.upgraded = True
        self.workspace = parse_qs(urlsplit(path).query).get("workspace", [""])[0]
        self.rooms.setdefault(self.workspace, set()).add(self)
        if self.redis is not None:
            self.redis.subscribe(self.workspace)

    def frames(self) -> None:
        buf = self.buf
        while len(buf) >= 2:
            opcode, n = buf[0] & 0x0F, buf[1] & 0x7F
            i = 2
            if n == 126:
                if len(buf) < 4:
                    break
                n, i = int.from_bytes(buf[2:4], "big"), 4
            elif n == 127:
                if len(buf) < 10:
                    break
                n, i = int.from_bytes(buf[2:10], "big"), 10
            if len(buf) < i + 4 + n:
                break
            payload = unmask(buf[i + 4:i + 4 + n], buf[i:i + 4])
            buf = buf[i + 4 + n:]
            self.on_frame(opcode, payload)
        self.buf = buf

    def on_frame(self, opcode: int, payload: bytes) -> None:
        assert self.transport is not None
        if opcode == 0x1 and self.redis is not None:
            self.redis.update(self.workspace, payload)
        elif opcode == 0x1:
            frame = server_frame(0x1, payload)
            for peer in self.rooms.get(self.workspace, ()):
                if peer.transport is not None and not peer.transport.is_closing():
                    peer.transport.write(frame)
        elif opcode == 0x9:
            self.transport.write(server_frame(0xA, payload))
        elif opcode == 0x8:
            self.transport.write(server_frame(0x8, payload[:2]))
            self.transport.close()


async def main(host: str, port: int, redis_url: str, redis_script: bool) -> None:
    loop = asyncio.get_running_loop()
    if redis_script:
        where = urlsplit(redis_url)
        _, link = await loop.create_connection(RedisLink, where.hostname or "127.0.0.1", where.port or 6379)
        await asyncio.wait_for(link.ready, 10)
        Floor.redis = link
    stop = loop.create_future()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda: stop.done() or stop.set_result(None))
    server = await loop.create_server(Floor, host, port, backlog=4096)
    print(f"floor server listening on ws://{host}:{port}/ws ({type(loop).__module__})", flush=True)
    await stop
    server.close()


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--redis", default="",
                        help="Redis URL, host and port only (used with --redis-script only)")
    parser.add_argument("--redis-script", action="store_true",
                        help="run rtlib's task.update script per frame and deliver what it publishes")
    parser.add_argument("--loop", choices=["asyncio", "uvloop"], default="asyncio")
    return parser.parse_args()


if __name__ == "__main__":
    args = parse_args()
    if args.loop == "uvloop":
        import uvloop

        uvloop.run(main(args.host, args.port, args.redis, args.redis_script))
    else:
        asyncio.run(main(args.host, args.port, args.redis, args.redis_script))
