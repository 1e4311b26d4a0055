"""Integration: two real server instances on one real Redis, real sockets."""

from __future__ import annotations

import asyncio
import json

import pytest
from conftest import SECRET, Instances, token
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from rtlib.server import keyspace
from rtlib.server.auth import issue_token


async def test_update_reaches_every_connection_on_both_instances(cluster: Instances) -> None:
    a = await cluster.client("alice", instance=0)
    b = await cluster.client("bob", instance=1)
    c = await cluster.client("carol", instance=1)
    await a.send("task.update", {"taskId": "t1", "changes": {"title": "Ship it"}, "ref": "r-1"})
    ack = await a.expect("ack")
    assert ack["payload"] == {"ref": "r-1", "taskId": "t1", "version": 1}
    for client in (a, b, c):
        event = await client.expect("task.updated")
        assert event["payload"] == {"taskId": "t1", "version": 1, "changes": {"title": "Ship it"}}
        assert event["userId"] == "alice" and event["workspaceId"] == "w1"
        assert event["timestamp"].endswith("Z") and len(event["timestamp"]) == 27


async def test_only_changed_fields_are_sent_and_snapshot_merges_them(cluster: Instances) -> None:
    a = await cluster.client("alice")
    await a.send("task.update", {"taskId": "t1", "changes": {"title": "A", "status": "todo"}})
    await a.send("task.update", {"taskId": "t1", "changes": {"status": "done"}})
    await a.expect("task.updated", version=1)
    second = await a.expect("task.updated", version=2)
    assert second["payload"]["changes"] == {"status": "done"}
    await a.send("task.get", {"taskId": "t1", "ref": "g"})
    snap = await a.expect("task.snapshot")
    assert snap["payload"] == {"taskId": "t1", "version": 2, "fields": {"title": "A", "status": "done"}, "ref": "g"}
    await a.send("task.get", {"taskId": "never"})
    assert (await a.expect("task.snapshot"))["payload"] == {"taskId": "never", "version": 0, "fields": {}}


async def test_versions_are_1_to_n_under_concurrent_updates_from_both_instances(cluster: Instances) -> None:
    writers = [await cluster.client(f"u{i}", instance=i % 2) for i in range(4)]
    watcher = await cluster.client("watcher", instance=1)
    per_writer = 25
    await asyncio.gather(*(
        w.send("task.update", {"taskId": "hot", "changes": {"by": w.user, "n": n}})
        for n in range(per_writer) for w in writers))
    versions = [(await watcher.expect("task.updated"))["payload"]["version"] for _ in range(4 * per_writer)]
    # Atomic publish: every instance sees one task's updates in version order, with no gap and no repeat.
    assert versions == list(range(1, 4 * per_writer + 1))


async def test_workspaces_are_isolated(cluster: Instances) -> None:
    a = await cluster.client("alice", "w1", instance=0)
    other = await cluster.client("eve", "w2", instance=1)
    await a.send("task.update", {"taskId": "t1", "changes": {"x": 1}})
    await a.send("presence.join", {"taskId": "t1"})
    await a.expect("presence.state")
    assert await other.silent(0.3) == []


async def test_forged_user_id_and_timestamp_are_ignored(cluster: Instances) -> None:
    a = await cluster.client("alice")
    b = await cluster.client("bob", instance=1)
    await a.send("task.update", {"taskId": "t1", "changes": {"x": 1}}, userId="mallory",
                 timestamp="1999-01-01T00:00:00Z")
    event = await b.expect("task.updated")
    assert event["userId"] == "alice" and not event["timestamp"].startswith("1999")


