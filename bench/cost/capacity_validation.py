"""The capacity planner against live runs (issue 22 item 5): predict each Redis shard's CPU with
:func:`rtlib.model.capacity.at` from ``results/unit_costs.json``, then run the same load on 1 and on 3 shards
(a local Redis Cluster of real ``redis-server`` processes, ``rtlib serve`` instances, epoll clients:
:mod:`bench.cost.live_rig`) and measure each shard's CPU (``INFO cpu``; ``/proc`` beside it).

``python -m bench.cost.capacity_validation [--rounds 4] [--interleave]`` alternates 1 and 3 shards each round and
writes ``results/capacity_validation.{json,md}``. This machine drifts by up to 40 % between runs minutes apart, so
``--interleave`` measures one round of ``unit_costs.py`` before each round and writes ``results/unit_costs.*`` from
those rounds: the prediction then uses unit costs measured in the same period as the runs it is compared with
(still blind: one kind of work per window, none of the mixed runs').

The load is the planner's :class:`~rtlib.model.capacity.Load`:
``--users`` connections in ``--workspaces`` workspaces (dealt round-robin to the instances), ``--viewing`` of them
beating every ``--heartbeat-interval`` s, ``--updates-per-user`` per minute from every connection (an editor per
workspace sends its workspace's share), sweeps every ``--sweep-interval`` s. Nothing of the measurement feeds
back into the model: the unit costs come from ``unit_costs.py``'s separate, one-kind-at-a-time windows.

The planner predicts the mean shard (workspaces hash to shards by their ``{ws}`` tag, unevenly when there are
few); the table also shows each shard with the planner's arithmetic applied to the workspaces and sweep
partitions that hash to it, which separates a model error from the placement.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from bench.cost import unit_costs
from bench.cost.live_rig import Rig, Ticker, presence_frame, update_frame, write_result
from bench.cost.unit_costs import machine
from rtlib.model.capacity import Load, UnitCosts, at, load_unit_costs, subscribed_instances
from rtlib.server import keyspace
from rtlib.server.cluster_client import slot_of
from rtlib.server.redis_cluster import SLOTS

__all__ = ["main", "placement", "predict_per_shard"]

RESULTS = Path(__file__).resolve().parents[1] / "results"


def _master(slot: int, shards: int) -> int:
    return next(i for i in range(shards) if slot <= (i + 1) * SLOTS // shards - 1)


def placement(workspaces: list[str], shards: int) -> tuple[list[float], list[float]]:
    """Share of the workspaces and of the sweep registry partitions on each shard (the even slot split of
    :class:`~rtlib.server.redis_cluster.RedisClusterProcess`)."""
    ws = [0.0] * shards
    for w in workspaces:
        ws[_master(slot_of(keyspace.channel(w)), shards)] += 1 / len(workspaces)
    parts = [0.0] * shards
    for p in range(keyspace.SWEEP_PARTITIONS):
        parts[_master(slot_of(keyspace.sweep_keys(p)[0]), shards)] += 1 / keyspace.SWEEP_PARTITIONS
    return ws, parts


def predict_per_shard(load: Load, units: UnitCosts, instances: int, ws_share: list[float],
                      part_share: list[float]) -> list[float]:
    """The planner's Redis arithmetic per shard: workspace work by the shard's share of workspaces, sweeps by its
    share of registry partitions, plus one shard's base."""
    m = subscribed_instances(instances, load.per_workspace)
    beat = units.redis_heartbeat_us + load.viewers_per_task * units.redis_heartbeat_viewer_us
    work = (load.updates * (units.redis_update_us + m * units.redis_pubsub_msg_us) + load.heartbeats * beat) / 1e6
    sweeps = instances / load.sweep_interval * units.redis_sweep_us / 1e6
    return [units.redis_base_cores + work * w + sweeps * p for w, p in zip(ws_share, part_share, strict=True)]


def run_once(args: argparse.Namespace, shards: int) -> dict[str, Any]:
    names = [f"ws{i}" for i in range(args.workspaces)]
    specs = [(u % args.instances, names[u % args.workspaces], f"u{u}") for u in range(args.users)]
    n_view = round(args.users * args.viewing)
    with Rig(shards, args.instances, sweep_interval=args.sweep_interval,
             heartbeat_interval=args.heartbeat_interval) as rig:
        conns = rig.open(specs)
        for i in range(n_view):
            conns[i].send_text(presence_frame("join", specs[i][1]))
        rig.pump(args.warmup)
        editors = [(conns[i], update_frame(specs[i][1])) for i in range(args.workspaces)]  # one per workspace
        tickers = [Ticker(editors, args.users * args.updates_per_user / 60),
                   Ticker([(conns[i], presence_frame("heartbeat", specs[i][1])) for i in range(n_view)],
                          n_view / args.heartbeat_interval)]
        w = rig.measure(args.window, tickers)
        # A diagnostic, not an input: the same work one kind at a time, in the same rig, minutes apart at most.
        # Sum of the parts (less the idle shard counted twice) vs the mixed window above says whether the costs
        # add up on this node, whatever the machine's drift since unit_costs.py ran.
        parts = {"updates": rig.measure(args.window, tickers[:1]),
                 "heartbeats": rig.measure(args.window, tickers[1:]), "idle": rig.measure(args.window)}
    return {"shards": shards, "window": w.as_dict(),
            "parts": {k: {"redis_cores": [c / p.seconds for c in p.redis], "sent": p.sent} for k, p in parts.items()},
            "redis_cores": [c / w.seconds for c in w.redis], "redis_proc_cores": [c / w.seconds for c in w.redis_proc],
            "server_cores": [c / w.seconds for c in w.servers],
            "achieved": {"updates_per_s": w.sent["ticker0"] / w.seconds,
                         "heartbeats_per_s": w.sent["ticker1"] / w.seconds,
                         "deliveries_per_s": w.received / w.seconds}}


