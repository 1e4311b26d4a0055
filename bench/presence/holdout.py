"""Record a HOLDOUT set of hidden-tab traces: the Chromium model (``rtlib.clientmodels.chromium``) was fitted to
the nine hand-scheduled recordings in ``notebooks/data/chromium_*.json``; these schedules are drawn at random, so
the model's flap predictions can be judged out of sample (``bench/presence/holdout_report.py``).

Each tab's schedule is drawn from its own seeded generator: a first visible spell uniform in
:data:`FIRST_SHOW` (it sets the phase of the first hide against the page's timer grid and the monotonic minute),
then hidden spans log-uniform in :data:`HIDE` and visible gaps log-uniform in :data:`SHOW`, alternating, until
``--duration``; the last hide is cut short at the duration (or dropped if that leaves less than :data:`MIN_HIDE`,
or if the visible gap before it overran the duration), and :data:`LAST_SHOW` seconds visible end it (so no flap
is left half-announced at the end). Throttling works in real minutes, so presence timing is production
(30 s / 60 s / sweep 5 s) and nothing is compressed; hidden hours accumulate because many tabs run at once:
``--browsers`` Chromium processes (Debian's, started by hand and attached over CDP exactly like
``chromium_presence.py``), alternately serving presence mode ``timer`` and ``probe``, each with ``--tabs``
windows. Each window holds its page A (the board, its own user and task) and a blank page B brought to the front
to hide A: windows of one headless browser are independent (hiding A in one leaves the others' visibility alone;
checked in every step's recorded ``visibilityState``). One ``redis-server`` + ``rtlib serve`` + observer per mode.

    python -m bench.presence.holdout                       # ~32 min: 4 browsers x 5 tabs, 30 min of schedule
    python -m bench.presence.holdout --duration 120 --browsers 2 --tabs 2 --out /tmp/holdout   # a quick look

Writes one gzipped trace per tab (the format of ``chromium_presence.record``, plus a ``holdout`` block) to
``notebooks/data/holdout/`` and refreshes ``notebooks/data/manifest.json`` (``bench/presence/trace_manifest.py``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gzip
import json
import math
import os
import random
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.presence.chromium_presence import (
    ALTERNATIVES,
    CHROMIUM_FLAGS,
    PRODUCTION,
    ROOT,
    Observer,
    _timing_args,
    attach_page_log,
    make_trace,
    open_board,
    parse_schedule,
    poll_beats,
    run_schedule,
    run_versions,
    start_chromium,
    start_serve,
    wait_cdp,
)
from bench.presence.trace_manifest import write_manifest
from rtlib.server.redis_process import RedisProcess, free_port, stop_process

__all__ = ["FIRST_SHOW", "HIDE", "HOLDOUT_DIR", "LAST_SHOW", "MODES", "SHOW", "Tab", "draw_schedule", "main",
           "record_holdout", "tab_seed"]

HOLDOUT_DIR = ROOT / "notebooks" / "data" / "holdout"
MODES = ("timer", "probe")
HIDE = (10.0, 1200.0)  # hidden span, s, log-uniform: 10 s to 20 min
SHOW = (5.0, 120.0)  # visible gap between hides, s, log-uniform (an assumption; it matters little: a shown
# page beats at once in every mode, so only the hides' lengths and phases decide flaps)
FIRST_SHOW = (10.0, 60.0)  # uniform: spreads the first hide over the 30 s timer grid and the monotonic minute
LAST_SHOW = 15.0
MIN_HIDE = HIDE[0]  # a last hide cut shorter than this is dropped (the schedule ends visible)
LAYOUT = ("one window per tab: page A (the board) and a blank page B; B brought to the front of its window hides "
          "A. Several windows per headless Chromium process, all hidden and shown independently")


def tab_seed(seed: int, mode: str, browser: int, tab: int) -> str:
    """The seed of one tab's schedule (``random.Random`` hashes a str seed with SHA-512: stable across runs)."""
    return f"holdout:{seed}:{mode}:b{browser}:t{tab}"


def _log_uniform(rng: random.Random, lo: float, hi: float) -> float:
    return math.exp(rng.uniform(math.log(lo), math.log(hi)))


