"""What keeping presence alive costs, live: client-timer heartbeats vs server probes (issue 10 §1).

One ``rtlib serve`` and a real redis-server per presence mode; ``--connections`` viewers (one user each, 50 per
workspace) on one lean epoll client (:mod:`bench.harness.wsclient`: so the client's own CPU stays small on this
2-core machine).
Each viewer first views 1 task, then 3. Time is compressed (``--interval`` 2 s heartbeat, timeout 4 s, sweep 2 s)
so a short window holds many beats; the cost per beat is what matters, and the table also scales it to 30 s.
(At 1 s / 2 s and 2,000 viewers this shared machine fell behind: late beats flapped and the flaps' fan-out fed
the overload, so the default is 2 s / 4 s. The presence events column shows whether a run flapped.)

* timer: every connection sends ``presence.heartbeat`` for each viewed task every interval (phases spread
  evenly over the interval, as independent clients are);
* probe: the server sends each viewing connection ``presence.probe`` every interval and the client answers
  ``presence.pong`` at once (one frame each way per connection, whatever the number of tasks).

Measured over a steady window per case: frames/s and bytes/s each way (WebSocket frames, headers included, as
the client counts them), server and redis-server CPU from ``/proc`` (CPU seconds per viewer-hour), Redis
commands/s from ``INFO commandstats``, and the presence events the viewers received (a flap would show here).
The machine is shared: the load average is in the output.

    python -m bench.cost.presence_cost [--connections 2000 --window 15]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import redis as redis_py

from bench.harness.procstat import process_cpu_seconds
from bench.harness.wsclient import Poller, WsConn, open_connections
from rtlib.server.auth import issue_token
from rtlib.server.redis_process import RedisProcess, die_with_parent, free_port, stop_process

RESULTS = Path(__file__).resolve().parents[1] / "results"
SECRET = "presence-cost-bench-secret-0123456789abcdef"
PER_WORKSPACE = 50
#: Commands the server sends itself (the rest of commandstats are run inside its Lua scripts).
ROUND_TRIPS = {"evalsha", "eval", "publish", "ping"}


def _header(n: int, masked: bool) -> int:
    """WebSocket frame header bytes for a payload of ``n`` bytes (client frames carry a 4-byte mask)."""
    return (2 if n < 126 else 4 if n < 65536 else 10) + (4 if masked else 0)


class Viewers:
    """The viewers' side: counts what goes each way and answers probes from the frame handler."""

    def __init__(self, conns: list[WsConn], workspaces: list[str]) -> None:
        self.conns, self.ws = conns, workspaces
        self.sent = self.sent_bytes = self.recv = self.recv_bytes = 0
        self.kinds: dict[str, int] = {}
        self.next_beat: list[float] = []  # timer mode: when each connection beats next
        self.turn = 0  # ... and which connection is due first
        for c in conns:
            c.on_text = self.on_text

    def send(self, conn: WsConn, payload: bytes) -> None:
        if conn.send_text(payload):
            self.sent += 1
            self.sent_bytes += len(payload) + _header(len(payload), True)

    def on_text(self, conn: WsConn, payload: bytes, _now: int) -> None:
        self.recv += 1
        self.recv_bytes += len(payload) + _header(len(payload), False)
        kind = json.loads(payload)["type"]
        self.kinds[kind] = self.kinds.get(kind, 0) + 1
        if kind == "presence.probe":  # answered in the handler, as a hidden tab's onmessage does
            seq = json.loads(payload)["payload"]["seq"]
            self.send(conn, b'{"type":"presence.pong","workspaceId":"%s","payload":{"seq":%d}}'
                      % (self.ws[conn.deliveries].encode(), seq))

    def reset(self) -> None:
        self.sent = self.sent_bytes = self.recv = self.recv_bytes = 0
        self.kinds = {}


def _serve(port: int, redis_url: str, mode: str, interval: float) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "rtlib.cli", "serve", "--port", str(port), "--redis", redis_url,
         "--presence-mode", mode, "--heartbeat-interval", str(interval), "--presence-timeout", str(2 * interval),
         "--sweep-interval", str(interval), "--handshake-rate", "100000", "--handshake-burst", "100000",
         "--log-level", "WARNING"],
        env={**os.environ, "RTLIB_SECRET": SECRET}, stdout=subprocess.PIPE, text=True, preexec_fn=die_with_parent)
    assert proc.stdout is not None and "serving" in proc.stdout.readline()
    return proc


