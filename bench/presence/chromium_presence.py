"""Record what a hidden Chromium tab's presence looks like to an ``rtlib serve`` at production timing.

A real ``redis-server`` and ``rtlib serve`` (heartbeat 30 s, timeout 60 s, sweep 5 s: throttling works in
real minutes, so nothing is compressed), Debian's ``chromium --headless=new`` started here (not by
Playwright, whose ``launch()`` switches throttling off and emulates focus) and attached over CDP with
``no_defaults=True``. Page A is the board (``/app/``, the real ``rtlib-client.js``) viewing task ``T-001`` as
``alice``; page B, in the same context, is brought to the front to hide A and back behind it to show A
again, on a ``--schedule``. Recorded:

* ``beats``: the server's receive time of every beat of A (the score of A's entry in the Redis presence
  sorted set, polled every 100 ms: the score is the receiving instance's clock);
* ``page_log``: what page A itself did: every presence frame it sent or got and every visibility change,
  with ``Date.now()`` and ``performance.now()`` (logged from a ``WebSocket`` subclass, so it
  adds no timer of its own to the page);
* ``observer``: every ``presence.*`` event an observer (user ``obs``, a Python client viewing the same task,
  beating from an unthrottled asyncio timer) received, with the server's timestamp;
* ``flaps``: each ``presence.left`` with reason ``timeout`` for ``alice`` (her page was open throughout);
* ``clock``: ``time.monotonic() - time.time()``, because Chrome aligns intensively throttled wake-ups to
  whole minutes of its monotonic clock (CLOCK_MONOTONIC on Linux).

    python -m bench.presence.chromium_presence --alternative timer     # ~17 min, notebooks/data/chromium_timer.json
    python -m bench.presence.chromium_presence --schedule show:5,hide:120,show:5 --out /tmp/x.json   # a quick look

``record()`` also takes shorter presence timing, for the CI-sized ``tests/web/test_hidden_tab_browser.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
from websockets.asyncio.client import ClientConnection, connect

from rtlib.protocol.probes import TICK_PHASE
from rtlib.server import keyspace
from rtlib.server.auth import issue_token
from rtlib.server.redis_process import RedisProcess, die_with_parent, free_port, stop_process

__all__ = ["ALTERNATIVES", "CHROMIUM_FLAGS", "DEFAULT_SCHEDULE", "Observer", "attach_page_log", "main", "make_trace",
           "open_board", "parse_schedule", "poll_beats", "record", "run_schedule", "run_versions", "start_chromium",
           "start_serve", "wait_cdp"]

ROOT = Path(__file__).resolve().parents[2]
SECRET = "chromium-presence-recording-secret-0123456789"
WS, TASK, USER, OBSERVER = "w1", "T-001", "alice", "obs"
#: Heartbeat interval, presence timeout, sweep interval (s): production. Only the CI-sized browser test
#: (tests/web/test_hidden_tab_browser.py) passes shorter ones, through record().
PRODUCTION = (30.0, 60.0, 5.0)
GRACE = 15.0
#: The server options of each design alternative (issue 10 §1); the page is the same real board for all.
ALTERNATIVES: dict[str, list[str]] = {
    "timer": [],
    "probe": ["--presence-mode", "probe"],
    "visibility": ["--visibility-beat"],
    "grace": ["--leave-grace", str(GRACE)],
}
# Three 150 s hides with short visible spells (the first one is too early in the timer chain to be
# intensively throttled), then one long hide: ~17 minutes.
DEFAULT_SCHEDULE = "show:20,hide:150,show:10,hide:150,show:10,hide:150,show:10,hide:480,show:15"

# Injected before the board's scripts: logs A's presence frames and visibility changes to the console, which
# Playwright receives over CDP at once (no polling of the page, no extra page timer that could share or shift
# the throttled wake-ups).
PAGE_LOG = """(() => {
  const log = (kind, extra) => console.log("rtlib-rec " + JSON.stringify({kind, wall: Date.now() / 1000,
      perf: performance.now() / 1000, visibility: document.visibilityState, ...extra}));
  // A subclass, so the listener is on before the first frame (session.welcome, where rtlib-client.js sets
  // its heartbeat interval up) and runs before the client's own onmessage.
  const Native = WebSocket;
  window.WebSocket = class extends Native {
    constructor(...args) {
      super(...args);
      this.addEventListener("message", (m) => {
        const f = JSON.parse(m.data);
        if (f.type.startsWith("presence.") || f.type === "session.welcome") log("recv", {type: f.type,
            userId: f.payload.userId ?? f.userId ?? null, reason: f.payload.reason ?? null});
      });
    }
    send(data) {
      try { const f = JSON.parse(data); if (f.type.startsWith("presence.")) log("send", {type: f.type}); } catch {}
      return super.send(data);
    }
  };
  document.addEventListener("visibilitychange", () => log("visibility", {}));
})();"""


def parse_schedule(spec: str) -> list[tuple[str, float]]:
    """``show:20,hide:150,...`` -> ``[("show", 20.0), ("hide", 150.0), ...]`` (page A's state, seconds).
    ``wait:S`` keeps the state until the monotonic clock is S seconds into a minute: hides can then start at a
    chosen phase of Chromium's whole-minute wake-ups."""
    steps = []
    for part in spec.split(","):
        state, _, secs = part.strip().partition(":")
        ok = state in ("show", "hide") and float(secs) > 0 or state == "wait" and 0 <= float(secs) < 60
        if not ok:
            raise ValueError(f"bad schedule step {part!r}: expected show:SECONDS, hide:SECONDS or wait:0-59")
        steps.append((state, float(secs)))
    return steps


class Observer:
    """Another user viewing the same task from Python: its asyncio timer is never throttled, and it answers
    ``presence.probe`` like the page does, so only page A's presence is in question."""

    def __init__(self, port: int) -> None:
        self.url = f"ws://127.0.0.1:{port}/ws?token={issue_token(SECRET, OBSERVER, [WS])}&workspace={WS}"
        self.events: list[dict[str, Any]] = []
        self.welcome: dict[str, Any] = {}

    async def run(self, stop: asyncio.Event) -> None:
        async with connect(self.url, compression=None) as ws:
            self.welcome = json.loads(await ws.recv())["payload"]
            await self._send(ws, "presence.join", {"taskId": TASK})
            beat = asyncio.create_task(self._beat(ws))
            try:
                while not stop.is_set():
                    try:
                        frame = json.loads(await asyncio.wait_for(ws.recv(), 0.5))
                    except TimeoutError:
                        continue
                    if frame["type"] == "presence.probe":
                        await self._send(ws, "presence.pong", frame.get("payload", {}))
                    elif frame["type"].startswith("presence."):
                        p = frame["payload"]
                        self.events.append({"type": frame["type"], "userId": p.get("userId"),
                                            "reason": p.get("reason"), "viewers": p.get("viewers"),
                                            "timestamp": frame.get("timestamp"), "received": time.time()})
            finally:
                beat.cancel()

    async def _beat(self, ws: ClientConnection) -> None:
        while True:
            await asyncio.sleep(float(self.welcome.get("heartbeatInterval", 30)))
            await self._send(ws, "presence.heartbeat", {"taskId": TASK})

    @staticmethod
    async def _send(ws: ClientConnection, type_: str, payload: dict[str, Any]) -> None:
        await ws.send(json.dumps({"type": type_, "workspaceId": WS, "payload": payload}))


async def poll_beats(redis_url: str, stop: asyncio.Event, out: list[float], *, task: str = TASK,
                     user: str = USER) -> None:
    """Every change of the score of ``user``'s entry on ``task`` (page A's): the server's receive time of each
    beat (and of the join)."""
    key, last = keyspace.presence_key(WS, task), None
    client = aioredis.Redis.from_url(redis_url)
    try:
        while not stop.is_set():
            for member, score in await client.zrange(key, 0, -1, withscores=True):
                if member.decode().endswith(f":{user}") and score != last:
                    out.append(score)
                    last = score
            await asyncio.sleep(0.1)
    finally:
        await client.aclose()


def _timing_args(timing: tuple[float, float, float]) -> list[str]:
    hb, timeout, sweep = timing
    return ["--heartbeat-interval", str(hb), "--presence-timeout", str(timeout), "--sweep-interval", str(sweep)]


def start_serve(redis_url: str, port: int, extra: list[str]) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "rtlib.cli", "serve", "--redis", redis_url, "--port", str(port), "--secret", SECRET,
         "--log-level", "WARNING", *extra],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, preexec_fn=die_with_parent)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if b"serving" not in line:
        stop_process(proc)
        raise RuntimeError(f"rtlib serve did not start: {line!r}")
    return proc


