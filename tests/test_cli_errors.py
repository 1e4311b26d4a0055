"""A newcomer's mistakes on the command line: each ends in ONE line on stderr that says what is wrong and what to do,
and exit status 2 (argparse's own status for usage errors). No traceback, no library warning."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys

import pytest

from rtlib.cli import main
from rtlib.server.auth import MIN_SECRET_BYTES, issue_token
from rtlib.server.redis_process import free_port

SECRET = "cli-errors-secret-long-enough-for-hs256"


def rtlib(*args: str, secret: str | None = SECRET, timeout: float = 60) -> tuple[int, str]:
    """Run ``python -m rtlib.cli ARGS``; returns (exit status, stderr)."""
    env = {k: v for k, v in os.environ.items() if k != "RTLIB_SECRET"}
    if secret is not None:
        env["RTLIB_SECRET"] = secret
    done = subprocess.run([sys.executable, "-W", "default", "-m", "rtlib.cli", *args], env=env,
                          capture_output=True, text=True, timeout=timeout)
    return done.returncode, done.stderr


def one_line(stderr: str, *words: str) -> str:
    """The stderr of a refused command: exactly one line, no traceback, containing every word."""
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr and "Warning" not in stderr, stderr
    for word in words:
        assert word in lines[0], (word, lines[0])
    return lines[0]


def test_serve_on_a_port_in_use(redis_url: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        status, err = rtlib("serve", "--port", str(port), "--redis", redis_url)
    assert status == 2
    one_line(err, f"rtlib serve: port {port} on 127.0.0.1 is already in use", "--port", "0 picks a free one")


def test_serve_with_redis_pointing_at_nothing() -> None:
    url = f"redis://127.0.0.1:{free_port()}"
    status, err = rtlib("serve", "--port", "0", "--redis", url)
    assert status == 2
    one_line(err, f"cannot reach Redis at {url}", "Connection refused", "leave --redis out")


def test_serve_with_redis_on_an_unknown_host() -> None:
    status, err = rtlib("serve", "--port", "0", "--redis", "redis://no-such-host.invalid:6379")
    assert status == 2
    one_line(err, "cannot reach Redis at redis://no-such-host.invalid:6379", "fix --redis")


def test_serve_with_redis_without_a_scheme(capsys: pytest.CaptureFixture[str], monkeypatch) -> None:
    monkeypatch.setenv("RTLIB_SECRET", SECRET)
    with pytest.raises(SystemExit) as exited:
        main(["serve", "--redis", "127.0.0.1:6379"])
    assert exited.value.code == 2
    assert one_line(capsys.readouterr().err) == (
        "rtlib serve: --redis '127.0.0.1:6379' is not a Redis URL; write redis://127.0.0.1:6379")


def test_redis_password_is_not_echoed(capsys: pytest.CaptureFixture[str], monkeypatch) -> None:
    monkeypatch.setenv("RTLIB_SECRET", SECRET)
    with pytest.raises(SystemExit):
        main(["serve", "--redis", f"redis://:hunter2@127.0.0.1:{free_port()}"])
    err = one_line(capsys.readouterr().err, "cannot reach Redis at redis://:***@127.0.0.1")
    assert "hunter2" not in err


def test_simulate_with_a_bad_redis(capsys: pytest.CaptureFixture[str]) -> None:
    url = f"redis://127.0.0.1:{free_port()}"
    with pytest.raises(SystemExit) as exited:
        main(["simulate", "--clients", "4", "--redis", url])
    assert exited.value.code == 2
    one_line(capsys.readouterr().err, f"rtlib simulate: cannot reach Redis at {url}", "Connection refused")


def test_simulate_with_redis_without_a_scheme(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["simulate", "--redis", "localhost:6379"])
    assert exited.value.code == 2
    one_line(capsys.readouterr().err, "--redis 'localhost:6379' is not a Redis URL; write redis://localhost:6379")


def test_a_lab_instance_that_does_not_start_says_why() -> None:
    """The lab's own message (not only the CLI's pre-check): the server's one line, not an empty reason."""
    from rtlib.lab import Cluster

    cluster = Cluster(instances=1, redis=f"redis://127.0.0.1:{free_port()}")
    try:
        with pytest.raises(RuntimeError, match=r"instance 0 did not start: rtlib serve: cannot reach Redis"):
            cluster.start()
    finally:
        cluster.close()
    assert (cluster.logdir / "instance-0.log").exists(), "the log the message names is kept"
    shutil.rmtree(cluster.logdir)


@pytest.mark.parametrize("command", [["token", "--user", "u", "--workspace", "w"], ["serve", "--port", "0"]])
def test_a_short_secret_is_refused_in_rtlibs_words(command: list[str]) -> None:
    short = "a-28-byte-signing-secret-xyz"
    assert len(short) == 28 < MIN_SECRET_BYTES
    status, err = rtlib(*command, secret=short)
    assert status == 2
    one_line(err, f"rtlib {command[0]}: the signing secret is 28 bytes; HS256 needs at least 32",
             "openssl rand -hex 32")


def test_issue_token_refuses_a_short_secret() -> None:
    with pytest.raises(ValueError, match="at least 32"):
        issue_token("x" * 31, "u", ["w"])
    assert issue_token("x" * 32, "u", ["w"])


def test_missing_secret_and_bad_id_exit_2(capsys: pytest.CaptureFixture[str], monkeypatch) -> None:
    monkeypatch.delenv("RTLIB_SECRET", raising=False)
    with pytest.raises(SystemExit) as exited:
        main(["token", "--user", "u", "--workspace", "w"])
    assert exited.value.code == 2
    one_line(capsys.readouterr().err, "secret is required")
    with pytest.raises(SystemExit) as exited:
        main(["token", "--user", "a b", "--workspace", "w", "--secret", SECRET])
    assert exited.value.code == 2
    one_line(capsys.readouterr().err, "invalid id")


def test_verifying_with_a_short_secret_is_logged_once(caplog: pytest.LogCaptureFixture, monkeypatch) -> None:
    """A server built in Python with a short secret still answers handshakes (a refusal there would be a 500 on
    every one); rtlib says once, in its own words, that the secret is insecure."""
    import time

    import jwt

    from rtlib.server import auth

    monkeypatch.setattr(auth, "_warned_short", False)
    short = "k" * 20
    with pytest.warns(jwt.InsecureKeyLengthWarning):  # PyJWT's own, when signing: rtlib never signs with it
        token = jwt.encode({"sub": "u", "workspaces": ["w"], "exp": time.time() + 60}, short, algorithm="HS256")
    with caplog.at_level("WARNING", logger="rtlib.server.auth"):
        for _ in range(3):
            assert auth.verify_token(short, token).user_id == "u"
    said = [r.getMessage() for r in caplog.records if r.name == "rtlib.server.auth"]
    assert said == ["insecure signing secret: the signing secret is 20 bytes; HS256 needs at least 32: use a random "
                    "one, e.g. export RTLIB_SECRET=$(openssl rand -hex 32)"]
