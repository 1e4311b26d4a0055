"""``task.list``: paging a workspace's tasks, on the store and across two real server instances."""

from __future__ import annotations

import asyncio

import msgspec
import pytest
from conftest import Instances
from redis.asyncio import Redis

from rtlib.server import keyspace
from rtlib.server.store import RedisStore


@pytest.fixture
async def store(redis_url: str):
    redis = Redis.from_url(redis_url)
    yield RedisStore(redis)
    await redis.aclose()


def _raw(value: bytes) -> dict[str, msgspec.Raw]:
    return {"n": msgspec.Raw(value)}


async def test_store_pages_in_id_order_with_versions_and_fields(store: RedisStore) -> None:
    for i in (3, 1, 2, 10):
        await store.update_task("w", f"t{i}", _raw(str(i).encode()), b"", b"")
    await store.update_task("w", "t2", {"title": msgspec.Raw(b'"two"')}, b"", b"")
    await store.update_task("other", "zz", _raw(b"0"), b"", b"")  # another workspace is never listed
    page, cursor = await store.list_tasks("w", None, 2)
    assert [(t, v, {k: bytes(x) for k, x in f.items()}) for t, v, f in page] == [
        ("t1", 1, {"n": b"1"}), ("t10", 1, {"n": b"10"})]
    assert cursor == "t10"
    page, cursor = await store.list_tasks("w", cursor, 2)
    assert [(t, v) for t, v, _ in page] == [("t2", 2), ("t3", 1)]
    assert {k: bytes(x) for k, x in page[0][2].items()} == {"n": b"2", "title": b'"two"'}
    assert cursor is None or (await store.list_tasks("w", cursor, 2)) == ([], None)
    assert await store.list_tasks("empty", None, 5) == ([], None)


async def test_store_exact_page_boundary_ends_with_no_cursor(store: RedisStore) -> None:
    for i in range(4):
        await store.update_task("w", f"t{i}", _raw(b"1"), b"", b"")
    page, cursor = await store.list_tasks("w", None, 4)
    assert len(page) == 4 and cursor is None


async def test_store_paging_while_tasks_are_created_misses_no_old_task(store: RedisStore) -> None:
    """Tasks that existed before paging began are all listed once, whatever is created meanwhile."""
    old = [f"t{i:03d}" for i in range(0, 100, 2)]
    for t in old:
        await store.update_task("w", t, _raw(b"1"), b"", b"")
    seen: list[str] = []
    cursor, new = None, iter(f"t{i:03d}" for i in range(1, 100, 2))
    while True:
        page, cursor = await store.list_tasks("w", cursor, 7)
        seen += [t for t, _, _ in page]
        for _ in range(3):  # concurrent creations between pages, before and after the cursor
            if (t := next(new, None)) is not None:
                await store.update_task("w", t, _raw(b"1"), b"", b"")
        if cursor is None:
            break
    assert len(seen) == len(set(seen)) and set(old) <= set(seen) and seen == sorted(seen)


async def test_task_list_across_two_instances(cluster: Instances) -> None:
    a = await cluster.client("alice", instance=0)
    b = await cluster.client("bob", instance=1)
    for i in range(5):
        await a.send("task.update", {"taskId": f"T-{i}", "changes": {"title": f"task {i}", "status": "todo"}})
        await a.expect("ack")
    await b.send("task.update", {"taskId": "T-1", "changes": {"status": "done"}, "ref": "u"})
    await b.expect("ack", ref="u")
    tasks, cursor, pages = [], None, 0
    while True:
        payload = {"limit": 2, "ref": f"p{pages}"} | ({"cursor": cursor} if cursor else {})
        await b.send("task.list", payload)
        page = (await b.expect("task.page", ref=f"p{pages}"))["payload"]
        tasks += page["tasks"]
        cursor, pages = page["nextCursor"], pages + 1
        if cursor is None:
            break
    assert pages == 3
    assert [t["taskId"] for t in tasks] == [f"T-{i}" for i in range(5)]
    assert tasks[1] == {"taskId": "T-1", "version": 2, "fields": {"title": "task 1", "status": "done"}}
    # The default page holds everything here; a ref-less request gets a ref-less reply.
    await a.send("task.list", {})
    page = (await a.expect("task.page"))["payload"]
    assert page == {"tasks": tasks, "nextCursor": None}


async def test_task_list_snapshot_is_consistent_with_concurrent_updates(cluster: Instances) -> None:
    """Every listed (version, fields) pair is one the task really had: the field written with a version
    matches it, however updates from the other instance interleave."""
    a = await cluster.client("alice", instance=0)
    b = await cluster.client("bob", instance=1)
    await a.send("task.update", {"taskId": "hot", "changes": {"v": 1}})
    await a.expect("ack")

    async def writer() -> None:
        for v in range(2, 60):
            await a.send("task.update", {"taskId": "hot", "changes": {"v": v}})
            await a.expect("ack")

    async def lister() -> list[dict]:
        got = []
        for i in range(30):
            await b.send("task.list", {"ref": f"l{i}"})
            got += (await b.expect("task.page", ref=f"l{i}"))["payload"]["tasks"]
        return got

    _, listed = await asyncio.gather(writer(), lister())
    assert listed and all(t["fields"]["v"] == t["version"] for t in listed)


@pytest.mark.parametrize("payload", [{"limit": 0}, {"limit": 201}, {"cursor": "a b"}, {"cursor": 5},
                                     {"limit": "10"}, {"taskId": "T-1"}])
async def test_bad_task_list_is_a_clear_error(cluster: Instances, payload: dict) -> None:
    a = await cluster.client("alice")
    await a.send("task.list", payload | {"ref": "bad"})
    error = await a.expect("error")
    assert error["payload"]["code"] == "invalid_payload" and error["payload"]["ref"] == "bad"
    assert "task.list" in error["payload"]["message"]


async def test_a_poisoned_stored_value_is_repaired_in_a_page(store: RedisStore) -> None:
    """As for task.get: a value with invalid UTF-8 (written by an older rtlib) must not break the whole page."""
    await store.update_task("w1", "t0", _raw(b"1"), b"", b"")
    ver, fields = keyspace.task_keys("w1", "t1")
    await store.redis.hset(fields, mapping={"note": b'"x\xc0\xaf"', "ok": b'"fine"'})
    await store.redis.set(ver, 3)
    await store.redis.zadd(keyspace.index_key("w1"), {"t1": 0})
    page, _ = await store.list_tasks("w1", None, 10)
    assert [(t, v) for t, v, _ in page] == [("t0", 1), ("t1", 3)]
    fields = page[1][2]
    assert bytes(fields["ok"]) == b'"fine"' and msgspec.json.decode(bytes(fields["note"])) == "x\ufffd\ufffd"