def draw_schedule(rng: random.Random, duration: float) -> str:
    """A ``chromium_presence`` schedule spec of about ``duration`` seconds (see the module docstring)."""
    first = round(rng.uniform(*FIRST_SHOW), 1)
    steps, t = [f"show:{first:g}"], first
    while True:
        hide = round(_log_uniform(rng, *HIDE), 1)
        left = round(duration - LAST_SHOW - t, 1)
        if hide >= left:  # the last hide, cut at the duration
            if left >= MIN_HIDE:
                steps.append(f"hide:{left:g}")
            break
        show = round(_log_uniform(rng, *SHOW), 1)
        steps += [f"hide:{hide:g}", f"show:{show:g}"]
        t += hide + show
    steps.append(f"show:{LAST_SHOW:g}")
    return ",".join(steps)


@dataclass
class Tab:
    """One page A with its blank page B, its user and task, its drawn schedule and what it recorded."""

    mode: str
    browser: int
    index: int
    seed: str
    schedule: str
    page_a: Any = None
    page_b: Any = None
    beats: list[float] = field(default_factory=list)
    page_log: list[dict[str, Any]] = field(default_factory=list)
    joined: float = 0.0
    timeline: list[dict[str, Any]] = field(default_factory=list)
    end: float = 0.0

    @property
    def name(self) -> str:
        return f"{self.mode}_b{self.browser}_t{self.index}"

    @property
    def user(self) -> str:
        return f"u{self.browser}x{self.index}"

    @property
    def task(self) -> str:
        return f"T-{100 * (self.browser + 1) + self.index}"


@dataclass
class Server:
    """A mode's ``redis-server``, ``rtlib serve`` and observer."""

    redis: RedisProcess
    port: int
    serve: Any
    observer: Observer
    args: list[str]


async def _open_tab(browser: Any, cdp: Any, tab: Tab, port: int) -> None:
    """Page A in a new window, page B in the same window behind it, the board loaded and viewing tab's task."""
    context = browser.contexts[0]
    async with context.expect_page() as new:
        await cdp.send("Target.createTarget", {"url": "about:blank", "newWindow": True})
    tab.page_a = await new.value
    await attach_page_log(tab.page_a, tab.page_log)
    tab.page_b = await context.new_page()  # opens in the newest window, A's
    await tab.page_a.bring_to_front()
    tab.joined = await open_board(tab.page_a, port, tab.user, tab.task)


async def _run_tab(tab: Tab) -> None:
    tab.timeline, tab.end = await run_schedule(tab.page_a, tab.page_b, parse_schedule(tab.schedule), tab.beats,
                                               label=f"{tab.name} ")


