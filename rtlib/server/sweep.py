"""The presence sweep on a keyspace that shards: which workspaces to visit, and popping what expired in them.

Before issue 22 one sorted set indexed every task of every workspace by its oldest heartbeat, kept by the
presence scripts, and one script popped what was due everywhere. On Redis Cluster a script reaches one slot
only, so the sweep is restated per workspace:

* each workspace keeps its own sweep index (:func:`~rtlib.server.keyspace.due_key`: task -> oldest heartbeat),
  kept by the presence scripts atomically with the entries, in the workspace's slot;
* which workspaces to visit is a registry of :data:`~rtlib.server.keyspace.SWEEP_PARTITIONS` partitions
  (:func:`~rtlib.server.keyspace.sweep_keys`: workspace -> a score no later than its oldest heartbeat, and a
  generation per registration), each partition in a slot of its own.

A partition is another slot than its workspaces, so no script keeps both. The registry is kept outside the
workspace scripts, by a protocol under which a workspace with entries is always registered with a score no
later than its oldest heartbeat (:data:`~rtlib.server.scripts.REGISTER`, ``SETTLE``):

* **writers** (a join or heartbeat, :data:`~rtlib.server.scripts.UPSERT`; a lost connection's back-date,
  ``HOLD``), when their script reports that it lowered the workspace's oldest heartbeat (its first entry, or an
  older score), ``REGISTER`` after the script's reply: the score lowered again and a new generation. That alone
  keeps the invariant. Against an instance dying before its ``REGISTER``, a writer also sends
  ``ZADD <partition> LT <score> <ws>`` in the same round trip as its script, at most once per
  :data:`ANNOUNCE_EVERY` seconds per workspace (not with every heartbeat: a command more per heartbeat, for a
  window of one round trip);
* **a sweep** reads each partition's due workspaces, then their generations, then each one's due tasks from its
  index, pops their expired entries (``EXPIRE``, one script per workspace: its ``ZREM`` is the arbiter, so with
  every instance sweeping each entry is popped exactly once), and ``SETTLE``s: the workspace is dropped (nothing
  left) or its score raised to its oldest heartbeat, **only if its generation is still the one read before
  EXPIRE**. A writer that lowered the oldest heartbeat after ``EXPIRE`` read it registers after its own script:
  its ``REGISTER`` came either before ``SETTLE`` (another generation: ``SETTLE`` leaves the workspace, the next
  sweep visits it again) or after (it lowers the score again). A ``REGISTER`` before the generation was read
  followed a script that ``EXPIRE`` then saw. A raise or a drop never hides an entry.

The one gap: an instance that dies between a first entry's script and its ``REGISTER`` (a round trip), with no
``ZADD`` of its own left in the registry (none in the last :data:`ANNOUNCE_EVERY` seconds, or a sweep dropped
the workspace since). That entry is then found at the next ``ZADD`` for the workspace (an instance's first
write to it, or its first after :data:`ANNOUNCE_EVERY` seconds: the crashed instance's clients re-joining
elsewhere, typically), not at its expiry.

Bounded cost: each registry read returns at most :data:`WORKSPACES` workspaces and each ``EXPIRE`` handles at
most ``max_tasks`` tasks; a sweep repeats until no partition has due workspaces it has not visited. A sweep
with nothing due is one round trip of :data:`~rtlib.server.keyspace.SWEEP_PARTITIONS` ``ZRANGEBYSCORE`` (each
node's share in one pipeline on a cluster). Scripts go through pipelines of ``EVALSHA`` (no ``SCRIPT EXISTS``
round trip per call); a Redis that lost its scripts (a restart) gets them loaded again and the pipeline rerun
(:func:`pipelined`: what it sends is safe to repeat).
"""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeAlias

from redis.asyncio import Redis
from redis.exceptions import NoScriptError

from rtlib.protocol.presence import EntryFact
from rtlib.server import keyspace, scripts

__all__ = ["ANNOUNCE_EVERY", "WORKSPACES", "Command", "Sweep", "evalsha", "pipelined"]

#: Workspaces a registry read returns at most (per partition and round of a sweep).
WORKSPACES = 100
#: Seconds between a store's ``ZADD``s of one workspace into the registry alongside its writes.
ANNOUNCE_EVERY = 10.0


#: One pipelined command: a redis-py pipeline method's name, its arguments and keyword arguments.
Command: TypeAlias = tuple[str, tuple[Any, ...], dict[str, Any]]


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def evalsha(script: Any, keys: list[str], args: list[Any]) -> Command:
    """``EVALSHA`` of a registered script (by its SHA only: no ``SCRIPT EXISTS`` round trip, see
    :func:`pipelined`)."""
    return "evalsha", (script.sha, len(keys), *keys, *args), {}


async def pipelined(redis: Redis, commands: list[Command], reload: Callable[[], Awaitable[None]]) -> list[Any]:
    """Run ``commands`` in one non-transactional pipeline and return their replies. On ``NOSCRIPT`` (Redis
    restarted and lost its scripts) the scripts are loaded (``reload``) and the pipeline run once more: callers
    only send what is safe to repeat (a ``ZADD LT``, scripts that all failed)."""
    for attempt in range(2):
        pipe = redis.pipeline(transaction=False)
        for name, args, kwargs in commands:
            getattr(pipe, name)(*args, **kwargs)
        try:
            return list(await pipe.execute())
        except NoScriptError:
            if attempt:
                raise
            await reload()
    raise AssertionError("unreachable")


