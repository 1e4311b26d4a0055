"""The servers the benchmark compares, described symmetrically, and a context manager that runs one.

A :class:`Target` is all the harness knows about a server: the command line that starts it on a port with a
Redis URL, how to make a client URL for (workspace, user), and the ``type`` of the frames that are deliveries.
The servers other than rtlib are in :mod:`bench.servers`; each runs as ``python -m bench.servers.<name>`` from
the repository root (:class:`ServerProcess` starts it there).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Self

from bench.servers import node_peers

BENCH_DIR = Path(__file__).resolve().parents[1]
REPO_DIR = BENCH_DIR.parent


@dataclass(frozen=True)
class Target:
    name: str
    command: Callable[[int, str], list[str]]  # (port, redis_url) -> argv
    url: Callable[[int, str, str], str]  # (port, workspace, user) -> ws:// URL
    delivery_type: str  # the envelope type of a frame that delivers an update ("socketio:EVENT": Socket.IO)
    protocol: str = "ws"  # "socketio": Engine.IO/Socket.IO packets inside the WebSocket frames
    welcome: bool = False  # the server sends a frame once a connection is set up (idle_memory waits for it)


def toy_target() -> Target:
    """The baseline forwarder: the delivered frame is the very frame that was sent."""
    return Target(
        name="toy",
        command=lambda port, redis_url: [
            sys.executable, "-m", "bench.servers.toy_forwarder", "--port", str(port), "--redis", redis_url,
        ],
        url=lambda port, workspace, user: f"ws://127.0.0.1:{port}/ws?workspace={workspace}",
        delivery_type="task.update",
    )


def _rtlib_executable() -> str:
    """The ``rtlib`` console script of the running venv, else the one on PATH."""
    beside = Path(sys.executable).with_name("rtlib")
    if beside.exists():
        return str(beside)
    found = shutil.which("rtlib")
    if found is None:
        raise FileNotFoundError("no `rtlib` command: install the project (`make install`)")
    return found


def _token_issuer(secret: str) -> Callable[[str, str], str]:
    """(user, workspace) -> token: rtlib.server.auth in-process, else one `rtlib token` call per workspace (slow)."""
    try:
        from rtlib.server.auth import issue_token
    except ImportError:
        cache: dict[str, str] = {}

        def by_cli(user: str, workspace: str) -> str:
            # A subprocess per token would take minutes for 1,000 connections: share one per workspace.
            if workspace not in cache:
                argv = [_rtlib_executable(), "token", "--user", f"bench-{workspace}", "--workspace", workspace,
                        "--secret", secret]
                cache[workspace] = subprocess.run(argv, check=True, capture_output=True, text=True).stdout.strip()
            return cache[workspace]

        return by_cli
    return lambda user, workspace: issue_token(secret, user, [workspace], ttl=3600.0)


BENCH_SECRET = "bench-secret-not-for-production-0123456789"  # >= 32 bytes: rtlib refuses shorter HS256 secrets


def rtlib_target(secret: str = BENCH_SECRET, extra_args: tuple[str, ...] = ()) -> Target:
    """The rtlib server: deliveries are ``task.updated`` events (``session.welcome``, ``ack`` ... are not).

    ``extra_args`` go to ``rtlib serve`` as they are (e.g. ``("--rate-limit", "100000")``).
    """
    issue = _token_issuer(secret)
    return Target(
        name="rtlib",
        command=lambda port, redis_url: [
            _rtlib_executable(), "serve", "--host", "127.0.0.1", "--port", str(port), "--redis", redis_url,
            "--secret", secret, *extra_args,
        ],
        url=lambda port, workspace, user: (
            f"ws://127.0.0.1:{port}/ws?token={issue(user, workspace)}&workspace={workspace}"
        ),
        delivery_type="task.updated",
        welcome=True,
    )


def floor_target(loop: str = "asyncio", redis_script: bool = False) -> Target:
    """The floor: a bare server that writes each sender frame, framed once, to its workspace's sockets (no Redis).

    ``redis_script``: the floor of this design, which also runs rtlib's update script per frame and delivers
    what it publishes (see :mod:`bench.servers.floor_server`)."""
    name = "floor-redis" if redis_script else "floor"
    return Target(
        name=name if loop == "asyncio" else f"{name}-{loop}",
        command=lambda port, redis_url: [
            sys.executable, "-m", "bench.servers.floor_server", "--port", str(port), "--loop", loop,
            "--redis", redis_url, *(["--redis-script"] if redis_script else []),
        ],
        url=lambda port, workspace, user: f"ws://127.0.0.1:{port}/ws?workspace={workspace}",
        delivery_type="task.update",
    )


def _node_command(script: str) -> list[str]:
    # `env` execs node in place, so the server's pid (whose CPU and RSS are measured) is node's own.
    return ["env", f"NODE_PATH={node_peers.CACHE_DIR / 'node_modules'}", shutil.which("node") or "node",
            str(node_peers.NODE_DIR / script)]


def _socketio_url(port: int, workspace: str, user: str) -> str:
    return f"ws://127.0.0.1:{port}/socket.io/?EIO=4&transport=websocket&workspace={workspace}"


def socketio_node_target() -> Target:
    """Socket.IO 4 on Node, rooms through ``@socket.io/redis-adapter`` (``bench/servers/node/socketio_server.js``;
    needs :func:`bench.servers.node_peers.node_status` to be true)."""
    return Target(
        name="socketio-node",
        command=lambda port, redis_url: [*_node_command("socketio_server.js"), "--port", str(port),
                                         "--redis", redis_url],
        url=_socketio_url, delivery_type="socketio:task.updated", protocol="socketio", welcome=True)


def ws_node_target() -> Target:
    """The plain Node forwarder (``ws`` + ioredis pub/sub, ``bench/servers/node/ws_forwarder.js``): the toy's frames
    and URLs."""
    return Target(
        name="ws-node",
        command=lambda port, redis_url: [*_node_command("ws_forwarder.js"), "--port", str(port),
                                         "--redis", redis_url],
        url=lambda port, workspace, user: f"ws://127.0.0.1:{port}/ws?workspace={workspace}",
        delivery_type="task.update")


def python_socketio_target() -> Target:
    """python-socketio + ``AsyncRedisManager`` on aiohttp (:mod:`bench.servers.psio_server`)."""
    return Target(
        name="python-socketio",
        command=lambda port, redis_url: [sys.executable, "-m", "bench.servers.psio_server", "--port", str(port),
                                         "--redis", redis_url],
        url=_socketio_url, delivery_type="socketio:task.updated", protocol="socketio", welcome=True)


PEERS: dict[str, Callable[[], Target]] = {"socketio-node": socketio_node_target, "ws-node": ws_node_target,
                                          "python-socketio": python_socketio_target}


def rtlib_code_target(name: str, code_dir: str, extra_args: tuple[str, ...] = (), uvloop: bool = False) -> Target:
    """rtlib from another source tree (e.g. an export of an older commit: the "before" of a same-run
    comparison), optionally with uvloop installed as the event loop policy before ``rtlib serve`` starts."""
    base = rtlib_target(extra_args=extra_args)
    boot = (f"import sys; sys.path.insert(0, {code_dir!r}); "
            + ("import uvloop; uvloop.install(); " if uvloop else "")
            + "from rtlib.cli import main; sys.argv[0] = 'rtlib'; main()")
    return Target(
        name=name,
        command=lambda port, redis_url: [sys.executable, "-c", boot, *base.command(port, redis_url)[1:]],
        url=base.url,
        delivery_type=base.delivery_type,
    )


TARGETS: dict[str, Callable[[], Target]] = {
    "toy": toy_target,
    "rtlib": rtlib_target,
    "rtlib-uvloop": lambda: replace(rtlib_target(extra_args=("--loop", "uvloop")), name="rtlib-uvloop"),
    "rtlib-asyncio": lambda: replace(rtlib_target(extra_args=("--loop", "asyncio")), name="rtlib-asyncio"),
    "floor": floor_target,
    "floor-uvloop": lambda: floor_target("uvloop"),
    "floor-redis": lambda: floor_target(redis_script=True),
    "floor-redis-uvloop": lambda: floor_target("uvloop", redis_script=True),
    **PEERS,
}
if os.environ.get("RTLIB_BASE_DIR"):  # a "before" tree for same-run comparisons (see bench/README.md)
    TARGETS["rtlib-base"] = lambda: rtlib_code_target("rtlib-base", os.environ["RTLIB_BASE_DIR"])
    TARGETS["rtlib-base-uvloop"] = lambda: rtlib_code_target("rtlib-base-uvloop", os.environ["RTLIB_BASE_DIR"],
                                                             uvloop=True)
for _spec in filter(None, os.environ.get("RTLIB_TREES", "").split(",")):  # NAME=DIR[+uvloop], more trees
    _name, _, _dir = _spec.partition("=")
    TARGETS[_name] = (lambda n, d: lambda: rtlib_code_target(n, d.removesuffix("+uvloop"),
                                                             uvloop=d.endswith("+uvloop")))(_name, _dir)
if os.environ.get("RTLIB_MID_DIR"):  # a third tree, with uvloop installed as the loop policy
    TARGETS["rtlib-mid-uvloop"] = lambda: rtlib_code_target("rtlib-mid-uvloop", os.environ["RTLIB_MID_DIR"],
                                                            uvloop=True)
if os.environ.get("RTLIB_AFTER_DIR"):  # an "after" tree, frozen, so edits during a long run cannot leak into it
    TARGETS["rtlib-after"] = lambda: rtlib_code_target("rtlib-after", os.environ["RTLIB_AFTER_DIR"])
    TARGETS["rtlib-after-asyncio"] = lambda: rtlib_code_target("rtlib-after-asyncio", os.environ["RTLIB_AFTER_DIR"],
                                                               extra_args=("--loop", "asyncio"))


class ServerProcess:
    """A target's server as a child process, with its output in a temporary log; always stopped on exit."""

    def __init__(self, argv: list[str], port: int) -> None:
        self.argv = argv
        self.port = port
        self.proc: subprocess.Popen[bytes] | None = None
        # Lives as long as the server (closed, and so deleted, by stop()).
        self._log = tempfile.NamedTemporaryFile(prefix="bench-server-", suffix=".log")

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, timeout: float = 20.0) -> Self:
        """Start the server and wait until its port accepts connections."""
        self.proc = subprocess.Popen(self.argv, stdout=self._log, stderr=subprocess.STDOUT, cwd=REPO_DIR)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check_alive()
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"server did not listen on port {self.port} within {timeout}s:\n{self.log_tail()}")

    def check_alive(self) -> None:
        """Raise, with the end of its log, if the server has exited."""
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"server exited with code {self.proc.returncode}:\n{self.log_tail()}")

    def log_tail(self, lines: int = 30) -> str:
        self._log.flush()
        text = Path(self._log.name).read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 5 s; the log file goes with it."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()

    def __enter__(self) -> Self:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()