#: Chromium's flags besides the CDP port and the profile directory. --no-sandbox: root cannot start Chromium's
#: sandbox. Nothing here touches throttling or backgrounding.
CHROMIUM_FLAGS = ("--headless=new", "--no-first-run", "--no-default-browser-check", "--no-sandbox")


def start_chromium(binary: str, cdp_port: int, profile: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [binary, f"--remote-debugging-port={cdp_port}", f"--user-data-dir={profile}", *CHROMIUM_FLAGS, "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=die_with_parent)


def wait_cdp(cdp_port: int, timeout: float = 30.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{cdp_port}/json/version", timeout=1) as r:
                return json.loads(r.read())
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def run_versions(binary: str) -> tuple[str, str]:
    """``(browser version, rtlib commit)`` for a trace's provenance."""
    version = subprocess.run([binary, "--version"], capture_output=True, text=True).stdout.strip()
    commit = subprocess.run(["git", "-C", str(ROOT), "describe", "--always", "--dirty"], capture_output=True,
                            text=True).stdout.strip()
    return version, commit


def attach_page_log(page_a: Any, page_log: list[dict[str, Any]]) -> Awaitable[None]:
    """Collect page A's ``rtlib-rec`` console lines into ``page_log``; returns the init script's installation,
    which must finish before A navigates."""
    page_a.on("console", lambda m: page_log.append(json.loads(m.text[len("rtlib-rec "):]))
              if m.text.startswith("rtlib-rec ") else None)
    return page_a.add_init_script(PAGE_LOG)


async def open_board(page_a: Any, port: int, user: str = USER, task: str = TASK) -> float:
    """Load the board in page A as ``user``, view ``task``; returns when the view was asked for (Unix s)."""
    token = issue_token(SECRET, user, [WS], ttl=7200)
    await page_a.goto(f"http://127.0.0.1:{port}/app/#workspace={WS}&token={token}")
    await page_a.wait_for_function("window.rtlibBoard && window.rtlibBoard.client.status === 'connected'")
    await page_a.evaluate(f"window.rtlibBoard.client.view({json.dumps(task)})")
    return time.time()


async def run_schedule(page_a: Any, page_b: Any, steps: list[tuple[str, float]], beats: list[float],
                       label: str = "") -> tuple[list[dict[str, Any]], float]:
    """Hide page A (B to the front of their window) and show it on ``steps``; returns ``(timeline, end)``."""
    timeline = []
    for state, secs in steps:
        if state == "wait":  # until the monotonic clock is secs into a minute; no state change
            await asyncio.sleep((secs - time.monotonic()) % 60)
            continue
        await (page_b if state == "hide" else page_a).bring_to_front()
        at = time.time()
        seen = await page_a.evaluate("document.visibilityState")
        timeline.append({"state": state, "at": at, "seconds": secs, "visibilityState": seen})
        print(f"{time.strftime('%H:%M:%S')} {label}{state} {secs:g}s: A is {seen}; "
              f"{len(beats)} beats so far", flush=True)
        await asyncio.sleep(secs)
    return timeline, time.time()


def make_trace(*, alternative: str, commit: str, version: str, cdp: dict[str, Any], serve_args: list[str],
               timing: tuple[float, float, float], welcome: dict[str, Any], clock: dict[str, float], schedule: str,
               joined: float, timeline: list[dict[str, Any]], end: float, beats: list[float],
               page_log: list[dict[str, Any]], observer: list[dict[str, Any]], user: str = USER) -> dict[str, Any]:
    """A trace as :mod:`rtlib.model.chromium_traces` reads it; ``observer``: the observer's events about ``user``
    (page A's user) up to ``end``."""
    alice = [e for e in observer if e["userId"] == user]
    flaps = [e for e in alice if e["type"] == "presence.left" and e["reason"] == "timeout"]
    return {
        "what": "a board page (rtlib-client.js) in headless Chromium viewing a task, hidden and shown on a "
                "schedule, against rtlib serve at production presence timing",
        "alternative": alternative, "rtlib_commit": commit, "probe_tick_phase": TICK_PHASE,
        "browser": version, "browser_cdp": cdp.get("Browser"),
        "user_agent": cdp.get("User-Agent"), "server_args": serve_args,
        "presence": {"heartbeat_interval": timing[0], "timeout": timing[1], "sweep_interval": timing[2],
                     "leave_grace": GRACE if alternative == "grace" else 0.0},
        "welcome": welcome, "clock": clock, "schedule_spec": schedule, "joined": joined, "start": timeline[0]["at"],
        "end": end, "schedule": timeline, "beats": beats, "page_log": page_log, "observer": observer,
        "flaps": [{"at": e["received"], "timestamp": e["timestamp"],
                   "last_beat": max((b for b in beats if b < e["received"]), default=None)} for e in flaps],
    }


async def record(alternative: str, schedule: str, binary: str,
                 timing: tuple[float, float, float] = PRODUCTION) -> dict[str, Any]:
    """One recording: page A on the board through ``alternative``'s server, hidden and shown on ``schedule``
    (see :func:`parse_schedule`); returns the trace (the module docstring lists what it holds)."""
    from playwright.async_api import async_playwright

    steps = parse_schedule(schedule)
    version, commit = run_versions(binary)
    clock = {"monotonic": time.monotonic(), "wall": time.time()}
    clock["offset"] = clock["monotonic"] - clock["wall"]  # monotonic = wall + offset
    serve_args = [*_timing_args(timing), *ALTERNATIVES[alternative]]
    with RedisProcess() as redis_proc, tempfile.TemporaryDirectory(prefix="rtlib-chromium-") as profile:
        port, cdp_port = free_port(), free_port()
        serve = start_serve(redis_proc.url, port, serve_args)
        chrome = start_chromium(binary, cdp_port, profile)
        stop, beats, page_log = asyncio.Event(), [], []
        observer = Observer(port)
        try:
            cdp = await asyncio.to_thread(wait_cdp, cdp_port)  # other recordings may share this loop
            async with async_playwright() as pw:
                browser = await pw.chromium.connect_over_cdp(f"http://127.0.0.1:{cdp_port}", no_defaults=True)
                context = browser.contexts[0]
                page_a = await context.new_page()
                await attach_page_log(page_a, page_log)
                page_b = await context.new_page()  # opened first: opening it later would hide A for a moment
                await page_a.bring_to_front()
                watchers = [asyncio.create_task(observer.run(stop)), asyncio.create_task(
                    poll_beats(redis_proc.url, stop, beats))]
                await asyncio.sleep(1.0)  # the observer is in before alice joins
                joined = await open_board(page_a, port)
                timeline, end = await run_schedule(page_a, page_b, steps, beats)
                stop.set()
                await asyncio.gather(*watchers)
                welcome = await page_a.evaluate("window.rtlibBoard.client.welcome")
                await browser.close()
        finally:
            stop_process(chrome)
            stop_process(serve)
    return make_trace(alternative=alternative, commit=commit, version=version, cdp=cdp, serve_args=serve_args,
                      timing=timing, welcome=welcome, clock=clock, schedule=schedule, joined=joined,
                      timeline=timeline, end=end, beats=beats, page_log=page_log, observer=observer.events)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--alternative", choices=sorted(ALTERNATIVES), default="timer")
    ap.add_argument("--schedule", default=DEFAULT_SCHEDULE, help="page A's states: show:S,hide:S,...")
    ap.add_argument("--chromium", default=os.environ.get("RTLIB_CHROMIUM") or shutil.which("chromium")
                    or "/usr/bin/chromium")
    ap.add_argument("--out", type=Path, help="default: notebooks/data/chromium_<alternative>.json")
    args = ap.parse_args(argv)
    parse_schedule(args.schedule)  # fail before minutes of recording
    result = asyncio.run(record(args.alternative, args.schedule, args.chromium))
    out = args.out or ROOT / "notebooks" / "data" / f"chromium_{args.alternative}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    gaps = [round(b - a, 3) for a, b in zip(result["beats"], result["beats"][1:], strict=False)]
    print(f"wrote {out}: {len(result['beats'])} beats, gaps {gaps}, flaps {len(result['flaps'])}")
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