class Sweep:
    """The registry protocol's steps (writers' and the sweep's) on one Redis or Redis Cluster client."""

    def __init__(self, redis: Redis, expire_text: str, reload: Callable[[], Awaitable[None]],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.redis, self.reload, self.clock = redis, reload, clock
        self._announced: dict[str, float] = {}  # workspace -> when this store last sent its ZADD
        self.expire = redis.register_script(expire_text)
        self.register = redis.register_script(scripts.REGISTER)
        self.settle = redis.register_script(scripts.SETTLE)

    @property
    def scripts(self) -> list[Any]:
        return [self.expire, self.register, self.settle]

    async def _run(self, commands: list[Command]) -> list[Any]:
        return await pipelined(self.redis, commands, self.reload)

    # --- writers -------------------------------------------------------------------------------------------
    def announce(self, scores: Mapping[str, float]) -> list[Command]:
        """The ``ZADD LT`` (its earliest score in the batch) of each workspace not announced in the last
        :data:`ANNOUNCE_EVERY` seconds, to send with the writer's scripts."""
        now = self.clock()
        if len(self._announced) > 4096:  # forget workspaces this store no longer writes to
            self._announced = {ws: t for ws, t in self._announced.items() if now - t < ANNOUNCE_EVERY}
        due = [ws for ws in scores if now - self._announced.get(ws, -math.inf) >= ANNOUNCE_EVERY]
        self._announced.update((ws, now) for ws in due)
        return [("zadd", (keyspace.sweep_keys_of(ws)[0], {ws: scores[ws]}), {"lt": True}) for ws in due]

    async def registered(self, scores: Mapping[str, float]) -> None:
        """``REGISTER`` the workspaces whose oldest heartbeat the writer's scripts lowered (after their reply)."""
        if scores:
            await self._run([evalsha(self.register, keyspace.sweep_keys_of(ws), [ws, score])
                             for ws, score in scores.items()])

    # --- the sweep -----------------------------------------------------------------------------------------
    async def sweep(self, cutoff: float, template: bytes, max_tasks: int) -> list[EntryFact]:
        """Pop every entry whose last heartbeat is ``<= cutoff``, in every workspace; the facts of those popped."""
        facts: list[EntryFact] = []
        unsettled: dict[int, set[str]] = {p: set() for p in range(keyspace.SWEEP_PARTITIONS)}
        parts = list(unsettled)
        while parts:
            limits = {p: WORKSPACES + len(unsettled[p]) for p in parts}
            replies = await self._run([("zrangebyscore", (keyspace.sweep_keys(p)[0], "-inf", repr(cutoff)),
                                        {"start": 0, "num": limits[p]}) for p in parts])
            due: list[tuple[int, str]] = []
            again = []
            for p, found in zip(parts, replies, strict=True):
                new = [(p, ws) for ws in map(_text, found) if ws not in unsettled[p]]
                if new and len(found) == limits[p]:  # maybe more due workspaces than this read returned
                    again.append(p)
                due += new
            if not due:
                break
            visit = await self.generations(due)
            oldest = await self.pop([ws for _, ws, _ in visit], cutoff, template, max_tasks, facts)
            settled = await self.settle_all(visit, oldest)
            for (p, ws, _), ok in zip(visit, settled, strict=True):
                if not ok:
                    unsettled[p].add(ws)
            parts = again
        return facts

    async def generations(self, due: list[tuple[int, str]]) -> list[tuple[int, str, bytes]]:
        """Each due ``(partition, workspace)`` with its registration's generation (``b"0"`` if none), read
        before its entries are: what ``SETTLE`` compares."""
        gens = await self._run([("hget", (keyspace.sweep_keys(p)[1], ws), {}) for p, ws in due])
        return [(p, ws, gen or b"0") for (p, ws), gen in zip(due, gens, strict=True)]

    async def pop(self, workspaces: list[str], cutoff: float, template: bytes, max_tasks: int,
                  facts: list[EntryFact]) -> dict[str, str]:
        """Pop the due entries of these workspaces (``max_tasks`` tasks per script, repeated while more are due)
        into ``facts``; each workspace's oldest heartbeat left (``""`` for none), as ``SETTLE`` takes it."""
        oldest: dict[str, str] = {}
        work = list(workspaces)
        while work:
            reads = await self._run([command for ws in work for command in (
                ("zrangebyscore", (keyspace.due_key(ws), "-inf", repr(cutoff)), {"start": 0, "num": max_tasks}),
                ("zrange", (keyspace.due_key(ws), 0, 0), {"withscores": True}))])
            calls = []
            for i, ws in enumerate(work):
                tasks, first = [_text(t) for t in reads[2 * i]], reads[2 * i + 1]
                oldest[ws] = repr(first[0][1]) if first else ""
                if tasks:
                    calls.append((ws, tasks))
            if not calls:
                break
            replies = await self._run([evalsha(self.expire, [
                keyspace.due_key(ws), *keyspace.history_keys(ws),
                *(k for t in tasks for k in (keyspace.presence_key(ws, t), keyspace.presence_counts_key(ws, t)))],
                [repr(cutoff), template, ws, *tasks]) for ws, tasks in calls])
            for (ws, _), flat in zip(calls, replies, strict=True):
                oldest[ws] = _text(flat[0]) if flat[0] else ""
                for i in range(1, len(flat), 3):
                    conn, _, user = _text(flat[i + 1]).partition(":")
                    facts.append(EntryFact(ws, _text(flat[i]), conn, user, True, int(flat[i + 2])))
            work = [ws for ws, tasks in calls if len(tasks) == max_tasks]
        return oldest

    async def settle_all(self, visit: list[tuple[int, str, bytes]], oldest: dict[str, str]) -> list[bool]:
        """``SETTLE`` each visited ``(partition, workspace, generation)``; whether each was settled."""
        replies = await self._run([evalsha(self.settle, keyspace.sweep_keys(p), [ws, gen, oldest[ws]])
                                   for p, ws, gen in visit])
        return [int(r) == 1 for r in replies]
