"""A minimal Redis command connection for the hot path: RESP over an asyncio protocol, parsed by hiredis.

redis-py's asyncio client costs about 60-70 µs of client time per command on this machine (a PING round
trip: 92-105 µs through redis-py, 35 µs through this class; ``bench/`` has the numbers). Every
``task.update`` pays one script call on the way to every receiver, so the server sends that one command,
and its publishes, through :class:`RespConnection`; everything else keeps using redis-py. Replies come back
in order (FIFO futures), so concurrent callers pipeline naturally on one connection.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
from typing import Any
from urllib.parse import unquote, urlparse

import hiredis

__all__ = ["RedisAddress", "RespConnection", "RespError", "pack_command", "parse_redis_url", "script_sha"]


class RespError(Exception):
    """An error reply from Redis (e.g. ``NOSCRIPT``)."""


class RedisAddress(tuple[str, int, str | None, str | None]):
    """``(host, port, username, password)`` of a ``redis://`` URL."""

    __slots__ = ()

    @property
    def host(self) -> str:
        return self[0]

    @property
    def port(self) -> int:
        return self[1]

    def auth_command(self) -> bytes | None:
        username, password = self[2], self[3]
        if not password:
            return None
        return pack_command("AUTH", username, password) if username else pack_command("AUTH", password)


def parse_redis_url(url: str) -> RedisAddress:
    """Host, port and credentials of ``redis://[user:password@]host[:port][/db]`` (only db 0 is supported)."""
    parsed = urlparse(url)
    if parsed.scheme != "redis":
        raise ValueError(f"unsupported Redis URL scheme {parsed.scheme!r} (use redis://host:port)")
    if parsed.path not in ("", "/", "/0"):
        raise ValueError(f"only database 0 is supported, got {parsed.path!r}")
    user = unquote(parsed.username) if parsed.username else None
    password = unquote(parsed.password) if parsed.password else None
    return RedisAddress((parsed.hostname or "127.0.0.1", parsed.port or 6379, user, password))


def pack_command(*parts: bytes | str | int | float) -> bytes:
    """One RESP command (an array of bulk strings)."""
    out = [b"*%d\r\n" % len(parts)]
    for part in parts:
        data = part if isinstance(part, bytes) else str(part).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


class _Protocol(asyncio.Protocol):
    def __init__(self) -> None:
        self.reader = hiredis.Reader()
        self.waiters: collections.deque[asyncio.Future[Any]] = collections.deque()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        while (reply := self.reader.gets()) is not False:
            waiter = self.waiters.popleft()
            if waiter.done():
                continue
            if isinstance(reply, hiredis.ReplyError):
                waiter.set_exception(RespError(str(reply)))
            else:
                waiter.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_exception(ConnectionError(f"redis connection lost: {exc}"))


class RespConnection:
    """One lazily (re)connected command connection. ``call`` raises ``ConnectionError`` if Redis is gone."""

    def __init__(self, url: str) -> None:
        self.address = parse_redis_url(url)
        self._protocol: _Protocol | None = None
        self._connecting: asyncio.Lock | None = None

    async def _connected(self) -> _Protocol:
        protocol = self._protocol
        if protocol is not None and protocol.transport is not None:
            return protocol
        self._connecting = self._connecting or asyncio.Lock()
        async with self._connecting:
            if self._protocol is None or self._protocol.transport is None:
                loop = asyncio.get_running_loop()
                _, self._protocol = await loop.create_connection(_Protocol, self.address.host, self.address.port)
                if auth := self.address.auth_command():
                    await self._send(self._protocol, auth)
            return self._protocol

    @staticmethod
    def _send(protocol: _Protocol, data: bytes) -> asyncio.Future[Any]:
        if protocol.transport is None:
            raise ConnectionError("redis connection lost")
        waiter = asyncio.get_running_loop().create_future()
        protocol.waiters.append(waiter)
        protocol.transport.write(data)
        return waiter

    async def call(self, *parts: bytes | str | int | float) -> Any:
        """Send one command and return its reply (bytes, int, list, None)."""
        return await self._send(await self._connected(), pack_command(*parts))

    async def evalsha(self, script: bytes, sha: str, keys: list[str], args: list[Any]) -> Any:
        """Run a script by its SHA1, loading it first if this Redis has not seen it (NOSCRIPT)."""
        try:
            return await self.call("EVALSHA", sha, len(keys), *keys, *args)
        except RespError as exc:
            if not str(exc).startswith("NOSCRIPT"):
                raise
            await self.call("SCRIPT", "LOAD", script)
            return await self.call("EVALSHA", sha, len(keys), *keys, *args)

    def close(self) -> None:
        if self._protocol is not None and self._protocol.transport is not None:
            self._protocol.transport.close()
        self._protocol = None


def script_sha(script: str) -> str:
    return hashlib.sha1(script.encode()).hexdigest()
