"""The server under attack: a real ``redis-server`` and one ``rtlib serve`` child process, with its log captured.

The log is the evidence for "0 tracebacks"; RSS comes from ``/proc/<pid>/status``. Tokens are signed here with
the server's secret, including deliberately bad ones (any claims, another secret, ``alg: none``).
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import jwt

from rtlib.server.redis_process import RedisProcess, die_with_parent, free_port, stop_process

__all__ = ["ServerUnderTest"]

ALLOWED_ORIGIN = "https://app.example"


class ServerUnderTest:
    """``with ServerUnderTest(**serve_options) as srv:`` -> ``srv.url(user, ws)``, ``srv.rss_kib()``, ..."""

    def __init__(self, log_level: str = "INFO", src: str | None = None, **options: Any) -> None:
        self.src = src  # another checkout's root to run its rtlib instead (e.g. the last commit, to compare)
        self.secret = secrets.token_hex(32)
        self.options = {"allowed_origin": ALLOWED_ORIGIN, **options}
        self.log_level = log_level
        self.port = 0
        self.redis: RedisProcess | None = None
        self.proc: subprocess.Popen[str] | None = None
        self.log_path = Path(tempfile.mkdtemp(prefix="rtlib-hostile-")) / "server.log"

    def start(self) -> ServerUnderTest:
        self.redis = RedisProcess().start()
        self.port = free_port()
        args = [sys.executable, "-m", "rtlib.cli", "serve", "--port", str(self.port), "--redis", self.redis.url,
                "--server-id", "hostile", "--log-level", self.log_level]
        for name, value in self.options.items():
            args += [f"--{name.replace('_', '-')}", str(value)]
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child holds it; closed below
        self.proc = subprocess.Popen(args, env=self._env(), stdout=subprocess.PIPE,
                                     stderr=log, text=True, preexec_fn=die_with_parent,
                                     cwd=self.src)  # `python -m` puts the cwd first on sys.path
        log.close()
        line = self.proc.stdout.readline() if self.proc.stdout else ""
        if "serving" not in line:
            self.stop()
            raise RuntimeError(f"rtlib serve did not start: {line.strip()}\n{self.log_text()[-2000:]}")
        return self

    def _env(self) -> dict[str, str]:
        env = {**os.environ, "RTLIB_SECRET": self.secret}
        if self.src:
            env["PYTHONPATH"] = os.pathsep.join([self.src, env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
        return env

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc, timeout=10)
            if self.proc.stdout:
                self.proc.stdout.close()
            self.proc = None
        if self.redis is not None:
            self.redis.stop()
            self.redis = None

    def __enter__(self) -> ServerUnderTest:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- evidence -----------------------------------------------------------------------------------------------
    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def tracebacks(self) -> int:
        return self.log_text().count("Traceback (most recent call last)")

    def rss_kib(self) -> int:
        """Resident set size of the server process, KiB (0 once it has exited)."""
        try:
            with open(f"/proc/{self.pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        return int(line.split()[1])
        except (FileNotFoundError, ProcessLookupError, AssertionError):
            pass
        return 0

    def cpu_seconds(self, redis: bool = False) -> float:
        """utime + stime so far of the server process (or of its redis-server); 0.0 once it has exited."""
        try:
            pid = (self.redis.pid if self.redis else None) if redis else self.pid
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rpartition(")")[2].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (FileNotFoundError, ProcessLookupError, AssertionError, TypeError):
            return 0.0

    # --- addresses and tokens -------------------------------------------------------------------------------------
    @property
    def base(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def token(self, user: str, *workspaces: str, ttl: float = 3600.0, **claims: Any) -> str:
        now = time.time()
        body = {"sub": user, "workspaces": list(workspaces), "iat": int(now), "exp": now + ttl, **claims}
        return jwt.encode({k: v for k, v in body.items() if v is not None}, self.secret, algorithm="HS256")

    def url(self, user: str, workspace: str = "ws-a", ttl: float = 3600.0, token: str | None = None) -> str:
        tok = token if token is not None else self.token(user, workspace, ttl=ttl)
        return f"{self.base}/ws?token={quote(tok)}&workspace={quote(workspace)}"
