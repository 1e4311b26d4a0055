"""The ``rtlib`` command: ``serve``, ``token``, ``simulate``, ``tune``, ``schema`` and ``demo``."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import gc
import logging
import os
import re
import signal
import socket
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import urlsplit

from rtlib import __version__
from rtlib.protocol.config import ServerConfig
from rtlib.server.auth import DEFAULT_TTL, check_secret, issue_token
from rtlib.server.eventloop import run as run_loop

__all__ = ["UsageError", "build_parser", "main"]

REDIS_SCHEMES = ("redis", "rediss", "unix")


class UsageError(SystemExit):
    """A mistake the user can fix: its one line is already on stderr; exit status 2, as argparse's own."""

    def __init__(self, message: str) -> None:
        super().__init__(2)
        self.message = message

    def __str__(self) -> str:
        return self.message


def _fail(message: str) -> NoReturn:
    """Print ``message`` (one line: what is wrong and what to do) on stderr and exit with status 2."""
    print(message, file=sys.stderr, flush=True)
    raise UsageError(message)


def _secret(args: argparse.Namespace) -> str:
    try:
        return check_secret(args.secret or os.environ.get("RTLIB_SECRET"))
    except ValueError as exc:
        text = str(exc)
        if "required" in text:
            text = "a signing secret is required: pass --secret or set RTLIB_SECRET"
        _fail(f"rtlib {args.command}: {text}")


def _shown(url: str) -> str:
    """``url`` without its password, for messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@", 1)).geturl()


def _check_redis_url(command: str, url: str | None) -> None:
    """Refuse a ``--redis`` that is not a URL redis-py understands (``127.0.0.1:6379`` has no scheme)."""
    if url is None:
        return
    if "://" not in url or urlsplit(url).scheme not in REDIS_SCHEMES:
        hint = f"write redis://{url}" if "://" not in url else "use redis://HOST:PORT, rediss://HOST:PORT or unix://PATH"
        _fail(f"rtlib {command}: --redis {_shown(url)!r} is not a Redis URL; {hint}")


def _redis_problem(exc: BaseException) -> str:
    """The useful part of a redis-py connection error (``Connection refused``, ``Name or service not known``)."""
    text = str(exc).strip()
    if m := re.search(r"connecting to \S+?\.? (.+)$", text):
        text = m.group(1)
    return text.rstrip(".") or type(exc).__name__


def _unreachable(command: str, url: str, exc: BaseException) -> NoReturn:
    _fail(f"rtlib {command}: cannot reach Redis at {_shown(url)} ({_redis_problem(exc)}); start redis-server "
          "there, fix --redis, or leave --redis out to use an embedded one")


def _check_redis(command: str, url: str | None) -> None:
    """``--redis`` is a Redis URL and a Redis answers there, else one line and exit 2."""
    if url is None:
        return
    _check_redis_url(command, url)
    import redis

    try:
        with redis.Redis.from_url(url, socket_connect_timeout=5, socket_timeout=5) as client:
            client.ping()
    except (redis.RedisError, OSError, ValueError) as exc:
        _unreachable(command, url, exc)


def _listen_problem(command: str, host: str, port: int, exc: OSError) -> str:
    """One line for a server that could not listen on ``host:port``."""
    if exc.errno == errno.EADDRINUSE:
        return (f"rtlib {command}: port {port} on {host} is already in use (another rtlib?); stop that process or "
                "pick another --port (0 picks a free one)")
    if exc.errno == errno.EACCES:
        return f"rtlib {command}: no permission to listen on port {port}; use a port above 1023"
    if exc.errno == errno.EADDRNOTAVAIL or isinstance(exc, socket.gaierror):
        reason = os.strerror(exc.errno) if exc.errno == errno.EADDRNOTAVAIL else exc.strerror
        return (f"rtlib {command}: cannot listen on {host} ({reason}); --host takes an address of this machine, "
                "e.g. 127.0.0.1 or 0.0.0.0")
    reason = os.strerror(exc.errno) if isinstance(exc.errno, int) and exc.errno > 0 else (exc.strerror or str(exc))
    return f"rtlib {command}: cannot listen on {host}:{port} ({reason}); check --host and --port"


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """``--help`` shows each option's default, except where there is none to show (no value, a flag, or a
    default the help already describes in words)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if (not action.option_strings or "default" in text or default is None or default is False
                or default == "" or default is argparse.SUPPRESS):
            return text
        return f"{text} (default: %(default)s)" if text else "default: %(default)s"