def _pct(pred: float, meas: float) -> str:
    return f"{100 * (pred - meas) / meas:+.1f} %"


def markdown(res: dict[str, Any]) -> str:
    m, a, units = res["meta"], res["meta"]["params"], res["meta"]["unit_costs"]
    lines = ["# Capacity planner validation: predicted vs measured Redis CPU per shard", "",
             f"{m['date']} · {m['machine']} · Redis {m['redis']} · commit {m['commit']}; unit costs from "
             f"{units['path']} (measured {units['date']}).", "",
             f"Load (the planner's inputs): {a['users']} users (one connection each) in {a['workspaces']} workspaces "
             f"on {a['instances']} `rtlib serve` instances, {a['updates_per_user']:g} updates per user per minute "
             f"({res['load']['updates']:.0f}/s, {res['load']['deliveries']:.0f} deliveries/s), {a['viewing']:.0%} "
             f"viewing a task with a heartbeat every {a['heartbeat_interval']:g} s "
             f"({res['load']['heartbeats']:.0f}/s), "
             f"sweeps every {a['sweep_interval']:g} s. {a['rounds']} rounds, 1 and 3 shards alternating, "
             f"{a['window']:g} s measured per run after {a['warmup']:g} s of warm-up; CPU time of each node "
             "(INFO cpu).",
             "", "| shards | predicted per shard (mean) | measured per shard (mean; median of rounds) | "
                 "rounds (min-max) "
                 "| error | at the achieved rates | server per instance: predicted / measured |",
             "|---|---|---|---|---|---|---|"]
    for s in res["summary"]:
        lines.append(f"| {s['shards']} | {s['predicted']:.4f} cores | **{s['measured']:.4f}** cores | "
                     f"{s['measured_min']:.4f}-{s['measured_max']:.4f} | **{_pct(s['predicted'], s['measured'])}** | "
                     f"{s['predicted_at_achieved']:.4f} ({_pct(s['predicted_at_achieved'], s['measured'])}) | "
                     f"{s['server_predicted']:.3f} / {s['server_measured']:.3f} cores "
                     f"({_pct(s['server_predicted'], s['server_measured'])}) |")
    lines += ["", "Do the costs add up on a node? The same rig, right after the mixed window: updates alone, "
                  f"heartbeats alone and idle, {a['window']:g} s each; sum of the parts (less one idle) per shard vs "
                  "the mixed window:", ""]
    for s in res["summary"]:
        lines.append(f"- {s['shards']} shard(s): parts {s['parts_sum']:.4f} cores, mixed {s['measured']:.4f}: mixed is "
                     f"{100 * s['mixed_vs_parts']:+.1f} % against the sum of its parts (median of rounds)")
    lines += ["", "Each shard (median of rounds), with the planner's arithmetic applied to the workspaces and sweep "
                  "partitions that hash to it:", "", "| shards | shard | workspaces | predicted | measured | error |",
              "|---|---|---|---|---|---|"]
    for s in res["summary"]:
        for i, (p, me) in enumerate(zip(s["per_shard_predicted"], s["per_shard_measured"], strict=True)):
            lines.append(f"| {s['shards']} | {i} | {s['ws_share'][i]:.0%} | {p:.4f} | {me:.4f} | {_pct(p, me)} |")
    lines += ["", f"Achieved rates (median over runs): {res['achieved']}. Load average during the runs: "
                  f"{min(m['loadavg'])}-{max(m['loadavg'])} on 2 cores."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3, help="each round runs 1 shard, then 3 (or 3, then 1)")
    ap.add_argument("--users", type=int, default=300)
    ap.add_argument("--workspaces", type=int, default=30)
    ap.add_argument("--instances", type=int, default=2)
    ap.add_argument("--updates-per-user", type=float, default=40.0, help="per minute")
    ap.add_argument("--viewing", type=float, default=0.5)
    ap.add_argument("--heartbeat-interval", type=float, default=0.25, help="compressed: more beats per window")
    ap.add_argument("--sweep-interval", type=float, default=1.0)
    ap.add_argument("--window", type=float, default=10.0)
    ap.add_argument("--warmup", type=float, default=3.0)
    ap.add_argument("--unit-costs", type=Path, default=RESULTS / "unit_costs.json")
    ap.add_argument("--interleave", action="store_true",
                    help="measure a unit-cost round (bench.cost.unit_costs) before each round and write --unit-costs "
                         "from them: the machine drifts by up to 40 %% between separate runs")
    ap.add_argument("--unit-window", type=float, default=8.0, help="with --interleave: unit_costs.py's --window")
    ap.add_argument("--out", type=Path, default=RESULTS / "capacity_validation")
    args = ap.parse_args(argv)
    rounds_uc: list[dict[str, Any]] = []
    uc_args = unit_costs.parser().parse_args(["--out", str(args.unit_costs.with_suffix("")),
                                              "--window", str(args.unit_window)])
    # The viewers are the first users, dealt round-robin to the workspaces, all on task t0.
    per_task = round(args.users * args.viewing) / args.workspaces
    load = Load(users=args.users, workspaces=args.workspaces, updates_per_user=args.updates_per_user,
                viewing=args.viewing, heartbeat_interval=args.heartbeat_interval, sweep_interval=args.sweep_interval,
                viewers_per_task=per_task)
    runs = []
    uc_meta = machine() | {"params": {k: str(v) if isinstance(v, Path) else v for k, v in vars(uc_args).items()}}
    for k in range(args.rounds):
        if args.interleave:  # a unit-cost round, then this round's live runs: both see the same machine
            rounds_uc.append(unit_costs.measure_round(uc_args, k))
        for shards in ((1, 3) if k % 2 == 0 else (3, 1)):
            t = time.monotonic()
            runs.append(run_once(args, shards))
            r = runs[-1]
            print(f"round {k + 1} shards {shards} ({time.monotonic() - t:.0f} s): redis "
                  f"{[round(c, 4) for c in r['redis_cores']]} servers {[round(c, 3) for c in r['server_cores']]} "
                  f"achieved {r['achieved']}", flush=True)
    if args.interleave:  # the planner's unit_costs.json is the one measured between these runs
        unit_costs.write(uc_args, uc_meta, rounds_uc)
    units = load_unit_costs(args.unit_costs)
    names = [f"ws{i}" for i in range(args.workspaces)]
    summary = []
    for shards in (1, 3):
        mine = [r for r in runs if r["shards"] == shards]
        plan = at(load, units, args.instances, shards)
        ws_share, part_share = placement(names, shards)
        means = [statistics.fmean(r["redis_cores"]) for r in mine]
        parts_sum = [statistics.fmean(u + h - i for u, h, i in zip(
            r["parts"]["updates"]["redis_cores"], r["parts"]["heartbeats"]["redis_cores"],
            r["parts"]["idle"]["redis_cores"], strict=True)) for r in mine]
        # The same arithmetic at the rates the clients achieved (a late client sends less than planned).
        got = {k: statistics.median(r["achieved"][k] for r in mine) for k in ("updates_per_s", "heartbeats_per_s")}
        achieved_load = Load(users=args.users, workspaces=args.workspaces, viewing=args.viewing,
                             viewers_per_task=per_task,
                             updates_per_user=got["updates_per_s"] * 60 / args.users,
                             sweep_interval=args.sweep_interval,
                             heartbeat_interval=round(args.users * args.viewing) / got["heartbeats_per_s"])
        summary.append({
            "shards": shards, "predicted": plan.redis_per_shard, "measured": statistics.median(means),
            "predicted_at_achieved": at(achieved_load, units, args.instances, shards).redis_per_shard,
            "measured_min": min(means), "measured_max": max(means), "runs": len(mine),
            "parts_sum": statistics.median(parts_sum),
            "mixed_vs_parts": statistics.median(m / p - 1 for m, p in zip(means, parts_sum, strict=True)),
            "per_shard_predicted": predict_per_shard(load, units, args.instances, ws_share, part_share),
            "per_shard_measured": [statistics.median(r["redis_cores"][i] for r in mine) for i in range(shards)],
            "ws_share": ws_share, "server_predicted": plan.resource("server CPU per instance").used,
            "server_measured": statistics.median(statistics.fmean(r["server_cores"]) for r in mine)})
    achieved = {k: round(statistics.median(r["achieved"][k] for r in runs), 1) for k in runs[0]["achieved"]}
    meta = machine() | {"params": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
                        "unit_costs": units.source | {"path": str(args.unit_costs.name)},
                        "loadavg": [r["window"]["loadavg"] for r in runs]}
    res = {"meta": meta,
           "load": {"updates": load.updates, "deliveries": load.deliveries, "heartbeats": load.heartbeats},
           "summary": summary, "achieved": achieved, "runs": runs}
    write_result(args.out, res, markdown(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
