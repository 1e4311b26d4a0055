"""Record what the other viewers see when a viewing board page is frozen, put in the back/forward cache or discarded.

Issue 21 item 3. Debian's headless Chromium (started by hand, attached over CDP, as in
:mod:`bench.presence.chromium_presence`), a real ``redis-server`` and ``rtlib serve`` per presence mode
(``timer``, ``probe``, ``grace`` = timer + leave grace) at presence timing compressed ten times (heartbeat 3 s,
timeout 6 s, sweep 0.5 s, grace 1.5 s): freezing stops the page outright, it is not throttling, so nothing
in it depends on wall-clock minutes. Page A is the board viewing ``T-001`` as ``alice``; an observer (Python,
never frozen) views the same task. Page A is, in turn:

* **frozen** with ``Page.setWebLifecycleState`` ``frozen`` for 2 s, 9 s and 30 s (20 s, 90 s and 5 min at
  production timing), then ``active`` and shown again (as a user shows a frozen tab); in ``timer`` mode also
  50 s, longer than ``rtlib serve``'s WebSocket keepalive (``websockets``' default ping every 20 s, 20 s to
  answer), so a socket whose pings went unanswered would be closed by the server;
* **navigated away** to another page of the same origin and **back** (``history.back``): restored from the
  back/forward cache or not (``pageshow.persisted``, CDP ``Page.backForwardCacheNotUsed`` with its reasons);
  a control page without a WebSocket goes the same way, to show whether the cache works here at all;
* **discarded**: the DevTools protocol has no discard (Chrome's discard is a browser-UI action, and headless
  has no tab strip for ``chrome://discards``), so the target is closed without unload handlers
  (``Target.closeTarget``), and in ``timer`` mode a second page's renderer is crashed (``Page.crash``, what
  an out-of-memory kill does).

A **witness** socket in the same page (to a ``websockets`` server here, pinging every second itself and
sending a tick the page echoes from ``onmessage``) shows the socket level: are protocol pings answered while
the page is frozen (Chromium's network service answers them, not the page), do message handlers run, how does
the socket close. Writes ``notebooks/data/lifecycle/<mode>.json`` and ``bench/results/page_lifecycle.md``
(:mod:`bench.presence.lifecycle_table`). ~4 minutes; ``--modes timer`` for one.

    python -m bench.presence.lifecycle
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from websockets.asyncio.server import ServerConnection, serve

from bench.presence.chromium_presence import (
    ALTERNATIVES,
    Observer,
    attach_page_log,
    open_board,
    poll_beats,
    run_versions,
    start_chromium,
    start_serve,
    wait_cdp,
)
from rtlib.server.redis_process import RedisProcess, free_port, stop_process

__all__ = ["FREEZES", "LIFECYCLE_LOG", "MODES", "TIMING", "Witness", "main", "record_mode"]

ROOT = Path(__file__).resolve().parents[2]
OUT_DIR = ROOT / "notebooks" / "data" / "lifecycle"
#: Heartbeat, timeout, sweep (s): production (30, 60, 5) / 10; the leave grace of mode ``grace``: 15 s / 10.
TIMING = (3.0, 6.0, 0.5)
GRACE = 1.5
SCALE = 10.0
#: Freezes (s): 20 s, 90 s and 5 min at production timing.
FREEZES = (2.0, 9.0, 30.0)
#: Longer than rtlib serve's keepalive (ping every 20 s, 20 s timeout): recorded in timer mode only.
KEEPALIVE_FREEZE = 50.0
#: Seconds between events, for the re-join after a resume to settle.
SETTLE = 6.0
MODES = {"timer": [], "probe": ["--presence-mode", "probe"], "grace": ["--leave-grace", str(GRACE)]}
assert ALTERNATIVES["probe"] == MODES["probe"]  # the same server options as the hidden-tab recordings

# Added after chromium_presence.PAGE_LOG (init scripts run in order), so its WebSocket subclass is wrapped
# again: logs each socket's open and close, and the page lifecycle events a frozen/cached page goes through.
LIFECYCLE_LOG = """(() => {
  const log = (kind, extra) => console.log("rtlib-rec " + JSON.stringify({kind, wall: Date.now() / 1000,
      perf: performance.now() / 1000, visibility: document.visibilityState, ...extra}));
  const Inner = window.WebSocket;
  window.WebSocket = class extends Inner {
    constructor(...args) {
      super(...args);
      const url = String(args[0]).split("?")[0];
      this.addEventListener("open", () => log("ws-open", {url}));
      this.addEventListener("close", (e) => log("ws-close", {url, code: e.code, clean: e.wasClean}));
    }
  };
  for (const type of ["freeze", "resume"]) document.addEventListener(type, () => log(type, {}));
  for (const type of ["pagehide", "pageshow"]) window.addEventListener(type, (e) => log(type, {persisted:
      e.persisted, nav: performance.getEntriesByType("navigation")[0]?.type ?? null, url: location.pathname}));
})();"""


class Witness:
    """A WebSocket server that pings every ``every`` seconds (its own loop, never closing on a missing pong)
    and sends a numbered tick the page echoes from ``onmessage``: pongs show the browser's network stack,
    echoes show the page's handlers."""

    def __init__(self, every: float = 1.0) -> None:
        self.every = every
        self.pings: list[dict[str, Any]] = []
        self.echoes: list[dict[str, Any]] = []
        self.closes: list[dict[str, Any]] = []
        self.port = free_port()

    async def handler(self, ws: ServerConnection) -> None:
        conn = len(self.closes)
        self.closes.append({"conn": conn, "opened": time.time(), "closed": None, "code": None, "reason": None})
        loop = asyncio.create_task(self._ping_loop(ws, conn))
        try:
            async for message in ws:
                self.echoes.append({"conn": conn, "seq": int(str(message).split()[-1]), "at": time.time()})
        except Exception:  # noqa: BLE001 - an abnormal close is what is being recorded, not an error
            pass
        finally:
            loop.cancel()
            rcvd = ws.protocol.close_rcvd
            self.closes[conn].update(closed=time.time(), code=rcvd.code if rcvd else None,
                                     reason=rcvd.reason if rcvd else "no close frame (TCP closed)")

    async def _ping_loop(self, ws: ServerConnection, conn: int) -> None:
        seq = 0
        while True:
            seq += 1
            sent = time.time()
            entry: dict[str, Any] = {"conn": conn, "seq": seq, "sent": sent, "pong": None}
            self.pings.append(entry)
            try:
                waiter = await ws.ping()
                await ws.send(f"tick {seq}")
            except Exception:  # noqa: BLE001 - closed meanwhile
                return
            waiter.add_done_callback(lambda f, e=entry: e.update(pong=time.time()) if not f.exception() else None)
            await asyncio.sleep(self.every)

    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/"


