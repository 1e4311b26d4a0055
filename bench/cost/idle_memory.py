"""Memory per idle connection (scenario S4 of :mod:`bench.cost.scenarios`), and where rtlib's goes.

:func:`idle_case`: a fresh redis-server and server (rtlib or the toy) per target; after a warm-up (a few
connections opened, welcomed and closed, so lazy imports and first-use caches are paid), the server's
``VmRSS`` (``/proc/<pid>/status``) is read with 0 connections, then with N/2 and N idle connections (open,
welcomed, not sending; held by several ``loadgen`` receiver processes). Reported: ``(RSS(N) - RSS(0)) / N``
(the headline) and the marginal ``(RSS(N) - RSS(N/2)) / (N/2)``, which no warm-up effect can distort.

:func:`tracemalloc_experiment`: an in-process :class:`rtlib.server.driver.RealtimeServer` (in a child interpreter
that runs this module) traced by ``tracemalloc`` while a load-generator process opens N connections: the top
allocation sites per connection, the rtlib/websockets frame each was reached from, and the objects (by type)
that each connection adds.

Run alone: ``python -m bench.cost.idle_memory [--connections 10000] [--targets toy,rtlib] [--trace 2000]``
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import resource
import subprocess
import sys
import time
import tracemalloc
from collections import Counter
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from bench.harness.loadgen import WorkerHandle
from bench.harness.targets import REPO_DIR, TARGETS, ServerProcess, Target, rtlib_target
from rtlib.server.redis_process import RedisProcess, free_port

WARMUP_CONNECTIONS = 20
#: Connections per load-generator process (each holds one fd per connection).
PER_PROCESS = 2500


def raise_fd_limit(needed: int) -> None:
    """Lift RLIMIT_NOFILE (soft, and hard when root) to ``needed``; children (servers, workers) inherit it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < needed:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (needed, needed))
            return
        except (ValueError, PermissionError):
            needed = hard
    if soft != resource.RLIM_INFINITY and soft < needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


