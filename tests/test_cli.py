"""The rtlib command: token, schema, and a real `rtlib serve` process shut down by SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from websockets.sync.client import connect

from rtlib.cli import main
from rtlib.server.auth import verify_token
from rtlib.server.redis_process import free_port

SECRET = "cli-secret-long-enough-for-hmac-sha256"


def test_token_prints_a_verifiable_token(capsys, monkeypatch) -> None:
    monkeypatch.setenv("RTLIB_SECRET", SECRET)
    main(["token", "--user", "u1", "--workspace", "w1", "--workspace", "w2", "--ttl", "60"])
    claims = verify_token(SECRET, capsys.readouterr().out.strip())
    assert claims.user_id == "u1" and claims.workspaces == {"w1", "w2"}


def test_token_without_secret_fails_clearly(monkeypatch) -> None:
    monkeypatch.delenv("RTLIB_SECRET", raising=False)
    with pytest.raises(SystemExit, match="secret is required"):
        main(["token", "--user", "u1", "--workspace", "w1"])


def test_token_bad_user_fails_clearly() -> None:
    with pytest.raises(SystemExit, match="invalid id"):
        main(["token", "--user", "a b", "--workspace", "w1", "--secret", SECRET])


def test_serve_rejects_bad_presence_options(monkeypatch) -> None:
    monkeypatch.setenv("RTLIB_SECRET", SECRET)
    with pytest.raises(SystemExit, match="heartbeat_interval"):
        main(["serve", "--heartbeat-interval", "0"])


def test_serve_with_embedded_redis_and_sigterm(tmp_path) -> None:
    port = free_port()
    env = {**os.environ, "RTLIB_SECRET": SECRET}
    proc = subprocess.Popen([sys.executable, "-m", "rtlib.cli", "serve", "--port", str(port)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        line = proc.stdout.readline()
        assert f"serving ws://127.0.0.1:{port}/ws" in line, line
        token = subprocess.run([sys.executable, "-m", "rtlib.cli", "token", "--user", "u", "--workspace", "w"],
                               env=env, capture_output=True, text=True, check=True).stdout.strip()
        with connect(f"ws://127.0.0.1:{port}/ws?token={token}&workspace=w") as ws:
            assert json.loads(ws.recv(timeout=5))["type"] == "session.welcome"
            proc.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + 10
            with pytest.raises(Exception) as closed:
                while time.monotonic() < deadline:
                    ws.recv(timeout=5)
            assert getattr(closed.value, "rcvd", None) is not None and closed.value.rcvd.code == 1001
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stdout.close()


def test_simulate_writes_csvs_and_summary(tmp_path) -> None:
    out = tmp_path / "run"
    done = subprocess.run([sys.executable, "-m", "rtlib.cli", "simulate", "--clients", "30", "--workspaces", "2",
                           "--duration", "10", "--rate", "10", "--time-scale", "0.05", "--seed", "4",
                           "--out", str(out)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    summary = json.loads((out / "summary.json").read_text())
    for key in ("clients", "deliveries", "lost", "out_of_order", "converged", "latency_ms"):
        assert key in summary
    assert set(summary["latency_ms"]) >= {"p50", "p90", "p99", "max"}
    assert summary["clients"] == 30 and summary["lost"] == 0 and summary["converged"] is True
    for name in ("deliveries.csv", "presence.csv", "applies.csv"):
        assert (out / name).stat().st_size > 0
    assert "converged" in done.stdout


def test_simulate_rejects_bad_scenario() -> None:
    done = subprocess.run([sys.executable, "-m", "rtlib.cli", "simulate", "--viewers", "2"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode != 0 and "share between 0 and 1" in done.stderr
