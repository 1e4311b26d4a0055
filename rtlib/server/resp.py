"""rtlib's one Redis connection layer for the hot path and pub/sub: one URL parser, one protocol, one retry policy.

* :func:`parse_redis_url` reads a URL with redis-py's own parser (``redis://`` and ``rediss://``, ``unix://``,
  user and password, database, ``ssl_*`` query options), so the redis-py pool (scripts other than the hot one)
  and these connections always agree on where Redis is.
* :class:`RespProtocol` is one asyncio protocol on hiredis's parser. In command mode replies resolve FIFO
  futures (concurrent callers pipeline on one connection); in pub/sub mode every reply goes to a callback,
  and a callback runs after each read (the fan-out flushes its queues there). :func:`open_connection` opens
  it (TLS if the URL says so), authenticates and selects the database.
* :data:`RETRY` is the one retry policy: backoff 50 ms doubling to 0.5 s, 2 retries. redis-py's pool retries a
  command on a dropped connection with it; :class:`RespConnection` retries *connecting* with it (never a
  command already written: ``task.update``'s script is not idempotent); the pub/sub reconnect loop waits
  :func:`backoff` between its attempts.

Why a hand-written command connection beside redis-py at all: ``bench/cost/resp_roundtrip.py`` times one round trip
of each client in the same run (results in ``bench/results/resp_roundtrip.md``).
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import hiredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.connection import SSLConnection, UnixDomainSocketConnection, parse_url

from rtlib.server.keyspace import RESP3_PROBE_KEY

__all__ = ["RETRY", "RedisAddress", "RespConnection", "RespError", "RespProtocol", "backoff", "open_connection",
           "pack_command", "parse_redis_url", "script_sha"]

#: The one retry policy (redis-py's ``Retry``, used as it is by the redis-py pool).
RETRY_BASE, RETRY_CAP, RETRIES = 0.05, 0.5, 2
RETRY = Retry(ExponentialBackoff(cap=RETRY_CAP, base=RETRY_BASE), RETRIES)


def backoff(failures: int) -> float:
    """Seconds to wait after ``failures`` consecutive failures (1, 2, ...): the policy's schedule, no jitter."""
    return min(RETRY_CAP, RETRY_BASE * 2 ** max(0, failures - 1))


class RespError(Exception):
    """An error reply from Redis (e.g. ``NOSCRIPT``)."""


@dataclass(frozen=True)
class RedisAddress:
    """Where a Redis is and how to log in, as redis-py reads the URL."""

    host: str = "127.0.0.1"
    port: int = 6379
    path: str | None = None  # unix socket
    db: int = 0
    username: str | None = None
    password: str | None = None
    ssl: ssl.SSLContext | None = None

    def handshake(self) -> list[bytes]:
        """The commands that start a connection: AUTH (if a password is set), SELECT (if db is not 0)."""
        out = []
        if self.password:
            out.append(pack_command("AUTH", self.username, self.password) if self.username
                       else pack_command("AUTH", self.password))
        if self.db:
            out.append(pack_command("SELECT", self.db))
        return out


def _ssl_context(options: dict[str, Any]) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=options.get("ssl_ca_certs"), capath=options.get("ssl_ca_path"))
    reqs = options.get("ssl_cert_reqs", "required")
    reqs = {"none": ssl.CERT_NONE, "optional": ssl.CERT_OPTIONAL, "required": ssl.CERT_REQUIRED}.get(reqs, reqs)
    check = options.get("ssl_check_hostname", True)
    ctx.check_hostname = bool(check) and str(check).lower() not in ("false", "0", "no") and reqs != ssl.CERT_NONE
    ctx.verify_mode = reqs
    if options.get("ssl_certfile"):
        ctx.load_cert_chain(options["ssl_certfile"], options.get("ssl_keyfile"), options.get("ssl_password"))
    return ctx


def parse_redis_url(url: str) -> RedisAddress:
    """``redis://[[user]:password@]host[:port][/db]``, ``rediss://`` (TLS; ``?ssl_cert_reqs=none`` etc.) or
    ``unix://path?db=N``, read by redis-py's ``parse_url``."""
    options = parse_url(url)
    cls = options.get("connection_class")
    if cls is not None and issubclass(cls, UnixDomainSocketConnection):
        return RedisAddress(path=options["path"], db=int(options.get("db", 0)),
                            username=options.get("username"), password=options.get("password"))
    return RedisAddress(host=options.get("host") or "127.0.0.1", port=int(options.get("port") or 6379),
                        db=int(options.get("db", 0)), username=options.get("username"),
                        password=options.get("password"),
                        ssl=_ssl_context(options) if cls is not None and issubclass(cls, SSLConnection) else None)


