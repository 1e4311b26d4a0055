"""Unit costs for the capacity planner (``rtlib plan``, :mod:`rtlib.model.capacity`), measured live on this
machine: ``python -m bench.cost.unit_costs [--rounds 4 --window 8]`` writes ``results/unit_costs.{json,md}``.

Each round runs, on a one-shard Redis Cluster (a real ``redis-server`` in cluster mode, as a production shard) and
three ``rtlib serve`` instances (:mod:`bench.cost.live_rig`), one window per kind of work, in an order that is
reversed every other round (the machine drifts by up to 40 %, and other work shares it):

* ``empty``: servers up, no connection;  ``idle``: every connection open, nothing sent;
* ``updC``: ``--updates`` task.update/s into workspaces holding only their editor (1 delivery, 1 subscribed
  instance); ``updA``: workspaces of the editor + ``--receivers`` on the editor's instance (11 deliveries, 1
  instance); ``updB``: the same spread over the three instances (11 deliveries, 3 subscribed instances);
* ``hbS``, ``hbL``: ``--heartbeats``/s of presence.heartbeat from ``--viewers`` viewers that joined a task, 3
  viewers per task, then 30 (the heartbeat script's reply lists the task's viewers, so a beat costs more with
  more of them);
* ``sweep``: a second rig, no connection, ``--sweep-interval 0.1``; sweeps counted in ``INFO commandstats``
  (each sweep with nothing due is one ``ZRANGEBYSCORE`` per registry partition).

Per round, by differences of CPU time (never wall time): deliveries ``(updA - updC) / 10U``, the extra
subscribed instance ``(updB - updA) / 2U`` (server and Redis: that is the pub/sub message), the request ``updC``
less those; heartbeats ``(hbS - idle) / H`` and ``(hbL - idle) / H`` give a fixed part and a part per viewer of
the task; idle connections ``(idle - empty) / C``. The unit costs are each
one's median over the rounds, with min and max. Memory per connection is reused from ``scenarios.json`` S4
(10,000 idle connections), which measures exactly that.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.cost.live_rig import Rig, Ticker, Window, presence_frame, update_frame, write_result
from rtlib.server.keyspace import SWEEP_PARTITIONS

__all__ = ["machine", "main", "measure_round", "parser", "write"]

RESULTS = Path(__file__).resolve().parents[1] / "results"
INSTANCES = 3
PHASES = ["empty", "idle", "updC", "updA", "updB", "hbS", "hbL"]
#: Viewers per task in the two heartbeat phases (the heartbeat script returns the task's viewers: HKEYS).
VIEWERS_PER_TASK = {"hbS": 3, "hbL": 30}


def machine() -> dict[str, Any]:
    """Where and when: CPU model, cores, Python, Redis, commit (with dirty files)."""
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor())
    redis_v = subprocess.run(["redis-server", "--version"], capture_output=True, text=True).stdout.split()
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    return {"date": datetime.now(UTC).isoformat(timespec="seconds"),
            "machine": f"{os.cpu_count()} cores ({model})", "python": platform.python_version(),
            "redis": next((w for w in redis_v if w.startswith("v=")), "?"), "commit": head}


def _sweep_window(window: float) -> dict[str, float]:
    """Redis CPU and sweeps per second with three instances sweeping every 0.1 s and no connection."""
    with Rig(1, INSTANCES, sweep_interval=0.1) as rig:
        rig.pump(1.0)
        calls0 = rig.nodes[0].info("commandstats").get("cmdstat_zrangebyscore", {}).get("calls", 0)
        w = rig.measure(window)
        calls1 = rig.nodes[0].info("commandstats").get("cmdstat_zrangebyscore", {}).get("calls", 0)
    return {"redis": w.redis[0] / w.seconds, "server": sum(w.servers) / w.seconds,
            "sweeps": (calls1 - calls0) / SWEEP_PARTITIONS / w.seconds}


def _main_round(args: argparse.Namespace, order: list[str]) -> dict[str, Window]:
    specs: list[tuple[int, str, str]] = []
    senders: dict[str, list[int]] = {"updC": [], "updA": [], "updB": []}
    for w in range(args.workspaces):
        for phase, spread in (("updC", False), ("updA", False), ("updB", True)):
            ws = f"{phase}-{w}"
            senders[phase].append(len(specs))
            specs.append((0, ws, f"{ws}-editor"))
            if phase != "updC":
                specs += [((r + 1) % INSTANCES if spread else 0, ws, f"{ws}-r{r}") for r in range(args.receivers)]
    viewers: dict[str, list[int]] = {}
    for phase, per_task in VIEWERS_PER_TASK.items():
        viewers[phase] = list(range(len(specs), len(specs) + args.viewers))
        specs += [(v % INSTANCES, f"{phase}-{v // per_task}", f"{phase}-viewer-{v}") for v in range(args.viewers)]
    out: dict[str, Window] = {}
    with Rig(1, INSTANCES) as rig:
        rig.pump(1.0)
        if "empty" in order:  # before any connection: first, whatever the order of the others
            out["empty"] = rig.measure(args.window)
        conns = rig.open(specs)
        for i in (i for group in viewers.values() for i in group):
            conns[i].send_text(presence_frame("join", specs[i][1]))
        rig.pump(3.0)  # welcomes, joins and their presence fan-out, subscriptions settle
        tickers = {p: Ticker([(conns[i], update_frame(specs[i][1])) for i in senders[p]], args.updates)
                   for p in senders}
        for phase, group in viewers.items():
            tickers[phase] = Ticker([(conns[i], presence_frame("heartbeat", specs[i][1])) for i in group],
                                    args.heartbeats)
        for phase in (p for p in order if p != "empty"):
            ticker = tickers.get(phase)
            out[phase] = rig.measure(args.window, [ticker] if ticker else [])
            rig.pump(0.5)  # the last deliveries of a phase land before the next one's window
    out["_connections"] = len(specs)  # type: ignore[assignment]
    return out


def _costs(r: dict[str, Any], sweep: dict[str, float], empty_redis: float,
           args: argparse.Namespace) -> dict[str, float]:
    """One round's unit costs (µs, cores) from its windows."""
    def rate(phase: str, what: str) -> float:
        w = r[phase]
        return (w.redis[0] if what == "redis" else sum(w.servers)) / w.seconds

    def sent(phase: str) -> float:
        w = r[phase]
        return sum(w.sent.values()) / w.seconds

    u = {p: sent(p) for p in ("updC", "updA", "updB")}
    (s_phase, s_v), (l_phase, l_v) = VIEWERS_PER_TASK.items()
    out: dict[str, float] = {}
    for what in ("server", "redis"):
        idle = rate("idle", what)
        c, a, b = ((rate(p, what) - idle) / u[p] for p in ("updC", "updA", "updB"))
        delivery = (a - c) / args.receivers
        sub = (b - a) / (INSTANCES - 1)
        small, large = ((rate(p, what) - idle) / sent(p) for p in (s_phase, l_phase))
        per_viewer = (large - small) / (l_v - s_v)
        beat = {f"{what}_heartbeat_us": (small - s_v * per_viewer) * 1e6,
                f"{what}_heartbeat_viewer_us": per_viewer * 1e6}
        if what == "server":
            out |= {"server_delivery_us": delivery * 1e6, "server_update_us": sub * 1e6,
                    "server_request_us": (c - sub - delivery) * 1e6,
                    **beat,
                    "server_idle_conn_us": (idle - rate("empty", what)) / r["_connections"] * 1e6,
                    "server_base_cores": rate("empty", what) / INSTANCES}
        else:
            # Redis does not deliver to clients: updA and updC cost it the same (a check, kept in the JSON).
            out |= {"redis_pubsub_msg_us": sub * 1e6, "redis_update_us": (c - sub) * 1e6,
                    "redis_update_check_us": (a - sub) * 1e6,
                    **beat,
                    "redis_base_cores": idle}
    out["redis_sweep_us"] = (sweep["redis"] - empty_redis) / sweep["sweeps"] * 1e6 / 1.0
    return out