@pytest.mark.before_redis  # decided before any Redis call: not run again on the Redis Cluster
@pytest.mark.parametrize(("frame", "code"), [
    ("{not json", "invalid_json"),
    (b"\xff\xfe", "invalid_json"),
    ('["a list"]', "invalid_envelope"),
    ('{"type": "task.update", "payload": {}}', "invalid_envelope"),
    ('{"type": "task.update", "workspaceId": "w1", "payload": {}, "extra": 1}', "invalid_envelope"),
    ('{"type": "workspace.online", "workspaceId": "w1", "payload": {"ref": "q"}}', "unknown_type"),
    ('{"type": "task.update", "workspaceId": "w1", "payload": {"taskId": "t1", "changes": {}}}', "invalid_payload"),
    ('{"type": "task.update", "workspaceId": "w1", "payload": {"taskId": "bad id", "changes": {"a": 1}}}',
     "invalid_payload"),
    ('{"type": "presence.join", "workspaceId": "w1", "payload": {"taskId": "t1", "who": "x", "ref": "q"}}',
     "invalid_payload"),
    ('{"type": "task.update", "workspaceId": "w2", "payload": {"taskId": "t1", "changes": {"a": 1}, "ref": "q"}}',
     "forbidden_workspace"),
])
async def test_each_error_code_and_the_connection_stays_open(cluster: Instances, frame: str | bytes, code: str
                                                            ) -> None:
    a = await cluster.client("alice")
    await a.ws.send(frame)
    error = await a.expect("error")
    assert error["payload"]["code"] == code and error["payload"]["message"]
    if '"ref": "q"' in str(frame):
        assert error["payload"]["ref"] == "q"
    await a.send("task.update", {"taskId": "t1", "changes": {"still": "open"}})
    assert (await a.expect("ack"))["payload"]["version"] == 1


async def test_rate_limit_errors_then_policy_close(redis_url: str) -> None:
    from dataclasses import replace

    from conftest import Instances as C

    from rtlib.protocol.config import ServerConfig
    from rtlib.server.driver import RealtimeServer

    cfg = ServerConfig(rate_limit=5, rate_burst=10, rate_limit_strikes=20, server_id="rl")
    server = await RealtimeServer(redis_url, SECRET, replace(cfg)).start()
    cluster = C([server])
    try:
        a = await cluster.client("alice")
        frame = json.dumps({"type": "task.get", "workspaceId": "w1", "payload": {"taskId": "t"}})
        for _ in range(10):  # the burst is served
            await a.ws.send(frame)
        for _ in range(10):
            assert (await a.expect("task.snapshot"))
        await a.ws.send(frame)
        assert (await a.expect("error"))["payload"]["code"] == "rate_limited"
        for _ in range(40):  # keeps flooding past the strikes: closed with 1008
            try:
                await a.ws.send(frame)
            except ConnectionClosed:
                break
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                await a.recv()
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
    finally:
        await cluster.close()


async def test_oversized_frame_closes_1009(cluster: Instances) -> None:
    a = await cluster.client("alice", max_size=None)
    big = {"taskId": "t1", "changes": {"body": "x" * (64 * 1024)}}
    await a.send("task.update", big)
    with pytest.raises(ConnectionClosed) as closed:
        await a.recv()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009


async def test_unexpected_fault_closes_1011_without_internals(cluster: Instances, monkeypatch) -> None:
    async def broken(*args, **kwargs):
        raise RuntimeError("secret internal detail")

    monkeypatch.setattr(cluster.servers[0].store, "get_task", broken)
    a = await cluster.client("alice")
    await a.send("task.get", {"taskId": "t1"})
    with pytest.raises(ConnectionClosed) as closed:
        await a.recv()
    assert closed.value.rcvd.code == 1011 and "secret" not in closed.value.rcvd.reason


@pytest.mark.before_redis  # decided before any Redis call: not run again on the Redis Cluster
@pytest.mark.parametrize(("query", "status"), [
    ("workspace=w1", 401),
    ("token=garbage&workspace=w1", 401),
    ("token={tampered}&workspace=w1", 401),
    ("token={expired}&workspace=w1", 401),
    ("token={good}&workspace=w9", 403),
    ("token={good}", 403),
])
async def test_handshake_refusals(cluster: Instances, query: str, status: int) -> None:
    good = token("alice", "w1")
    head, body, sig = good.split(".")
    tampered_body = body[:-2] + ("AA" if body[-2:] != "AA" else "BB")
    expired = issue_token(SECRET, "alice", ["w1"], ttl=1, now=1_000_000)
    url = f"{cluster.servers[0].url}?" + query.format(good=good, tampered=f"{head}.{tampered_body}.{sig}",
                                                     expired=expired)
    with pytest.raises(InvalidStatus) as refused:
        await connect(url)
    assert refused.value.response.status_code == status