# The witness socket re-opens 0.2 s after each close, so every event of a run has one open.
OPEN_WITNESS = """(url) => new Promise((ok, no) => {
  const open = () => {
    const w = new WebSocket(url);
    window.__witness = w;
    w.onmessage = (m) => w.send("echo " + m.data.split(" ")[1]);
    w.onopen = () => ok(true);
    w.onclose = () => setTimeout(open, 200);
  };
  open();
  setTimeout(() => no(new Error("witness socket did not open")), 10000);
})"""


async def _board_page(context: Any, port: int, page_log: list[dict[str, Any]], witness: Witness
                      ) -> tuple[Any, Any]:
    """A board page viewing the task with its witness socket open, and its CDP session (Page enabled)."""
    page = await context.new_page()
    cdp = await context.new_cdp_session(page)
    await cdp.send("Page.enable")
    # The board's CSP allows only its own origin (connect-src 'self'); the witness is another port.
    await cdp.send("Page.setBypassCSP", {"enabled": True})
    await attach_page_log(page, page_log)
    await page.add_init_script(LIFECYCLE_LOG)
    await open_board(page, port)
    await page.evaluate(OPEN_WITNESS, witness.url())
    return page, cdp


async def record_mode(mode: str, binary: str, *, freezes: tuple[float, ...] = FREEZES, settle: float = SETTLE,
                      away: bool = True) -> dict[str, Any]:
    """One presence mode's run (see the module docstring); returns the trace. ``freezes``, ``settle`` and
    ``away`` (the back/forward cache and discard steps) shorten it for the CI-sized browser test."""
    from playwright.async_api import async_playwright

    version, commit = run_versions(binary)
    hb, timeout, sweep = TIMING
    serve_args = ["--heartbeat-interval", str(hb), "--presence-timeout", str(timeout), "--sweep-interval",
                  str(sweep), *MODES[mode]]
    events: list[dict[str, Any]] = []
    page_log: list[dict[str, Any]] = []
    bfcache: list[dict[str, Any]] = []
    beats: list[float] = []

    def mark(kind: str, **extra: Any) -> None:
        events.append({"kind": kind, "at": time.time(), **extra})
        print(f"{time.strftime('%H:%M:%S')} {mode}: {kind} {extra or ''}", flush=True)

    witness = Witness()
    with RedisProcess() as redis_proc, tempfile.TemporaryDirectory(prefix="rtlib-lifecycle-") as profile:
        port, cdp_port = free_port(), free_port()
        serve_proc = start_serve(redis_proc.url, port, serve_args)
        chrome = start_chromium(binary, cdp_port, profile)
        stop, observer = asyncio.Event(), Observer(port)
        try:
            cdp_info = await asyncio.to_thread(wait_cdp, cdp_port)
            async with serve(witness.handler, "127.0.0.1", witness.port, ping_interval=None, compression=None), \
                    async_playwright() as pw:
                browser = await pw.chromium.connect_over_cdp(f"http://127.0.0.1:{cdp_port}", no_defaults=True)
                context = browser.contexts[0]
                watchers = [asyncio.create_task(observer.run(stop)),
                            asyncio.create_task(poll_beats(redis_proc.url, stop, beats))]
                other = await context.new_page()  # to show A again after a freeze (opened first: see below)
                await asyncio.sleep(1.0)  # the observer is in before alice joins
                page, cdp = await _board_page(context, port, page_log, witness)
                await page.bring_to_front()
                cdp.on("Page.backForwardCacheNotUsed", lambda p: bfcache.append({"at": time.time(), **p}))
                mark("viewing")
                await asyncio.sleep(settle)
                for secs in (*freezes, *((KEEPALIVE_FREEZE,) if mode == "timer" and away else ())):
                    await cdp.send("Page.setWebLifecycleState", {"state": "frozen"})
                    mark("freeze", seconds=secs)
                    await asyncio.sleep(secs)
                    await cdp.send("Page.setWebLifecycleState", {"state": "active"})
                    # Freezing hid the page (Chromium hides a page it freezes) and neither "active" nor bringing
                    # the already active target to the front shows it again (recorded: it stayed hidden, its
                    # timers on whole seconds). A user unfreezes a tab by showing it: B to the front, then A.
                    await other.bring_to_front()
                    await page.bring_to_front()
                    mark("resume", seconds=secs)
                    await asyncio.sleep(settle)
                control = None
                if away:
                    # Back/forward cache: away to another page of the origin and back.
                    mark("navigate-away")
                    await page.goto(f"http://127.0.0.1:{port}/app/query.html")
                    await asyncio.sleep(SETTLE)
                    mark("back")
                    await page.go_back(wait_until="commit")  # a restore from the cache fires no load
                    await other.bring_to_front()
                    await page.bring_to_front()
                    await asyncio.sleep(SETTLE)
                    mark("back-settled", restored_board=await page.evaluate("!!window.rtlibBoard"),
                         viewing=await page.evaluate("window.rtlibBoard ? [...window.rtlibBoard.client.viewing] : []"))
                    # Discard: close the target without unload handlers.
                    mark("close-target")
                    await page.close(run_before_unload=False)
                    await asyncio.sleep(SETTLE)
                    if mode == "timer":
                        _, crash_cdp = await _board_page(context, port, page_log, witness)
                        await asyncio.sleep(SETTLE)
                        mark("crash")
                        try:
                            await asyncio.wait_for(crash_cdp.send("Page.crash"), 5)
                        except Exception as exc:  # noqa: BLE001 - the renderer dies under the command
                            mark("crash-returned", error=type(exc).__name__)
                        await asyncio.sleep(SETTLE)
                        control = await _control_bfcache(context, port, page_log, bfcache, mark)
                stop.set()
                await asyncio.gather(*watchers)
                await browser.close()
        finally:
            stop_process(chrome)
            stop_process(serve_proc)
    return {
        "what": "a board page (rtlib-client.js) in headless Chromium viewing a task, frozen, cached and closed "
                "through the DevTools protocol, against rtlib serve at presence timing compressed 10x",
        "mode": mode, "rtlib_commit": commit, "browser": version, "browser_cdp": cdp_info.get("Browser"),
        "server_args": serve_args, "scale": SCALE,
        "presence": {"heartbeat_interval": hb, "timeout": timeout, "sweep_interval": sweep,
                     "leave_grace": GRACE if mode == "grace" else 0.0, "mode": "probe" if mode == "probe" else "timer"},
        "server_keepalive": {"ping_interval": 20.0, "ping_timeout": 20.0, "source": "websockets defaults; "
                             "rtlib.server.driver passes neither"},
        "events": events, "beats": beats, "bfcache_not_used": bfcache, "control_bfcache": control,
        "observer": [e for e in observer.events if e["userId"] == "alice"],
        "page_log": page_log, "witness": {"every": witness.every, "pings": witness.pings, "echoes": witness.echoes,
                                          "closes": witness.closes},
    }


