"""Failover of a Redis Cluster master, measured per ``--durability`` mode (issue 22 item 4).

Each run is a fresh local cluster of 3 masters with a replica each (``cluster-node-timeout`` 1 s) and two
``rtlib serve`` instances on it in one durability mode. Editors (:mod:`bench.resilience.failover_clients`: one
socket each, a ``task.update`` every 50 ms without waiting for the previous answer, never retried) are spread
over 12 workspaces, 4 on each master's slots, half on each instance. After ``--steady`` seconds the master of
shard 0 is ``SIGKILL``ed; its replica is promoted and the instances re-route (the outage ride-through). The run
goes on until shard 0's updates are acked again, plus 2 s; the killed node is then started again (it rejoins as a
replica of the promoted one). Measured per run:

* client sockets closed (target 0);
* acked updates lost: acked ``(task, version, token)`` absent from the workspace's history on the masters after
  the failover (:func:`~bench.resilience.failover_clients.acked_lost`);
* ack latency p50/p99 of updates sent in the steady state (the mode's cost, no burst or failover in it);
* answers ``unavailable`` / ``not_replicated`` / none (``unavailable`` also split: the killed shard's workspaces,
  the others').

``--burst N``: right before the kill each editor of shard 0 sends N updates back to back, ``--pad`` bytes more
each; the kill lands as soon as the first of them is acked, while they are being acked and replicated. On one
host a killed master's replica still reads what was already in its socket, so ``async`` loses only what the master
had not yet written to the replica's socket: a window of microseconds, which a steady trickle or a burst seldom
hits. ``lag`` (``--lag`` s): the same burst while shard 0's replica is stopped (``SIGSTOP``: a stalled host or a
slow link, so the replica is behind by more than its socket buffers hold), the master killed after it, the
replica continued and promoted: what an asynchronous replica behind its master loses.
Modes alternate run by run.

    python -m bench.resilience.failover                 # 3 runs per mode and variant: bench/results/failover.*
    python -m bench.resilience.failover --runs 1 --variants steady --out /tmp/fo    # smoke
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import signal
import statistics
import time
from pathlib import Path
from typing import Any

from bench.resilience.failover_clients import Editor, acked_lost
from rtlib.lab.cluster import Cluster
from rtlib.server import keyspace
from rtlib.server.auth import issue_token
from rtlib.server.cluster_client import slot_of
from rtlib.server.redis_cluster import RedisClusterProcess

__all__ = ["main", "run_once", "wilson"]

MODES = ("async", "replica")
RESULTS = Path(__file__).resolve().parents[1] / "results"


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95 % Wilson interval of a rate ``k / n`` (``(0, 0)`` for ``n = 0``); at ``k = 0`` its upper bound is about
    the rule of three's ``3 / n``."""
    if n == 0:
        return 0.0, 0.0
    p, d = k / n, 1 + z * z / n
    mid, half = (p + z * z / (2 * n)) / d, z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return max(0.0, mid - half), min(1.0, mid + half)


def _workspaces(ranges: list[tuple[int, int]], per_shard: int) -> list[tuple[int, str]]:
    """``(shard, workspace)``: ``per_shard`` workspaces whose slot is in each master's range."""
    out: list[tuple[int, str]] = []
    for shard, (lo, hi) in enumerate(ranges):
        k = 0
        while sum(1 for s, _ in out if s == shard) < per_shard:
            ws, k = f"s{shard}w{k}", k + 1
            if lo <= slot_of(keyspace.history_key(ws)) <= hi:
                out.append((shard, ws))
    return out


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


