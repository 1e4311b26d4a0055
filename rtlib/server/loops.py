"""The live server's timers: the presence sweeper and the prober, each one asyncio loop per instance.

Both only *wait*: when to wake and what to do then are the sans-I/O rules' answers
(:meth:`PresenceProtocol.next_sweep`, :meth:`Prober.next_tick` / :meth:`Prober.due`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping

from rtlib.protocol.presence_protocol import PresenceProtocol
from rtlib.protocol.probes import Prober
from rtlib.protocol.session import Session
from rtlib.server.fanout import Fanout

__all__ = ["probe_forever", "sweep_forever"]

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
        # redis-py can swallow a CancelledError that lands mid-command (it disconnects and carries on), so a
        # cancel from stop() may never surface here: honour a pending cancel explicitly, or stop() waits for this
        # loop forever (seen as 120 s test-teardown hangs, about one full run in two).
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise asyncio.CancelledError


async def probe_forever(prober: Prober, sessions: Mapping[str, Session], fanout: Fanout) -> None:
    """Presence mode ``probe``: on every tick, send each due connection its ``presence.probe``."""
    while True:
        await asyncio.sleep(max(0.0, prober.next_tick(time.time()) - time.time()))
        for session, frame in prober.due(time.time(), sessions):
            peer = fanout.rooms.get(session.workspace_id, {}).get(session.conn_id)
            if peer is not None:
                fanout.send(peer, frame)
