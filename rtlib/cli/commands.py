"""What each ``rtlib`` command does: ``serve``, ``token``, ``simulate``, ``tune``, ``plan``, ``schema`` and ``demo``."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import gc
import logging
import re
import signal
import sys
from typing import Any

from rtlib.cli.errors import (
    check_redis,
    embedded,
    fail,
    listen_problem,
    redis_problem,
    secret,
    shown,
)
from rtlib.cli.parser import build_parser
from rtlib.cli.plan import run_plan
from rtlib.cli.tune import run_tune
from rtlib.protocol.config import ServerConfig
from rtlib.server.auth import issue_token
from rtlib.server.eventloop import run as run_loop

__all__ = ["main"]


def _config(args: argparse.Namespace) -> ServerConfig:
    return ServerConfig(
        heartbeat_interval=args.heartbeat_interval, presence_timeout=args.presence_timeout,
        sweep_interval=args.sweep_interval, presence_mode=args.presence_mode, visibility_beat=args.visibility_beat,
        leave_grace=args.leave_grace, max_frame_bytes=args.max_frame_bytes, rate_limit=args.rate_limit,
        rate_burst=args.rate_burst, rate_limit_strikes=args.rate_limit_strikes,
        handshake_rate=args.handshake_rate, handshake_burst=args.handshake_burst,
        handshake_concurrency=args.handshake_concurrency, receive_buffer=args.receive_buffer,
        byte_rate=args.byte_rate, byte_burst=args.byte_burst, fanout_rate=args.fanout_rate,
        fanout_burst=args.fanout_burst, max_connections_per_user=args.max_connections_per_user,
        max_write_buffer=args.max_write_buffer,
        allowed_origins=tuple(args.allowed_origins) if args.allowed_origins else None,
        server_id=args.server_id, publish_mode=args.publish_mode, history_length=args.history_length,
        history_age=args.history_age, max_replay=args.max_replay, idempotency_ttl=args.idempotency_ttl,
        broker_grace=args.broker_grace, durability=args.durability, replica_timeout=args.replica_timeout,
    )


async def _serve(args: argparse.Namespace, redis_url: str, config: ServerConfig) -> str | None:
    """Serve until SIGINT/SIGTERM; returns a one-line problem instead if the server cannot start."""
    from redis.exceptions import RedisError

    from rtlib.server.driver import RealtimeServer

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    server = RealtimeServer(redis_url, secret(args), config, args.host, args.port)
    try:
        await server.start()
    except RuntimeError as exc:  # a setting this Redis cannot honour (--durability replica without a replica)
        with contextlib.suppress(Exception):
            await server.stop()
        return f"rtlib serve: {exc}"
    except (OSError, RedisError) as exc:
        with contextlib.suppress(Exception):
            await server.stop()
        if isinstance(exc, RedisError) or getattr(exc, "errno", None) in (errno.ECONNREFUSED, errno.ECONNRESET):
            return (f"rtlib serve: cannot reach Redis at {shown(redis_url)} ({redis_problem(exc)}); start "
                    "redis-server there, fix --redis, or leave --redis out to use an embedded one")
        return listen_problem("serve", args.host, args.port, exc)
    # The import-time heap (~37,000 objects: websockets, redis, msgspec...) never becomes garbage; frozen, it
    # is left out of full collections. Measured under a 400-connection storm: gen-2 pauses of 54-78 ms (every
    # open connection stalls for them) fell to about 8 ms.
    gc.freeze()
    print(f"rtlib {server.server_id} serving {server.url} (redis {shown(redis_url)}, {type(loop).__module__} "
          f"loop); board page at http://{args.host}:{server.port}/app/#workspace=W&token=T", flush=True)
    await stop.wait()
    print(f"rtlib {server.server_id} shutting down", flush=True)
    await server.stop()
    return None


def _simulate(args: argparse.Namespace) -> None:
    try:  # the workbench is an extra: a server install has no pandas or matplotlib
        from rtlib.lab import Cluster, Impairment, Scenario
    except ImportError as exc:
        fail(f"rtlib simulate needs the lab extra ({exc.name} is missing): pip install 'rtlib[lab]'")

    heartbeat = args.heartbeat or f"interval:{args.heartbeat_interval:g}"
    try:
        scenario = Scenario(
            clients=args.clients, workspaces=args.workspaces, tasks=args.tasks, duration=args.duration,
            update_rate=args.rate, editors=args.editors, viewers=args.viewers, crash=args.crash, churn=args.churn,
            heartbeat=heartbeat, heartbeat_interval=args.heartbeat_interval,
            presence_timeout=args.presence_timeout, sweep_interval=args.sweep_interval, ordering=args.ordering,
            presence_mode=args.presence_mode, visibility_beat=args.visibility_beat, leave_grace=args.leave_grace,
            publish_mode=args.publish_mode, impairment=Impairment(args.delay, args.jitter, args.loss),
            time_scale=args.time_scale, seed=args.seed, hot_tasks=min(2, args.tasks))
        from rtlib.clientmodels.heartbeat import parse_model

        model = parse_model(scenario.heartbeat)
    except ValueError as exc:
        fail(f"rtlib simulate: {exc}")
    if warning := _heartbeat_mismatch(model, scenario):
        print(warning, file=sys.stderr, flush=True)
    check_redis("simulate", args.redis)
    cluster = Cluster(instances=args.instances, redis=args.redis, keep_logs=args.keep_temp)
    try:
        try:
            cluster.start(scenario)
        except RuntimeError as exc:  # an instance did not start: its own one line, and where its log is
            fail(f"rtlib simulate: {exc}")
        cluster.workers = args.workers
        cluster.calibrate()
        results = cluster.run(scenario)
    finally:
        cluster.close()
    out = results.write(args.out)
    s = results.summary()
    lat = s["latency_ms"]
    causes = s["departures_by_cause"]
    rt = s["realtime"]
    rows = [("clients", s["clients"]), ("instances", s["instances"]), ("updates sent", s["updates_sent"]),
            ("deliveries", s["deliveries"]), ("expected", s["expected"]), ("lost", s["lost"]),
            ("out of order", s["out_of_order"]), ("converged", s["converged"]),
            ("latency ms p50/p90/p99/max", f"{lat['p50']} / {lat['p90']} / {lat['p99']} / {lat['max']}"),
            ("simulator overhead ms", s["calibration_ms"]),
            ("departures seen", f"{s['departures']}: {causes['leave']} left (presence.leave, incl. the end of "
                                f"the run), {causes['disconnect']} disconnected, {causes['crash']} crashed "
                                "(by timeout)"),
            ("false departures", s["false_departures"]),
            ("clients' lateness s p99/max", f"{rt.get('late_p99_s', 0)} / {rt.get('late_max_s', 0)} over {rt['wakes']} "
                                           f"wakes, {rt['overruns']} past {rt['overrun_limit_s']:g} s")]
    for name, value in rows:
        print(f"{name:>28}  {value}")
    if not rt["kept_real_time"]:  # compressed time only holds while the clients keep up with it
        print(f"rtlib simulate: warning: the simulated clients fell behind real time ({rt['overruns']} of "
              f"{rt['wakes']} wakes later than {rt['overrun_limit_s']:g} design s): presence timings measure this "
              "machine's load; raise --time-scale or lower --clients", file=sys.stderr)
    print(f"wrote {out}/deliveries.csv, presence.csv, applies.csv, connections.csv, summary.json")
    if args.keep_temp:
        print(f"instance logs kept in {cluster.logdir}")


def _heartbeat_mismatch(model: Any, scenario: Any) -> str | None:
    """A warning when the simulated clients beat on another interval than the servers ask for (timer mode):
    e.g. --heartbeat-interval 10 --presence-timeout 20 with clients still beating every 30 s."""
    inner = model
    while hasattr(inner, "model"):  # lossy:LOSS:<model>
        inner = inner.model
    beats = getattr(inner, "interval", None)
    if scenario.presence_mode != "timer" or beats is None or beats == scenario.heartbeat_interval:
        return None
    return (f"rtlib simulate: warning: the clients beat every {beats:g} s (--heartbeat {scenario.heartbeat}) but the "
            f"servers ask for every {scenario.heartbeat_interval:g} s (--heartbeat-interval); viewers may be timed "
            f"out falsely. Leave --heartbeat out to match")


def _demo(args: argparse.Namespace) -> None:
    if not args.dev:
        fail("rtlib demo: refusing to start without --dev. The demo signs tokens with a throwaway secret and "
              "prints them in links; it is for a developer's own machine only.")
    from rtlib.server.demo import DemoOptions, run_demo

    users = tuple(u.strip() for u in args.users.split(",") if u.strip())
    ids_ok = all(re.fullmatch(r"[A-Za-z0-9_.\-]{1,128}", u) for u in (*users, args.workspace))
    if not users or not ids_ok or args.bots < 0 or args.ttl <= 0:
        fail("rtlib demo: --users and --workspace take ids (A-Z a-z 0-9 _ . -), --bots >= 0, --ttl > 0")
    check_redis("demo", args.redis)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"WARNING: rtlib demo listens on {args.host}: anyone who can reach it can use the demo links",
              file=sys.stderr)
    opts = DemoOptions(host=args.host, port=args.port, workspace=args.workspace, users=users, bots=args.bots,
                       ttl=args.ttl, bot_interval=max(0.05, args.bot_interval))

    async def run(url: str) -> str | None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        try:
            await run_demo(opts, url, stop)
        except OSError as exc:  # most often: the port is taken
            return listen_problem("demo", opts.host, opts.port, exc)
        print("rtlib demo: stopped", flush=True)
        return None

    if args.redis:
        problem = asyncio.run(run(args.redis))
    else:
        with embedded("demo") as url:
            problem = asyncio.run(run(url))
    if problem:
        fail(problem)


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    if args.command == "token":
        try:
            print(issue_token(secret(args), args.user, args.workspace, args.ttl))
        except ValueError as exc:
            fail(f"rtlib token: {exc}")
    elif args.command == "schema":
        from rtlib.protocol.jsonschema import json_schema_text

        text = json_schema_text()
        if args.out:
            args.out.write_text(text)
            print(f"wrote {args.out}")
        else:
            sys.stdout.write(text)
    elif args.command == "demo":
        logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")
        _demo(args)
    elif args.command == "simulate":
        _simulate(args)
    elif args.command == "tune":
        run_tune(args)
    elif args.command == "plan":
        run_plan(args)
    elif args.command == "serve":
        logging.basicConfig(level=args.log_level, format="%(asctime)s %(name)s %(levelname)s %(message)s")
        secret(args)
        try:
            config = _config(args)
        except ValueError as exc:
            fail(f"rtlib serve: {exc}")
        try:
            from rtlib.server.eventloop import loop_name

            loop_name(args.loop)
        except RuntimeError as exc:
            fail(f"rtlib serve: {exc}")
        check_redis("serve", args.redis)
        problem = None
        if args.redis:
            problem = run_loop(_serve(args, args.redis, config), args.loop)
        else:
            with embedded("serve") as url, contextlib.suppress(KeyboardInterrupt):
                problem = run_loop(_serve(args, url, config), args.loop)
        if problem:
            fail(problem)
