"""Every row of the presence lifecycle table through both stores: the in-memory book the models run and the
Lua scripts (UPSERT, REMOVE, HOLD, EXPIRE) on a real redis-server. Each entry row runs with the user alone on
the task and with another tab, which reaches every viewer row; both stores must reach the table's next states
and publish exactly the table's announcement (read from the workspace channel for Redis)."""

from __future__ import annotations

import pytest
from presence_cases import TASK, WS, BookAdapter, Case, RedisAdapter, cases, expected_published, run_case
from redis.asyncio import Redis

from rtlib.protocol.presence_table import TABLE
from rtlib.server import keyspace
from rtlib.server.store import RedisStore

# Where the scripts keep the case's task and publish its workspace's events: read back, never written here.
CHANNEL, ZSET, COUNTS = keyspace.channel(WS), keyspace.presence_key(WS, TASK), keyspace.presence_counts_key(WS, TASK)


@pytest.fixture
async def redis_store(redis_url: str):
    redis = Redis.from_url(redis_url)
    pubsub = redis.pubsub()
    await pubsub.subscribe(CHANNEL)
    await pubsub.get_message(timeout=1.0)  # the subscribe confirmation
    yield RedisAdapter(RedisStore(redis), pubsub, redis)
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