async def test_origin_allow_list(redis_url: str) -> None:
    from conftest import Instances as C

    from rtlib.protocol.config import ServerConfig
    from rtlib.server.driver import RealtimeServer

    server = await RealtimeServer(redis_url, SECRET, ServerConfig(allowed_origins=("https://app.example",))).start()
    cluster = C([server])
    try:
        url = f"{server.url}?token={token('alice', 'w1')}&workspace=w1"
        with pytest.raises(InvalidStatus) as refused:
            await connect(url, origin="https://evil.example")
        assert refused.value.response.status_code == 403
        async with connect(url, origin="https://app.example") as ok:
            assert json.loads(await ok.recv())["type"] == "session.welcome"
        async with connect(url) as no_origin:  # no Origin header: allowed (non-browser clients)
            assert json.loads(await no_origin.recv())["type"] == "session.welcome"
        with pytest.raises(InvalidStatus) as missing:
            await connect(url.replace("/ws?", "/other?"))
        assert missing.value.response.status_code == 404
    finally:
        await cluster.close()


async def test_welcome_announces_presence_timing(cluster: Instances) -> None:
    a = await cluster.client("alice", instance=1)
    p = a.welcome["payload"]
    assert p["serverId"] == "i1" and p["connectionId"].startswith("i1-")
    assert p["heartbeatInterval"] == 0.3 and p["presenceTimeout"] == 0.6


async def test_graceful_shutdown_closes_1001_and_removes_presence(cluster: Instances) -> None:
    leaving = await cluster.client("alice", instance=0)
    watcher = await cluster.client("bob", instance=1)
    await leaving.send("presence.join", {"taskId": "t1"})
    await watcher.expect("presence.joined", userId="alice")
    await cluster.servers[0].stop()
    with pytest.raises(ConnectionClosed) as closed:
        while True:
            await leaving.recv()
    assert closed.value.rcvd.code == 1001
    left = await watcher.expect("presence.left", userId="alice")
    assert left["payload"]["reason"] == "disconnect"


async def test_connection_closes_when_its_token_expires(cluster: Instances) -> None:
    short = issue_token(SECRET, "alice", ["w1"], ttl=2.0)  # long enough for a handshake on a busy CI box
    async with connect(f"{cluster.servers[0].url}?token={short}&workspace=w1") as ws:
        assert json.loads(await ws.recv())["type"] == "session.welcome"
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), 10)
        assert closed.value.rcvd.code == 1008 and closed.value.rcvd.reason == "token expired"


async def _started(redis_url: str, count: int, **config: object) -> Instances:
    """``count`` servers on one Redis, each with ``config`` (``ServerConfig`` fields)."""
    from rtlib.protocol.config import ServerConfig
    from rtlib.server.driver import RealtimeServer

    return Instances([await RealtimeServer(redis_url, SECRET, ServerConfig(server_id=f"s{i}", **config)).start()  # type: ignore[arg-type]
                      for i in range(count)])


async def _single(redis_url: str, **config: object) -> Instances:
    return await _started(redis_url, 1, **config)


