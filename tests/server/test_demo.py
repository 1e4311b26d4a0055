"""``rtlib demo``: refused without --dev; with it, a real process whose printed links serve the board and
whose tokens open the seeded workspace, and whose bots move the board."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
import urllib.request
from urllib.parse import parse_qs, urlsplit

import pytest
from websockets.sync.client import connect

from rtlib.cli import main
from rtlib.server.demo import SAMPLE_TASKS


def test_demo_is_refused_without_dev(capsys) -> None:
    with pytest.raises(SystemExit, match="refusing to start without --dev"):
        main(["demo"])


@pytest.mark.parametrize("argv", [["--users", "a b"], ["--workspace", "w:1"], ["--bots", "-1"], ["--ttl", "0"]])
def test_demo_bad_options_fail_clearly(argv: list[str]) -> None:
    with pytest.raises(SystemExit, match="--users and --workspace take ids"):
        main(["demo", "--dev", *argv])


def test_demo_prints_working_links_and_its_bots_move_the_board(redis_url: str) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "rtlib.cli", "demo", "--dev", "--port", "0", "--bots", "2",
                             "--bot-interval", "0.2", "--users", "alice,bob", "--redis", redis_url],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert proc.stdout is not None
        lines: list[str] = []
        deadline = time.monotonic() + 30
        while sum("/app/#" in line for line in lines) < 2 and time.monotonic() < deadline:
            lines.append(proc.stdout.readline())
        out = "".join(lines)
        assert "DEVELOPMENT ONLY" in out
        urls = re.findall(r"^\s+(alice|bob)\s+(http://\S+)$", out, flags=re.MULTILINE)
        assert [u for u, _ in urls] == ["alice", "bob"]
        page = urlsplit(urls[0][1])
        with urllib.request.urlopen(f"http://{page.netloc}{page.path}", timeout=5) as resp:
            assert resp.status == 200 and b"rtlib board" in resp.read()
        params = parse_qs(page.fragment)
        ws_url = f"ws://{page.netloc}/ws?token={params['token'][0]}&workspace={params['workspace'][0]}"
        with connect(ws_url, compression=None) as ws:
            welcome = json.loads(ws.recv(timeout=5))
            assert welcome["type"] == "session.welcome" and welcome["userId"] == "alice"
            ws.send(json.dumps({"type": "task.list", "workspaceId": "demo", "payload": {"ref": "l"}}))
            bot_edits = 0
            while True:
                frame = json.loads(ws.recv(timeout=10))
                if frame["type"] == "task.page":
                    tasks = frame["payload"]["tasks"]
                    assert [t["taskId"] for t in tasks] == [f"T-{i:03d}" for i in range(1, len(SAMPLE_TASKS) + 1)]
                    assert tasks[0]["fields"]["title"] == SAMPLE_TASKS[0]["title"]
                elif frame["type"] == "task.updated" and frame["userId"].startswith("bot-"):
                    bot_edits += 1
                    if bot_edits == 3:
                        break
    finally:
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=20)
    assert proc.returncode == 0, rest
    assert "rtlib demo: stopped" in rest
