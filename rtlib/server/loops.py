"""The live server's timers, each one asyncio loop per instance: the presence sweeper, the prober, the
pub/sub check, and the beat that keeps this instance in the cluster's connection counts.

The presence loops only *wait*: when to wake and what to do then are the sans-I/O rules' answers
(:meth:`PresenceProtocol.next_sweep`, :meth:`Prober.next_tick` / :meth:`Prober.due`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping

from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from rtlib.protocol.config import ServerConfig
from rtlib.protocol.presence_protocol import PresenceProtocol
from rtlib.protocol.probes import Prober
from rtlib.protocol.session import Session
from rtlib.server.fanout import Fanout
from rtlib.server.members import ClusterCounts

__all__ = ["keep_counts", "probe_forever", "sweep_forever", "watch_pubsub"]

log = logging.getLogger("rtlib.server.loops")


async def sweep_forever(presence: PresenceProtocol, sweep: Callable[[float], Awaitable[object]], name: str) -> None:
    """Run ``sweep(now)`` on the one sweep schedule (:meth:`PresenceConfig.next_sweep`): absolute multiples of
    the sweep interval, the same phase on every instance, so the analytic model and the virtual-time model
    agree with this sweeper."""
    while True:
        await asyncio.sleep(max(0.0, presence.next_sweep(time.time()) - time.time()))
        try:
            await sweep(time.time())
        except Exception:
            log.exception("%s: presence sweep failed", name)
        _honour_cancel()


async def probe_forever(prober: Prober, sessions: Mapping[str, Session], fanout: Fanout) -> None:
    """Presence mode ``probe``: on every tick, send each due connection its ``presence.probe``."""
    while True:
        await asyncio.sleep(max(0.0, prober.next_tick(time.time()) - time.time()))
        for session, frame in prober.due(time.time(), sessions):
            peer = fanout.rooms.get(session.workspace_id, {}).get(session.conn_id)
            if peer is not None:
                fanout.send(peer, frame)


async def watch_pubsub(fanout: Fanout, probe_redis: Redis, cfg: ServerConfig, name: str) -> None:
    """Publish a probe to this instance's own channel and expect it back in time; a subscriber that is
    connected but delivers nothing is dropped (:meth:`Fanout.abandon`), so the driver's lost-Redis handler
    replaces it and the clients resume."""
    n = 0
    while True:
        await asyncio.sleep(cfg.pubsub_check_interval)
        if not fanout.connected or fanout.probe_channel is None:
            continue
        n += 1
        token = f"{n}".encode()
        back = fanout.probes[token] = asyncio.get_running_loop().create_future()
        events_before = fanout.events_in
        try:
            async with asyncio.timeout(cfg.pubsub_check_timeout):
                # redis-py, not the lean connection: cancelling a publish stuck on a paused Redis is
                # safe there (the connection is discarded), and the hot path's pipeline is untouched.
                await probe_redis.publish(fanout.probe_channel, token)
                await back
        except TimeoutError:
            fanout.probes.pop(token, None)
            if fanout.events_in > events_before:
                # Not deaf: it delivered workspace events meanwhile; this process is just too busy to have
                # read the probe yet. Dropping it now would close every client at the worst moment.
                log.info("%s: pub/sub probe late, but events are arriving; subscriber kept", name)
                continue
            log.warning("%s: redis pub/sub delivered no probe within %.1fs; replacing the subscriber",
                        name, cfg.pubsub_check_timeout)
            fanout.abandon()
        except (ConnectionError, RedisConnectionError, OSError):
            fanout.probes.pop(token, None)  # Redis is down: the driver's lost-Redis handler is already at work


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
