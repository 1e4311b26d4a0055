"""Cluster-wide connection counts per workspace (the fan-out budget's recipients): real Redis, two "instances"
sharing it, an injected clock for the cache's age."""

from __future__ import annotations

import pytest
from redis.asyncio import Redis

from rtlib.server.members import ClusterCounts, conns_key


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


async def _alive(redis: Redis, *names: str, **kwargs: object) -> list[ClusterCounts]:
    """One ClusterCounts per name (an instance each), alive: each has beaten once."""
    counts = [ClusterCounts(redis, name, **kwargs) for name in names]  # type: ignore[arg-type]
    for c in counts:
        await c.beat()
    return counts


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
    a, b = await _alive(redis, "srv-a", "srv-b", clock=clock)
    b.changed("w1", 5)
    await _settle(b)
    a.changed("w1", 1)  # a's first connection: its write is followed by a read of the total
    await _settle(a)
    assert a.others("w1", 1) == 5  # the sender's 0 other local connections + b's 5
    assert a.others("w2", 1) == 0  # a workspace nobody else is in
    assert await redis.hgetall(conns_key("w1")) == {a.member.encode(): b"1", b.member.encode(): b"5"}


async def test_local_changes_count_at_once_and_remote_ones_at_the_next_refresh(redis: Redis) -> None:
    clock = Clock()
    a, b = await _alive(redis, "srv-a", "srv-b", refresh=2.0, clock=clock)
    a.changed("w1", 2)
    await _settle(a)
    assert a.others("w1", 2) == 1
    assert a.others("w1", 3) == 2  # a third local connection, before its write: the local count is exact
    b.changed("w1", 4)
    await _settle(b)
    assert a.others("w1", 2) == 1  # b's joins are not seen before a's next refresh
    await a.tick()  # the first tick refreshes (and beats)
    assert a.others("w1", 2) == 5
    b.changed("w1", 1)
    await _settle(b)
    clock.now += 1.0
    await a.tick()  # not due yet: 1 s < 2 s
    assert a.others("w1", 2) == 5
    clock.now += 1.0
    await a.tick()
    assert a.others("w1", 2) == 2


async def test_one_refresh_reads_every_workspace_in_chunks(redis: Redis, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("rtlib.server.members.CHUNK", 3)
    a, b = await _alive(redis, "srv-a", "srv-b")
    for i in range(7):
        a.changed(f"w{i}", 1)
        b.changed(f"w{i}", i)
    await _settle(a, b)
    assert await a.refresh(*(f"w{i}" for i in range(7))) == list(range(7))  # b's counts: a's own are not read
    assert [a.others(f"w{i}", 1) for i in range(7)] == list(range(7))


async def test_the_alive_key_is_renewed_every_third_of_its_ttl(redis: Redis) -> None:
    clock = Clock()
    a = ClusterCounts(redis, "srv-a", refresh=1.0, alive_ttl=15.0, clock=clock)
    assert a.tick_interval == 1.0
    await a.tick()
    assert await redis.ttl(a.alive_key) == 15
    await redis.expire(a.alive_key, 100)
    clock.now += 4.0
    await a.tick()
    assert await redis.ttl(a.alive_key) > 15  # 4 s < 5 s: not renewed
    clock.now += 1.0
    await a.tick()
    assert await redis.ttl(a.alive_key) == 15
    assert ClusterCounts(redis, "x", refresh=60.0, alive_ttl=15.0).tick_interval == 5.0


async def test_a_dead_instances_counts_are_dropped(redis: Redis) -> None:
    a, b = await _alive(redis, "srv-a", "srv-b")
    b.changed("w1", 7)
    await _settle(b)
    assert await a.refresh("w1") == [7]
    await redis.delete(b.alive_key)  # b crashed: its alive key expired, its field is still there
    assert await a.refresh("w1") == [0]
    assert await redis.hgetall(conns_key("w1")) == {}  # and the count script removed it


async def test_a_beat_writes_back_counts_that_were_lost(redis: Redis) -> None:
    """A lapsed alive key lets another instance delete this one's counts; a failed write leaves them stale.
    The next beat writes every local count again."""
    a, b = await _alive(redis, "srv-a", "srv-b")
    b.changed("w1", 3)
    await _settle(b)
    await redis.delete(b.alive_key)  # b missed its beats (Redis paused, say): a drops b's count
    assert await a.refresh("w1") == [0]
    await b.beat()
    assert await a.refresh("w1") == [3]


async def test_a_restart_under_the_same_server_id_does_not_revive_old_counts(redis: Redis) -> None:
    [crashed] = await _alive(redis, "srv-b")
    crashed.changed("w1", 9)
    await _settle(crashed)
    await redis.delete(crashed.alive_key)  # it crashed; its alive key expired, its count is still there
    restarted, a = await _alive(redis, "srv-b", "srv-a")
    assert restarted.member != crashed.member
    assert await a.refresh("w1") == [0]


async def test_close_takes_the_instance_out_of_every_count(redis: Redis) -> None:
    [a] = await _alive(redis, "srv-a")
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
    [a] = await _alive(redis, "srv-a")
    for n in range(1, 401):  # a storm of 400 joins
        a.changed("w1", n)
    await _settle(a)
    assert await redis.hget(conns_key("w1"), a.member) == b"400"
