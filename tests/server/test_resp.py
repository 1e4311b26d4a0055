"""The lean hot-path Redis connection, against a real redis-server."""

from __future__ import annotations

import asyncio
import ssl

import pytest

from rtlib.server import keyspace
from rtlib.server.redis_process import RedisProcess
from rtlib.server.resp import (
    RETRY_CAP,
    RespConnection,
    RespError,
    backoff,
    pack_command,
    parse_redis_url,
    script_sha,
)


def test_pack_command_is_resp() -> None:
    assert pack_command("SET", b"k", 12) == b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$2\r\n12\r\n"


def test_parse_redis_url() -> None:
    a = parse_redis_url("redis://user:p%40ss@example:6380/0")
    assert (a.host, a.port, a.db, a.ssl) == ("example", 6380, 0, None)
    assert a.handshake() == [pack_command("AUTH", "user", "p@ss")]
    assert parse_redis_url("redis://127.0.0.1").handshake() == []
    assert parse_redis_url("redis://:secret@h/3").handshake() == [pack_command("AUTH", "secret"),
                                                                  pack_command("SELECT", 3)]
    tls = parse_redis_url("rediss://h:6390/1?ssl_cert_reqs=none")
    assert (tls.port, tls.db) == (6390, 1) and isinstance(tls.ssl, ssl.SSLContext)
    assert tls.ssl.verify_mode == ssl.CERT_NONE and not tls.ssl.check_hostname
    assert parse_redis_url("rediss://h").ssl.verify_mode == ssl.CERT_REQUIRED
    unix = parse_redis_url("unix:///tmp/r.sock?db=2")
    assert (unix.path, unix.db) == ("/tmp/r.sock", 2)
    with pytest.raises(ValueError):
        parse_redis_url("http://host")


def test_one_backoff_schedule() -> None:
    assert [backoff(n) for n in (1, 2, 3, 4, 10)] == [0.05, 0.1, 0.2, 0.4, RETRY_CAP]


async def test_database_and_password_are_used() -> None:
    redis = RedisProcess().start()
    try:
        setup = RespConnection(redis.url)
        await setup.call("CONFIG", "SET", "requirepass", "pw")
        setup.close()
        conn = RespConnection(f"redis://:pw@127.0.0.1:{redis.port}/5")
        await conn.call("SET", "k", "in-db-5")
        assert await conn.call("CLIENT", "INFO") and (await conn.call("GET", "k")) == b"in-db-5"
        db0 = RespConnection(f"redis://:pw@127.0.0.1:{redis.port}/0")
        assert await db0.call("GET", "k") is None
        with pytest.raises(RespError):
            await RespConnection(f"redis://:wrong@127.0.0.1:{redis.port}/0").call("PING")
        conn.close()
        db0.close()
    finally:
        redis.stop()


async def test_calls_pipeline_in_order_and_errors_are_raised(redis_url: str) -> None:
    conn = RespConnection(redis_url)
    replies = await asyncio.gather(*(conn.call("INCR", "n") for _ in range(200)))
    assert replies == list(range(1, 201))
    with pytest.raises(RespError, match="unknown command"):
        await conn.call("NOPE")
    assert await conn.call("GET", "n") == b"200"  # still in step after an error reply
    conn.close()


async def test_evalsha_loads_the_script_after_noscript(redis_url: str) -> None:
    conn = RespConnection(redis_url)
    script = "return redis.call('INCRBY', KEYS[1], ARGV[1])"
    await conn.call("SCRIPT", "FLUSH")
    assert await conn.evalsha(script.encode(), script_sha(script), ["k"], [5]) == 5
    assert await conn.evalsha(script.encode(), script_sha(script), ["k"], [5]) == 10
    conn.close()


async def test_connection_loss_raises_then_reconnects() -> None:
    redis = RedisProcess().start()
    conn = RespConnection(redis.url)
    try:
        assert await conn.call("PING") == b"PONG"
        redis.stop()
        with pytest.raises(ConnectionError):
            await conn.call("PING")
        redis = RedisProcess(port=redis.port).start()
        assert await conn.call("PING") == b"PONG"
    finally:
        conn.close()
        redis.stop()


