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
* cross-workspace frames, target 0, over every frame of every event type: a frame whose envelope workspace or
  content canary is another workspace's, a presence event about another workspace's user, an update or an ack
  of another workspace's (``Recorder.frames`` counts every frame a client receives);
* the cluster's connection counts (the fan-out budget's input, read from Redis), over the run and once everyone
  left; the instances' logs (handshakes refused, slow consumers closed, Redis outages). The admission gate's and
  the fan-out budget's own counters live in the servers' memory (no endpoint or log line shows them).

Every zero is recomputable: the raw records (each update, each client's received set and frame counts, caches,
Redis's truth, RSS and counts samples) are written to ``soak_raw.jsonl.gz`` and the table is computed from them
(:mod:`bench.resilience.soak_raw`; ``python -m bench.resilience.soak_raw --check bench/results/soak.md``).

    python -m bench.resilience.soak                        # 1,000 clients, 10 minutes (about 13 min)
    python -m bench.resilience.soak --clients 40 --minutes 0.3 --time-scale 0.05 --out /tmp/soak   # seconds
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import redis

from bench.harness.case import background_load
from bench.resilience.soak_raw import (
    build_records,
    digest,
    git_state,
    read_raw,
    recompute,
    rss_growth,
    table,
    write_raw,
)
from rtlib.lab.cluster import Cluster
from rtlib.lab.results import Results
from rtlib.lab.scenario import Scenario
from rtlib.server import keyspace

__all__ = ["INCIDENTS", "RssSampler", "cluster_counts", "main", "markdown", "presence_keys_left", "rss_growth",
           "run_soak", "server_logs", "write"]

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


def cluster_counts(redis_url: str, workspaces: list[str]) -> dict[str, int]:
    """The cluster's connection counts as the instances keep them in Redis (:mod:`rtlib.server.members`):
    ``live``, the sum over instances whose alive key exists (what the fan-out budget charges by), and ``stale``,
    the fields of instances whose key is gone (a killed instance's, until a refresh deletes them)."""
    with redis.Redis.from_url(redis_url, socket_timeout=2) as r:
        hashes = [{k.decode(): int(v) for k, v in r.hgetall(keyspace.conns_key(ws)).items()} for ws in workspaces]
        members = sorted({m for h in hashes for m in h})
        alive = dict(zip(members, (bool(r.exists(keyspace.alive_key(m))) for m in members), strict=True))
    return {"live": sum(n for h in hashes for m, n in h.items() if alive[m]),
            "stale": sum(1 for h in hashes for m in h if not alive[m])}


def server_logs(logdir: Path) -> dict[str, int]:
    """What the instances logged (the soak runs them at INFO): handshakes refused, by status and reason,
    slow consumers closed, Redis found unreachable and back."""
    counts: Counter[str] = Counter()
    for path in sorted(logdir.glob("instance-*.log")):
        for line in path.read_text(errors="replace").splitlines():
            if m := re.search(r"refused a handshake from .*?: (\d+) [^(]*\((.*)\)", line):
                counts[f"handshake refused {m.group(1)}: {m.group(2).split(';')[0]}"] += 1
            elif "closing slow consumer" in line:
                counts["slow consumer closed"] += 1
            elif "Redis unreachable" in line or "Redis answers again" in line:
                counts["Redis unreachable" if "unreachable" in line else "Redis back"] += 1
    return dict(sorted(counts.items()))


class RssSampler:
    """Sample the RSS of the cluster's processes (instances and Redis) every ``period`` seconds in a thread.
    Each row: wall time, process label (``i0``, ``i1``, ``redis``; a restarted process gets ``'`` appended),
    pid, RSS in MiB. With ``workspaces``, also the cluster's connection counts (:func:`cluster_counts`)."""

    def __init__(self, cluster: Cluster, period: float, workspaces: list[str] | None = None) -> None:
        self.cluster, self.period, self.workspaces = cluster, period, workspaces or []
        self.rows: list[tuple[float, str, int, float]] = []
        self.counts: list[dict[str, Any]] = []
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
            self.sample_counts(now)

    def sample_counts(self, now: float) -> None:
        if self.workspaces and self.cluster.redis_url:
            try:
                self.counts.append({"wall": now, **cluster_counts(self.cluster.redis_url, self.workspaces)})
            except (redis.RedisError, OSError):
                pass  # Redis restarting: no sample

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def presence_keys_left(redis_url: str, names: bool = False) -> dict[str, Any]:
    """Presence keys still in Redis (sorted sets, their per-user counts, the workspaces' sweep indexes and the
    sweep registry's partitions) and their entries; ``dueMembers``: tasks still in a sweep index; with
    ``names``, also the keys themselves (``presenceKeys``, for the raw records)."""
    with redis.Redis.from_url(redis_url) as r:
        keys = [k.decode() for k in r.scan_iter(match=keyspace.presence_pattern(), count=1000)]
        due_keys = [k.decode() for k in r.scan_iter(match=keyspace.due_pattern(), count=1000)]
        due = sum(int(r.zcard(k)) for k in due_keys)
        registry = [keyspace.sweep_keys(p)[0] for p in range(keyspace.SWEEP_PARTITIONS)
                    if r.zcard(keyspace.sweep_keys(p)[0])]
        entries = sum(int(r.zcard(k)) for k in keys if r.type(k) == b"zset")  # not the per-user counts (hashes)
    out: dict[str, Any] = {"keys": len(keys) + len(due_keys) + len(registry), "entries": entries, "dueMembers": due}
    return {**out, "presenceKeys": sorted([*keys, *due_keys, *registry])} if names else out


def truth_digests(redis_url: str, sc: Scenario) -> dict[str, dict[str, list[Any]]]:
    """Every task as Redis holds it at the end: workspace -> task -> [version, digest of the fields]."""
    out: dict[str, dict[str, list[Any]]] = {}
    with redis.Redis.from_url(redis_url) as r:
        for w in range(sc.workspaces):
            for t in range(sc.tasks):
                ver_key, fields_key = keyspace.task_keys(f"w{w}", f"t{t}")
                fields = {k.decode(): json.loads(v) for k, v in r.hgetall(fields_key).items()}
                out.setdefault(f"w{w}", {})[f"t{t}"] = [int(r.get(ver_key) or 0), digest(fields)]
    return out


def run_soak(clients: int, minutes: float, instances: int, workspaces: int, rate: float, time_scale: float,
             seed: int) -> tuple[Results, dict[str, Any], list[dict[str, Any]]]:
    """One soak run; returns the lab results, the soak's own report (JSON-ready, camelCase) and its raw records
    (:mod:`bench.resilience.soak_raw`), from which the report's table is computed."""
    wall = minutes * 60
    sc = Scenario(clients=clients, workspaces=workspaces, tasks=20, hot_tasks=4, duration=wall / time_scale,
                  editors=0.25, update_rate=rate * time_scale, viewers=0.6, crash=0.05, churn=0.2,
                  time_scale=time_scale, seed=seed, drain=2.0)
    failures = [(a, k, share * sc.duration) for a, k, share in INCIDENTS]
    git, load_before = git_state(), background_load(2.0)  # the machine is shared: say how busy it was
    os.environ.setdefault("RTLIB_LAB_LOG_LEVEL", "INFO")  # handshake refusals are logged at INFO
    with Cluster(instances=instances, redis_persist=True) as cluster:
        with RssSampler(cluster, period=max(0.2, wall / 300), workspaces=[f"w{w}" for w in range(workspaces)]
                        ) as sampler:
            started = time.monotonic()
            results = cluster.run(sc, failures=failures, progress=sys.stderr.isatty())
            played = time.monotonic() - started
            # Everyone has left (crashed tabs never said so): wait out presence timeout + sweep, then look.
            time.sleep(sc.wall(sc.presence_timeout + 2 * sc.sweep_interval) + 1.0)
            assert cluster.redis_url is not None
            left = presence_keys_left(cluster.redis_url, names=True)
            sampler.sample_counts(time.time())  # the last sample: after everyone left
            truth = truth_digests(cluster.redis_url, sc)
        logs = server_logs(cluster.logdir)
        assert cluster.started_at is not None
        t0 = cluster.started_at
    load_after = background_load(2.0)
    rss = pd.DataFrame(sampler.rows, columns=["wall", "process", "pid", "rss_mib"])
    rss["t"] = rss["wall"] - t0  # seconds of the run (negative: connecting phase)
    counts = [{"t": round(c["wall"] - t0, 2), "live": c["live"], "stale": c["stale"]} for c in sampler.counts]
    s = results.summary()
    incidents = [{"what": NAMES[a].format(k), "t": sc.wall(t)} for a, k, t in failures]
    steady_from = max(0.1 * wall, max(i["t"] for i in incidents) + 0.1 * wall)
    meta = {"clients": clients, "instances": instances, "workspaces": workspaces, "minutes": minutes,
            "durationS": wall, "timeScale": time_scale, "seed": seed, "updatesPerS": rate, "warmupS": steady_from,
            "incidents": incidents, "samplePeriodS": sampler.period, **git}
    records = build_records(results, meta, rss[["t", "process", "rss_mib"]], counts, left, truth)
    n = recompute(records)
    received = results.deliveries["t_received"].to_numpy() * time_scale
    bin_s = max(1.0, wall / 120)
    hist, edges = np.histogram(received, bins=np.arange(0, wall + bin_s, bin_s))
    rec = results.recoveries
    steady = [c["live"] for c in counts if steady_from <= c["t"] <= wall]
    report = {
        **meta, "playedS": round(played, 1), "backgroundLoadPct": {"before": load_before, "after": load_after},
        "loadavgAfter": [round(x, 2) for x in os.getloadavg()],
        **{k: n[k] for k in ("updatesSent", "acked", "deliveries", "frames", "lostUpdates", "crossWorkspace",
                             "crossByType", "presenceLeft", "rssGrowth", "maxRssGrowthPct", "divergedClients",
                             "converged", "countsLeft")},
        # The lab's own counts of the same things (rtlib.lab.results), beside the recomputed ones above.
        "lab": {"lostUpdates": s["lost_updates"], "crossWorkspaceTaskUpdated": s["cross_workspace"],
                "deliveries": s["deliveries"], "divergedClients": s["diverged_clients"]},
        "lostByResumers": s["lost_by_resumers"],
        "reconnectsRecovered": s["reconnects_recovered"], "reconnectsResynced": s["reconnects_resynced"],
        "timeToRecoverS": s["time_to_recover_s"], "latencyMs": s["latency_ms"], "realtime": s["realtime"],
        "crashes": int((results.connections["event"] == "crashed").sum()),
        "churns": int((results.connections["event"] == "closed").sum()),
        "clusterCounts": {"steadyMedian": float(np.median(steady)) if steady else None,
                          "steadyMin": min(steady, default=None), "steadyMax": max(steady, default=None),
                          "maxStale": max((c["stale"] for c in counts), default=None), "samples": counts},
        "serverLogs": logs,
        "rss": [{"t": round(float(t), 2), "process": p, "rss_mib": round(float(m), 2)}
                for t, p, m in rss[["t", "process", "rss_mib"]].itertuples(index=False)],
        "recoveries": [[k, round(float(t) * time_scale, 3)] for k, t in zip(rec["kind"], rec["t_welcome"],
                                                                            strict=True)],
        "deliveryRate": [[round(float(e), 2), round(c / bin_s, 1)] for e, c in zip(edges, hist, strict=False)],
    }
    return results, report, records


def write(report: dict[str, Any], out: Path, records: list[dict[str, Any]] | None = None) -> list[Path]:
    """``soak.json``, ``soak.md`` and ``soak.png`` in ``out`` (and ``soak_raw.jsonl.gz`` with ``records``: then
    the table is recomputed from them, so soak.md says what the raw file says)."""
    from rtlib.lab.incident_plots import soak_timeline

    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "soak.json", out / "soak.md", out / "soak.png"]
    if records is not None:
        paths.append(write_raw(records, out / "soak_raw.jsonl.gz"))
        report = {**report, **recompute(records), "raw": "soak_raw.jsonl.gz"}
        report.pop("lost", None)
    (out / "soak.json").write_text(json.dumps(report, indent=1) + "\n")
    fig = soak_timeline(report, title=f"Soak: {report['clients']:,} clients, {report['minutes']:g} min, "
                                      f"{report['instances']} instances")
    fig.savefig(out / "soak.png")
    (out / "soak.md").write_text(markdown(report))
    return paths