async def record_holdout(seed: int, duration: float, browsers: int, tabs: int, binary: str,
                         timing: tuple[float, float, float] = PRODUCTION) -> list[dict[str, Any]]:
    """Record every tab at once; returns one trace per tab (``chromium_presence.make_trace`` + ``holdout``)."""
    from playwright.async_api import async_playwright

    version, commit = run_versions(binary)
    clock = {"monotonic": time.monotonic(), "wall": time.time()}
    clock["offset"] = clock["monotonic"] - clock["wall"]
    modes = [MODES[b % len(MODES)] for b in range(browsers)]
    plan = [Tab(modes[b], b, t, tab_seed(seed, modes[b], b, t), "") for b in range(browsers) for t in range(tabs)]
    for tab in plan:
        tab.schedule = draw_schedule(random.Random(tab.seed), duration)
    stop = asyncio.Event()
    servers: dict[str, Server] = {}
    chromes: list[Any] = []
    with contextlib.ExitStack() as stack:
        profiles = [stack.enter_context(tempfile.TemporaryDirectory(prefix="rtlib-holdout-")) for _ in modes]
        try:
            for mode in sorted(set(modes)):
                redis_proc = stack.enter_context(RedisProcess())
                port = free_port()
                args = [*_timing_args(timing), *ALTERNATIVES[mode]]
                servers[mode] = Server(redis_proc, port, start_serve(redis_proc.url, port, args), Observer(port), args)
            watchers = [asyncio.create_task(s.observer.run(stop)) for s in servers.values()]
            watchers += [asyncio.create_task(poll_beats(servers[t.mode].redis.url, stop, t.beats, task=t.task,
                                                        user=t.user)) for t in plan]
            cdp_ports = [free_port() for _ in modes]
            chromes += [start_chromium(binary, p, prof) for p, prof in zip(cdp_ports, profiles, strict=True)]
            cdps = [await asyncio.to_thread(wait_cdp, p) for p in cdp_ports]
            await asyncio.sleep(1.0)  # the observers are in before anyone joins
            async with async_playwright() as pw:
                conns = [await pw.chromium.connect_over_cdp(f"http://127.0.0.1:{p}", no_defaults=True)
                         for p in cdp_ports]
                runs = []
                for tab in plan:  # each tab starts its schedule as soon as it is open: starts are staggered
                    conn = conns[tab.browser]
                    await _open_tab(conn, await conn.new_browser_cdp_session(), tab, servers[tab.mode].port)
                    runs.append(asyncio.create_task(_run_tab(tab)))
                await asyncio.gather(*runs)
                stop.set()
                await asyncio.gather(*watchers)
                welcomes = [await t.page_a.evaluate("window.rtlibBoard.client.welcome") for t in plan]
                for conn in conns:
                    await conn.close()
        finally:
            stop.set()
            for proc in chromes:
                stop_process(proc)
            for server in servers.values():
                stop_process(server.serve)
    out = []
    for tab, welcome in zip(plan, welcomes, strict=True):
        server = servers[tab.mode]
        # The page stays open and beating until the last tab is done: its trace ends where its schedule did,
        # as a chromium_presence.record() trace does (the model replays up to ``end``).
        seen = [e for e in server.observer.events if e["userId"] == tab.user and e["received"] <= tab.end]
        trace = make_trace(alternative=tab.mode, commit=commit, version=version, cdp=cdps[tab.browser],
                           serve_args=server.args, timing=timing, welcome=welcome, clock=clock,
                           schedule=tab.schedule, joined=tab.joined, timeline=tab.timeline, end=tab.end,
                           beats=[b for b in tab.beats if b <= tab.end],
                           page_log=[e for e in tab.page_log if e["wall"] <= tab.end], observer=seen, user=tab.user)
        trace["holdout"] = {"seed": seed, "tab_seed": tab.seed, "name": tab.name, "browser_process": tab.browser,
                            "tab": tab.index, "processes": browsers, "tabs_per_process": tabs,
                            "user": tab.user, "task": tab.task, "layout": LAYOUT, "duration": duration,
                            "hide_log_uniform": HIDE, "show_log_uniform": SHOW, "first_show_uniform": FIRST_SHOW,
                            "last_show": LAST_SHOW}
        trace["chromium_flags"] = list(CHROMIUM_FLAGS)
        out.append(trace)
    return out


def write_traces(traces: list[dict[str, Any]], out_dir: Path) -> list[Path]:
    """One ``<name>.json.gz`` per trace (gzip mtime 0: the same trace gives the same bytes)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for trace in traces:
        path = out_dir / f"{trace['holdout']['name']}.json.gz"
        with gzip.GzipFile(path, "wb", mtime=0) as f:
            f.write((json.dumps(trace, indent=1) + "\n").encode())
        paths.append(path)
    return paths


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seed", type=int, default=2112)
    ap.add_argument("--duration", type=float, default=1800.0, help="seconds of schedule per tab")
    ap.add_argument("--browsers", type=int, default=4, help="Chromium processes, alternately timer and probe")
    ap.add_argument("--tabs", type=int, default=5, help="windows (page A + page B) per Chromium process")
    ap.add_argument("--chromium", default=os.environ.get("RTLIB_CHROMIUM") or shutil.which("chromium")
                    or "/usr/bin/chromium")
    ap.add_argument("--out", type=Path, default=HOLDOUT_DIR)
    args = ap.parse_args(argv)
    started = time.time()
    traces = asyncio.run(record_holdout(args.seed, args.duration, args.browsers, args.tabs, args.chromium))
    paths = write_traces(traces, args.out)
    for trace, path in zip(traces, paths, strict=True):
        bad = [s for s in trace["schedule"] if s["visibilityState"] != ("hidden" if s["state"] == "hide"
                                                                         else "visible")]
        print(f"{path.name}: {len(trace['beats'])} beats, {len(trace['flaps'])} flaps"
              + (f", {len(bad)} steps NOT in the state asked for" if bad else ""))
    if args.out == HOLDOUT_DIR:
        print(f"wrote {write_manifest()}")
    print(f"{len(paths)} traces in {args.out}, {(time.time() - started) / 60:.1f} min wall")
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