async def _drive(lab: Cluster, redis: RedisClusterProcess, steady: float, burst: int, pad: int, lag: float,
                 period: float) -> dict[str, Any]:
    placed = _workspaces(redis.slot_ranges(), 4)
    editors = [Editor(lab.urls[n % 2], issue_token(lab.secret, f"u{n}", [ws], 3600), ws, f"u{n}", period=period)
               for n, (_, ws) in enumerate(placed)]
    shard0 = {ws for s, ws in placed if s == 0}
    jobs = [asyncio.ensure_future(e.run()) for e in editors]
    await asyncio.sleep(steady)
    calm = time.monotonic()  # the steady state ends here (before any burst, stop or kill)
    replica = redis.nodes[redis.masters].pid  # shard 0's replica (replica j follows master j % masters)
    assert replica is not None
    if lag:  # the replica stops reading for `lag` s (a slow link, a stalled host) while the burst is written
        os.kill(replica, signal.SIGSTOP)
    if burst:  # the kill lands as soon as the burst's first ack is back: its writes are being acked then
        started = time.monotonic()
        for e in editors:
            if e.ws in shard0:
                e.burst(burst, pad)
        while time.monotonic() - started < 2 and not _answered(editors, shard0, started, ("ack",)):
            await asyncio.sleep(0.0005)
        await asyncio.sleep(lag)
    killed = time.monotonic()
    pid = redis.nodes[0].pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    await asyncio.to_thread(redis.nodes[0].crash)  # reaps it
    if lag:
        os.kill(replica, signal.SIGCONT)
    # Re-routed: the killed shard's updates are answered again (acked; in replica mode not_replicated, as the
    # promoted node has no replica until the killed one is back).
    recovered = await _until(editors, shard0, killed, ("ack", "not_replicated"))
    await asyncio.sleep(1.0)
    await asyncio.to_thread(redis.nodes[0].start)  # back as a replica of the promoted node
    restarted = time.monotonic()
    replicated_again = await _until(editors, shard0, restarted, ("ack",))
    await asyncio.sleep(1.0)
    for e in editors:
        await e.stop(drain=0)
    await asyncio.sleep(2.0)
    for job in jobs:
        job.cancel()
    acked, lost, missing = await asyncio.to_thread(acked_lost, redis.nodes[1].url, editors)
    sent = [s for e in editors for s in e.sent.values()]
    before = [s.latency * 1000 for s in sent if s.outcome == "ack" and s.sent < calm - 0.2 and s.latency]
    outcomes: dict[str, int] = {}
    for s in sent:
        outcomes[s.outcome or "none"] = outcomes.get(s.outcome or "none", 0) + 1
    # Where the failover was felt: `unavailable` answers to the killed shard's workspaces and to the others'
    unavailable = {group: sum(1 for s in sent if s.outcome == "unavailable" and (s.ws in shard0) == inside)
                   for group, inside in (("shard0", True), ("others", False))}
    return {"sent": len(sent), "acked": acked, "lost": lost, "lost_shard0": sum(m.ws in shard0 for m in missing),
            "unavailable_by_shard": unavailable,
            "closed": sum(len(e.closes) for e in editors), "outcomes": outcomes,
            "recovered_s": recovered, "acked_again_after_restart_s": replicated_again, "steady_acks": len(before),
            "ack_p50_ms": _pct(before, 0.5), "ack_p99_ms": _pct(before, 0.99),
            "acked_shard0_last_200ms": sum(1 for s in sent if s.outcome == "ack" and s.ws in shard0
                                           and killed - 0.2 <= s.sent < killed)}


def _answered(editors: list[Editor], shard0: set[str], since: float, outcomes: tuple[str, ...]) -> float | None:
    """When the first update to ``shard0`` sent after ``since`` was answered with one of ``outcomes``."""
    times = [s.sent + (s.latency or 0) for e in editors if e.ws in shard0 for s in list(e.sent.values())
             if s.sent > since and s.outcome in outcomes]
    return min(times) if times else None


async def _until(editors: list[Editor], shard0: set[str], since: float, outcomes: tuple[str, ...]) -> float | None:
    """Seconds from ``since`` to that answer (None: not within 30 s)."""
    while time.monotonic() - since < 30:
        await asyncio.sleep(0.05)
        if (at := _answered(editors, shard0, since, outcomes)) is not None:
            return at - since
    return None


def _variant(burst: int, lag: float) -> str:
    return "lagging replica" if lag else "burst" if burst else "steady"


def run_once(mode: str, steady: float, burst: int, pad: int = 0, lag: float = 0.0, period: float = 0.05
             ) -> dict[str, Any]:
    """One fresh cluster, one kill; the run's measures."""
    redis = RedisClusterProcess(masters=3, replicas=1, node_timeout=1.0).start()
    # A burst of 200 frames at once is within the budgets (rate and fan-out limits raised: they are not measured)
    lab = Cluster(instances=2, redis=redis.url, durability=mode, history_length=100_000, history_age=3600,
                  rate_limit=2000, rate_burst=2000, fanout_rate=64 * 2**20, fanout_burst=64 * 2**20,
                  byte_rate=64 * 2**20, byte_burst=64 * 2**20)
    try:
        lab.start()
        out = asyncio.run(_drive(lab, redis, steady, burst, pad, lag, period))
    finally:
        lab.close()
        redis.stop()
    return {"mode": mode, "variant": _variant(burst, lag), "burst": burst, "pad": pad, "lag": lag, **out}