def _extras(r: dict[str, Any]) -> list[str]:
    """The sections of a re-run with raw records: provenance, leaks by event type, cluster counts, logs."""
    if "crossByType" not in r:
        return []
    dirty = (f" + uncommitted changes to {', '.join(r['dirtyFiles'][:6])}"
             + (f" and {len(r['dirtyFiles']) - 6} more" if len(r["dirtyFiles"]) > 6 else "")) if r["dirty"] else ""
    cc, lab = r["clusterCounts"], r["lab"]
    agree = (lab["lostUpdates"], lab["deliveries"], lab["divergedClients"]) == (
        r["lostUpdates"], r["deliveries"], r["divergedClients"]) and (lab["crossWorkspaceTaskUpdated"] == 0) == (
        r["crossByType"].get("task.updated", {}).get("foreign", 0) == 0)
    load = r["backgroundLoadPct"]
    first, last = min(i["t"] for i in r["incidents"]), max(i["t"] for i in r["incidents"])

    def rate(start: float, end: float) -> str:
        values = [v for t, v in r["deliveryRate"] if start <= t < end]
        return f"{float(np.median(values)):,.0f}" if values else "n/a"

    return [
        f"Measured at commit `{r['commit'][:12]}`{dirty}. Other jobs on the machine: {load['before']:.0f} % of a "
        f"core just before, {load['after']:.0f} % just after (the soak itself saturates both cores). "
        f"Raw records: `{r.get('raw', 'soak_raw.jsonl.gz')}`; the table above is recomputed from them by "
        "`python -m bench.resilience.soak_raw` (`--check bench/results/soak.md`). The lab's own counts "
        f"({'agree' if agree else '**DISAGREE**'}): lost {lab['lostUpdates']}, cross-workspace task.updated "
        f"{lab['crossWorkspaceTaskUpdated']}, {lab['deliveries']:,} deliveries, {lab['divergedClients']} diverged.",
        "",
        f"Deliveries per second (median of {r['durationS'] / 120:g} s bins): {rate(0, first)} before the first "
        f"incident, {rate(last + 0.1 * r['durationS'], r['durationS'])} from settling after the last to the end; "
        f"offered {r['updatesPerS'] * r['clients'] / r['workspaces']:,.0f} (updates/s × clients per workspace).", "",
        "## Cross-workspace check, by event type", "",
        "| frames | received | other workspace's envelope or canary | about another workspace's user or update |",
        "|---|---|---|---|",
        *[f"| {k} | {v['frames']:,} | {v['foreign'] if '(' not in k else '–'} | "
          f"{v['foreignSubject'] if '(' in k else '–'} |" for k, v in r["crossByType"].items()], "",
        "## Cluster connection counts and the servers' logs", "",
        f"The connection counts the fan-out budget charges by (summed over live instances, read from Redis every "
        f"{r['samplePeriodS']:.1f} s): median {cc['steadyMedian']:g} (min {cc['steadyMin']}, max {cc['steadyMax']})"
        f" after warm-up, for {r['clients']:,} clients; fields left by dead instances at most {cc['maxStale']}; "
        f"after everyone left {r['countsLeft']['live']} ({r['countsLeft']['stale']} stale fields). "
        "Instances' logs: " + (", ".join(f"{k} ×{v}" for k, v in r["serverLogs"].items()) or "nothing") + ". "
        "The admission gate's deferrals and the fan-out budget's pauses are counters in the servers' memory, "
        "not exposed by any endpoint or log line, so the soak cannot report them.", "",
    ]


