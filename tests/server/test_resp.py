"""The lean hot-path Redis connection, against a real redis-server."""

from __future__ import annotations

import asyncio

import pytest

from rtlib.server.redis_process import RedisProcess
from rtlib.server.resp import RespConnection, RespError, pack_command, parse_redis_url, script_sha


def test_pack_command_is_resp() -> None:
    assert pack_command("SET", b"k", 12) == b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$2\r\n12\r\n"


def test_parse_redis_url() -> None:
    a = parse_redis_url("redis://user:p%40ss@example:6380/0")
    assert (a.host, a.port) == ("example", 6380) and a.auth_command() == pack_command("AUTH", "user", "p@ss")
    assert parse_redis_url("redis://127.0.0.1").auth_command() is None
    with pytest.raises(ValueError, match="scheme"):
        parse_redis_url("rediss://host")
    with pytest.raises(ValueError, match="database 0"):
        parse_redis_url("redis://host/3")


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