def pack_command(*parts: bytes | str | int | float) -> bytes:
    """One RESP command (an array of bulk strings)."""
    out = [b"*%d\r\n" % len(parts)]
    for part in parts:
        data = part if isinstance(part, bytes) else str(part).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


class RespProtocol(asyncio.Protocol):
    """One Redis connection: hiredis parses; replies resolve FIFO futures (command mode) or go to
    ``on_message`` (pub/sub mode, see :meth:`subscribe_mode`), followed by ``after_read`` once per read."""

    def __init__(self) -> None:
        self.reader = hiredis.Reader()
        self.waiters: collections.deque[asyncio.Future[Any]] = collections.deque()
        self.transport: asyncio.Transport | None = None
        self.on_message: Callable[[Any], None] | None = None
        self.after_read: Callable[[], None] | None = None
        self.on_lost: Callable[[RespProtocol, Exception | None], None] | None = None
        self.resp3 = False  # set once HELLO 3 succeeded: pushes and command replies share the connection

    @property
    def open(self) -> bool:
        return self.transport is not None and not self.transport.is_closing()

    def subscribe_mode(self, on_message: Callable[[Any], None], after_read: Callable[[], None] | None = None) -> None:
        """From now on pub/sub messages and subscribe confirmations go to ``on_message``: with RESP3 only those
        (push notifications; command replies still resolve their futures), with RESP2 every reply."""
        self.on_message, self.after_read = on_message, after_read

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        if self.on_message is not None and not self.resp3:  # RESP2 pub/sub: every reply is a message
            on_message = self.on_message
            while (reply := self.reader.gets()) is not False:
                on_message(reply)
            if self.after_read is not None:
                self.after_read()
            return
        while (reply := self.reader.gets()) is not False:
            if type(reply) is hiredis.PushNotification or not self.waiters:  # RESP3: pub/sub beside replies
                if self.on_message is not None:
                    self.on_message(reply)
                continue
            waiter = self.waiters.popleft()
            if waiter.done():
                continue
            if isinstance(reply, hiredis.ReplyError):
                waiter.set_exception(RespError(str(reply)))
            else:
                waiter.set_result(reply)
        if self.after_read is not None:
            self.after_read()

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_exception(ConnectionError(f"redis connection lost: {exc}"))
        if self.on_lost is not None:
            self.on_lost(self, exc)

    def send(self, data: bytes) -> asyncio.Future[Any]:
        """Write one command; its reply resolves the returned future (command mode)."""
        if self.transport is None or self.transport.is_closing():
            raise ConnectionError("redis connection lost")
        waiter = asyncio.get_running_loop().create_future()
        self.waiters.append(waiter)
        self.transport.write(data)
        return waiter

    def write(self, data: bytes) -> None:
        """Write without expecting a FIFO reply (pub/sub mode)."""
        if self.transport is None or self.transport.is_closing():
            raise ConnectionError("redis connection lost")
        self.transport.write(data)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


async def _connect(address: RedisAddress, factory: type[RespProtocol] = RespProtocol) -> RespProtocol:
    loop = asyncio.get_running_loop()
    if address.path is not None:
        _, protocol = await loop.create_unix_connection(factory, address.path)
    else:
        _, protocol = await loop.create_connection(factory, address.host, address.port, ssl=address.ssl)
    return protocol


