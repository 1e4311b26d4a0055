"""The embedded Redis: a real redis-server found and started; fakeredis only as an announced last resort."""

from __future__ import annotations

import redis

from rtlib.server import embedded, redis_process
from rtlib.server.redis_process import RedisNotFound, RedisProcess, find_redis_server


def test_finds_a_real_binary_and_starts_it() -> None:
    binary = find_redis_server()
    assert binary.name == "redis-server"
    with RedisProcess() as proc:
        client = redis.Redis.from_url(proc.url)
        assert client.ping() and client.config_get("save")["save"] == ""
        pid = proc.pid
        client.close()
    assert proc.proc is None and pid is not None


def test_env_override_wins(monkeypatch, tmp_path) -> None:
    fake = tmp_path / "redis-server"
    fake.write_text("#!/bin/sh\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setenv("RTLIB_REDIS_SERVER", str(fake))
    assert find_redis_server() == fake


def test_missing_binary_is_a_clear_error(monkeypatch) -> None:
    monkeypatch.setattr(redis_process, "_candidates", list)
    try:
        find_redis_server()
    except RedisNotFound as exc:
        assert "apt-get install redis-server" in str(exc)
    else:
        raise AssertionError("expected RedisNotFound")


def test_embedded_prefers_real_redis() -> None:
    with embedded.embedded_redis() as url:
        info = redis.Redis.from_url(url).info("server")
        assert "redis_version" in info and info.get("tcp_port")


def test_fallback_to_fakeredis_is_announced(monkeypatch, capsys) -> None:
    monkeypatch.setattr(embedded, "RedisProcess", _raise_not_found)
    with embedded.embedded_redis() as url:
        client = redis.Redis.from_url(url)
        client.set("k", "v")
        assert client.get("k") == b"v"
        client.close()
    assert "falling back to fakeredis" in capsys.readouterr().err


def test_fallback_can_be_refused(monkeypatch) -> None:
    monkeypatch.setattr(embedded, "RedisProcess", _raise_not_found)
    try:
        with embedded.embedded_redis(allow_fallback=False):
            pass
    except RedisNotFound:
        return
    raise AssertionError("expected RedisNotFound")


def _raise_not_found() -> RedisProcess:
    raise RedisNotFound("none here")
