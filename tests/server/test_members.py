"""Cluster-wide connection counts per workspace (the fan-out budget's recipients): real Redis, two "instances"
sharing it, an injected clock for the cache's age."""

from __future__ import annotations

import asyncio

import pytest
from redis.asyncio import Redis

from rtlib.server.members import ClusterCounts, conns_key


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


async def _settle(*counts: ClusterCounts) -> None:
    for c in counts:
        if c._writing is not None:
            await c._writing


@pytest.fixture
async def redis(redis_url: str) -> Redis:
    client = Redis.from_url(redis_url)
    yield client
    await client.aclose()


async def test_an_instance_sees_the_other_instances_connections(redis: Redis) -> None:
    clock = Clock()
    a, b = ClusterCounts(redis, "srv-a", clock=clock), ClusterCounts(redis, "srv-b", clock=clock)
    await a.beat()
    await b.beat()
    b.changed("w1", 5)
    await _settle(b)
    a.changed("w1", 1)  # a's first connection: its write is followed by a read of the total
    await _settle(a)
    assert a.others("w1", 1) == 5  # the sender's 0 other local connections + b's 5
    assert a.others("w2", 1) == 0  # a workspace nobody else is in
    assert await redis.hgetall(conns_key("w1")) == {b"srv-a": b"1", b"srv-b": b"5"}


async def test_local_changes_count_at_once_and_remote_ones_after_a_refresh(redis: Redis) -> None:
    clock = Clock()
    a, b = ClusterCounts(redis, "srv-a", refresh=2.0, clock=clock), ClusterCounts(redis, "srv-b", clock=clock)
    await a.beat()
    await b.beat()
    a.changed("w1", 2)
    await _settle(a)
    assert a.others("w1", 2) == 1
    assert a.others("w1", 3) == 2  # a third local connection, before its write: the local count is exact
    b.changed("w1", 4)
    await _settle(b)
    assert a.others("w1", 2) == 1  # the cached total is fresh (age 0): b's join is not seen yet
    clock.now += 2.5
    assert a.others("w1", 2) == 1  # stale: this answer uses the old total and starts a refresh
    for _ in range(50):
        await asyncio.sleep(0.01)
        if a.others("w1", 2) == 5:
            break
    assert a.others("w1", 2) == 5


async def test_a_dead_instances_counts_are_dropped(redis: Redis) -> None:
    a, b = ClusterCounts(redis, "srv-a"), ClusterCounts(redis, "srv-b")
    await a.beat()
    await b.beat()
    b.changed("w1", 7)
    await _settle(b)
    assert await a.refresh("w1") == 7
    await redis.delete(b.alive_key)  # b crashed: its alive key expired, its field is still there
    assert await a.refresh("w1") == 0
    assert await redis.hgetall(conns_key("w1")) == {}  # and the count script removed it


async def test_close_takes_the_instance_out_of_every_count(redis: Redis) -> None:
    a = ClusterCounts(redis, "srv-a")
    await a.beat()
    a.changed("w1", 3)
    a.changed("w2", 1)
    await _settle(a)
    a.changed("w2", 0)  # its last connection there left: the field goes
    await _settle(a)
    assert await redis.hgetall(conns_key("w2")) == {}
    await a.close()
    assert await redis.hgetall(conns_key("w1")) == {}
    assert not await redis.exists(a.alive_key)


async def test_a_storm_of_changes_ends_with_the_last_count(redis: Redis) -> None:
    a = ClusterCounts(redis, "srv-a")
    await a.beat()
    for n in range(1, 401):  # a storm of 400 joins
        a.changed("w1", n)
    await _settle(a)
    assert await redis.hget(conns_key("w1"), "srv-a") == b"400"
