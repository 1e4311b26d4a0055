"""The Redis store against a real redis-server: conformance with the in-memory book, atomic versions."""

from __future__ import annotations

import asyncio
import random

import msgspec
import pytest
from redis.asyncio import Redis

from rtlib.protocol.config import ServerConfig
from rtlib.protocol.history import offset_of, without_offset
from rtlib.protocol.presence_protocol import BookStore, Expire, Hold, PresenceProtocol, Published, Remove, Upsert
from rtlib.protocol.session import Session
from rtlib.server import keyspace
from rtlib.server.store import RedisStore


@pytest.fixture
async def store(redis_url: str):
    redis = Redis.from_url(redis_url)
    yield RedisStore(redis)
    await redis.aclose()


@pytest.mark.parametrize(("seed", "grace"), [(1, 0.0), (2, 0.0), (3, 0.0), (4, 4.0), (5, 2.5)])
async def test_one_protocol_two_stores_same_facts_and_events(store: RedisStore, seed: int, grace: float) -> None:
    """One random sequence of joins, heartbeats, probe answers, leaves, clean and lost disconnects and sweeps
    goes through the presence protocol and then through both stores (the Redis scripts and the in-memory book):
    the same facts, the same viewers, the same replies, and every published event the same, byte for byte, in
    the same order per task. With a leave grace, lost connections are held (back-dated) instead of removed."""
    rng = random.Random(seed)
    config = ServerConfig(heartbeat_interval=3, presence_timeout=10, sweep_interval=1, leave_grace=grace)
    protocol, book = PresenceProtocol(config.presence), BookStore()
    users = [("c1", "alice"), ("c2", "alice"), ("c3", "bob"), ("c4", "carol")]
    # Each store gets its own sessions (the protocol mutates their task sets), driven identically.
    sessions = {name: {(ws, conn): Session(f"{conn}-{ws}", user, ws, config) for ws in ("w1", "w2")
                       for conn, user in users} for name in ("redis", "book")}
    pubsub = store.redis.pubsub()
    await pubsub.psubscribe(keyspace.CHANNEL_PREFIX + "*")
    await pubsub.get_message(timeout=1.0)
    live: list[Published] = []

    async def drain() -> None:
        while (msg := await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.05)) is not None:
            exclude, _, event = msg["data"].partition(b"\n")
            live.append(Published(keyspace.workspace_of_channel(msg["channel"]), exclude.decode(),
                                  without_offset(event)))  # the book keeps no history

    now = 1_000.0
    for _ in range(300):
        now += rng.choice([0.0, 0.5, 1.0, 3.0])
        ws, task = rng.choice(["w1", "w2"]), rng.choice(["t1", "t2", "t3"])
        conn, _user = rng.choice(users)
        kind = rng.choices(["presence.join", "presence.heartbeat", "presence.leave", "disconnect", "lost", "pong",
                            "sweep"], [3, 3, 2, 1, 1, 1, 2])[0]
        a, b = sessions["redis"][ws, conn], sessions["book"][ws, conn]
        if kind == "sweep":
            got = await store.presence_expire(protocol.sweep(now))
            want = book.expire(protocol.sweep(now))
            assert sorted(got, key=repr) == sorted(want, key=repr)
        elif kind == "disconnect":
            got = await store.presence_remove_many(protocol.disconnect(a, now))
            want = [book.remove(op) for op in protocol.disconnect(b, now)]
            assert got == want
        elif kind == "lost":  # no close frame: with a grace the entries are held, else removed
            ops_a, ops_b = protocol.disconnect(a, now, clean=False), protocol.disconnect(b, now, clean=False)
            assert ops_a == ops_b
            if ops_a and isinstance(ops_a[0], Hold):
                await store.presence_hold_many(ops_a)
                for op in ops_b:
                    book.hold(op)
            else:
                assert await store.presence_remove_many(ops_a) == [book.remove(op) for op in ops_b]
        elif kind == "pong":
            for op_a, op_b in zip(protocol.pong(a, now), protocol.pong(b, now), strict=True):
                (fact, viewers), want = await store.presence_upsert(op_a), book.upsert(op_b)
                assert (fact, viewers) == want
        else:
            op_a, op_b = protocol.request(a, kind, task, now), protocol.request(b, kind, task, now)
            assert op_a == op_b
            if isinstance(op_a, Remove):
                assert await store.presence_remove(op_a) == book.remove(op_b)
            else:
                (fact, viewers), want = await store.presence_upsert(op_a), book.upsert(op_b)
                assert (fact, viewers) == want
                assert protocol.replies(a, kind, fact, viewers, now) == protocol.replies(b, kind, *want, now)
        assert a.tasks == b.tasks
    await drain()
    await pubsub.aclose()

    def per_task(events: list[Published]) -> dict[tuple[str, str], list[Published]]:
        grouped: dict[tuple[str, str], list[Published]] = {}
        for p in events:
            grouped.setdefault((p.workspace_id, msgspec.json.decode(p.event)["payload"]["taskId"]), []).append(p)
        return grouped

    assert live and per_task(live) == per_task(book.published)
    kinds = {msgspec.json.decode(p.event)["payload"].get("reason", "joined") for p in live}
    assert kinds == {"joined", "leave", "disconnect", "timeout"}  # the sequence exercised every event
    # Same entries and scores left in both stores (held entries included).
    for (ws, task), zset in book.book.entries.items():
        got = await store.redis.zrange(keyspace.presence_key(ws, task), 0, -1, withscores=True)
        assert {m.decode(): score for m, score in got} == zset


