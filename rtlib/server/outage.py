"""What an instance does when Redis cannot be reached: ride it out, catch up, and only past a grace close.

Before issue 20 an instance closed every connection (1011) as soon as its pub/sub check gave up on Redis, about
3 s into any pause: each Sentinel failover, fork for a snapshot or network blip became a reconnect storm of
every user against a recovering Redis. Now (``docs/protocol.md`` §11b), when the subscriber drops or goes deaf:

1. :meth:`Outages.lost`: the broker is declared down (:class:`~rtlib.server.broker.Broker`: task requests are
   answered ``unavailable`` at once, guarded calls in flight end), the presence machine goes blind (it holds
   beats, sweeps nothing), the lean command connection is aborted (its pending calls fail now instead of after
   the pause), and the grace timer starts. New handshakes get 503 meanwhile.
2. :meth:`Outages._recover` retries, with rtlib's backoff: a new pub/sub connection subscribes every room in one
   command (:meth:`Fanout.reconnect`), every open connection is caught up from the history, each workspace
   read once (:func:`~rtlib.server.catchup.catch_up`), then the presence held while blind is written, before
   the next sweep (:meth:`PresenceMachine.sighted`), and only then is the broker up again.
3. Past ``--broker-grace`` (:meth:`Outages._past_grace`): each connection gets a last ``unavailable`` error and
   is closed 1013 ``redis unavailable`` at a random moment within ``broker_close_spread`` seconds, so their
   reconnects spread out; if Redis answers first, the rest stay.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence

from websockets.protocol import State

from rtlib.protocol import events
from rtlib.protocol.config import ServerConfig
from rtlib.protocol.errors import CloseCode, ErrorCode
from rtlib.protocol.presence_machine import PresenceMachine
from rtlib.server.broker import Broker, is_outage
from rtlib.server.catchup import CatchUpReport, catch_up
from rtlib.server.fanout import Fanout, Peer
from rtlib.server.resp import backoff
from rtlib.server.store import RedisStore
from rtlib.server.tasks import spawn

__all__ = ["ATTEMPT_TIMEOUT", "Outages"]

log = logging.getLogger("rtlib.server.outage")
#: Seconds one recovery attempt (reconnect, catch-up, presence) may take before it is abandoned and retried.
ATTEMPT_TIMEOUT = 10.0


class Outages:
    """One instance's handling of Redis outages (the driver wires it: ``fanout.on_lost = outages.lost``)."""

    def __init__(self, config: ServerConfig, redis_url: str, broker: Broker, machine: PresenceMachine,
                 fanout: Fanout, store: RedisStore, execute: Callable[[Sequence[object], float], Awaitable[int]],
                 poke: Callable[[], None]) -> None:
        self.config, self.redis_url, self.broker, self.machine = config, redis_url, broker, machine
        self.fanout, self.store, self.execute, self.poke = fanout, store, execute, poke
        self.name = config.server_id
        self.reports: list[CatchUpReport] = []  # one per recovery, for operators and benchmarks
        self.outages = 0
        self._task: asyncio.Task[None] | None = None
        self._grace: asyncio.TimerHandle | None = None
        self._closing: list[asyncio.TimerHandle] = []
        self._stopped = False

    def lost(self, exc: Exception | None) -> None:
        """The pub/sub connection dropped, or the pub/sub check abandoned a deaf one."""
        if self._stopped:
            return
        first = self.broker.up
        since = self.broker.lost()
        self.machine.blind(since)
        if first:
            self.outages += 1
            log.warning("%s: Redis unreachable (%s); connections stay open for %.0f s (--broker-grace)",
                        self.name, exc or "pub/sub check", self.config.broker_grace)
            if self.store.fast is not None:
                self.store.fast.close()  # its pending calls fail now, not when a paused Redis answers
            self._grace = asyncio.get_running_loop().call_later(self.config.broker_grace, self._past_grace)
        if self._task is None or self._task.done():
            self._task = spawn(self._recover(), name=f"{self.name}-recover")

    async def _recover(self) -> None:
        failures = 0
        while not self._stopped:
            try:
                async with asyncio.timeout(ATTEMPT_TIMEOUT):
                    report = await self._attempt()
            except Exception as exc:
                if not is_outage(exc) and not isinstance(exc, ConnectionError):
                    log.exception("%s: recovery attempt failed", self.name)
                failures += 1
                delay = backoff(failures)
                if failures == 1 or failures % 20 == 0:
                    log.warning("%s: Redis still unreachable (%s); retrying every %.2f s", self.name,
                                exc or type(exc).__name__, delay)
                self.machine.blind(self.broker.last_ok)  # still blind (a drain may have ended it)
                await asyncio.sleep(delay)
                continue
            down = self.broker.back()
            self._cancel_closes()
            self.reports.append(report)
            self.poke()  # the presence timer: sweeps are back
            log.warning("%s: Redis answers again after %.1f s down; %s", self.name, down, report.summary())
            return

    async def _attempt(self) -> CatchUpReport:
        subscribes = await self.fanout.reconnect(self.redis_url)
        cfg = self.config  # how long events may have gone undelivered: the outage, and the check that caught it
        window = self.broker.down_for() + cfg.pubsub_check_interval + cfg.pubsub_check_timeout + 1.0
        report = await catch_up(self.fanout, self.store, cfg.history, self.machine.sessions, subscribes, window)
        now = time.time()
        while True:  # what presence held while blind goes first, then the machine sees again (no await between)
            if not self.fanout.connected:
                raise ConnectionError("the pub/sub connection dropped again")
            held = self.machine.sighted(now)
            if not held:
                return report
            await self.execute(held, now)
            now = time.time()

    def _past_grace(self) -> None:
        """Redis has been unreachable for the whole grace: close every connection, spread over the close spread."""
        self._grace = None
        if self.broker.up:
            return
        peers = [p for room in self.fanout.rooms.values() for p in room.values()]
        spread = self.config.broker_close_spread
        log.warning("%s: Redis unreachable for %.0f s: closing %d connections over %.0f s (1013)", self.name,
                    self.broker.down_for(), len(peers), spread)
        loop = asyncio.get_running_loop()
        self._closing = [loop.call_later(random.uniform(0, spread), self._close, peer) for peer in peers]

    def _close(self, peer: Peer) -> None:
        if self.broker.up or peer.connection.protocol.state is not State.OPEN:
            return
        session = self.machine.sessions.get(peer.conn_id)
        if session is not None:
            self.fanout.send(peer, events.error(
                session.workspace_id, session.user_id, ErrorCode.UNAVAILABLE,
                f"Redis unreachable for over {self.config.broker_grace:g} s: this connection closes (1013); "
                "reconnect with backoff, preferably to another instance", None, time.time(),
                max(self.config.broker_close_spread, self.config.broker_retry_after)))
            self.fanout.flush_peer(peer)
        spawn(peer.connection.close(CloseCode.TRY_AGAIN_LATER, "redis unavailable"))

    def _cancel_closes(self) -> None:
        if self._grace is not None:
            self._grace.cancel()
            self._grace = None
        for handle in self._closing:
            handle.cancel()
        self._closing = []

    async def stop(self) -> None:
        self._stopped = True
        self._cancel_closes()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