async def test_invalid_utf8_in_a_binary_frame_is_refused_not_stored_nor_broadcast(cluster: Instances) -> None:
    """Stored poison: raw invalid bytes inside a JSON string must never reach another client as a text frame."""
    a = await cluster.client("alice", instance=0)
    b = await cluster.client("bob", instance=1)
    poison = b'{"type":"task.update","workspaceId":"w1","payload":{"taskId":"t1","changes":{"note":"x\xc0\xaf"},' \
             b'"ref":"p"}}'
    await a.ws.send(poison)
    error = await a.expect("error")
    assert error["payload"]["code"] == "invalid_json" and "ref" not in error["payload"]
    assert await b.silent(0.3, "task.updated") == []
    await a.send("task.get", {"taskId": "t1"})
    assert (await a.expect("task.snapshot"))["payload"] == {"taskId": "t1", "version": 0, "fields": {}}
    # Both connections are still open and still work.
    await b.send("task.update", {"taskId": "t1", "changes": {"note": "caf\u00e9"}})
    assert (await a.expect("task.updated"))["payload"]["changes"] == {"note": "caf\u00e9"}


async def test_a_task_poisoned_by_an_earlier_version_no_longer_breaks_readers(cluster: Instances, redis_url: str
                                                                             ) -> None:
    import redis

    with redis.Redis.from_url(redis_url) as r:
        ver, fields = keyspace.task_keys("w1", "t1")
        r.hset(fields, mapping={"note": b'"x\xc0\xaf"'})
        r.set(ver, 1)
    a = await cluster.client("alice")
    await a.send("task.get", {"taskId": "t1"})
    raw = await asyncio.wait_for(a.ws.recv(), 5)  # the library would have failed the connection on bad UTF-8
    assert json.loads(raw)["payload"]["fields"] == {"note": "x\ufffd\ufffd"}


@pytest.mark.before_redis  # decided before any Redis call: not run again on the Redis Cluster
@pytest.mark.parametrize("frame", [
    "[" * 60_000, "{\"a\":" * 12_000, b"\xff" * 1000, "1x", "[,",
    '{"type":"presence.leave","workspaceId":"w1","payload":{"taskId":"T-1\\n"}}',
])
async def test_hostile_frames_get_an_error_and_the_connection_stays_open(cluster: Instances, frame: str | bytes
                                                                        ) -> None:
    a = await cluster.client("alice", max_size=None)
    await a.ws.send(frame)
    assert (await a.expect("error"))["payload"]["code"] in {"invalid_json", "invalid_payload"}
    await a.send("task.get", {"taskId": "t1"})
    assert (await a.expect("task.snapshot"))["payload"]["version"] == 0


async def test_byte_budget(redis_url: str) -> None:
    cluster = await _single(redis_url, max_frame_bytes=1024, byte_rate=100, byte_burst=2048)
    try:
        a = await cluster.client("alice")
        frame = json.dumps({"type": "task.update", "workspaceId": "w1",
                            "payload": {"taskId": "t", "changes": {"body": "x" * 900}}})
        for _ in range(3):
            await a.ws.send(frame)
        assert (await a.expect("ack"))["payload"]["version"] == 1
        assert (await a.expect("ack"))["payload"]["version"] == 2
        error = await a.expect("error")  # the third ~950-byte frame does not fit the 2,048-byte burst
        assert error["payload"]["code"] == "rate_limited" and "bytes/s" in error["payload"]["message"]
    finally:
        await cluster.close()


async def test_connections_per_user_are_capped(redis_url: str) -> None:
    cluster = await _single(redis_url, max_connections_per_user=2)
    try:
        await cluster.client("alice")
        await cluster.client("alice")
        with pytest.raises(InvalidStatus) as refused:
            await cluster.client("alice")
        assert refused.value.response.status_code == 429
        assert b"too many connections" in refused.value.response.body
        await cluster.client("bob")  # other users are unaffected
        # A storm of simultaneous handshakes: never more than the cap open at once.
        results = await asyncio.gather(*(cluster.client("carol") for _ in range(8)), return_exceptions=True)
        await asyncio.sleep(0.2)
        open_ = [r for r in results if not isinstance(r, BaseException) and r.ws.state.name == "OPEN"]
        assert len(open_) == 2
        assert all(isinstance(r, InvalidStatus) and r.response.status_code == 429 or not isinstance(r, Exception)
                   for r in results)
    finally:
        await cluster.close()