async def test_server_runs_on_a_database_with_a_password() -> None:
    """The pool, the hot-path connection and the pub/sub connection all read the same URL (db 4, password)."""
    from conftest import SECRET, Instances

    from rtlib.protocol.config import ServerConfig
    from rtlib.server.driver import RealtimeServer

    redis = RedisProcess().start()
    try:
        setup = RespConnection(redis.url)
        await setup.call("CONFIG", "SET", "requirepass", "pw")
        setup.close()
        url = f"redis://:pw@127.0.0.1:{redis.port}/4"
        server = await RealtimeServer(url, SECRET, ServerConfig(server_id="db4")).start()
        cluster = Instances([server])
        try:
            # RESP3: the hot path's commands ride on the pub/sub connection, which authenticated and selected db 4
            assert server.fanout.command_connection is not None
            a, b = await cluster.client("alice"), await cluster.client("bob")
            await a.send("task.update", {"taskId": "t1", "changes": {"title": "x"}})
            assert (await b.expect("task.updated"))["payload"]["version"] == 1
            check = RespConnection(url)
            assert await check.call("GET", keyspace.task_keys("w1", "t1")[0]) == b"1"  # stored in database 4
            check.close()
        finally:
            await cluster.close()
    finally:
        redis.stop()


async def test_resp3_connection_carries_commands_and_pubsub(redis_url: str) -> None:
    from rtlib.server.resp import open_connection

    pubsub = await open_connection(parse_redis_url(redis_url), resp3=True)
    got: list[object] = []
    pubsub.subscribe_mode(got.append)
    assert pubsub.resp3
    pubsub.write(pack_command("SUBSCRIBE", "ch"))
    shared = RespConnection(redis_url, shared=lambda: pubsub)
    script = "redis.call('PUBLISH', 'ch', ARGV[1]); return redis.call('INCR', KEYS[1])"
    for i in range(1, 4):  # the script's reply resolves the call; its message goes to the pub/sub callback
        assert await shared.evalsha(script.encode(), script_sha(script), ["n"], [f"m{i}"]) == i
    assert got == [[b"subscribe", b"ch", 1]] + [[b"message", b"ch", f"m{i}".encode()] for i in range(1, 4)]
    pubsub.close()
    await asyncio.sleep(0)
    with pytest.raises(ConnectionError):
        await shared.call("PING")  # the shared connection is gone: no silent second connection
    alone = RespConnection(redis_url, shared=lambda: None)  # RESP2 fallback: its own connection
    assert await alone.call("PING") == b"PONG"
    alone.close()


async def test_server_on_the_fakeredis_fallback_keeps_two_connections() -> None:
    """fakeredis accepts HELLO 3 but answers pub/sub with arrays: the probe sees it and stays RESP2. Its TCP server
    drops a connection on NOSCRIPT, so the server loads every script at start: updates, reads and presence work."""
    from conftest import SECRET, Instances

    from rtlib.protocol.config import ServerConfig
    from rtlib.server.driver import RealtimeServer
    from rtlib.server.embedded import _fakeredis_server

    with _fakeredis_server() as url:
        server = await RealtimeServer(url, SECRET, ServerConfig(server_id="fake")).start()
        cluster = Instances([server])
        try:
            assert server.fanout.command_connection is None and server.fanout.connected
            alice = await cluster.client("alice")  # welcomed: subscribed on the RESP2 pub/sub connection
            bob = await cluster.client("bob")
            await alice.send("task.update", {"taskId": "t1", "changes": {"title": "x"}, "ref": "r1"})
            assert (await alice.expect("ack"))["payload"]["version"] == 1
            assert (await bob.expect("task.updated"))["payload"]["changes"] == {"title": "x"}
            await bob.send("task.get", {"taskId": "t1"})
            assert (await bob.expect("task.snapshot"))["payload"]["fields"] == {"title": "x"}
            await alice.send("presence.join", {"taskId": "t1"})
            await bob.expect("presence.joined", userId="alice")
        finally:
            await cluster.close()
