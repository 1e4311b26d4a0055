"""How many connections each workspace has across the cluster, for the fan-out budget.

The fan-out budget (:meth:`rtlib.protocol.session.Session.fanout`) charges an update by what it makes the
servers write: its event's size x the workspace's other connections. Counting this instance's connections only
left a gap: a sender alone on one instance, whose workspace's members are all on others, cost its instance
nothing and was never paced, while the others wrote its fan-out without bound. So each instance publishes its
local counts to Redis and charges by the cluster's total.

Keys (built by :mod:`rtlib.server.keyspace`):

* :func:`~rtlib.server.keyspace.conns_key` (hash) instance -> that instance's open connections in the
  workspace (an instance is named by its server id and a random part, :attr:`ClusterCounts.member`);
* :func:`~rtlib.server.keyspace.alive_key` (string, TTL :data:`ALIVE_TTL`) the instance is alive. It is renewed
  by :meth:`ClusterCounts.tick` (``rtlib.server.loops.keep_counts``). An instance that dies without cleaning up
  leaves its fields behind; a refresh drops them once its key has expired.

A workspace's hash is in the workspace's slot, an alive key in a slot of its own (issue 22: a keyspace that
shards), so no script reads both: a refresh reads the hashes (``HGETALL``, one pipeline), then the alive keys of
the instances it found (``EXISTS``, one pipeline), sums the live ones and deletes the dead ones' fields (``HDEL``).
Not atomic as the one script before it was: an instance whose key had lapsed and that beats again between the
two reads can lose a field to that ``HDEL``. Its next beat writes it back, exactly as after any lapse.

Reads are cached: every :data:`REFRESH` seconds one refresh (two round trips) reads the other instances' counts
of every workspace this instance has connections in (``rtlib.server.loops.keep_counts``), and an update is charged with
the count known at that moment, so the hot path never waits for Redis nor adds a round trip. (A first version
refreshed each workspace from the hot path when its count was stale: at S1, 50 workspaces, that was 25 script
calls a second and cost 8.5 µs per delivery, +15 %.) The local count is always exact, and only the other
instances' part is cached: it lags by at most one refresh (:data:`REFRESH`), or one beat (a third of
:data:`ALIVE_TTL`) for an instance whose count had to be written again.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Callable

from redis.asyncio import Redis

from rtlib.server.keyspace import alive_key, conns_key
from rtlib.server.tasks import spawn

__all__ = ["ALIVE_TTL", "CHUNK", "REFRESH", "ClusterCounts"]

log = logging.getLogger("rtlib.server.members")

#: Seconds a count read from Redis is used before it is read again.
REFRESH = 2.0
#: Workspaces read per pipeline (so one refresh never sends Redis an unbounded batch).
CHUNK = 256
#: Seconds an instance counts as alive after its last beat (it beats every third of this).
ALIVE_TTL = 15.0


class ClusterCounts:
    """This instance's view of every workspace's connection count across the cluster."""

    def __init__(self, redis: Redis, server_id: str, refresh: float = REFRESH, alive_ttl: float = ALIVE_TTL,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.redis, self.server_id = redis, server_id
        # This process's name in the counts: the server id plus a random part, so a restart under the same
        # --server-id never revives the counts a crashed run left behind (they expire with their alive key).
        self.member = f"{server_id}.{secrets.token_hex(4)}"
        self.refresh_after, self.alive_ttl, self.clock = refresh, alive_ttl, clock
        self._remote: dict[str, int] = {}  # ws -> the other live instances' connections, as last read
        self._local: dict[str, int] = {}  # ws -> this instance's count, as last written
        self._dirty: dict[str, int] = {}  # ws -> this instance's count, not yet written
        self._writing: asyncio.Task[None] | None = None
        self._beaten = self._refreshed = -float("inf")  # when the alive key / the remote counts were last renewed

    @property
    def alive_key(self) -> str:
        return alive_key(self.member)

    async def beat(self) -> None:
        """Mark this instance alive for another :attr:`alive_ttl` seconds, and write every local count again
        in the same round trip: counts lost meanwhile (a lapsed alive key lets the others delete them, a
        write may have failed while Redis was down) are back within one beat."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.set(self.alive_key, b"1", ex=max(1, round(self.alive_ttl)))
            for ws, n in {**self._local, **self._dirty}.items():
                if n > 0:
                    pipe.hset(conns_key(ws), self.member, n)
            await pipe.execute()
        self._beaten = self.clock()

    @property
    def tick_interval(self) -> float:
        return min(self.refresh_after, self.alive_ttl / 3)

    async def tick(self) -> None:
        """What :func:`rtlib.server.loops.keep_counts` does every :attr:`tick_interval`: renew the alive key
        (and the counts) three times per TTL, and read every local workspace's remote count in one round trip
        every :attr:`refresh_after` seconds."""
        now = self.clock()
        if now - self._beaten >= self.alive_ttl / 3 - 1e-9:
            await self.beat()
        if now - self._refreshed >= self.refresh_after - 1e-9:
            self._refreshed = now
            await self.refresh(*self._local)

    def changed(self, ws: str, local: int) -> None:
        """This instance now has ``local`` connections in ``ws``: write it soon (changes in one loop turn
        share one round trip); a workspace new here also has its remote count read at once."""
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
                            pipe.hset(conns_key(ws), self.member, n)
                        else:
                            pipe.hdel(conns_key(ws), self.member)
                    await pipe.execute()
            except Exception as exc:
                # Redis is down (its clients are being closed): the counts wait in _dirty, and the next beat
                # writes them; meanwhile the others see this instance's old counts until its key expires.
                self._dirty = {**batch, **self._dirty}
                log.warning("%s: could not write connection counts: %s", self.server_id, exc)
                return
            joined = [ws for ws, n in batch.items() if n > 0 and ws not in self._local]
            for ws, n in batch.items():
                if n > 0:
                    self._local[ws] = n
                else:
                    self._local.pop(ws, None)
                    self._remote.pop(ws, None)
            if joined:  # a workspace new to this instance: learn the others' count now, not at the next tick
                try:
                    await self.refresh(*joined)
                except Exception as exc:
                    log.warning("%s: could not read connection counts: %s", self.server_id, exc)

    async def refresh(self, *workspaces: str) -> list[int]:
        """Read these workspaces' connection counts on the *other* live instances into the cache, :data:`CHUNK`
        per pipeline, and delete the fields of instances whose alive key is gone. Own counts are never read
        back: the local count is always the exact one."""
        remote: list[int] = []
        own = self.member.encode()
        for i in range(0, len(workspaces), CHUNK):
            chunk = workspaces[i:i + CHUNK]
            async with self.redis.pipeline(transaction=False) as pipe:
                for ws in chunk:
                    pipe.hgetall(conns_key(ws))
                tables: list[dict[bytes, bytes]] = await pipe.execute()
            others = sorted({m for table in tables for m in table if m != own})
            alive: set[bytes] = set()
            if others:
                async with self.redis.pipeline(transaction=False) as pipe:
                    for m in others:
                        pipe.exists(alive_key(m.decode()))
                    alive = {m for m, n in zip(others, await pipe.execute(), strict=True) if n}
            dead = [(ws, m) for ws, table in zip(chunk, tables, strict=True) for m in table
                    if m != own and m not in alive]
            if dead:
                async with self.redis.pipeline(transaction=False) as pipe:
                    for ws, m in dead:
                        pipe.hdel(conns_key(ws), m)
                    await pipe.execute()
            got = [sum(int(n) for m, n in table.items() if m in alive) for table in tables]
            self._remote.update(zip(chunk, got, strict=True))
            remote += got
        return remote

    def others(self, ws: str, local: int) -> int:
        """The workspace's connections other than the sender's, cluster-wide, with ``local`` of them (the
        sender's included) on this instance. No I/O: the remote count of the last refresh is used."""
        return max(0, local - 1) + self._remote.get(ws, 0)

    async def close(self) -> None:
        """Take this instance out of every count (a graceful stop; a crash is cleaned up by the TTL)."""
        if self._writing is not None and not self._writing.done():
            await asyncio.wait([self._writing], timeout=5)
        async with self.redis.pipeline(transaction=False) as pipe:
            for ws in {**self._local, **self._dirty}:
                pipe.hdel(conns_key(ws), self.member)
            pipe.delete(self.alive_key)
            await pipe.execute()
        self._local.clear()
        self._dirty.clear()
