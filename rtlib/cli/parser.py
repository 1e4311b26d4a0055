"""The ``rtlib`` argument parser: every option has a help line, and ``--help`` shows its default."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from rtlib import __version__
from rtlib.cli.plan import add_plan_arguments
from rtlib.cli.tune import add_tune_arguments
from rtlib.protocol.config import ServerConfig
from rtlib.protocol.presence import PRESENCE_MODES
from rtlib.server.auth import DEFAULT_TTL

__all__ = ["HelpFormatter", "build_parser"]


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
    serve.add_argument("--presence-mode", choices=PRESENCE_MODES, default=d.presence_mode,
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
    serve.add_argument("--durability", choices=["async", "replica"], default=d.durability,
                       help="async: ack a task.update once the master ran it (a failover can lose it); replica: "
                            "once a replica has it too (WAIT; needs a replica per master)")
    serve.add_argument("--replica-timeout", type=float, default=d.replica_timeout, metavar="S",
                       help="replica durability: wait this long for a replica, then answer not_replicated")
    serve.add_argument("--broker-grace", type=float, default=d.broker_grace, metavar="S",
                       help="while Redis is unreachable, connections stay open this long (then closed 1013)")
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
    sim.add_argument("--presence-mode", default="timer", choices=PRESENCE_MODES,
                     help="timer: clients beat from their own timer; probe: the servers probe, clients answer")
    sim.add_argument("--visibility-beat", action="store_true", help="clients also beat on hide/show")
    sim.add_argument("--leave-grace", type=float, default=0.0, metavar="S",
                     help="server setting: hold a lost viewer's presence.left back S design seconds")
    sim.add_argument("--ordering", default="gap_resync", choices=["naive", "version_gate", "gap_resync"],
                     help="how clients apply task.updated (rtlib.clientmodels.ordering)")
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

    tune = sub.add_parser("tune", help="recommend a presence design and timing for a browser population, from the "
                                       "virtual-time model (rtlib.model)")
    add_tune_arguments(tune)

    plan = sub.add_parser("plan", help="how many server instances and Redis shards a load needs, and which resource "
                                       "runs out first (rtlib.model.capacity, from measured unit costs)")
    add_plan_arguments(plan)

    schema = sub.add_parser("schema", help="print or write the JSON Schema of every wire event")
    schema.add_argument("--out", type=Path, help="write here instead of stdout")
    return parser
