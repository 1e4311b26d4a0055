"""The Redis store against a real redis-server: conformance with the in-memory book, atomic versions."""

from __future__ import annotations

import asyncio
import random

import msgspec
import pytest
from redis.asyncio import Redis

from rtlib.presence import PresenceBook, PresenceConfig
from rtlib.store import RedisStore


@pytest.fixture
async def store(redis_url: str):
    redis = Redis.from_url(redis_url)
    yield RedisStore(redis)
    await redis.aclose()


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_redis_scripts_and_presence_book_agree(store: RedisStore, seed: int) -> None:
    """Both stores run one random sequence of joins, heartbeats, leaves and sweeps: same facts, same viewers."""
    rng, book, cfg = random.Random(seed), PresenceBook(), PresenceConfig(timeout=10, sweep_interval=1)
    now = 1_000.0
    for _ in range(300):
        now += rng.choice([0.0, 0.5, 1.0, 3.0])
        ws, task = rng.choice(["w1", "w2"]), rng.choice(["t1", "t2", "t3"])
        conn, user = rng.choice([("c1", "alice"), ("c2", "alice"), ("c3", "bob"), ("c4", "carol")])
        op = rng.random()
        if op < 0.5:
            assert await store.presence_upsert(ws, task, conn, user, now) == book.upsert(ws, task, conn, user, now)
        elif op < 0.75:
            assert await store.presence_remove(ws, task, conn, user) == book.remove(ws, task, conn, user)
        else:
            cutoff = cfg.cutoff(now)
            got = await store.presence_expire(cutoff)
            want = book.expire(cutoff)
            assert sorted(got, key=repr) == sorted(want, key=repr)
    for ws in ("w1", "w2"):
        for task in ("t1", "t2", "t3"):
            _, viewers = await store.presence_upsert(ws, task, "probe", "zz", now)
            assert [v for v in viewers if v != "zz"] == book.viewers(ws, task)


async def test_concurrent_expiry_pops_each_entry_once(store: RedisStore, redis_url: str) -> None:
    for i in range(200):
        await store.presence_upsert("w", f"t{i % 20}", f"c{i}", f"u{i}", now=100.0)
    others = [RedisStore(Redis.from_url(redis_url)) for _ in range(3)]
    results = await asyncio.gather(*(s.presence_expire(cutoff=100.0) for s in [store, *others]))
    for s in others:
        await s.redis.aclose()
    popped = [f.conn_id for r in results for f in r]
    assert sorted(popped) == sorted(f"c{i}" for i in range(200))


async def test_versions_are_gapless_under_concurrency(store: RedisStore) -> None:
    changes = {"a": msgspec.Raw(b"1")}
    versions = await asyncio.gather(*(store.update_task("w", "t", changes, b"", b"") for _ in range(100)))
    assert sorted(versions) == list(range(1, 101))
    version, fields = await store.get_task("w", "t")
    assert version == 100 and bytes(fields["a"]) == b"1"


async def test_update_publishes_the_assembled_event(store: RedisStore) -> None:
    pubsub = store.redis.pubsub()
    await pubsub.subscribe("rt:chan:w")
    await pubsub.get_message(timeout=1)
    await store.update_task("w", "t", {"a": msgspec.Raw(b'"x"')}, b'{"v":', b"}")
    msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=2)
    assert msg["data"] == b'\n{"v":1}'
    await store.update_task("w", "t", {"a": msgspec.Raw(b'"y"')}, b"", b"", publish=False)
    assert await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.2) is None
    await pubsub.aclose()


async def test_a_stored_value_with_invalid_utf8_is_repaired_on_read(store: RedisStore) -> None:
    """A value written by an earlier rtlib (before binary frames were validated) must not break its readers."""
    await store.redis.hset("rt:w1:task:t1", mapping={"note": b'"x\xc0\xaf"', "ok": b'"fine"'})
    await store.redis.set("rt:w1:ver:t1", 3)
    version, fields = await store.get_task("w1", "t1")
    assert version == 3 and bytes(fields["ok"]) == b'"fine"'
    assert msgspec.json.decode(bytes(fields["note"])) == "x\ufffd\ufffd"