def _pump(poller: Poller, viewers: Viewers, until: float, mode: str, tasks: int, interval: float,
          t0: float) -> None:
    """Run the viewers until ``until``: read frames; in timer mode beat each task of connection ``i`` at
    ``t0 + (i / n + k) * interval`` (the schedule carries over from one call to the next)."""
    n = len(viewers.conns)
    if len(viewers.next_beat) != n:
        viewers.next_beat = [t0 + (i / n) * interval for i in range(n)]
    nxt, i = viewers.next_beat, viewers.turn
    while (now := time.monotonic()) < until:
        if mode == "timer":
            while nxt[i] <= now:  # connections are due in index order within each interval
                c = viewers.conns[i]
                ws = viewers.ws[i].encode()
                for t in range(tasks):
                    viewers.send(c, b'{"type":"presence.heartbeat","workspaceId":"%s","payload":{"taskId":"t%d"}}'
                                 % (ws, t))
                nxt[i] += interval
                i = (i + 1) % n
            wait = min(until, nxt[i]) - time.monotonic()
        else:
            wait = until - time.monotonic()
        poller.poll(max(0.0, min(wait, 0.05)))
    viewers.turn = i


def _commands(client: Any) -> dict[str, int]:
    """Calls per Redis command so far (commands run inside scripts count too; ``info`` is this harness's)."""
    return {k.removeprefix("cmdstat_"): v["calls"] for k, v in client.info("commandstats").items()
            if k != "cmdstat_info"}


def run_mode(mode: str, args: argparse.Namespace) -> list[dict[str, Any]]:
    rows = []
    with RedisProcess() as rp:
        port = free_port()
        server = _serve(port, rp.url, mode, args.interval)
        rc = redis_py.Redis.from_url(rp.url)
        try:
            workspaces = [f"w{i // PER_WORKSPACE}" for i in range(args.connections)]
            urls = [f"ws://127.0.0.1:{port}/ws?workspace={w}&token={issue_token(SECRET, f'u{i}', [w], 3600)}"
                    for i, w in enumerate(workspaces)]
            conns, errors = open_connections(urls, None)
            if errors:  # (every connection must open, or the per-viewer numbers mean nothing)
                raise RuntimeError(f"{len(errors)} connections failed: {errors[:3]}")
            for i, c in enumerate(conns):
                c.deliveries = i  # index into workspaces, for the pong
            viewers, poller = Viewers(conns, workspaces), Poller()
            for c in conns:
                poller.add(c)
            joined, t0 = 0, time.monotonic()
            for tasks in (1, 3):
                # Joins paced at --join-rate: each fans out to the workspace (50 frames), and 2,000 at once kept
                # the loop busy long enough for its own pub/sub health check to give up (1011 for everyone).
                for first in range(0, len(conns), 50):
                    for i in range(first, min(len(conns), first + 50)):
                        for t in range(joined, tasks):
                            viewers.send(conns[i], b'{"type":"presence.join","workspaceId":"%s","payload":'
                                         b'{"taskId":"t%d"}}' % (workspaces[i].encode(), t))
                    _pump(poller, viewers, time.monotonic() + 50 / args.join_rate, mode, joined, args.interval, t0)
                joined = tasks
                _pump(poller, viewers, time.monotonic() + args.warmup, mode, tasks, args.interval, t0)  # settle
                viewers.reset()
                cmd0, cpu0 = _commands(rc), (process_cpu_seconds(server.pid), process_cpu_seconds(rp.pid or 0))
                w0 = time.monotonic()
                _pump(poller, viewers, w0 + args.window, mode, tasks, args.interval, t0)
                span = time.monotonic() - w0
                cpu1, cmd1 = (process_cpu_seconds(server.pid), process_cpu_seconds(rp.pid or 0)), _commands(rc)
                calls = {k: v - cmd0.get(k, 0) for k, v in cmd1.items() if v - cmd0.get(k, 0) > 0}
                viewer_h = args.connections * span / 3600
                rows.append({
                    "mode": mode, "tasks": tasks, "connections": len(conns), "interval_s": args.interval,
                    "window_s": round(span, 2),
                    "frames_in_per_s": viewers.sent / span, "bytes_in_per_s": viewers.sent_bytes / span,
                    "frames_out_per_s": viewers.recv / span, "bytes_out_per_s": viewers.recv_bytes / span,
                    "server_cpu_s_per_viewer_h": (cpu1[0] - cpu0[0]) / viewer_h,
                    "redis_cpu_s_per_viewer_h": (cpu1[1] - cpu0[1]) / viewer_h,
                    "server_cpu_pct": 100 * (cpu1[0] - cpu0[0]) / span,
                    # Round trips: scripts plus plain commands; the calls inside scripts are in redis_calls.
                    "redis_cmds_per_s": sum(v for k, v in calls.items() if k in ROUND_TRIPS) / span,
                    "redis_calls_per_s": sum(calls.values()) / span,
                    "redis_calls": {k: round(v / span, 1) for k, v in sorted(calls.items())},
                    "frames_received": dict(sorted(viewers.kinds.items())),
                    "open_at_end": sum(not c.closed for c in conns),
                    "loadavg": round(os.getloadavg()[0], 2)})
                print(json.dumps(rows[-1]), flush=True)
            for c in conns:
                c.close()
            poller.close()
        finally:
            rc.close()
            stop_process(server)
    return rows


