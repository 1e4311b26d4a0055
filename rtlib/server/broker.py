"""Whether this instance can reach Redis (the broker) right now, and the guard its Redis calls run under.

Redis pauses for seconds in production: a Sentinel or Cluster failover, a managed service's maintenance, the
fork of a large snapshot, a network blip. Closing every connection at the first sign of it turned each pause
into a reconnect storm against a recovering Redis (issue 20). So the instance's view is explicit instead: *up*,
or *down since t* (declared by the driver when its pub/sub connection drops or its end-to-end probe does not
come back, :mod:`rtlib.server.loops`). While down, task requests are answered ``unavailable`` at once and
presence is held by the presence machine; connections stay open for ``--broker-grace`` (``docs/protocol.md``
§11b).

:meth:`Broker.guard` runs one Redis call so that it ends when the broker is declared down, even if the call
itself would hang: a paused Redis accepts TCP connections and never answers, and redis-py has no socket
timeout here, so a request would otherwise wait for the whole pause and hold its connection's later frames
(heartbeats among them) behind it. The hot path (``task.update`` on the lean connection) does not need it: its
connection is the pub/sub one, aborted when the broker is declared down, which fails its pending calls.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from redis.exceptions import BusyLoadingError, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from rtlib.server.resp import RespError

__all__ = ["Broker", "BrokerUnavailable", "is_outage", "unguarded"]

T = TypeVar("T")

#: Error replies that mean "this Redis cannot serve you right now" rather than "your command is wrong": loading
#: its data after a restart, a script running too long, a replica promoted or demoted mid-failover.
_OUTAGE_REPLIES = ("LOADING", "BUSY", "MASTERDOWN", "READONLY", "TRYAGAIN", "CLUSTERDOWN", "NOREPLICAS")


class BrokerUnavailable(Exception):
    """Redis cannot be reached from this instance (or stopped answering while a call was in flight)."""


def is_outage(exc: BaseException) -> bool:
    """Is ``exc`` Redis being unreachable (a connection refused, reset or timed out, a Redis still loading or
    failing over), as opposed to a bug or a wrong command?"""
    if isinstance(exc, BrokerUnavailable | OSError | RedisConnectionError | RedisTimeoutError | BusyLoadingError
                  | TimeoutError):
        return True
    if isinstance(exc, RespError | ResponseError):
        return str(exc).startswith(_OUTAGE_REPLIES)
    return False


class Broker:
    """This instance's view of Redis: up, or down since a moment; and the guard for calls made while up."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self.down_since: float | None = None
        #: The last moment Redis was known to answer (a pub/sub probe came back): blindness starts there.
        self.last_ok = clock()
        self._lost: asyncio.Future[None] | None = None  # resolved when declared down; a new one once up again

    @property
    def up(self) -> bool:
        return self.down_since is None

    def answered(self, at: float | None = None) -> None:
        """Redis answered at ``at`` (default: now)."""
        self.last_ok = max(self.last_ok, self.clock() if at is None else at)

    def lost(self) -> float:
        """Declare Redis unreachable (idempotent); every guarded call in flight ends with
        :class:`BrokerUnavailable`. Returns since when this instance has been blind (its last good contact)."""
        if self.down_since is None:
            self.down_since = self.clock()
            if self._lost is not None and not self._lost.done():
                self._lost.set_result(None)
            self._lost = None
        return min(self.last_ok, self.down_since)

    def back(self) -> float:
        """Declare Redis reachable again; the seconds it was down."""
        down, self.down_since = self.down_since, None
        self.answered()
        return 0.0 if down is None else self.clock() - down

    def down_for(self) -> float:
        return 0.0 if self.down_since is None else self.clock() - self.down_since

    async def guard(self, call: Awaitable[T]) -> T:
        """Await ``call`` unless or until the broker is declared down; an outage error (:func:`is_outage`) of the
        call itself is raised as :class:`BrokerUnavailable` too. The abandoned call is cancelled (redis-py then
        drops its connection, so a reply that comes later cannot be read by another caller)."""
        if self.down_since is not None:
            if asyncio.iscoroutine(call):
                call.close()
            raise BrokerUnavailable("redis is unreachable")
        if self._lost is None:
            self._lost = asyncio.get_running_loop().create_future()
        lost = self._lost
        task = asyncio.ensure_future(call)
        try:
            await asyncio.wait((task, lost), return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            task.cancel()
            raise
        if not task.done():
            task.cancel()
            task.add_done_callback(_consume)
            raise BrokerUnavailable("redis stopped answering")
        try:
            return task.result()
        except Exception as exc:
            if is_outage(exc):
                raise BrokerUnavailable(str(exc) or type(exc).__name__) from exc
            raise


async def unguarded(call: Awaitable[T]) -> T:
    """Await ``call`` with its outage errors raised as :class:`BrokerUnavailable`, even while the broker is down:
    for the recovery's own calls (the caller bounds them with a timeout)."""
    try:
        return await call
    except Exception as exc:
        if is_outage(exc):
            raise BrokerUnavailable(str(exc) or type(exc).__name__) from exc
        raise


def _consume(task: asyncio.Future[object]) -> None:
    """Retrieve an abandoned call's outcome, so it is not logged as "exception was never retrieved"."""
    if not task.cancelled():
        task.exception()