def rss_kib(pid: int) -> int:
    """VmRSS of ``pid`` in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def settled_rss(pid: int, timeout: float = 15.0, tolerance_kib: int = 32) -> int:
    """VmRSS once two readings 0.5 s apart differ by at most ``tolerance_kib`` (or at ``timeout``)."""
    deadline = time.monotonic() + timeout
    last = rss_kib(pid)
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = rss_kib(pid)
        if abs(now - last) <= tolerance_kib:
            return now
        last = now
    return last


def idle_urls(target: Target, port: int, count: int, workspaces: int, tag: str) -> list[str]:
    """``count`` URLs, each its own user, dealt round-robin over ``workspaces`` workspaces."""
    return [target.url(port, f"w{i % workspaces:04d}", f"{tag}{i}") for i in range(count)]


def welcomed(holders: list[WorkerHandle]) -> int:
    """Frames other than deliveries the holders received: one ``session.welcome`` per rtlib connection."""
    return sum(h.call("status")["other_frames"] for h in holders)


def hold(stack: ExitStack, target: Target, urls: list[str], tag: str, timeout: float = 120.0
         ) -> tuple[list[WorkerHandle], float]:
    """Open ``urls`` from ``ceil(len / PER_PROCESS)`` worker processes in parallel; wait until rtlib has
    welcomed every one (``target.welcome``: rtlib's session.welcome, Socket.IO's namespace connect; the
    forwarders send nothing). Returns the holders (kept open by ``stack``) and the seconds."""
    procs = max(1, -(-len(urls) // PER_PROCESS))
    holders = [stack.enter_context(WorkerHandle(f"{tag}-{i}", "receiver", (urls[i::procs], target.delivery_type)))
               for i in range(procs)]
    started = time.monotonic()
    for h in holders:
        h.submit("connect")
    replies = [h.result(timeout=timeout) for h in holders]
    failed = sum(r["failed"] for r in replies)
    if failed:
        raise RuntimeError(f"{failed}/{len(urls)} connections failed, e.g. {replies[0]['errors'] or replies}")
    if target.welcome:
        deadline = time.monotonic() + timeout
        while (got := welcomed(holders)) < len(urls):
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {got}/{len(urls)} connections welcomed")
            time.sleep(0.1)
    return holders, time.monotonic() - started


def warm_cycle(target: Target, port: int, workspaces: int) -> None:
    """Open, welcome and close a few connections: lazy imports and first-use caches are paid before RSS(0)."""
    with ExitStack() as warm:
        hold(warm, target, idle_urls(target, port, WARMUP_CONNECTIONS, workspaces, "warm"), "warm")


def idle_case(target: Target, connections: int, workspaces: int) -> dict[str, Any]:
    """RSS of the server with 0, N/2 and N idle connections (fresh Redis and server)."""
    raise_fd_limit(connections * 2 + 1024)
    with ExitStack() as stack:
        redis = stack.enter_context(RedisProcess())
        port = free_port()
        server = stack.enter_context(ServerProcess(target.command(port, redis.url), port))
        warm_cycle(target, port, workspaces)
        time.sleep(1.0)
        rss_start = rss_kib(server.pid)
        rss0 = settled_rss(server.pid)
        half = connections // 2
        _, first_s = hold(stack, target, idle_urls(target, port, half, workspaces, "a"), "half")
        rss_half = settled_rss(server.pid)
        _, second_s = hold(stack, target, idle_urls(target, port, connections - half, workspaces, "b"), "rest")
        rss_full = settled_rss(server.pid)
        server.check_alive()
        return {
            "target": target.name,
            "connections": connections,
            "workspaces": workspaces,
            "rss_kib": {"after_start": rss_start, "zero": rss0, "half": rss_half, "full": rss_full},
            "kib_per_connection": round((rss_full - rss0) / connections, 2),
            "marginal_kib_per_connection": round((rss_full - rss_half) / (connections - half), 2),
            "connect_s": round(first_s + second_s, 2),
            "redis_rss_kib": rss_kib(redis.pid) if redis.pid else None,
        }


# --- tracemalloc: where an rtlib connection's memory goes ----------------------------------------------------
def _short(filename: str) -> str:
    for marker in ("site-packages/", "/lib/python3", "/work/main/"):
        if marker in filename:
            return filename.split(marker, 1)[1].removeprefix(".11/").removeprefix("/")
    return filename


def _is_ours(filename: str) -> bool:
    return "/rtlib/" in filename or "/websockets/" in filename


def _type_counts() -> Counter[str]:
    return Counter(type(o).__name__ for o in gc.get_objects())


def _progress(started: float, what: str) -> None:
    print(f"[trace {time.monotonic() - started:6.1f}s] {what}", file=sys.stderr, flush=True)


async def _trace(connections: int, workspaces: int, frames: int, top: int) -> dict[str, Any]:
    from rtlib.protocol.config import ServerConfig
    from rtlib.server.driver import RealtimeServer

    secret = "bench-secret-not-for-production-0123456789"
    target = rtlib_target(secret)
    started = time.monotonic()
    with RedisProcess() as redis, ExitStack() as stack:
        # No presence sweeps: nothing to sweep, and stop() can hang when it cancels the sweeper in the middle
        # of a sweep's Redis call (the cancellation is lost; the snapshot's long pause makes that likely).
        server = await RealtimeServer(redis.url, secret, ServerConfig(sweep_interval=3600.0)).start()
        try:
            return await _traced_connections(server, stack, target, connections, workspaces, frames, top, started)
        finally:
            try:
                await asyncio.wait_for(server.stop(), 30)
            except TimeoutError:
                _progress(started, "server.stop() did not return within 30 s")


async def _traced_connections(server: Any, stack: ExitStack, target: Target, connections: int, workspaces: int,
                              frames: int, top: int, started: float) -> dict[str, Any]:
    port = server.port
    await asyncio.to_thread(warm_cycle, target, port, workspaces)
    urls = idle_urls(target, port, connections, workspaces, "c")
    await asyncio.sleep(1.0)
    gc.collect()
    types_before = _type_counts()
    tracemalloc.start(frames)
    before_traced = tracemalloc.get_traced_memory()[0]
    _progress(started, "tracing; connecting")
    holders, _ = await asyncio.to_thread(hold, stack, target, urls, "trace")
    while len(server.sessions) < connections:
        await asyncio.sleep(0.1)
    _progress(started, f"{connections} connections welcomed")
    await asyncio.sleep(1.0)
    gc.collect()
    snap = tracemalloc.take_snapshot().filter_traces([
        tracemalloc.Filter(False, tracemalloc.__file__),
        tracemalloc.Filter(False, "<frozen importlib._bootstrap*>"),
    ])
    traced = tracemalloc.get_traced_memory()[0] - before_traced
    tracemalloc.stop()
    types_after = _type_counts()
    # Under tracemalloc (CPython 3.11) every ServerConnection gets a real __dict__ instead of inline attribute
    # values (~1.6 KiB; with 2,000 connections charged to rtlib's `connection.rtlib = ...`); an untraced
    # server has none. Counted here so the report can discount it.
    conns = [p.connection for room in server.fanout.rooms.values() for p in room.values()]
    materialized = sum(any(isinstance(r, dict) and "protocol" in r for r in gc.get_referents(c)) for c in conns)
    _progress(started, "snapshot taken")
    # Which rtlib/websockets line each allocation site was reached from (the most recent such frame).
    via: dict[tuple[str, int], Counter[str]] = {}
    for stat in snap.statistics("traceback"):
        site = stat.traceback[-1] if len(stat.traceback) else None
        if site is None:
            continue
        # The nearest rtlib frame if any, else the nearest websockets frame, other than the site itself.
        frames_in = [f for f in list(stat.traceback)[:-1] if _is_ours(f.filename)]
        ours = [f for f in frames_in if "/rtlib/" in f.filename] or frames_in
        caller = f"{_short(ours[-1].filename)}:{ours[-1].lineno}" if ours else "-"
        via.setdefault((site.filename, site.lineno), Counter())[caller] += stat.size
    sites = []
    for stat in snap.statistics("lineno")[:top]:
        frame = stat.traceback[-1]
        callers = via.get((frame.filename, frame.lineno), Counter())
        sites.append({
            "site": f"{_short(frame.filename)}:{frame.lineno}",
            "bytes_per_connection": round(stat.size / connections, 1),
            "blocks_per_connection": round(stat.count / connections, 2),
            "via": [f"{c} ({s / connections:.0f} B)" for c, s in callers.most_common(2)],
        })
    by_file = [{"file": _short(s.traceback[-1].filename), "bytes_per_connection": round(s.size / connections, 1)}
               for s in snap.statistics("filename")[:10]]
    types = [{"type": t, "per_connection": round(n / connections, 2)}
             for t, n in (types_after - types_before).most_common(15)]
    _progress(started, "statistics done")
    for h in holders:
        await asyncio.to_thread(h.call, "finish")
    _progress(started, "clients closed")
    return {
        "connections": connections,
        "workspaces": workspaces,
        "traced_bytes_per_connection": round(traced / connections, 1),
        "top_sites": sites,
        "by_file": by_file,
        "gc_objects_per_connection": types,
        "materialized_instance_dicts": f"{materialized}/{len(conns)}",
    }


def tracemalloc_experiment(connections: int, workspaces: int, frames: int = 12, top: int = 20) -> dict[str, Any]:
    """Run :func:`_trace` in a child interpreter (tracing stays out of the harness) and return its JSON."""
    raise_fd_limit(connections * 2 + 1024)
    argv = [sys.executable, "-m", "bench.cost.idle_memory", "--trace-child", str(connections), "--workspaces",
            str(workspaces), "--frames", str(frames), "--top", str(top)]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=120 + connections / 10, check=False,
                              cwd=REPO_DIR)
    except subprocess.TimeoutExpired as exc:
        raise RuntimeError(f"tracemalloc experiment timed out; its progress:\n{exc.stderr}") from None
    if done.returncode != 0:
        raise RuntimeError(f"tracemalloc experiment failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# --- reporting and command line ------------------------------------------------------------------------------
def markdown(cases: list[dict[str, Any]], trace: dict[str, Any] | None) -> list[str]:
    lines = ["| target | connections | RSS 0 conns MiB | RSS N/2 MiB | RSS N MiB | KiB/conn | marginal KiB/conn |"
             " connect s |", "|---|---|---|---|---|---|---|---|"]
    for c in cases:
        if "error" in c:
            lines.append(f"| {c['target']} | failed: {c['error'].splitlines()[0][:200]} |")
            continue
        r = c["rss_kib"]
        lines.append(f"| {c['target']} | {c['connections']:,} in {c['workspaces']} workspaces | "
                     f"{r['zero'] / 1024:.1f} | {r['half'] / 1024:.1f} | {r['full'] / 1024:.1f} | "
                     f"**{c['kib_per_connection']:.1f}** | {c['marginal_kib_per_connection']:.1f} | "
                     f"{c['connect_s']:.1f} |")
    if trace:
        lines += ["", f"tracemalloc, in-process RealtimeServer, {trace['connections']:,} idle connections: "
                  f"{trace['traced_bytes_per_connection'] / 1024:.1f} KiB traced per connection (Python "
                  "allocations only; RSS also holds allocator overhead and fragmentation).", "",
                  "| allocation site | B/conn | blocks/conn | reached from (rtlib/websockets frame) |",
                  "|---|---|---|---|"]
        lines += [f"| `{s['site']}` | {s['bytes_per_connection']:,.0f} | {s['blocks_per_connection']:.1f} | "
                  f"{'; '.join(s['via'])} |" for s in trace["top_sites"]]
        lines += ["", "By file: " + ", ".join(f"`{f['file']}` {f['bytes_per_connection']:,.0f} B"
                                               for f in trace["by_file"]),
                  "", "GC-tracked objects added per connection: " + ", ".join(
                      f"{t['type']} {t['per_connection']:g}" for t in trace["gc_objects_per_connection"]),
                  "", f"Caveat: under tracemalloc, {trace.get('materialized_instance_dicts', '?')} ServerConnection "
                  "objects had a materialized instance `__dict__` (~1.6 KiB each; with 2,000 connections it is "
                  "charged to `connection.rtlib = ...` in `rtlib/server/driver.py`); without tracing none do (checked "
                  "with gc.get_referents), so those bytes are a tracing artifact, not RSS."]
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=10_000)
    parser.add_argument("--workspaces", type=int, default=100)
    parser.add_argument("--targets", default="toy,rtlib")
    parser.add_argument("--trace", type=int, default=2000, help="connections for the tracemalloc run (0: skip)")
    parser.add_argument("--trace-child", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--frames", type=int, default=12, help=argparse.SUPPRESS)
    parser.add_argument("--top", type=int, default=20, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.trace_child:
        print(json.dumps(asyncio.run(_trace(args.trace_child, args.workspaces, args.frames, args.top))))
        return 0
    cases = [idle_case(TARGETS[name](), args.connections, args.workspaces) for name in args.targets.split(",")]
    trace = tracemalloc_experiment(args.trace, args.workspaces) if args.trace else None
    print("\n".join(markdown(cases, trace)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