async def test_concurrent_expiry_pops_each_entry_once(store: RedisStore, redis_url: str) -> None:
    for i in range(200):
        await store.presence_upsert(Upsert("w", f"t{i % 20}", f"c{i}", f"u{i}", 100.0, b"{}"))
    others = [RedisStore(Redis.from_url(redis_url)) for _ in range(3)]
    results = await asyncio.gather(*(s.presence_expire(Expire(100.0, b"{}")) for s in [store, *others]))
    for s in others:
        await s.redis.aclose()
    popped = [f.conn_id for r in results for f in r]
    assert sorted(popped) == sorted(f"c{i}" for i in range(200))


async def test_versions_are_gapless_under_concurrency(store: RedisStore) -> None:
    changes = {"a": msgspec.Raw(b"1")}
    versions = await asyncio.gather(*(store.update_task("w", "t", changes, b"", b"") for _ in range(100)))
    assert sorted(v for v, _ in versions) == list(range(1, 101))
    version, fields = await store.get_task("w", "t")
    assert version == 100 and bytes(fields["a"]) == b"1"


async def test_update_publishes_the_assembled_event(store: RedisStore) -> None:
    pubsub = store.redis.pubsub()
    await pubsub.subscribe(keyspace.channel("w"))
    await pubsub.get_message(timeout=1)
    await store.update_task("w", "t", {"a": msgspec.Raw(b'"x"')}, b'{"v":', b"}")
    msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=2)
    assert without_offset(msg["data"]) == b'\n{"v":1}' and offset_of(msg["data"]) is not None
    await store.update_task("w", "t", {"a": msgspec.Raw(b'"y"')}, b"", b"", publish=False)
    assert await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.2) is None
    await pubsub.aclose()


async def test_a_stored_value_with_invalid_utf8_is_repaired_on_read(store: RedisStore) -> None:
    """A value written by an earlier rtlib (before binary frames were validated) must not break its readers."""
    ver, fields = keyspace.task_keys("w1", "t1")
    await store.redis.hset(fields, mapping={"note": b'"x\xc0\xaf"', "ok": b'"fine"'})
    await store.redis.set(ver, 3)
    version, fields = await store.get_task("w1", "t1")
    assert version == 3 and bytes(fields["ok"]) == b'"fine"'
    assert msgspec.json.decode(bytes(fields["note"])) == "x\ufffd\ufffd"


async def test_update_with_a_ref_is_idempotent_per_user(store: RedisStore) -> None:
    pubsub = store.redis.pubsub()
    await pubsub.subscribe(keyspace.channel("w"))
    await pubsub.get_message(timeout=1.0)
    change = {"a": msgspec.Raw(b"1")}
    first = await store.update_task("w", "t", change, b'{"v":', b"}", user="alice", ref="r1")
    again = await store.update_task("w", "t", change, b'{"v":', b"}", user="alice", ref="r1")  # a retry
    other = await store.update_task("w", "t", change, b'{"v":', b"}", user="bob", ref="r1")
    plain = [await store.update_task("w", "t", change, b'{"v":', b"}", user="alice") for _ in range(2)]
    assert first == (1, False) and again == (1, True) and other == (2, False)
    assert plain == [(3, False), (4, False)]  # no ref: never deduplicated
    # A reused ref with other changes (a client whose counter restarted) is a new update, not a retry.
    reused = await store.update_task("w", "t", {"a": msgspec.Raw(b"2")}, b'{"v":', b"}", user="alice", ref="r1")
    assert reused == (5, False) and (await store.get_task("w", "t"))[1]["a"] == msgspec.Raw(b"2")
    published = []
    while (m := await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.2)) is not None:
        published.append(msgspec.json.decode(m["data"].partition(b"\n")[2])["v"])
    await pubsub.aclose()
    assert published == [1, 2, 3, 4, 5]


async def test_every_published_event_is_in_the_history_with_its_offset(store: RedisStore) -> None:
    pubsub = store.redis.pubsub()
    await pubsub.subscribe(keyspace.channel("w"))
    await pubsub.get_message(timeout=1.0)
    for _ in range(3):
        await store.update_task("w", "t", {"a": msgspec.Raw(b"1")}, b'{"v":', b"}")
    await store.presence_upsert(Upsert("w", "t", "c1", "alice", 1.0, b'{"type":"presence.joined"}'))
    live = []
    while (m := await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.2)) is not None:
        live.append(msgspec.json.decode(m["data"].partition(b"\n")[2]))
    await pubsub.aclose()
    epoch, first, last, entries = await store.history_since("w", "0-0", 10)
    assert [e["offset"] for e in live] == [i for i, _ in entries]
    assert first == entries[0][0] and last == live[-1]["offset"]
    assert {e["epoch"] for e in live} == {epoch}
    assert [msgspec.json.decode(event) for _, event in entries] == [
        {k: v for k, v in e.items() if k not in ("offset", "epoch")} for e in live]