async def _control_bfcache(context: Any, port: int, page_log: list[dict[str, Any]], bfcache: list[dict[str, Any]],
                           mark: Any) -> dict[str, Any]:
    """A page without a WebSocket, away and back: does this Chromium's back/forward cache work at all?"""
    page = await context.new_page()
    await page.add_init_script(LIFECYCLE_LOG)
    attach_log: list[dict[str, Any]] = []
    page.on("console", lambda m: attach_log.append(json.loads(m.text[len("rtlib-rec "):]))
            if m.text.startswith("rtlib-rec ") else None)
    cdp = await context.new_cdp_session(page)
    await cdp.send("Page.enable")
    reasons: list[dict[str, Any]] = []
    cdp.on("Page.backForwardCacheNotUsed", lambda p: reasons.append(p))
    await page.goto(f"http://127.0.0.1:{port}/app/board.css")
    await page.goto(f"http://127.0.0.1:{port}/app/query.css")
    mark("control-back")
    await page.go_back(wait_until="commit")
    await asyncio.sleep(1.0)
    shows = [e for e in attach_log if e["kind"] == "pageshow"]
    await page.close()
    return {"pages": ["/app/board.css", "/app/query.css"], "pageshow": shows, "not_used": reasons}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--modes", default=",".join(MODES), help="comma-separated: timer,probe,grace")
    ap.add_argument("--chromium", default=os.environ.get("RTLIB_CHROMIUM") or shutil.which("chromium")
                    or "/usr/bin/chromium")
    ap.add_argument("--out", type=Path, default=OUT_DIR)
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    for mode in args.modes.split(","):
        trace = asyncio.run(record_mode(mode, args.chromium))
        path = args.out / f"{mode}.json"
        path.write_text(json.dumps(trace, separators=(",", ":")) + "\n")
        print(f"wrote {path}: {len(trace['observer'])} observer events, {len(trace['witness']['pings'])} pings")
    from bench.presence.lifecycle_table import write_table  # noqa: PLC0415 - after the recording

    print(write_table(args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