async def _pair(redis_url: str, **config: object) -> Instances:
    return await _started(redis_url, 2, **config)


async def test_fanout_budget_paces_a_big_sender_and_not_its_neighbours(redis_url: str) -> None:
    """An update costs its event's size x the workspace's other connections; over --fanout-rate the sender is
    not read until paid back. Nothing is refused, and the others are not slowed."""
    cluster = await _pair(redis_url, fanout_rate=20_000, fanout_burst=5_000)
    try:
        big = await cluster.client("alice", instance=0)
        small = await cluster.client("bob", instance=0)
        local = await cluster.client("carol", instance=0)
        remote = await cluster.client("dave", instance=1)
        loop = asyncio.get_running_loop()
        for n in range(4):  # ~5.1 KB events to 2-3 other connections: >= 10 KB each, >= 0.5 s of budget
            await big.send("task.update", {"taskId": "big", "changes": {"body": "x" * 5000, "n": n}, "ref": f"b{n}"})
        acks = [(await big.expect("ack", ref="b0"), loop.time())[1]]
        for n in range(5):
            await small.send("task.update", {"taskId": "small", "changes": {"n": n}, "ref": f"s{n}"})
        small_done = [(await small.expect("ack", ref=f"s{n}"), loop.time())[1] for n in range(5)][-1]
        acks += [(await big.expect("ack", ref=f"b{n}", timeout=10), loop.time())[1] for n in range(1, 4)]
        # Debt after each update: 5 KB, then ~10 KB more each time; the rate pays 20 KB/s back.
        assert acks[3] - acks[0] >= 1.0, acks
        assert small_done < acks[1], (small_done, acks)  # bob was served while alice waited
        for client in (local, remote):  # every update reached everyone
            assert {(await client.expect("task.updated", taskId="big", timeout=10))["payload"]["version"]
                    for _ in range(4)} == {1, 2, 3, 4}
    finally:
        await cluster.close()


async def test_fanout_budget_counts_the_workspace_on_every_instance(redis_url: str) -> None:
    """A sender alone on its instance is charged for the connections its updates reach on the others: it cannot
    make another instance write without bound by connecting where its workspace is not."""
    cluster = await _pair(redis_url, fanout_rate=20_000, fanout_burst=5_000, member_count_refresh=0.05)
    try:
        big = await cluster.client("alice", instance=0)
        far = [await cluster.client(user, instance=1) for user in ("bob", "carol")]
        members = cluster.servers[0].members
        assert members is not None
        for _ in range(100):  # instance 1 writes its count; instance 0 reads it (every 50 ms here)
            if members.others("w1", 1) == 2:
                break
            await asyncio.sleep(0.05)
        assert members.others("w1", 1) == 2
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        for n in range(4):  # ~5.1 KB events to 2 connections on instance 1: ~10 KB each, 0.5 s of budget
            await big.send("task.update", {"taskId": "big", "changes": {"body": "x" * 5000, "n": n}, "ref": f"b{n}"})
        for n in range(4):
            await big.expect("ack", ref=f"b{n}", timeout=10)
        # Charged as local-only, the 4 updates would be free and acked within milliseconds.
        assert loop.time() - t0 >= 1.0
        for client in far:  # nothing was lost on the way
            assert {(await client.expect("task.updated", taskId="big", timeout=10))["payload"]["version"]
                    for _ in range(4)} == {1, 2, 3, 4}
    finally:
        await cluster.close()


async def test_a_paused_connection_does_not_hold_up_a_stopping_server(redis_url: str) -> None:
    cluster = await _pair(redis_url, fanout_rate=1, fanout_burst=0)  # any update: the longest pause, 10 s
    a = await cluster.client("alice")
    await cluster.client("bob")
    await a.send("task.update", {"taskId": "t1", "changes": {"x": 1}, "ref": "r"})
    await a.expect("ack", ref="r")
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    for server in cluster.servers:
        await server.stop()
    assert loop.time() - t0 < 5  # the handler's pause ends when its connection closes
    await cluster.close()
