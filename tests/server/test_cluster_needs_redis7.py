"""``rtlib serve --redis <node of a Redis Cluster without sharded pub/sub>`` (Redis < 7) exits with one line.

No Redis 6 here: a stub node answers as one does (``INFO`` says ``cluster_enabled:1`` and ``redis_version:6.2.14``;
``COMMAND INFO SPUBLISH SSUBSCRIBE`` answers nil for each, as Redis 6 does for unknown commands), which is all that
rtlib asks before deciding (:func:`rtlib.server.cluster_client.cluster_mode`)."""

from __future__ import annotations

import asyncio
import os
import socketserver
import subprocess
import sys
import threading
from collections.abc import Iterator

import hiredis
import pytest

from rtlib.server.cluster_client import cluster_mode


class _Redis6Node(socketserver.BaseRequestHandler):
    """One client of the stub: RESP2 commands in, Redis 6.2 cluster node's replies out."""

    version = "6.2.14"
    command_info = True  # False: COMMAND is refused (renamed away), so the version decides

    def handle(self) -> None:
        reader = hiredis.Reader()
        while data := self.request.recv(65536):
            reader.feed(data)
            while (command := reader.gets()) is not False:
                self.request.sendall(self.reply([p.decode().upper() for p in command]))

    def reply(self, command: list[str]) -> bytes:
        if command[0] == "PING":
            return b"+PONG\r\n"
        if command[0] == "HELLO":  # Redis 6 speaks RESP3 (redis-py asks for it first)
            fields = {"server": "redis", "version": self.version, "proto": 3, "id": 1, "mode": "cluster",
                      "role": "master"}
            return b"%%%d\r\n" % (len(fields) + 1) + b"".join(
                _bulk(k) + (b":%d\r\n" % v if isinstance(v, int) else _bulk(v)) for k, v in fields.items()
            ) + _bulk("modules") + b"*0\r\n"
        if command[0] == "INFO":
            return _bulk(f"# Server\r\nredis_version:{self.version}\r\n# Cluster\r\ncluster_enabled:1\r\n")
        if command[:2] == ["COMMAND", "INFO"] and self.command_info:
            return b"*%d\r\n" % (len(command) - 2) + b"*-1\r\n" * (len(command) - 2)  # unknown: a nil each
        return b"-ERR unknown command '%s'\r\n" % command[0].encode()


def _bulk(text: str) -> bytes:
    data = text.encode()
    return b"$%d\r\n%s\r\n" % (len(data), data)


@pytest.fixture
def redis6_node() -> Iterator[str]:
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Redis6Node)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"redis://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_a_cluster_without_sharded_pubsub_is_refused_in_one_line(redis6_node: str) -> None:
    with pytest.raises(RuntimeError) as refused:
        asyncio.run(cluster_mode(redis6_node))
    message = str(refused.value)
    assert "\n" not in message and "(Redis 6.2.14) has no SPUBLISH/SSUBSCRIBE" in message
    assert "Redis >= 7 on every node" in message


def test_the_version_decides_where_command_info_is_refused(redis6_node: str, monkeypatch) -> None:
    monkeypatch.setattr(_Redis6Node, "command_info", False)
    with pytest.raises(RuntimeError, match="has no SPUBLISH/SSUBSCRIBE"):
        asyncio.run(cluster_mode(redis6_node))
    monkeypatch.setattr(_Redis6Node, "version", "7.2.4")  # a 7 that hides COMMAND: trusted, then met at SSUBSCRIBE
    assert asyncio.run(cluster_mode(redis6_node)) is True


def test_rtlib_serve_on_a_redis6_cluster_exits_with_one_line(redis6_node: str) -> None:
    env = {**os.environ, "RTLIB_SECRET": "old-cluster-secret-long-enough-for-hs256"}
    done = subprocess.run([sys.executable, "-W", "default", "-m", "rtlib.cli", "serve", "--port", "0", "--redis",
                           redis6_node], env=env, capture_output=True, text=True, timeout=60)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1, done.stderr
    assert "Traceback" not in done.stderr
    port = redis6_node.rsplit(":", 1)[1]
    assert lines[0] == (f"rtlib serve: the Redis Cluster at 127.0.0.1:{port} (Redis 6.2.14) has no "
                        "SPUBLISH/SSUBSCRIBE: rtlib needs sharded pub/sub on a cluster, i.e. Redis >= 7 on every "
                        "node; upgrade the cluster, or point --redis at a Redis that is not a cluster")