def _memory() -> dict[str, dict[str, Any]]:
    """Server RSS per idle connection and at 0 connections: scenarios.json S4 (10,000 connections), reused."""
    data = json.loads((RESULTS / "scenarios.json").read_text())
    case = next(c for c in data["s4"]["cases"] if c["target"] == "rtlib")
    source = f"scenarios.json S4 ({data['date'][:10]}, {case['connections']:,} idle connections, one run)"
    kib = [case["kib_per_connection"], case["marginal_kib_per_connection"]]
    return {"server_conn_bytes": {"median": case["kib_per_connection"] * 1024, "min": min(kib) * 1024,
                                  "max": max(kib) * 1024, "n": case["connections"], "source": source},
            "server_base_bytes": {"median": case["rss_kib"]["zero"] * 1024, "min": case["rss_kib"]["zero"] * 1024,
                                  "max": case["rss_kib"]["zero"] * 1024, "n": 1, "source": source}}


def _delivery() -> dict[str, dict[str, Any]]:
    """Server CPU per delivery: ``server_cost.json`` scenario A (200 receivers in one workspace, 20,000
    deliveries/s, the committed run), rtlib's redesigned tree, each round's server µs per delivery. At 200
    deliveries per update the per-update work adds ~2 µs to it (``server_request_us + server_update_us`` / 200):
    a slight over-estimate, kept rather than subtracted (the per-update costs come from another run)."""
    text = subprocess.run(["git", "show", "HEAD:bench/results/server_cost.json"], capture_output=True, text=True,
                          cwd=RESULTS.parent.parent, check=True).stdout
    data = json.loads(text)
    runs = [r["cpu_us_per_delivery"]["server"] for r in data["results"]
            if r["scenario"] == "A" and r["target"] == "rtlib-after"]
    return {"server_delivery_us": {
        "median": statistics.median(runs), "min": min(runs), "max": max(runs), "n": len(runs), "samples": runs,
        "source": f"server_cost.json A as committed ({data['date'][:10]}, {len(runs)} rounds x 10 s at 20,000 "
                  "deliveries/s)"}}


