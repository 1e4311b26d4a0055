"""The presence sweep per workspace (:mod:`rtlib.server.sweep`) on a real redis-server: the workspace registry's
protocol, including a writer racing a sweep, bounded calls that still pop everything, and nothing left behind."""

from __future__ import annotations

import asyncio

import pytest
from redis.asyncio import Redis

from rtlib.protocol.presence import EntryFact
from rtlib.protocol.presence_protocol import Expire, Hold, Remove, Upsert
from rtlib.server import keyspace, sweep
from rtlib.server.store import RedisStore


@pytest.fixture
async def store(redis_url: str):
    redis = Redis.from_url(redis_url)
    yield RedisStore(redis)
    await redis.aclose()


async def _registry(store: RedisStore, ws: str) -> float | None:
    return await store.redis.zscore(keyspace.sweep_keys_of(ws)[0], ws)


async def _presence_keys_left(store: RedisStore) -> list[bytes]:
    keys = [k async for k in store.redis.scan_iter(match=keyspace.presence_pattern())]
    keys += [k async for k in store.redis.scan_iter(match=keyspace.due_pattern())]
    for p in range(keyspace.SWEEP_PARTITIONS):
        if await store.redis.zcard(keyspace.sweep_keys(p)[0]):
            keys.append(keyspace.sweep_keys(p)[0].encode())
    return keys


async def test_a_join_registers_its_workspace_and_the_sweep_drops_it_once_empty(store: RedisStore) -> None:
    await store.presence_upsert(Upsert("w1", "t1", "c1", "alice", 100.0, b"{}"))
    await store.presence_upsert(Upsert("w1", "t2", "c1", "alice", 104.0, b"{}"))
    assert await _registry(store, "w1") == 100.0
    assert await store.redis.zrange(keyspace.due_key("w1"), 0, -1, withscores=True) == [(b"t1", 100.0),
                                                                                      (b"t2", 104.0)]
    assert await store.presence_expire(Expire(101.0, b"{}")) == [EntryFact("w1", "t1", "c1", "alice", True, 0)]
    assert await _registry(store, "w1") == 104.0  # raised to the oldest heartbeat left: not visited before
    assert await store.presence_expire(Expire(103.0, b"{}")) == []
    assert await store.presence_expire(Expire(104.0, b"{}")) == [EntryFact("w1", "t2", "c1", "alice", True, 0)]
    assert await _registry(store, "w1") is None
    assert await _presence_keys_left(store) == []


async def test_a_heartbeat_lowers_nothing_and_a_leave_keeps_the_registration_until_a_sweep(store: RedisStore) -> None:
    await store.presence_upsert(Upsert("w1", "t1", "c1", "alice", 100.0, b"{}"))
    await store.presence_upsert(Upsert("w1", "t1", "c1", "alice", 130.0, b"{}"))  # a heartbeat
    assert await _registry(store, "w1") == 100.0  # a lower bound: a sweep at 100 visits and raises it
    await store.presence_remove(Remove("w1", "t1", "c1", "alice", b"{}"))
    assert await store.presence_expire(Expire(100.0, b"{}")) == []
    assert await _registry(store, "w1") is None and await _presence_keys_left(store) == []


async def test_a_back_dated_entry_lowers_the_registration(store: RedisStore) -> None:
    await store.presence_upsert(Upsert("w1", "t1", "c1", "alice", 100.0, b"{}"))
    await store.presence_expire(Expire(50.0, b"{}"))  # nothing due
    await store.presence_upsert(Upsert("w1", "t1", "c1", "alice", 200.0, b"{}"))
    assert await store.presence_expire(Expire(150.0, b"{}")) == []  # visited at 100, raised to 200
    assert await _registry(store, "w1") == 200.0
    await store.presence_hold_many([Hold("w1", "t1", "c1", "alice", 120.0)])  # an unclean disconnect, grace
    assert await _registry(store, "w1") == 120.0
    assert await store.presence_expire(Expire(150.0, b"{}")) == [EntryFact("w1", "t1", "c1", "alice", True, 0)]


async def test_a_first_entry_written_while_a_sweep_empties_its_workspace_is_swept_later(store: RedisStore) -> None:
    """The race the generations are for: the sweep reads the registry and the generation, and pops the
    workspace's last entry; before it SETTLEs, a writer adds a first entry again (its script lowers the oldest
    heartbeat, so it REGISTERs). The SETTLE must not drop the workspace: its generation changed."""
    await store.presence_upsert(Upsert("w1", "t1", "c1", "alice", 100.0, b"{}"))
    s, p = store.sweep, keyspace.sweep_partition("w1")
    assert await store.redis.zrangebyscore(keyspace.sweep_keys(p)[0], "-inf", 150.0) == [b"w1"]
    [visit] = await s.generations([(p, "w1")])
    facts: list[EntryFact] = []
    oldest = await s.pop(["w1"], 150.0, b"{}", 500, facts)
    assert oldest == {"w1": ""} and [f.conn_id for f in facts] == ["c1"]  # the workspace is empty now
    await store.presence_upsert(Upsert("w1", "t1", "c2", "bob", 140.0, b"{}"))  # the racing first entry
    assert await s.settle_all([visit], oldest) == [False]
    assert await _registry(store, "w1") == 100.0  # left for the next sweep (its score was only lowered)
    assert await store.presence_expire(Expire(150.0, b"{}")) == [EntryFact("w1", "t1", "c2", "bob", True, 0)]
    assert await _presence_keys_left(store) == []