def markdown(r: dict[str, Any]) -> str:
    """soak.md: the table (from the raw records' numbers), incidents, RSS, and how to read it."""
    ttr = r["timeToRecoverS"]
    lines = [
        "# Soak", "",
        f"{r['clients']:,} simulated clients (resuming on every reconnect) for {r['minutes']:g} min on "
        f"{r['instances']} `rtlib serve` instances and one redis-server (AOF on), {r['workspaces']} workspaces, "
        f"{r['updatesPerS']:g} updates/s; {r['churns']} churn disconnects, {r['crashes']} client crashes, "
        f"{r['reconnectsRecovered']:,} reconnects recovered from history, {r['reconnectsResynced']:,} resynced. "
        f"Written by `python -m bench.resilience.soak` (seed {r['seed']}, time scale {r['timeScale']:g}).", "",
        *table({**r, "frames": r.get("frames", r["deliveries"])}), "",
        *_extras(r),
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
        "* The RSS steps at the incidents are clients moving between instances (the kill sends i1's clients to i0, "
        "where they stay: a client moves on only when its instance fails); the instances ride through the Redis "
        "restart with their connections open (`--broker-grace`), so the growth window starts after the settling.",
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
    if args.rewrite:  # with its raw records beside it, the table is recomputed from them
        raw = args.rewrite.with_name("soak_raw.jsonl.gz")
        write(json.loads(args.rewrite.read_text()), args.out, read_raw(raw) if raw.exists() else None)
        return 0
    _, report, records = run_soak(args.clients, args.minutes, args.instances, args.workspaces, args.rate,
                                  args.time_scale, args.seed)
    for path in write(report, args.out, records):
        print(path)
    print(markdown(report).split("## Incidents")[0])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
