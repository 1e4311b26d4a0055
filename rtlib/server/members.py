"""How many connections each workspace has across the cluster, for the fan-out budget.

The fan-out budget (:meth:`rtlib.protocol.session.Session.fanout`) charges an update by what it makes the
servers write: its event's size x the workspace's other connections. Counting this instance's connections only
left a gap: a sender alone on one instance, whose workspace's members are all on others, cost its instance
nothing and was never paced, while the others wrote its fan-out without bound. So each instance publishes its
local counts to Redis and charges by the cluster's total.

Keys:

* ``rt:{ws}:conns`` (hash) server id -> that instance's open connections in the workspace;
* ``rt:instance:{server id}`` (string, TTL :data:`ALIVE_TTL`) the instance is alive. It is renewed by
  :meth:`ClusterCounts.tick` (``rtlib.server.loops.keep_counts``). An instance that dies without cleaning up
  leaves its fields behind; the count script (:data:`rtlib.server.scripts.COUNT`) drops them once its key has
  expired.

Reads are cached: every :data:`REFRESH` seconds one script call reads the totals of every workspace this
instance has connections in (``rtlib.server.loops.keep_counts``), and an update is charged with the total known
at that moment, so the hot path never waits for Redis nor adds a round trip. (A first version refreshed each
workspace from the hot path when its count was stale: at S1, 50 workspaces, that was 25 script calls a second
and cost 8.5 µs per delivery, +15 %.) The local count is always exact: a count that lags can only be too low by
the remote connections that joined since the last refresh. Server ids must be unique in a cluster (the default
is random).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from redis.asyncio import Redis
from redis.exceptions import RedisError

from rtlib.server import scripts
from rtlib.server.tasks import spawn

__all__ = ["ALIVE_TTL", "CHUNK", "REFRESH", "ClusterCounts", "conns_key"]

log = logging.getLogger("rtlib.server.members")

#: Seconds a count read from Redis is used before it is read again.
REFRESH = 2.0
#: Workspaces read per script call.
CHUNK = 256
#: Seconds an instance counts as alive after its last beat (it beats every third of this).
ALIVE_TTL = 15.0


def conns_key(ws: str) -> str:
    return f"rt:{ws}:conns"


class ClusterCounts:
    """This instance's view of every workspace's connection count across the cluster."""

    def __init__(self, redis: Redis, server_id: str, refresh: float = REFRESH, alive_ttl: float = ALIVE_TTL,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.redis, self.server_id = redis, server_id
        self.refresh_after, self.alive_ttl, self.clock = refresh, alive_ttl, clock
        self._count = redis.register_script(scripts.COUNT)
        self._totals: dict[str, int] = {}  # ws -> cluster total, as last read
        self._local: dict[str, int] = {}  # ws -> this instance's count, as last written
        self._dirty: dict[str, int] = {}  # ws -> this instance's count, not yet written
        self._writing: asyncio.Task[None] | None = None
        self._beaten = self._refreshed = -float("inf")  # when the alive key / the totals were last renewed

    @property
    def alive_key(self) -> str:
        return f"rt:instance:{self.server_id}"

    async def beat(self) -> None:
        """Mark this instance alive for another :attr:`alive_ttl` seconds."""
        await self.redis.set(self.alive_key, b"1", ex=max(1, round(self.alive_ttl)))
        self._beaten = self.clock()

    @property
    def tick_interval(self) -> float:
        return min(self.refresh_after, self.alive_ttl / 3)

    async def tick(self) -> None:
        """What :func:`rtlib.server.loops.keep_counts` does every :attr:`tick_interval`: renew the alive key
        three times per TTL, and read every local workspace's total in one round trip every
        :attr:`refresh_after` seconds."""
        now = self.clock()
        if now - self._beaten >= self.alive_ttl / 3 - 1e-9:
            await self.beat()
        if now - self._refreshed >= self.refresh_after - 1e-9:
            self._refreshed = now
            await self.refresh(*self._local)

    def changed(self, ws: str, local: int) -> None:
        """This instance now has ``local`` connections in ``ws``: write it soon (changes in one loop turn
        share one round trip), then read the workspace's new total."""
        self._dirty[ws] = local
        if self._writing is None or self._writing.done():
            self._writing = spawn(self._write(), name=f"{self.server_id}-counts")

    async def _write(self) -> None:
        await asyncio.sleep(0)  # let the other connections of this loop turn (a storm's) join the batch
        while self._dirty:
            batch, self._dirty = self._dirty, {}
            try:
                async with self.redis.pipeline(transaction=False) as pipe:
                    for ws, n in batch.items():
                        if n > 0:
                            pipe.hset(conns_key(ws), self.server_id, n)
                        else:
                            pipe.hdel(conns_key(ws), self.server_id)
                    await pipe.execute()
            except (RedisError, OSError) as exc:
                # Redis is down (its clients are being closed): keep the counts for the next change's write;
                # meanwhile the other instances see this one's old counts until its alive key expires.
                self._dirty = {**batch, **self._dirty}
                log.warning("%s: could not write connection counts: %s", self.server_id, exc)
                return
            joined = []
            for ws, n in batch.items():
                if n > 0:
                    joined += [ws] if ws not in self._local else []
                    self._local[ws] = n
                else:
                    self._local.pop(ws, None)
                    self._totals.pop(ws, None)
            if joined:  # a workspace new to this instance: learn its total now, not at the next tick
                try:
                    await self.refresh(*joined)
                except (RedisError, OSError) as exc:
                    log.warning("%s: could not read connection counts: %s", self.server_id, exc)

    async def refresh(self, *workspaces: str) -> list[int]:
        """Read these workspaces' cluster-wide totals (live instances only) into the cache, :data:`CHUNK` per
        script call (so one call never holds Redis for long)."""
        totals: list[int] = []
        for i in range(0, len(workspaces), CHUNK):
            chunk = workspaces[i:i + CHUNK]
            got = [int(t) for t in await self._count(keys=[conns_key(ws) for ws in chunk])]
            self._totals.update(zip(chunk, got, strict=True))
            totals += got
        return totals

    def others(self, ws: str, local: int) -> int:
        """The workspace's connections other than the sender's, cluster-wide, with ``local`` of them (the
        sender's included) on this instance. No I/O: the total of the last refresh is used."""
        # The cached total counted this instance as it was then; the local count is exact now.
        remote = max(0, self._totals.get(ws, 0) - self._local.get(ws, 0))
        return max(0, local + remote - 1)

    async def close(self) -> None:
        """Take this instance out of every count (a graceful stop; a crash is cleaned up by the TTL)."""
        if self._writing is not None and not self._writing.done():
            await asyncio.wait([self._writing], timeout=5)
        async with self.redis.pipeline(transaction=False) as pipe:
            for ws in list(self._local) + list(self._dirty):
                pipe.hdel(conns_key(ws), self.server_id)
            pipe.delete(self.alive_key)
            await pipe.execute()
        self._local.clear()
        self._dirty.clear()
