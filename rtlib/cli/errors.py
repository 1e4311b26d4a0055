"""How the ``rtlib`` command refuses a mistake: one line on stderr that says what is wrong and what to do, exit
status 2 (argparse's own status for usage errors), never a traceback. And the checks behind those lines: the
signing secret, ``--redis`` (a Redis URL, and a Redis answering there), a port to listen on."""

from __future__ import annotations

import argparse
import contextlib
import errno
import os
import re
import socket
import sys
from collections.abc import Iterator
from typing import NoReturn
from urllib.parse import urlsplit

from rtlib.server.auth import check_secret

__all__ = ["REDIS_SCHEMES", "UsageError", "check_redis", "check_redis_url", "embedded", "fail", "listen_problem",
           "redis_problem", "secret", "shown"]

REDIS_SCHEMES = ("redis", "rediss", "unix")


class ExitStatus(int):
    """Exit status 2 that reads as its message. ``SystemExit.code`` used to be the message itself (exit status 1);
    callers that print or match ``code`` keep working, while the interpreter, which only sees an int, exits 2."""

    message: str

    def __new__(cls, message: str) -> ExitStatus:
        status = super().__new__(cls, 2)
        status.message = message
        return status

    def __str__(self) -> str:
        return self.message


class UsageError(SystemExit):
    """A mistake the user can fix: its one line is already on stderr; exit status 2, as argparse's own.
    ``str(error)`` and ``str(error.code)`` are the message."""

    def __init__(self, message: str) -> None:
        super().__init__(ExitStatus(message))
        self.message = message


def fail(message: str) -> NoReturn:
    """Print ``message`` (one line: what is wrong and what to do) on stderr and exit with status 2."""
    print(message, file=sys.stderr, flush=True)
    raise UsageError(message)


def secret(args: argparse.Namespace) -> str:
    try:
        return check_secret(args.secret or os.environ.get("RTLIB_SECRET"))
    except ValueError as exc:
        text = str(exc)
        if "required" in text:
            text = "a signing secret is required: pass --secret or set RTLIB_SECRET"
        fail(f"rtlib {args.command}: {text}")


def shown(url: str) -> str:
    """``url`` without its password, for messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@", 1)).geturl()


def check_redis_url(command: str, url: str | None) -> None:
    """Refuse a ``--redis`` that is not a URL redis-py understands (``127.0.0.1:6379`` has no scheme)."""
    if url is None:
        return
    if "://" not in url or urlsplit(url).scheme not in REDIS_SCHEMES:
        hint = f"write redis://{url}" if "://" not in url else "use redis://HOST:PORT, rediss://HOST:PORT or unix://PATH"
        fail(f"rtlib {command}: --redis {shown(url)!r} is not a Redis URL; {hint}")


def redis_problem(exc: BaseException) -> str:
    """The useful part of a redis-py connection error (``Connection refused``, ``Name or service not known``)."""
    text = str(exc).strip()
    if m := re.search(r"connecting to \S+?\.? (.+)$", text):
        text = m.group(1)
    return text.rstrip(".") or type(exc).__name__


def unreachable(command: str, url: str, exc: BaseException) -> NoReturn:
    fail(f"rtlib {command}: cannot reach Redis at {shown(url)} ({redis_problem(exc)}); start redis-server "
          "there, fix --redis, or leave --redis out to use an embedded one")


def check_redis(command: str, url: str | None) -> None:
    """``--redis`` is a Redis URL and a Redis answers there, else one line and exit 2."""
    if url is None:
        return
    check_redis_url(command, url)
    import redis

    try:
        with redis.Redis.from_url(url, socket_connect_timeout=5, socket_timeout=5) as client:
            client.ping()
    except (redis.RedisError, OSError, ValueError) as exc:
        unreachable(command, url, exc)


def listen_problem(command: str, host: str, port: int, exc: OSError) -> str:
    """One line for a server that could not listen on ``host:port``."""
    if exc.errno == errno.EADDRINUSE:
        return (f"rtlib {command}: port {port} on {host} is already in use (another rtlib?); stop that process or "
                "pick another --port (0 picks a free one)")
    if exc.errno == errno.EACCES:
        return f"rtlib {command}: no permission to listen on port {port}; use a port above 1023"
    if exc.errno == errno.EADDRNOTAVAIL or isinstance(exc, socket.gaierror):
        reason = os.strerror(exc.errno) if exc.errno == errno.EADDRNOTAVAIL else exc.strerror
        return (f"rtlib {command}: cannot listen on {host} ({reason}); --host takes an address of this machine, "
                "e.g. 127.0.0.1 or 0.0.0.0")
    reason = os.strerror(exc.errno) if isinstance(exc.errno, int) and exc.errno > 0 else (exc.strerror or str(exc))
    return f"rtlib {command}: cannot listen on {host}:{port} ({reason}); check --host and --port"


@contextlib.contextmanager
def embedded(command: str) -> Iterator[str]:
    """An embedded redis-server for this run, or one line saying how to get one."""
    from rtlib.server.embedded import embedded_redis
    from rtlib.server.redis_process import RedisNotFound

    with contextlib.ExitStack() as stack:
        try:
            url = stack.enter_context(embedded_redis())
        except RedisNotFound as exc:
            fail(f"rtlib {command}: {exc}; or pass --redis URL of a running Redis")
        yield url
