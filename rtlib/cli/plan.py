"""``rtlib plan``: how many server instances and Redis shards a load needs, and which resource runs out first
(:mod:`rtlib.model.capacity`, from the unit costs measured by ``bench/cost/unit_costs.py``)."""

from __future__ import annotations

import argparse
from pathlib import Path

from rtlib.cli.errors import fail

__all__ = ["add_plan_arguments", "report", "run_plan"]


def add_plan_arguments(plan: argparse.ArgumentParser) -> None:
    """The options of ``rtlib plan``."""
    plan.add_argument("--users", type=int, required=True, help="connected users at the peak")
    plan.add_argument("--workspaces", type=int, required=True, help="workspaces the users are spread over (evenly)")
    plan.add_argument("--updates-per-user", type=float, required=True, metavar="R",
                      help="task.update per user per minute")
    plan.add_argument("--viewers-per-task", type=float, default=1.0, metavar="V",
                      help="users viewing the same task (each heartbeat's reply lists them: its cost grows with V)")
    plan.add_argument("--recipients-per-update", type=float, metavar="N",
                      help="connections each update reaches (default: all of its workspace's connections, as rtlib "
                           "sends task.updated to the whole workspace)")
    plan.add_argument("--connections-per-user", type=float, default=1.0, help="open tabs per user")
    plan.add_argument("--viewing", type=float, default=0.5,
                      help="share of connections with a task open (they send presence heartbeats)")
    plan.add_argument("--tasks-per-viewer", type=float, default=1.0, help="tasks each viewing connection beats for")
    plan.add_argument("--heartbeat-interval", type=float, default=30.0, metavar="S", help="server setting")
    plan.add_argument("--sweep-interval", type=float, default=5.0, metavar="S", help="server setting")
    plan.add_argument("--headroom", type=float, default=0.7,
                      help="share of one core (and of --instance-memory) each instance and shard may use")
    plan.add_argument("--instance-memory", type=float, default=2.0, metavar="GIB", help="memory per instance")
    plan.add_argument("--unit-costs", type=Path, metavar="JSON",
                      help="unit costs (default: bench/results/unit_costs.json of this checkout)")


def _fmt(value: float, unit: str) -> str:
    return f"{value / 1024**2:,.0f} MiB" if unit == "bytes" else f"{value:.3f} cores"


def report(p: object, units: object) -> str:
    """The plan as text: the answer, each resource's use at it, the load and where the unit costs came from."""
    from rtlib.model.capacity import Plan, UnitCosts

    assert isinstance(p, Plan) and isinstance(units, UnitCosts)
    load, src = p.load, units.source
    lines = [f"rtlib plan: {p.instances} server instance(s) and {p.shards} Redis shard(s); "
             f"{p.binding} runs out first",
             f"headroom: each instance and shard at most {p.limits.headroom:.0%} of one core "
             f"(and of {p.limits.instance_memory_bytes / 1024**3:g} GiB per instance)", "",
             f"{'resource at the answer':<28} {'used':>12} {'limit':>12} {'use':>6}"]
    for r in p.resources:
        lines.append(f"{r.name:<28} {_fmt(r.used, r.unit):>12} {_fmt(r.limit, r.unit):>12} {r.utilisation:>6.0%}")
    lines += ["", f"load: {load.connections:,.0f} connections, {load.per_workspace:,.1f} per workspace; "
                  f"{load.updates:,.1f} updates/s -> {load.deliveries:,.0f} deliveries/s; "
                  f"{load.heartbeats:,.1f} heartbeats/s; {p.instances / load.sweep_interval:,.1f} sweeps/s",
              f"pub/sub: {p.subscribed:.2f} instances subscribed per workspace, {p.pubsub_messages:,.0f} "
              f"messages/s from Redis; CPU total: servers {p.server_cores:.3f} cores, Redis {p.redis_cores:.3f} cores",
              f"unit costs: {src.get('path', '?')} (measured {src.get('date', '?')} on {src.get('machine', '?')})"]
    return "\n".join(lines)


def run_plan(args: argparse.Namespace) -> None:
    """Print the plan; one line and exit 2 for impossible input, a missing unit-cost file or no fitting plan."""
    try:
        from rtlib.model.capacity import Limits, Load, load_unit_costs, plan
    except ImportError as exc:  # rtlib.model's package imports the lab extra (numpy, pandas)
        fail(f"rtlib plan needs the lab extra ({exc.name} is missing): pip install 'rtlib[lab]'")
    try:
        load = Load(users=args.users, workspaces=args.workspaces, updates_per_user=args.updates_per_user,
                    recipients=args.recipients_per_update, connections_per_user=args.connections_per_user,
                    viewing=args.viewing, tasks_per_viewer=args.tasks_per_viewer,
                    viewers_per_task=args.viewers_per_task,
                    heartbeat_interval=args.heartbeat_interval, sweep_interval=args.sweep_interval)
        limits = Limits(headroom=args.headroom, instance_memory_bytes=args.instance_memory * 1024**3)
        units = load_unit_costs(args.unit_costs)
        answer = plan(load, units, limits)
    except ValueError as exc:
        fail(f"rtlib plan: {exc}")
    print(report(answer, units))
