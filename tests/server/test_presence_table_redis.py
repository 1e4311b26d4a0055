"""Every row of the presence lifecycle table through both stores: the in-memory book the models run and the
Lua scripts (UPSERT, REMOVE, HOLD, EXPIRE) on a real redis-server. Each entry row runs with the user alone on
the task and with another tab, which reaches every viewer row; both stores must reach the table's next states
and publish exactly the table's announcement (read from the workspace channel for Redis)."""

from __future__ import annotations

import itertools
from typing import Any

import msgspec
import pytest
from presence_cases import TASK, WS, BookAdapter, Case, cases, expected_published, run_case
from redis.asyncio import Redis
from redis.asyncio.client import PubSub

from rtlib.protocol.history import without_offset
from rtlib.protocol.presence import EntryFact
from rtlib.protocol.presence_protocol import Expire, Hold, Remove, Upsert
from rtlib.protocol.presence_table import TABLE
from rtlib.server import keyspace
from rtlib.server.store import RedisStore

# Where the scripts keep the case's task and publish its workspace's events: read back, never written here.
CHANNEL, ZSET, COUNTS = keyspace.channel(WS), keyspace.presence_key(WS, TASK), keyspace.presence_counts_key(WS, TASK)
_fences = itertools.count()


class RedisAdapter:
    """The case runner's store over :class:`RedisStore`: the live server's scripts, read back from Redis."""

    def __init__(self, store: RedisStore, pubsub: PubSub) -> None:
        self.store, self.pubsub = store, pubsub

    async def upsert(self, op: Upsert) -> tuple[EntryFact, list[str]]:
        return await self.store.presence_upsert(op)

    async def remove(self, ops: list[Remove]) -> list[EntryFact]:
        return await self.store.presence_remove_many(ops)

    async def hold(self, ops: list[Hold]) -> None:
        await self.store.presence_hold_many(ops)

    async def expire(self, op: Expire) -> list[EntryFact]:
        return await self.store.presence_expire(op)

    async def score(self, entry: str) -> float | None:
        return await self.store.redis.zscore(ZSET, entry)

    async def viewers(self) -> list[str]:
        return sorted(v.decode() for v in await self.store.redis.hkeys(COUNTS))

    async def published(self) -> list[tuple[str, Any]]:
        """Everything the scripts published so far: a fence published after them arrives after them (Redis
        delivers one channel's messages in order), so nothing is waited for by guessing a timeout."""
        fence = f"fence-{next(_fences)}".encode()
        await self.store.redis.publish(CHANNEL, fence)
        got = []
        while True:
            msg = await self.pubsub.get_message(ignore_subscribe_messages=True, timeout=5.0)
            assert msg is not None, "the fence never arrived"
            if msg["data"] == fence:
                return got
            exclude, event = keyspace.split_frame(msg["data"])
            got.append((exclude or "", msgspec.json.decode(without_offset(event))))


@pytest.fixture
async def redis_store(redis_url: str):
    redis = Redis.from_url(redis_url)
    pubsub = redis.pubsub()
    await pubsub.subscribe(CHANNEL)
    await pubsub.get_message(timeout=1.0)  # the subscribe confirmation
    yield RedisAdapter(RedisStore(redis), pubsub)
    await pubsub.aclose()
    await redis.aclose()


CASES = cases()


def test_the_cases_reach_every_row() -> None:
    assert {row for case in CASES for row in case.expected.rows} == set(TABLE)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
async def test_every_row_through_the_book_and_the_lua_scripts(case: Case, redis_store: RedisAdapter) -> None:
    want = case.expected
    for name, store in (("book", BookAdapter()), ("redis", redis_store)):
        outcome, at = await run_case(case, store)
        assert outcome.before is case.state, f"{name}: the case's precondition was not set up"
        assert (outcome.entry, outcome.viewer) == (want.entry, want.viewer), f"{name}: {case.id}"
        assert outcome.published == expected_published(case, at), f"{name}: {case.id}"
