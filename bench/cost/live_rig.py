"""A live rig for unit costs and the capacity planner's validation: a local Redis Cluster of real
``redis-server`` processes (:class:`rtlib.server.redis_cluster.RedisClusterProcess`, ``masters`` shards, no
replicas), ``instances`` ``rtlib serve`` processes on it, and lean epoll WebSocket clients
(:mod:`bench.harness.wsclient`) that send ``task.update`` and ``presence.heartbeat`` frames on a fixed schedule.

CPU is read as CPU time of the processes, never wall time (the machine is shared): each Redis node's
``INFO cpu`` (``used_cpu_user + used_cpu_sys``: getrusage, finer than ``/proc``'s 10 ms ticks; ``/proc`` is
recorded beside it as a cross-check) and each server's ``/proc/<pid>/stat`` (utime + stime, all threads).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis as redis_py

from bench.harness.procstat import process_cpu_seconds
from bench.harness.wsclient import Poller, WsConn, open_connections
from rtlib.server.auth import issue_token
from rtlib.server.redis_cluster import RedisClusterProcess
from rtlib.server.redis_process import die_with_parent, free_port, stop_process

__all__ = ["Rig", "Ticker", "Window", "write_result"]

SECRET = "capacity-bench-secret-0123456789abcdef0123"
#: No limiter in the way of a cost measurement (rtlib's per-connection limits are for hostile clients).
UNLIMITED = ["--rate-limit", "1000000", "--rate-burst", "1000000", "--fanout-rate", "1e12", "--fanout-burst",
             "1000000000000", "--handshake-rate", "100000", "--handshake-burst", "100000"]


def update_frame(ws: str, task: str = "t1") -> bytes:
    """A ``task.update`` changing one field (the size the planner's unit costs are for: one small change)."""
    return b'{"type":"task.update","workspaceId":"%s","payload":{"taskId":"%s","changes":{"title":"x"}}}' % (
        ws.encode(), task.encode())


def presence_frame(kind: str, ws: str, task: str = "t0") -> bytes:
    return b'{"type":"presence.%s","workspaceId":"%s","payload":{"taskId":"%s"}}' % (
        kind.encode(), ws.encode(), task.encode())


class Ticker:
    """Sends ``frames`` (connection, payload) round-robin at ``rate`` per second in total, open loop: frame ``i``
    is due at ``t0 + i / rate``; a late client catches up (and the count sent says what it managed)."""

    def __init__(self, frames: list[tuple[WsConn, bytes]], rate: float) -> None:
        self.frames, self.rate = frames, rate
        self.t0 = time.monotonic()
        self.sent = 0

    def restart(self) -> None:
        self.t0, self.sent = time.monotonic(), 0

    def due(self, now: float) -> float:
        """Send what is due by ``now``; the time the next one is due."""
        if not self.frames or self.rate <= 0:
            return float("inf")
        while self.t0 + self.sent / self.rate <= now:
            conn, payload = self.frames[self.sent % len(self.frames)]
            conn.send_text(payload)
            self.sent += 1
        return self.t0 + self.sent / self.rate


@dataclass
class Window:
    """CPU seconds of each process over one measured window, and what the clients did in it."""

    seconds: float
    redis: list[float]  #: per master (INFO cpu: user + sys)
    redis_proc: list[float]  #: per master, /proc ticks (cross-check)
    servers: list[float]  #: per rtlib serve instance
    sent: dict[str, int] = field(default_factory=dict)
    received: int = 0
    loadavg: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {"seconds": round(self.seconds, 3), "redis_cpu_s": self.redis, "redis_proc_cpu_s": self.redis_proc,
                "server_cpu_s": self.servers, "sent": self.sent, "received": self.received,
                "loadavg": self.loadavg}


class Rig:
    """``masters`` Redis Cluster shards and ``instances`` rtlib servers; use as a context manager."""

    def __init__(self, masters: int, instances: int, sweep_interval: float = 60.0,
                 heartbeat_interval: float = 30.0, presence_timeout: float = 3600.0) -> None:
        self.masters, self.n = masters, instances
        self.args = ["--sweep-interval", str(sweep_interval), "--heartbeat-interval", str(heartbeat_interval),
                     "--presence-timeout", str(presence_timeout)]
        self.cluster = RedisClusterProcess(masters, 0)
        self.servers: list[subprocess.Popen[str]] = []
        self.ports: list[int] = []
        self.nodes: list[redis_py.Redis] = []
        self.poller = Poller()
        self.conns: list[WsConn] = []
        self.received = 0

    def __enter__(self) -> Rig:
        try:
            self.cluster.start()
            self.nodes = [redis_py.Redis(port=p) for p in self.cluster.ports[:self.masters]]
            for _ in range(self.n):
                port = free_port()
                proc = subprocess.Popen(
                    [sys.executable, "-m", "rtlib.cli", "serve", "--port", str(port), "--redis", self.cluster.url,
                     "--log-level", "WARNING", *UNLIMITED, *self.args],
                    env={**os.environ, "RTLIB_SECRET": SECRET}, stdout=subprocess.PIPE, text=True,
                    preexec_fn=die_with_parent)
                self.servers.append(proc)
                line = proc.stdout.readline() if proc.stdout else ""
                if "serving" not in line:
                    raise RuntimeError(f"rtlib serve did not start: {line!r}")
                self.ports.append(port)
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        for c in self.conns:
            c.close()
        if self.conns:  # the servers handle the closes (presence removals) before they are stopped
            self.pump(1.0)
        self.poller.close()
        for proc in self.servers:
            stop_process(proc)
        for node in self.nodes:
            node.close()
        self.cluster.stop()

    def open(self, specs: list[tuple[int, str, str]]) -> list[WsConn]:
        """Open one connection per (instance, workspace, user); every one must open."""
        urls = [f"ws://127.0.0.1:{self.ports[i]}/ws?workspace={ws}&token={issue_token(SECRET, user, [ws], 7200)}"
                for i, ws, user in specs]
        conns, errors = open_connections(urls, self._count)
        if errors:
            raise RuntimeError(f"{len(errors)} of {len(urls)} connections failed: {errors[:3]}")
        for c in conns:
            self.poller.add(c)
        self.conns += conns
        return conns

    def _count(self, _conn: WsConn, _payload: bytes, _now: int) -> None:
        self.received += 1

    def pump(self, seconds: float, tickers: list[Ticker] = ()) -> None:  # type: ignore[assignment]
        """Run the clients for ``seconds``: send what the tickers make due, read everything."""
        until = time.monotonic() + seconds
        while (now := time.monotonic()) < until:
            nxt = min([t.due(now) for t in tickers], default=until)
            self.poller.poll(max(0.0, min(nxt, until, now + 0.05) - time.monotonic()))

    def cpu(self) -> tuple[list[float], list[float], list[float]]:
        """(Redis INFO cpu per master, Redis /proc per master, servers /proc), CPU seconds so far."""
        info = [float(i["used_cpu_user"]) + float(i["used_cpu_sys"]) for i in (n.info("cpu") for n in self.nodes)]
        procs = [process_cpu_seconds(node.pid or 0) for node in self.cluster.nodes[:self.masters]]
        return info, procs, [process_cpu_seconds(p.pid) for p in self.servers]

    def measure(self, seconds: float, tickers: list[Ticker] = ()) -> Window:  # type: ignore[assignment]
        """One window: CPU of every process over ``seconds`` of the tickers' load."""
        for t in tickers:
            t.restart()
        received0, (r0, p0, s0), t0 = self.received, self.cpu(), time.monotonic()
        self.pump(seconds, tickers)
        (r1, p1, s1), span = self.cpu(), time.monotonic() - t0
        return Window(span, [b - a for a, b in zip(r0, r1, strict=True)],
                      [b - a for a, b in zip(p0, p1, strict=True)], [b - a for a, b in zip(s0, s1, strict=True)],
                      {f"ticker{i}": t.sent for i, t in enumerate(tickers)}, self.received - received0,
                      round(os.getloadavg()[0], 2))


def write_result(out: Path, result: dict[str, Any], text: str) -> None:
    """``out``.json (the raw result) and ``out``.md (its table), and the table on stdout."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=1))
    out.with_suffix(".md").write_text(text)
    print(text)