def summarise(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for variant in dict.fromkeys(r["variant"] for r in runs):
        for mode in MODES:
            sel = [r for r in runs if r["mode"] == mode and r["variant"] == variant]
            if not sel:
                continue
            acked, lost = sum(r["acked"] for r in sel), sum(r["lost"] for r in sel)
            lo, hi = wilson(lost, acked)
            rows.append({"mode": mode, "variant": variant, "runs": len(sel), "closed": sum(r["closed"] for r in sel),
                         "acked": acked, "lost": lost, "lost_rate_ci95": [lo, hi],
                         "lost_per_run": [r["lost"] for r in sel],
                         "ack_p50_ms": statistics.median(r["ack_p50_ms"] for r in sel),
                         "ack_p99_ms": statistics.median(r["ack_p99_ms"] for r in sel),
                         "ack_p50_ms_runs": [round(r["ack_p50_ms"], 2) for r in sel],
                         "ack_p99_ms_runs": [round(r["ack_p99_ms"], 2) for r in sel],
                         "recovered_s": [r["recovered_s"] for r in sel],
                         "not_replicated": sum(r["outcomes"].get("not_replicated", 0) for r in sel),
                         "unavailable": sum(r["outcomes"].get("unavailable", 0) for r in sel),
                         "unanswered": sum(r["outcomes"].get("none", 0) for r in sel)})
    return rows


def markdown(rows: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    lines = ["# Failover of a Redis Cluster master, per durability mode", "",
             f"`python -m bench.resilience.failover` ({meta['when']}): {meta['note']}", "",
             "| variant | mode | runs | sockets closed | acked | acked lost | lost rate (95 % CI) | ack p50 ms "
             "| ack p99 ms | re-routed after (s) | not_replicated | unavailable | no answer |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lo, hi = r["lost_rate_ci95"]
        back = ", ".join(f"{x:.1f}" if x is not None else "-" for x in r["recovered_s"])
        lines.append(f"| {r['variant']} | `{r['mode']}` | {r['runs']} | "
                     f"{r['closed']} | {r['acked']} | {r['lost']} ({', '.join(map(str, r['lost_per_run']))}) | "
                     f"{100 * lo:.2f}-{100 * hi:.2f} % | {r['ack_p50_ms']:.2f} "
                     f"({', '.join(map(str, r['ack_p50_ms_runs']))}) | {r['ack_p99_ms']:.2f} "
                     f"({', '.join(map(str, r['ack_p99_ms_runs']))}) | {back} | {r['not_replicated']} | "
                     f"{r['unavailable']} | {r['unanswered']} |")
    lines += ["", "Ack p50/p99: medians over the runs (each run's value in brackets) of the updates sent in the "
              "steady state (until 0.2 s before any burst, stop or kill), i.e. outside the failover window. "
              "Re-routed after: seconds from the SIGKILL to the first answer (ack, or not_replicated in replica "
              "mode: the promoted node has no replica until the killed node is started again, 1 s later) to an "
              "update to the killed shard sent after it. Acked lost: acked (task, version, token) absent from the "
              "history read from the masters after the failover; the interval is Wilson's (at 0 lost its upper "
              "bound is about 3/n)."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="runs per mode and variant (modes alternate)")
    parser.add_argument("--steady", type=float, default=6.0, help="seconds of steady updates before the kill")
    parser.add_argument("--variants", default="steady,burst,lag", help="comma-separated: steady, burst, lag")
    parser.add_argument("--lag", type=float, default=0.5, help="lag variant: seconds the replica is stopped")
    parser.add_argument("--burst", type=int, default=200, help="updates per shard-0 editor sent right before the kill")
    parser.add_argument("--pad", type=int, default=16_000, help="bytes added to each burst update")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    runs = []
    for variant in args.variants.split(","):
        for k in range(args.runs):
            for mode in (MODES if k % 2 == 0 else MODES[::-1]):
                burst = variant in ("burst", "lag")
                result = run_once(mode, args.steady, args.burst if burst else 0, args.pad if burst else 0,
                                  args.lag if variant == "lag" else 0.0)
                print(json.dumps(result), flush=True)
                runs.append(result)
    rows = summarise(runs)
    meta = {"when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "note": "3 masters + 1 replica each, cluster-node-timeout 1 s, 2 rtlib serve instances, 12 editors "
                    "(4 workspaces per shard) at 20 updates/s each, SIGKILL of shard 0's master after "
                    f"{args.steady:.0f} s (burst variant: each shard-0 editor first sends {args.burst} updates of "
                    f"{args.pad} more bytes at once, and the kill lands at the first ack of the burst; lagging "
                    f"replica: the same with shard 0's replica SIGSTOPped {args.lag} s before the kill), fresh "
                    "cluster per run, modes alternating."}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "failover.json").write_text(json.dumps({"meta": meta, "summary": rows, "runs": runs}, indent=1))
    (args.out / "failover.md").write_text(markdown(rows, meta))
    print(markdown(rows, meta))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