class _Parser(argparse.ArgumentParser):
    """Every subcommand's parser: its --help shows defaults too."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rtlib", description="Real-time collaboration workbench.",
                                     formatter_class=HelpFormatter)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    serve = sub.add_parser("serve", help="run one server instance (several on one Redis form a cluster)")
    serve.add_argument("--host", default="127.0.0.1", help="listen address (0.0.0.0: every interface)")
    serve.add_argument("--port", type=int, default=8765, help="listen port (0 picks a free one)")
    serve.add_argument("--redis", metavar="URL", help="shared Redis (default: start an embedded redis-server)")
    serve.add_argument("--secret", help="token signing secret, at least 32 bytes (default: $RTLIB_SECRET)")
    d = ServerConfig()
    serve.add_argument("--heartbeat-interval", type=float, default=d.heartbeat_interval, metavar="S",
                       help="how often clients beat (announced in session.welcome)")
    serve.add_argument("--presence-timeout", type=float, default=d.presence_timeout, metavar="S",
                       help="a viewer without a beat for this long is gone (presence.left, reason timeout)")
    serve.add_argument("--sweep-interval", type=float, default=d.sweep_interval, metavar="S",
                       help="how often this instance expires timed-out viewers")
    serve.add_argument("--presence-mode", choices=["timer", "probe"], default=d.presence_mode,
                       help="timer: clients beat from their own timer; probe: the server probes each viewing "
                            "connection every heartbeat interval and the answer is the heartbeat")
    serve.add_argument("--visibility-beat", action="store_true",
                       help="tell clients to also beat when their page becomes hidden or visible")
    serve.add_argument("--leave-grace", type=float, default=d.leave_grace, metavar="S",
                       help="hold a timed-out viewer's presence.left back S seconds (dropped if it beats again)")
    serve.add_argument("--max-frame-bytes", type=int, default=d.max_frame_bytes, metavar="BYTES",
                       help="largest client message; bigger ones close the connection 1009")
    serve.add_argument("--rate-limit", type=float, default=d.rate_limit, help="frames/s sustained per connection")
    serve.add_argument("--rate-burst", type=int, default=d.rate_burst, help="frames a connection may send at once")
    serve.add_argument("--byte-rate", type=float, default=d.byte_rate, metavar="BYTES",
                       help="inbound bytes/s sustained per connection")
    serve.add_argument("--byte-burst", type=int, default=d.byte_burst, metavar="BYTES",
                       help="inbound bytes a connection may send at once")
    serve.add_argument("--fanout-rate", type=float, default=d.fanout_rate, metavar="BYTES",
                       help="outbound bytes/s one connection's requests may make the servers write (an update: its "
                            "size x the workspace's other connections, on every instance); over it, the connection "
                            "is not read until paid back")
    serve.add_argument("--fanout-burst", type=int, default=d.fanout_burst, metavar="BYTES",
                       help="outbound bytes a connection's requests may make the servers write at once")
    serve.add_argument("--max-connections-per-user", type=int, default=d.max_connections_per_user,
                       help="per instance; the next handshake gets 429")
    serve.add_argument("--handshake-rate", type=float, default=d.handshake_rate,
                       help="new connections/s per instance, after --handshake-burst; later ones wait")
    serve.add_argument("--handshake-burst", type=int, default=d.handshake_burst,
                       help="handshakes accepted at once before --handshake-rate paces them")
    serve.add_argument("--receive-buffer", type=int, default=d.receive_buffer, metavar="BYTES",
                       help="SO_RCVBUF of client sockets: bytes one read can hand the parser (0: OS default)")
    serve.add_argument("--handshake-concurrency", type=int, default=d.handshake_concurrency,
                       help="new connections read and checked at once; a storm's others wait unread")
    serve.add_argument("--rate-limit-strikes", type=int, default=d.rate_limit_strikes,
                       help="refused frames in a row before closing 1008")
    serve.add_argument("--max-write-buffer", type=int, default=d.max_write_buffer,
                       help="bytes queued for one client before it is closed 1013 as a slow consumer")
    serve.add_argument("--allowed-origin", action="append", dest="allowed_origins", metavar="ORIGIN",
                       help="allow this Origin (repeatable; default: any; no Origin header is always allowed)")
    serve.add_argument("--publish-mode", choices=["atomic", "split"], default="atomic",
                       help="atomic: version and publish in one script; split: a study mode with weaker ordering")
    serve.add_argument("--history-length", type=int, default=d.history_length,
                       help="events kept per workspace for resume (0: no history)")
    serve.add_argument("--history-age", type=float, default=d.history_age, metavar="S",
                       help="events older than this are dropped from the history")
    serve.add_argument("--max-replay", type=int, default=d.max_replay, help="events replayed on resume at most")
    serve.add_argument("--idempotency-ttl", type=float, default=d.idempotency_ttl, metavar="S",
                       help="a task.update's (user, ref) is remembered this long (0: off)")
    serve.add_argument("--server-id", default="", help="instance name in session.welcome (default: random)")
    serve.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"], type=str.upper,
                       help="INFO logs start-up, shutdown and refused handshakes with their reason")
    serve.add_argument("--loop", choices=["auto", "uvloop", "asyncio"], default="auto",
                       help="event loop (auto: uvloop if installed, else asyncio's)")

    token = sub.add_parser("token", help="print a signed connection token")
    token.add_argument("--user", required=True, help="the user id the token speaks for")
    token.add_argument("--workspace", action="append", required=True, help="a workspace the user may join (repeatable)")
    token.add_argument("--ttl", type=float, default=DEFAULT_TTL, metavar="SECONDS", help="token lifetime")
    token.add_argument("--secret", help="token signing secret, at least 32 bytes (default: $RTLIB_SECRET)")

    sim = sub.add_parser("simulate", help="run simulated clients against an in-process cluster; write CSVs")
    sim.add_argument("--clients", type=int, default=200, help="simulated browser tabs")
    sim.add_argument("--workspaces", type=int, default=4, help="clients are spread over these")
    sim.add_argument("--tasks", type=int, default=10, help="tasks per workspace")
    sim.add_argument("--instances", type=int, default=2, help="rtlib serve processes on one Redis")
    sim.add_argument("--duration", type=float, default=60.0, help="design seconds")
    sim.add_argument("--rate", type=float, default=20.0, help="task.update per design second, all editors")
    sim.add_argument("--editors", type=float, default=0.25, help="share of clients that edit")
    sim.add_argument("--viewers", type=float, default=0.5, help="share of clients that open a task")
    sim.add_argument("--crash", type=float, default=0.0, help="share of viewers that vanish mid-run")
    sim.add_argument("--churn", type=float, default=0.0, help="share of clients that reconnect mid-run")
    sim.add_argument("--heartbeat", metavar="MODEL",
                     help="the clients' heartbeat model, e.g. background:30:300 (default: interval:S, S being "
                          "--heartbeat-interval: the clients beat as the servers ask)")
    sim.add_argument("--heartbeat-interval", type=float, default=30.0, metavar="S",
                     help="server setting, design seconds")
    sim.add_argument("--presence-timeout", type=float, default=60.0, metavar="S",
                     help="server setting, design seconds")
    sim.add_argument("--sweep-interval", type=float, default=5.0, metavar="S", help="server setting, design seconds")
    sim.add_argument("--presence-mode", default="timer", choices=["timer", "probe"],
                     help="timer: clients beat from their own timer; probe: the servers probe, clients answer")
    sim.add_argument("--visibility-beat", action="store_true", help="clients also beat on hide/show")
    sim.add_argument("--leave-grace", type=float, default=0.0, metavar="S",
                     help="server setting: hold a lost viewer's presence.left back S design seconds")
    sim.add_argument("--ordering", default="gap_resync", choices=["naive", "version_gate", "gap_resync"],
                     help="how clients apply task.updated (rtlib.client.ordering)")
    sim.add_argument("--publish-mode", default="atomic", choices=["atomic", "split"], help="server setting")
    sim.add_argument("--delay", type=float, default=0.0, help="injected per-frame delay, real seconds")
    sim.add_argument("--jitter", type=float, default=0.0, help="injected per-frame jitter, real seconds")
    sim.add_argument("--loss", type=float, default=0.0, help="share of task.updated frames dropped")
    sim.add_argument("--time-scale", type=float, default=0.1, help="wall seconds per design second")
    sim.add_argument("--seed", type=int, default=0, help="the same seed plays the same run")
    sim.add_argument("--redis", metavar="URL", help="use this Redis (default: embedded redis-server)")
    sim.add_argument("--workers", type=int, help="client worker processes (default: automatic)")
    sim.add_argument("--out", type=Path, default=Path("sim-results"), help="folder for the CSVs and summary.json")
    sim.add_argument("--keep-temp", action="store_true",
                     help="keep the instances' logs (an rtlib-lab-* folder in the temporary directory); "
                          "without it they are removed after the run")

    demo = sub.add_parser("demo", help="DEVELOPMENT ONLY: a server, a seeded board, demo users' links, bots")
    demo.add_argument("--dev", action="store_true",
                      help="required: acknowledge that this prints usable tokens signed with a throwaway secret")
    demo.add_argument("--host", default="127.0.0.1", help="listen address")
    demo.add_argument("--port", type=int, default=8765, help="0 picks a free port")
    demo.add_argument("--workspace", default="demo", help="the seeded board's workspace id")
    demo.add_argument("--users", default="alice,bob,carol", help="comma-separated demo users (2 or 3 is plenty)")
    demo.add_argument("--bots", type=int, default=0, metavar="N", help="simulated users editing and viewing tasks")
    demo.add_argument("--bot-interval", type=float, default=2.0, metavar="S", help="mean seconds between bot actions")
    demo.add_argument("--ttl", type=float, default=7200.0, metavar="SECONDS", help="token lifetime")
    demo.add_argument("--redis", metavar="URL", help="use this Redis (default: embedded redis-server)")

    tune = sub.add_parser("tune", help="recommend presence timing from the virtual-time model (rtlib.model)")
    tune.add_argument("--max-detection", type=float, default=60.0, metavar="S",
                      help="p99 of the delay from a silent departure to its presence.left")
    tune.add_argument("--max-mistakes", type=float, default=0.01, metavar="RATE",
                      help="false departures per present viewer-hour")
    tune.add_argument("--client-model", action="append", metavar="SPEC",
                      help="repeatable, all must meet the requirement; {hb} = the heartbeat interval being tried "
                           "(default: interval:{hb} and lossy:0.1:interval:{hb}); e.g. chrome:{hb}:60 (hidden "
                           "Chrome tabs, Chromium 156's 60 s grace), ios:{hb}, sleep:{hb}")
    tune.add_argument("--heartbeats", default="5,10,15,20,25,30,45,60", metavar="S,S,...",
                      help="heartbeat intervals to try")
    tune.add_argument("--timeouts", default="15,20,30,40,45,50,60,70,75,90,100,120,150,180", metavar="S,S,...",
                      help="presence timeouts to try")
    tune.add_argument("--sweeps", default="5", metavar="S,S,...", help="sweep intervals to try")
    tune.add_argument("--graces", default="0", metavar="S,S,...", help="leave graces to try (docs/protocol.md §9)")
    tune.add_argument("--presence-mode", choices=["timer", "probe"], default="timer",
                      help="probe: the server's probes drive the beats (the client model says who answers)")
    tune.add_argument("--visibility-beat", action="store_true", help="chrome: clients also beat on hide/show")
    tune.add_argument("--viewers", type=int, default=2000, help="simulated viewers per run")
    tune.add_argument("--hours", type=float, default=8.0, help="simulated hours per run")
    tune.add_argument("--departures", type=float, default=0.3, help="share of viewers that vanish silently")
    tune.add_argument("--instances", type=int, default=2, help="server instances")
    tune.add_argument("--skew", type=float, default=0.0, help="clock skew between instances, seconds")
    tune.add_argument("--delay", type=float, default=0.02, help="one-way network delay, seconds")
    tune.add_argument("--jitter", type=float, default=0.0, help="+ U(0, jitter) per frame, seconds")
    tune.add_argument("--loss", type=float, default=0.0, help="network loss of heartbeat frames")
    tune.add_argument("--conservative", action="store_true", help="judge mistakes by their 95 %% upper bound")
    tune.add_argument("--seed", type=int, default=0, help="the same seed gives the same answer")

    schema = sub.add_parser("schema", help="print or write the JSON Schema of every wire event")
    schema.add_argument("--out", type=Path, help="write here instead of stdout")
    return parser


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
    )


async def _serve(args: argparse.Namespace, redis_url: str, config: ServerConfig) -> str | None:
    """Serve until SIGINT/SIGTERM; returns a one-line problem instead if the server cannot start."""
    from redis.exceptions import RedisError

    from rtlib.server.driver import RealtimeServer

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    server = RealtimeServer(redis_url, _secret(args), config, args.host, args.port)
    try:
        await server.start()
    except (OSError, RedisError) as exc:
        with contextlib.suppress(Exception):
            await server.stop()
        if isinstance(exc, RedisError) or getattr(exc, "errno", None) in (errno.ECONNREFUSED, errno.ECONNRESET):
            return (f"rtlib serve: cannot reach Redis at {_shown(redis_url)} ({_redis_problem(exc)}); start "
                    "redis-server there, fix --redis, or leave --redis out to use an embedded one")
        return _listen_problem("serve", args.host, args.port, exc)
    # The import-time heap (~37,000 objects: websockets, redis, msgspec...) never becomes garbage; frozen, it
    # is left out of full collections. Measured under a 400-connection storm: gen-2 pauses of 54-78 ms (every
    # open connection stalls for them) fell to about 8 ms.
    gc.freeze()
    print(f"rtlib {server.server_id} serving {server.url} (redis {_shown(redis_url)}, {type(loop).__module__} "
          f"loop); board page at http://{args.host}:{server.port}/app/#workspace=W&token=T", flush=True)
    await stop.wait()
    print(f"rtlib {server.server_id} shutting down", flush=True)
    await server.stop()
    return None


def _simulate(args: argparse.Namespace) -> None:
    try:  # the workbench is an extra: a server install has no pandas or matplotlib
        from rtlib.lab import Cluster, Impairment, Scenario
    except ImportError as exc:
        _fail(f"rtlib simulate needs the lab extra ({exc.name} is missing): pip install 'rtlib[lab]'")

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
        from rtlib.client.heartbeat import parse_model

        model = parse_model(scenario.heartbeat)
    except ValueError as exc:
        _fail(f"rtlib simulate: {exc}")
    if warning := _heartbeat_mismatch(model, scenario):
        print(warning, file=sys.stderr, flush=True)
    _check_redis("simulate", args.redis)
    cluster = Cluster(instances=args.instances, redis=args.redis, keep_logs=args.keep_temp)
    try:
        try:
            cluster.start(scenario)
        except RuntimeError as exc:  # an instance did not start: its own one line, and where its log is
            _fail(f"rtlib simulate: {exc}")
        cluster.workers = args.workers
        cluster.calibrate()
        results = cluster.run(scenario)
    finally:
        cluster.close()
    out = results.write(args.out)
    s = results.summary()
    lat = s["latency_ms"]
    causes = s["departures_by_cause"]
    rows = [("clients", s["clients"]), ("instances", s["instances"]), ("updates sent", s["updates_sent"]),
            ("deliveries", s["deliveries"]), ("expected", s["expected"]), ("lost", s["lost"]),
            ("out of order", s["out_of_order"]), ("converged", s["converged"]),
            ("latency ms p50/p90/p99/max", f"{lat['p50']} / {lat['p90']} / {lat['p99']} / {lat['max']}"),
            ("simulator overhead ms", s["calibration_ms"]),
            ("departures seen", f"{s['departures']}: {causes['leave']} left (presence.leave, incl. the end of "
                                f"the run), {causes['disconnect']} disconnected, {causes['crash']} crashed "
                                "(by timeout)"),
            ("false departures", s["false_departures"])]
    for name, value in rows:
        print(f"{name:>28}  {value}")
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
        _fail("rtlib demo: refusing to start without --dev. The demo signs tokens with a throwaway secret and "
              "prints them in links; it is for a developer's own machine only.")
    from rtlib.server.demo import DemoOptions, run_demo

    users = tuple(u.strip() for u in args.users.split(",") if u.strip())
    ids_ok = all(re.fullmatch(r"[A-Za-z0-9_.\-]{1,128}", u) for u in (*users, args.workspace))
    if not users or not ids_ok or args.bots < 0 or args.ttl <= 0:
        _fail("rtlib demo: --users and --workspace take ids (A-Z a-z 0-9 _ . -), --bots >= 0, --ttl > 0")
    _check_redis("demo", args.redis)
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
            return _listen_problem("demo", opts.host, opts.port, exc)
        print("rtlib demo: stopped", flush=True)
        return None

    if args.redis:
        problem = asyncio.run(run(args.redis))
    else:
        with _embedded("demo") as url:
            problem = asyncio.run(run(url))
    if problem:
        _fail(problem)


@contextlib.contextmanager
def _embedded(command: str) -> Iterator[str]:
    """An embedded redis-server for this run, or one line saying how to get one."""
    from rtlib.server.embedded import embedded_redis
    from rtlib.server.redis_process import RedisNotFound

    with contextlib.ExitStack() as stack:
        try:
            url = stack.enter_context(embedded_redis())
        except RedisNotFound as exc:
            _fail(f"rtlib {command}: {exc}; or pass --redis URL of a running Redis")
        yield url


def _tune(args: argparse.Namespace) -> None:
    try:  # the model needs numpy, pandas and tqdm: the lab extra
        import pandas as pd

        from rtlib.model import ModelScenario, grid, sweep
        from rtlib.model.tune import report
    except ImportError as exc:
        _fail(f"rtlib tune needs the lab extra ({exc.name} is missing): pip install 'rtlib[lab]'")

    try:
        numbers = [[float(x) for x in text.split(",") if x.strip()] for text in (args.heartbeats, args.timeouts,
                                                                                  args.sweeps, args.graces)]
        configs = grid(*numbers)
        models = args.client_model or ["interval:{hb}", "lossy:0.1:interval:{hb}"]
        scenarios = [ModelScenario(viewers=args.viewers, hours=args.hours, client=m, departures=args.departures,
                                   instances=args.instances, skew=args.skew, delay=args.delay, jitter=args.jitter,
                                   loss=args.loss, seed=args.seed, presence_mode=args.presence_mode,
                                   visibility_beat=args.visibility_beat) for m in models]
        from rtlib.client.heartbeat import parse_model

        for sc in scenarios:
            parse_model(sc.client_spec(30.0))
    except ValueError as exc:
        _fail(f"rtlib tune: {exc}")
    results = pd.concat([sweep(configs, sc, progress=sys.stderr.isatty()) for sc in scenarios], ignore_index=True)
    text, found = report(results, max_detection_p99=args.max_detection, max_mistakes_per_hour=args.max_mistakes,
                         conservative=args.conservative)
    print(f"{len(configs)} configurations x {len(scenarios)} client models, {args.viewers} viewers x {args.hours:g} h "
          f"each, {args.instances} instances, seed {args.seed}, presence mode {scenarios[0].alternative}")
    print(text)
    if not found:
        sys.exit(2)


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    if args.command == "token":
        try:
            print(issue_token(_secret(args), args.user, args.workspace, args.ttl))
        except ValueError as exc:
            _fail(f"rtlib token: {exc}")
    elif args.command == "schema":
        from rtlib.protocol.schema import json_schema_text

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
        _tune(args)
    elif args.command == "serve":
        logging.basicConfig(level=args.log_level, format="%(asctime)s %(name)s %(levelname)s %(message)s")
        _secret(args)
        try:
            config = _config(args)
        except ValueError as exc:
            _fail(f"rtlib serve: {exc}")
        try:
            from rtlib.server.eventloop import loop_name

            loop_name(args.loop)
        except RuntimeError as exc:
            _fail(f"rtlib serve: {exc}")
        _check_redis("serve", args.redis)
        problem = None
        if args.redis:
            problem = run_loop(_serve(args, args.redis, config), args.loop)
        else:
            with _embedded("serve") as url, contextlib.suppress(KeyboardInterrupt):
                problem = run_loop(_serve(args, url, config), args.loop)
        if problem:
            _fail(problem)


if __name__ == "__main__":
    main()