def markdown(rows: list[dict[str, Any]], args: argparse.Namespace) -> str:
    scale = 30.0 / args.interval
    lines = ["# Presence cost, live: client-timer heartbeats vs server probes", "",
             f"One `rtlib serve` + redis-server per mode, {args.connections} viewers (one user each, {PER_WORKSPACE} "
             f"per workspace) on one epoll client, heartbeat interval {args.interval:g} s (timeout "
             f"{2 * args.interval:g} s, sweep {args.interval:g} s), {args.window:g} s steady window per case. "
             "'in' = client to server. Frames and bytes are WebSocket frames with their headers. CPU s per "
             f"viewer-hour are at the compressed interval; at 30 s they are {scale:g}× smaller (the work is per "
             "beat). 2 shared cores: load average per case in the last column.", "",
             "| mode | tasks/viewer | frames/s in | frames/s out | KiB/s in | KiB/s out | server CPU % | "
             "server CPU s/viewer-h | at 30 s | Redis CPU s/viewer-h | Redis round trips/s | per viewer-beat | "
             "commands/s incl. in scripts | presence events recv | open at end | load |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        beats = r["connections"] / r["interval_s"]
        events = sum(v for k, v in r["frames_received"].items() if k in ("presence.joined", "presence.left"))
        lines.append(
            f"| {r['mode']} | {r['tasks']} | {r['frames_in_per_s']:.0f} | {r['frames_out_per_s']:.0f} | "
            f"{r['bytes_in_per_s'] / 1024:.0f} | {r['bytes_out_per_s'] / 1024:.0f} | {r['server_cpu_pct']:.0f} | "
            f"{r['server_cpu_s_per_viewer_h']:.3f} | {r['server_cpu_s_per_viewer_h'] / scale:.4f} | "
            f"{r['redis_cpu_s_per_viewer_h']:.3f} | {r['redis_cmds_per_s']:.0f} | "
            f"{r['redis_cmds_per_s'] / beats:.2f} | {r['redis_calls_per_s']:.0f} | {events} | "
            f"{r['open_at_end']} | {r['loadavg']} |")
    by = {(r["mode"], r["tasks"]): r for r in rows}
    lines.append("")
    for tasks in (1, 3):
        t, p = by.get(("timer", tasks)), by.get(("probe", tasks))
        if t and p and t["frames_in_per_s"] > 0 and t["redis_cmds_per_s"] > 0:
            lines.append(f"- {tasks} task(s) per viewer: probe / timer = "
                         f"{(p['frames_in_per_s'] + p['frames_out_per_s']) / t['frames_in_per_s']:.2f}× frames "
                         f"(both ways), {(p['bytes_in_per_s'] + p['bytes_out_per_s']) / t['bytes_in_per_s']:.2f}× "
                         f"bytes, {p['server_cpu_s_per_viewer_h'] / t['server_cpu_s_per_viewer_h']:.2f}× server CPU, "
                         f"{p['redis_cmds_per_s'] / t['redis_cmds_per_s']:.2f}× Redis round trips.")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--connections", type=int, default=2000)
    p.add_argument("--interval", type=float, default=2.0, help="heartbeat interval, s (timeout 2x, sweep 1x)")
    p.add_argument("--window", type=float, default=15.0, help="measured seconds per case")
    p.add_argument("--warmup", type=float, default=10.0, help="after the joins (their fan-out) before measuring")
    p.add_argument("--join-rate", type=float, default=200.0, help="joins per second while the viewers arrive")
    p.add_argument("--out", type=Path, default=RESULTS / "presence_cost")
    args = p.parse_args(argv)
    started = os.getloadavg()[0]
    rows = [r for mode in ("timer", "probe") for r in run_mode(mode, args)]
    meta = {"params": vars(args) | {"out": str(args.out)}, "loadavg_at_start": started,
            "loadavg_at_end": os.getloadavg()[0], "cpus": os.cpu_count()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    text = markdown(rows, args) + (f"\nLoad average (1 min) at start {started:.2f}, at end "
                                   f"{meta['loadavg_at_end']:.2f}, {meta['cpus']} CPUs.\n")
    args.out.with_suffix(".md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
