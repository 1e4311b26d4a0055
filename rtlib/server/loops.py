"""The live server's timers, each one asyncio task per instance: the presence timer (sweeps and probes), the
pub/sub check, and the beat that keeps this instance in the cluster's connection counts.

The presence timer only *waits*: when to wake and what to do then are the presence machine's answers
(:meth:`PresenceMachine.next_deadline`, :meth:`PresenceMachine.on_timer`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Awaitable, Callable

from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from rtlib.protocol.config import ServerConfig
from rtlib.protocol.presence_machine import Effect, PresenceMachine
from rtlib.server.fanout import Fanout
from rtlib.server.members import ClusterCounts
from rtlib.server.resp import RespError

__all__ = ["PresenceTimer", "keep_counts", "watch_pubsub"]

log = logging.getLogger("rtlib.server.loops")


class PresenceTimer:
    """The one presence timer of an instance: sleeps until :meth:`PresenceMachine.next_deadline`, hands the
    machine the time it read (:meth:`PresenceMachine.on_timer`) and executes what comes back. It replaces a
    sweep loop and a probe loop that each kept a schedule of their own.

    An input can move the deadline earlier (a first join schedules a probe before the next sweep): the driver
    then calls :meth:`poke`, which wakes the sleeper to look again."""

    def __init__(self, machine: PresenceMachine, execute: Callable[[list[Effect], float], Awaitable[None]],
                 name: str, clock: Callable[[], float] = time.time) -> None:
        self.machine, self.execute, self.name, self.clock = machine, execute, name, clock
        self._wake = asyncio.Event()
        self._target = math.inf

    def poke(self) -> None:
        """Call after an input: wakes the timer if the machine's deadline is now earlier than its sleep."""
        if self.machine.next_deadline() < self._target:
            self._wake.set()

    async def run(self) -> None:
        self.machine.start(self.clock())
        while True:
            self._target = self.machine.next_deadline()
            self._wake.clear()
            delay = self._target - self.clock()
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(None if math.isinf(delay) else delay):
                        await self._wake.wait()
                continue  # woken or timed out: look at the deadline again
            now = self.clock()  # the clock is read once per wake; every effect of the wake uses it
            try:
                await self.execute(self.machine.on_timer(now), now)
            except Exception:
                log.exception("%s: presence timer effects failed", self.name)
            _honour_cancel()


async def watch_pubsub(fanout: Fanout, probe_redis: Redis, cfg: ServerConfig, name: str,
                       answered: Callable[[float], None] | None = None) -> None:
    """Publish a probe to this instance's own channel and expect it back in time; a subscriber that is
    connected but delivers nothing is dropped (:meth:`Fanout.drop_deaf`): the driver then counts Redis as
    unreachable (a paused Redis looks exactly like this) and rides it out (:mod:`rtlib.server.outage`): it
    replaces the subscriber and catches every connection up, without closing any (on a Redis Cluster, a deaf
    master among answering ones is lost alone, :mod:`rtlib.server.lost_masters`). ``answered(t)``: a probe
    published at ``t`` came back (Redis answered then: blindness, if it comes, starts after it)."""
    n = 0
    while True:
        await asyncio.sleep(cfg.pubsub_check_interval)
        if not fanout.connected or fanout.probe_channel is None:
            continue
        n += 1
        token = f"{n}".encode()
        back = fanout.probes[token] = asyncio.get_running_loop().create_future()
        events_before = fanout.progress()
        sent_at = time.time()
        try:
            async with asyncio.timeout(cfg.pubsub_check_timeout):
                # redis-py, not the lean connection: cancelling a publish stuck on a paused Redis is
                # safe there (the connection is discarded), and the hot path's pipeline is untouched.
                await probe_redis.publish(fanout.probe_channel, token)
                await back
            if answered is not None:
                answered(sent_at)
        except TimeoutError:
            fanout.probes.pop(token, None)
            # Not deaf if it delivered workspace events meanwhile: this process is just too busy to have read the
            # probe yet, and dropping it now would close every client at the worst moment. On a Redis Cluster
            # each master's subscriber is judged by its own events (another master's would hide a deaf one).
            if not fanout.drop_deaf(token, events_before):
                log.info("%s: pub/sub probe late, but events are arriving; subscriber kept", name)
                continue
            log.warning("%s: redis pub/sub delivered no probe within %.1fs: Redis unreachable or the subscriber "
                        "deaf; replacing it", name, cfg.pubsub_check_timeout)
        except (ConnectionError, RedisConnectionError, OSError, RespError):
            # Redis is down (the driver's outage handling is already at work), or a node answered the publish
            # with an error: no verdict this round (an uncaught error would end the check for good)
            fanout.probes.pop(token, None)


async def keep_counts(counts: ClusterCounts, name: str) -> None:
    """Renew this instance's alive key and read every local workspace's cluster total (:meth:`ClusterCounts.tick`)."""
    while True:
        await asyncio.sleep(counts.tick_interval)
        try:
            await counts.tick()
        except Exception as exc:  # Redis down: the lost-Redis handler is at work; the next tick retries
            log.warning("%s: could not renew the connection counts: %s", name, exc)
        _honour_cancel()


def _honour_cancel() -> None:
    """Raise if the running task was cancelled. redis-py can swallow a CancelledError that lands mid-command (it
    disconnects and carries on), so a cancel from stop() may never surface in a loop that calls Redis: without
    this, stop() waits for that loop forever (seen as 120 s test-teardown hangs, about one full run in two)."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