async def test_without_a_racing_writer_the_settle_drops_the_workspace(store: RedisStore) -> None:
    await store.presence_upsert(Upsert("w1", "t1", "c1", "alice", 100.0, b"{}"))
    s, p = store.sweep, keyspace.sweep_partition("w1")
    [visit] = await s.generations([(p, "w1")])
    oldest = await s.pop(["w1"], 150.0, b"{}", 500, [])
    assert await s.settle_all([visit], oldest) == [True]
    assert await _registry(store, "w1") is None
    await store.presence_upsert(Upsert("w1", "t1", "c2", "bob", 140.0, b"{}"))  # after the settle: registered
    assert await _registry(store, "w1") == 140.0


async def test_bounded_calls_still_pop_every_due_entry(store: RedisStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """More due workspaces per partition than one DUE returns, more due tasks than one EXPIRE takes."""
    monkeypatch.setattr(sweep, "WORKSPACES", 2)
    ops = [Upsert(f"w{w}", f"t{t}", f"c{w}", f"u{w}", 100.0 + t, b"{}") for w in range(40) for t in range(7)]
    await store.presence_upsert_many(ops)
    facts = await store.presence_expire(Expire(200.0, b"{}"), max_tasks=3)
    assert sorted((f.workspace_id, f.task_id) for f in facts) == sorted((o.workspace_id, o.task_id) for o in ops)
    assert await _presence_keys_left(store) == []


async def test_every_instance_sweeping_at_once_pops_each_entry_once(store: RedisStore, redis_url: str) -> None:
    await store.presence_upsert_many([Upsert(f"w{i % 30}", f"t{i % 7}", f"c{i}", f"u{i}", 100.0 + i % 3, b"{}")
                                      for i in range(600)])
    others = [RedisStore(Redis.from_url(redis_url)) for _ in range(3)]
    results = await asyncio.gather(*(s.presence_expire(Expire(102.0, b"{}"), max_tasks=2)
                                     for s in [store, *others]))
    for s in others:
        await s.redis.aclose()
    assert sorted(f.conn_id for r in results for f in r) == sorted(f"c{i}" for i in range(600))
    assert await _presence_keys_left(store) == []


async def test_a_redis_that_lost_its_scripts_gets_them_again(store: RedisStore) -> None:
    """The presence pipelines send EVALSHA only: after SCRIPT FLUSH (a restarted Redis) they load and rerun."""
    await store.load_scripts()
    await store.redis.script_flush()
    fact, viewers = await store.presence_upsert(Upsert("w1", "t1", "c1", "alice", 100.0, b"{}"))
    assert fact.changed and viewers == ["alice"]
    await store.redis.script_flush()
    assert len(await store.presence_expire(Expire(100.0, b"{}"))) == 1


async def test_a_store_adds_its_workspace_to_the_registry_at_most_every_announce_period(redis_url: str) -> None:
    now = [0.0]
    async with Redis.from_url(redis_url) as redis:
        async def reload() -> None: ...

        s = sweep.Sweep(redis, "return 1", reload, clock=lambda: now[0])
        assert [c[1][0] for c in s.announce({"w1": 5.0, "w2": 6.0})] == [keyspace.sweep_keys_of("w1")[0],
                                                                         keyspace.sweep_keys_of("w2")[0]]
        now[0] += sweep.ANNOUNCE_EVERY - 0.1
        assert s.announce({"w1": 7.0}) == []
        now[0] += 0.1
        assert s.announce({"w1": 7.0}) == [("zadd", (keyspace.sweep_keys_of("w1")[0], {"w1": 7.0}), {"lt": True})]


async def test_an_entry_whose_writer_died_before_registering_is_found_by_the_next_writer(store: RedisStore,
                                                                                      redis_url: str) -> None:
    """The documented gap: the entry's script ran, its REGISTER never came and no ZADD of the workspace is
    in the registry (here: the script run by hand). The next store writing to the workspace adds it."""
    keys = keyspace.presence_keys("w1", "t1")
    await store._upsert(keys=keys, args=["c1:alice", "alice", "100.0", "t1", "w1", "c1", b"{}"])
    assert await _registry(store, "w1") is None and await store.presence_expire(Expire(200.0, b"{}")) == []
    async with Redis.from_url(redis_url) as redis:
        other = RedisStore(redis)  # another instance: it never wrote to w1
        await other.presence_upsert(Upsert("w1", "t2", "c2", "bob", 150.0, b"{}"))
    assert await _registry(store, "w1") == 150.0  # its ZADD (not lowered: the lost entry is older)
    assert await store.presence_expire(Expire(150.0, b"{}")) == [EntryFact("w1", "t1", "c1", "alice", True, 0),
                                                                 EntryFact("w1", "t2", "c2", "bob", True, 0)]