async def _resp3_pushes(protocol: RespProtocol, timeout: float = 2.0) -> bool:
    """Negotiate RESP3 and check that subscribe confirmations really arrive as push notifications beside normal
    replies (Redis >= 6 does; an imitation such as fakeredis may accept HELLO 3 and still answer with arrays)."""
    try:
        await asyncio.wait_for(protocol.send(pack_command("HELLO", "3")), timeout)
    except RespError:  # Redis 5 has no HELLO
        return False
    except TimeoutError:  # a paused Redis (the kernel accepted the connection): not reachable, not Redis 5
        raise ConnectionError("redis did not answer HELLO") from None
    pushes: list[Any] = []
    protocol.resp3, protocol.on_message = True, pushes.append
    try:
        protocol.write(pack_command("SUBSCRIBE", RESP3_PROBE_KEY))
        await asyncio.wait_for(protocol.send(pack_command("PING")), timeout)
        protocol.write(pack_command("UNSUBSCRIBE", RESP3_PROBE_KEY))
        await asyncio.wait_for(protocol.send(pack_command("PING")), timeout)
    except (RespError, TimeoutError, ConnectionError):
        return False
    finally:
        protocol.on_message = None
    return [p[0] for p in pushes] == [b"subscribe", b"unsubscribe"]


async def open_connection(address: RedisAddress, resp3: bool = False,
                          factory: type[RespProtocol] = RespProtocol) -> RespProtocol:
    """Connect (TCP, TLS or unix socket), then AUTH and SELECT as the address says; raises ``OSError``
    (``ConnectionError``) if Redis cannot be reached and :class:`RespError` if it refuses the login.

    ``resp3``: then switch to RESP3 (Redis >= 6), so that the connection can subscribe *and* run commands;
    ``protocol.resp3`` says whether it took (elsewhere a plain RESP2 connection is returned). ``factory``: a
    subclass of :class:`RespProtocol` (a Redis Cluster subscriber's, :mod:`rtlib.server.cluster_fanout`)."""
    protocol = await _connect(address, factory)
    try:
        for command in address.handshake():  # AUTH first: HELLO before it is refused on a protected Redis
            await protocol.send(command)
        if resp3 and not await _resp3_pushes(protocol):
            protocol.close()
            return await open_connection(address, factory=factory)
    except BaseException:
        protocol.close()
        raise
    return protocol


class RespConnection:
    """One lazily (re)connected command connection. ``call`` raises ``ConnectionError`` if Redis is gone
    (after :data:`RETRY`'s attempts to connect).

    ``shared``: a callable returning another live RESP3 connection (the fan-out's pub/sub connection) to send
    commands on instead, when there is one: a ``task.update``'s script reply and its published event then come
    back on one socket, in one read."""

    def __init__(self, url: str, shared: Callable[[], RespProtocol | None] | None = None,
                 address: RedisAddress | None = None) -> None:
        # ``address`` instead of the URL's: a Redis Cluster node (rtlib.server.cluster_client), the URL's login
        # and TLS settings at another host and port.
        self.address = address or parse_redis_url(url)
        self._protocol: RespProtocol | None = None
        self._connecting: asyncio.Lock | None = None
        self._shared = shared

    async def _connected(self) -> RespProtocol:
        if self._shared is not None and (shared := self._shared()) is not None:
            if not shared.open:
                raise ConnectionError("redis connection lost")
            return shared
        protocol = self._protocol
        if protocol is not None and protocol.open:
            return protocol
        self._connecting = self._connecting or asyncio.Lock()
        async with self._connecting:
            failures = 0
            while self._protocol is None or not self._protocol.open:
                try:
                    self._protocol = await open_connection(self.address)
                except OSError:
                    failures += 1
                    if failures > RETRIES:
                        raise
                    await asyncio.sleep(backoff(failures))
            return self._protocol

    async def call(self, *parts: bytes | str | int | float) -> Any:
        """Send one command and return its reply (bytes, int, list, None)."""
        protocol = self._protocol
        if protocol is None or not protocol.open or self._shared is not None:
            protocol = await self._connected()
        return await protocol.send(pack_command(*parts))

    async def call_many(self, *commands: tuple[bytes | str | int | float, ...]) -> list[Any]:
        """Send several commands back to back on one connection (``ASKING`` must directly precede the command it
        is for) and return their replies; the first error reply is raised after every reply has come."""
        protocol = await self._connected()
        replies = await asyncio.gather(*(protocol.send(pack_command(*parts)) for parts in commands),
                                       return_exceptions=True)
        for reply in replies:
            if isinstance(reply, BaseException):
                raise reply
        return replies

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
        if self._protocol is not None:
            self._protocol.close()
        self._protocol = None


def script_sha(script: str) -> str:
    return hashlib.sha1(script.encode()).hexdigest()
