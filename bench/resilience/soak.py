"""Soak: many resuming clients for minutes on ≥ 2 ``rtlib serve`` instances and a real redis-server, through
churn, client crashes, an instance restart and a Redis restart. Does anything leak, get lost or cross over?

The load is a :mod:`rtlib.lab` run (``Cluster`` + seeded ``Scenario``): editors send open-loop
``task.update``, viewers join a task and heartbeat, some clients churn (clean disconnect, reconnect) and some
viewers crash (vanish without a close). Every client resumes with its last offset on every reconnect. Every
update carries its workspace as a canary (``_ws``), checked by every receiver. Incidents, at fixed shares
of the run: instance 1 SIGKILLed, then started again on its port; Redis SIGKILLed and restarted (append-only
file on, as in production). A thread samples the RSS of every server process and of Redis.

Reported (``bench/results/soak.{json,md,png}``):

* RSS over time; growth = mean of the last tenth of the run vs the first tenth after warm-up, where warm-up is
  the first tenth of the run *and* the settling after the last incident (the incidents move clients between
  instances, which changes their memory for reasons that are not leaks);
* lost updates (acked, and missing from a client that stayed: :meth:`Results.lost_updates`), target 0;
* presence keys left in Redis once everyone left and the presence timeout passed, target 0;
* cross-workspace deliveries (canary of another workspace), target 0, over all deliveries.

    python -m bench.resilience.soak                        # 1,000 clients, 10 minutes (about 13 min)
    python -m bench.resilience.soak --clients 40 --minutes 0.3 --time-scale 0.05 --out /tmp/soak   # seconds
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import redis

from rtlib.lab.cluster import Cluster
from rtlib.lab.results import Results
from rtlib.lab.scenario import Scenario
from rtlib.server import keyspace

__all__ = ["INCIDENTS", "RssSampler", "main", "presence_keys_left", "rss_growth", "run_soak"]

RESULTS = Path(__file__).resolve().parents[1] / "results"
#: (action, instance, share of the run): a crash-restart of instance 1, then a Redis crash-restart.
INCIDENTS: list[tuple[str, int, float]] = [("kill", 1, 0.20), ("start", 1, 0.25), ("redis", 0, 0.35)]
NAMES = {"kill": "instance i{} killed", "start": "instance i{} started", "redis": "Redis restarted"}


def _rss_mib(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


class RssSampler:
    """Sample the RSS of the cluster's processes (instances and Redis) every ``period`` seconds in a thread.
    Each row: wall time, process label (``i0``, ``i1``, ``redis``; a restarted process gets ``'`` appended),
    pid, RSS in MiB."""

    def __init__(self, cluster: Cluster, period: float) -> None:
        self.cluster, self.period = cluster, period
        self.rows: list[tuple[float, str, int, float]] = []
        self._labels: dict[tuple[str, int], str] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="rss-sampler")

    def _label(self, name: str, pid: int) -> str:
        if (name, pid) not in self._labels:  # a new pid for the same role: a restarted process
            self._labels[(name, pid)] = name + "'" * sum(n == name for n, _ in self._labels)
        return self._labels[(name, pid)]

    def _loop(self) -> None:
        while not self._stop.wait(self.period):
            now = time.time()
            for name, pid in self.cluster.pids.items():
                if pid is not None and (rss := _rss_mib(pid)) is not None:
                    self.rows.append((now, self._label(name, pid), pid, rss))

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def rss_growth(rss: pd.DataFrame, start: float, end: float) -> dict[str, dict[str, float]]:
    """Per process alive through [start, end] (seconds of the run): mean RSS of the first and last tenth of
    that window and the growth between them, in %."""
    out = {}
    window = max(end - start, 1e-9) / 10
    for proc, g in rss.groupby("process"):
        if g["t"].min() > start or g["t"].max() < end - window:
            continue  # not alive through the whole window (killed, or started after it began)
        first = g.loc[(g["t"] >= start) & (g["t"] < start + window), "rss_mib"].mean()
        last = g.loc[g["t"] >= end - window, "rss_mib"].mean()
        out[str(proc)] = {"from_mib": round(float(first), 1), "to_mib": round(float(last), 1),
                          "growth_pct": round(float((last - first) / first * 100), 2)}
    return out


def presence_keys_left(redis_url: str) -> dict[str, int]:
    """Presence keys still in Redis (sorted sets, their per-user counts, the workspaces' sweep indexes and the
    sweep registry's partitions) and their entries; ``dueMembers``: tasks still in a sweep index."""
    with redis.Redis.from_url(redis_url) as r:
        keys = [k.decode() for k in r.scan_iter(match=keyspace.presence_pattern(), count=1000)]
        due_keys = [k.decode() for k in r.scan_iter(match=keyspace.due_pattern(), count=1000)]
        due = sum(int(r.zcard(k)) for k in due_keys)
        registry = sum(1 for p in range(keyspace.SWEEP_PARTITIONS) if r.zcard(keyspace.sweep_keys(p)[0]))
        entries = sum(int(r.zcard(k)) for k in keys if r.type(k) == b"zset")  # not the per-user counts (hashes)
    return {"keys": len(keys) + len(due_keys) + registry, "entries": entries, "dueMembers": due}


def run_soak(clients: int, minutes: float, instances: int, workspaces: int, rate: float, time_scale: float,
             seed: int) -> tuple[Results, dict[str, Any]]:
    """One soak run; returns the lab results and the soak's own report (JSON-ready, camelCase)."""
    wall = minutes * 60
    sc = Scenario(clients=clients, workspaces=workspaces, tasks=20, hot_tasks=4, duration=wall / time_scale,
                  editors=0.25, update_rate=rate * time_scale, viewers=0.6, crash=0.05, churn=0.2,
                  time_scale=time_scale, seed=seed, drain=2.0)
    failures = [(a, k, share * sc.duration) for a, k, share in INCIDENTS]
    with Cluster(instances=instances, redis_persist=True) as cluster:
        with RssSampler(cluster, period=max(0.2, wall / 300)) as sampler:
            started = time.monotonic()
            results = cluster.run(sc, failures=failures, progress=sys.stderr.isatty())
            played = time.monotonic() - started
            # Everyone has left (crashed tabs never said so): wait out presence timeout + sweep, then look.
            time.sleep(sc.wall(sc.presence_timeout + 2 * sc.sweep_interval) + 1.0)
            assert cluster.redis_url is not None
            left = presence_keys_left(cluster.redis_url)
        assert cluster.started_at is not None
        t0 = cluster.started_at
    rss = pd.DataFrame(sampler.rows, columns=["wall", "process", "pid", "rss_mib"])
    rss["t"] = rss["wall"] - t0  # seconds of the run (negative: connecting phase)
    s = results.summary()
    incidents = [{"what": NAMES[a].format(k), "t": sc.wall(t)} for a, k, t in failures]
    warmup = 0.1 * wall
    steady_from = max(warmup, max(i["t"] for i in incidents) + 0.1 * wall)
    growth = rss_growth(rss, steady_from, wall)
    received = results.deliveries["t_received"].to_numpy() * time_scale
    bin_s = max(1.0, wall / 120)
    counts, edges = np.histogram(received, bins=np.arange(0, wall + bin_s, bin_s))
    rec = results.recoveries
    report = {
        "clients": clients, "instances": instances, "workspaces": workspaces, "minutes": minutes,
        "durationS": wall, "timeScale": time_scale, "seed": seed, "updatesPerS": rate, "playedS": round(played, 1),
        "warmupS": steady_from, "incidents": incidents,
        "updatesSent": s["updates_sent"], "acked": s["acked"], "deliveries": s["deliveries"],
        "lostUpdates": s["lost_updates"], "lostByResumers": s["lost_by_resumers"], "converged": s["converged"],
        "divergedClients": s["diverged_clients"], "crossWorkspace": s["cross_workspace"],
        "reconnectsRecovered": s["reconnects_recovered"], "reconnectsResynced": s["reconnects_resynced"],
        "timeToRecoverS": s["time_to_recover_s"], "latencyMs": s["latency_ms"],
        "crashes": int((results.connections["event"] == "crashed").sum()),
        "churns": int((results.connections["event"] == "closed").sum()),
        "presenceLeft": left, "rssGrowth": growth,
        "maxRssGrowthPct": max((g["growth_pct"] for g in growth.values()), default=float("nan")),
        "rss": [{"t": round(float(t), 2), "process": p, "rss_mib": round(float(m), 2)}
                for t, p, m in rss[["t", "process", "rss_mib"]].itertuples(index=False)],
        "recoveries": [[k, round(float(t) * time_scale, 3)] for k, t in zip(rec["kind"], rec["t_welcome"],
                                                                            strict=True)],
        "deliveryRate": [[round(float(e), 2), round(c / bin_s, 1)] for e, c in zip(edges, counts, strict=False)],
    }
    return results, report


def write(report: dict[str, Any], out: Path) -> list[Path]:
    """``soak.json``, ``soak.md`` and ``soak.png`` in ``out``."""
    from rtlib.lab.incident_plots import soak_timeline

    out.mkdir(parents=True, exist_ok=True)
    (out / "soak.json").write_text(json.dumps(report, indent=1) + "\n")
    fig = soak_timeline(report, title=f"Soak: {report['clients']:,} clients, {report['minutes']:g} min, "
                                      f"{report['instances']} instances")
    fig.savefig(out / "soak.png")
    (out / "soak.md").write_text(markdown(report))
    return [out / "soak.json", out / "soak.md", out / "soak.png"]


def markdown(r: dict[str, Any]) -> str:
    def verdict(ok: bool) -> str:
        return "met" if ok else "**missed**"

    growth = r["maxRssGrowthPct"]
    rows = [
        ("lost updates (acked, missing from a client that stayed)", f"{r['lostUpdates']:,} of {r['acked']:,} acked",
         "0", verdict(r["lostUpdates"] == 0)),
        ("cross-workspace deliveries (canary)", f"{r['crossWorkspace']:,} of {r['deliveries']:,} deliveries",
         "0 over ≥ 1,000,000", verdict(r["crossWorkspace"] == 0 and r["deliveries"] >= 1_000_000)),
        ("presence keys left after everyone left", f"{r['presenceLeft']['keys']} ({r['presenceLeft']['entries']} "
         "entries)", "0", verdict(r["presenceLeft"]["keys"] == 0)),
        ("RSS growth after warm-up (max over processes)", f"{growth:+.2f} %", "< 5 %", verdict(growth < 5)),
        ("caches equal to Redis at the end", f"{r['divergedClients']} clients diverged", "0",
         verdict(r["converged"])),
    ]
    ttr = r["timeToRecoverS"]
    lines = [
        "# Soak", "",
        f"{r['clients']:,} simulated clients (resuming on every reconnect) for {r['minutes']:g} min on "
        f"{r['instances']} `rtlib serve` instances and one redis-server (AOF on), {r['workspaces']} workspaces, "
        f"{r['updatesPerS']:g} updates/s; {r['churns']} churn disconnects, {r['crashes']} client crashes, "
        f"{r['reconnectsRecovered']:,} reconnects recovered from history, {r['reconnectsResynced']:,} resynced. "
        f"Written by `python -m bench.resilience.soak` (seed {r['seed']}, time scale {r['timeScale']:g}).", "",
        "| measure | result | target | |", "|---|---|---|---|",
        *[f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows], "",
        "Time to recover (socket dropped → caught up), design s: "
        + "; ".join(f"{k} p50 {v['p50']:g}, p99 {v['p99']:g} (n={v['n']})" for k, v in ttr.items()) + ".",
        f"Delivery latency p50 {r['latencyMs']['p50']} ms, p99 {r['latencyMs']['p99']} ms, "
        f"max {r['latencyMs']['max']} ms (whole run, incidents included).", "",
        "## Incidents", "", "| t (s) | incident |", "|---|---|",
        *[f"| {i['t']:.0f} | {i['what']} |" for i in r["incidents"]], "",
        f"## RSS (MiB), from {r['warmupS']:.0f} s (warm-up: first tenth and the settling after the last "
        "incident) to the end", "", "| process | from | to | growth |", "|---|---|---|---|",
        *[f"| {p} | {g['from_mib']} | {g['to_mib']} | {g['growth_pct']:+.2f} % |" for p, g in r["rssGrowth"].items()],
        "", "![timeline](soak.png)", "",
        "## Reading it", "",
        "* Each churning client churns once (the lab plans one clean disconnect per churner, in 30–70 % of the run) "
        "and each crashing viewer crashes once (30–60 %); viewers join in the first tenth and leave at the end.",
        "* The RSS steps at the incidents are clients moving between instances (the kill sends i1's clients to i0; "
        "the Redis restart makes every client reconnect), so the growth window starts after them.",
        "* Redis runs with `appendonly yes` (fsync every second): Redis writes the append-only file before it "
        "replies (written, fsynced within a second: safe against a process kill, not a power cut), so a SIGKILL "
        "loses no acked write and the history's epoch survives; every resume can recover. Without "
        "persistence a Redis restart is a new, empty Redis (new epoch: every client resyncs, acked data is gone).",
        "* Latency counts from each update's *scheduled* send time, so updates scheduled while their sender was "
        "reconnecting include that wait (the max).",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clients", type=int, default=1000)
    ap.add_argument("--minutes", type=float, default=10.0, help="wall minutes of load")
    ap.add_argument("--instances", type=int, default=2)
    ap.add_argument("--workspaces", type=int, default=20)
    ap.add_argument("--rate", type=float, default=50.0, help="task.update per wall second, whole cluster")
    ap.add_argument("--time-scale", type=float, default=1.0,
                    help="design s -> wall s for presence timing (1: the real 30 s heartbeat, 60 s timeout)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--rewrite", type=Path, metavar="SOAK_JSON",
                    help="only redraw soak.md and soak.png from an existing soak.json (into --out)")
    args = ap.parse_args(argv)
    if args.rewrite:
        write(json.loads(args.rewrite.read_text()), args.out)
        return 0
    _, report = run_soak(args.clients, args.minutes, args.instances, args.workspaces, args.rate, args.time_scale,
                         args.seed)
    for path in write(report, args.out):
        print(path)
    print(markdown(report).split("## Incidents")[0])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