def summarise(rounds: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The unit costs: each round's costs' median, min and max; delivery and memory from the benchmarks that
    measure exactly those. This run's own delivery estimate (10 deliveries per update: the difference is small
    against the per-update work and the machine's drift) is kept as ``server_delivery_check_us``."""
    samples: dict[str, list[float]] = {}
    for r in rounds:
        costs = dict(r["costs"])
        # Redis's per-update cost is measured twice per round (1 and 11 deliveries: Redis does not deliver to
        # clients, so the same work): the unit is their mean, the check row their difference (11 - 1).
        c, a = costs["redis_update_us"], costs["redis_update_check_us"]
        costs["redis_update_us"], costs["redis_update_check_us"] = (c + a) / 2, a - c
        for name, v in costs.items():
            samples.setdefault("server_delivery_check_us" if name == "server_delivery_us" else name, []).append(v)
    units = {n: {"median": statistics.median(v), "min": min(v), "max": max(v), "n": len(v), "samples": v}
             for n, v in samples.items()} | _memory() | _delivery()
    return {n: units[n] for n in UNITS_TEXT}


UNITS_TEXT = {
    "server_request_us": ("µs", "server CPU per task.update at the editor's instance"),
    "server_delivery_us": ("µs", "server CPU per task.updated written to a connection"),
    "server_delivery_check_us": ("µs", "the same, this run (10 receivers per update: unresolved, not used)"),
    "server_update_us": ("µs", "server CPU per update per subscribed instance (pub/sub in)"),
    "server_heartbeat_us": ("µs", "server CPU per presence.heartbeat, fixed part"),
    "server_heartbeat_viewer_us": ("µs", "... and per viewer of the task"),
    "server_idle_conn_us": ("µs/s", "server CPU per idle connection per second"),
    "server_base_cores": ("cores", "one instance, no connection"),
    "server_conn_bytes": ("bytes", "server RSS per idle connection"),
    "server_base_bytes": ("bytes", "server RSS, no connection"),
    "redis_update_us": ("µs", "Redis CPU per task.update script (mean of the 1- and 11-delivery estimates)"),
    "redis_update_check_us": ("µs", "a check: the 11-delivery minus the 1-delivery estimate (Redis does not "
                                    "deliver: 0 expected)"),
    "redis_pubsub_msg_us": ("µs", "Redis CPU per message per subscribed instance (SPUBLISH)"),
    "redis_heartbeat_us": ("µs", "Redis CPU per heartbeat script, fixed part"),
    "redis_heartbeat_viewer_us": ("µs", "... and per viewer of the task (HKEYS)"),
    "redis_sweep_us": ("µs", "Redis CPU per sweep of one instance, nothing due"),
    "redis_base_cores": ("cores", "one shard, connections open, no traffic"),
}


def markdown(result: dict[str, Any]) -> str:
    m, p = result["meta"], result["meta"]["params"]
    lines = ["# Unit costs for the capacity planner", "",
             f"{m['date']} · {m['machine']} · Python {m['python']} · Redis {m['redis']} · commit {m['commit']}", "",
             f"{p['rounds']} rounds, phases alternating in order; {p['window']:g} s per window; one-shard Redis "
             f"Cluster, {INSTANCES} `rtlib serve` instances; {p['updates']:g} updates/s, {p['receivers']} receivers "
             f"per workspace ({p['workspaces']} workspaces per kind), {p['heartbeats']:g} heartbeats/s from "
             f"{p['viewers']} viewers at 3 and at 30 viewers per task; {m['connections']} connections. "
             "CPU time of the processes (Redis: INFO cpu; "
             "servers: /proc), by differences between windows (`bench/cost/unit_costs.py`'s docstring).", "",
             "| unit | median | min | max | n (rounds; reused rows: their sample) | what |",
             "|---|---|---|---|---|---|"]
    for name, u in result["units"].items():
        unit, text = UNITS_TEXT[name]
        scale = 1 / 1024 if unit == "bytes" else 1.0
        shown = "KiB" if unit == "bytes" else unit
        fmt = "{:.4f}" if unit == "cores" else "{:.1f}"
        lines.append(f"| `{name}` | {fmt.format(u['median'] * scale)} {shown} | {fmt.format(u['min'] * scale)} | "
                     f"{fmt.format(u['max'] * scale)} | {u['n']} | {text}"
                     f"{'; ' + u['source'] if 'source' in u else ''} |")
    lines += ["", f"Load average (1 min) per window: {min(m['loadavg'])}-{max(m['loadavg'])} on "
                  f"{os.cpu_count()} cores (other work shares this machine)."]
    return "\n".join(lines) + "\n"


def parser() -> argparse.ArgumentParser:
    """The options (``capacity_validation --interleave`` takes the defaults)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--window", type=float, default=8.0, help="measured seconds per phase")
    ap.add_argument("--updates", type=float, default=300.0, help="task.update/s in the update phases")
    ap.add_argument("--receivers", type=int, default=10, help="receivers per workspace besides the editor")
    ap.add_argument("--workspaces", type=int, default=20, help="workspaces per kind of update phase")
    ap.add_argument("--heartbeats", type=float, default=600.0, help="heartbeats/s in the heartbeat phase")
    ap.add_argument("--viewers", type=int, default=300)
    ap.add_argument("--out", type=Path, default=RESULTS / "unit_costs")
    ap.add_argument("--resummarise", type=Path, metavar="JSON", help="recompute the units from this run's rounds")
    return ap


def measure_round(args: argparse.Namespace, k: int) -> dict[str, Any]:
    """Round ``k`` (its phase order reversed when odd): its windows and its unit costs."""
    order = PHASES if k % 2 == 0 else ["empty", *reversed(PHASES[1:])]
    started = time.monotonic()
    sweep = _sweep_window(args.window)
    r = _main_round(args, order)
    costs = _costs(r, sweep, r["empty"].redis[0] / r["empty"].seconds, args)
    print(f"unit-cost round {k + 1} ({time.monotonic() - started:.0f} s): "
          + ", ".join(f"{n}={v:.4g}" for n, v in costs.items()), flush=True)
    return {"order": order, "sweep": sweep, "costs": costs, "connections": r["_connections"],
            "windows": {p: w.as_dict() for p, w in r.items() if p != "_connections"}}


def write(args: argparse.Namespace, meta: dict[str, Any], rounds: list[dict[str, Any]]) -> None:
    """Summarise the rounds into ``args.out``.{json,md}."""
    meta = meta | {"connections": rounds[-1].get("connections", meta.get("connections")),
                   "loadavg": [w["loadavg"] for r in rounds for w in r["windows"].values()]}
    result = {"meta": meta, "units": summarise(rounds), "rounds": rounds}
    write_result(args.out, result, markdown(result))


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.resummarise:  # rebuild units and table from a run's raw rounds, without measuring again
        old = json.loads(args.resummarise.read_text())
        write(args, old["meta"], old["rounds"])
        return 0
    meta = machine() | {"params": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}}
    write(args, meta, [measure_round(args, k) for k in range(args.rounds)])
    return 0


if __name__ == "__main__":
    sys.exit(main())
