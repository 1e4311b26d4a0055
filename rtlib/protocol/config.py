"""Server settings, validated once; every duration is in seconds (fractions allowed)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from rtlib.protocol.presence import PresenceConfig, PresenceMode

__all__ = ["Durability", "HistoryConfig", "PresenceMode", "PublishMode", "ServerConfig"]

PublishMode = Literal["atomic", "split"]
Durability = Literal["async", "replica"]
_P = PresenceConfig  # presence settings and their defaults are declared once, there


@dataclass(frozen=True)
class HistoryConfig:
    """The per-workspace history that resuming clients are caught up from (see :mod:`rtlib.protocol.history`).

    ``length`` events at most (0: no history, events carry no offset), none older than ``max_age`` seconds
    (0: no age bound); a resume that missed more than ``max_replay`` events resyncs instead.
    """

    length: int = 1000
    max_age: float = 300.0
    max_replay: int = 1000

    def __post_init__(self) -> None:
        if self.length < 0 or self.max_age < 0 or self.max_replay < 0:
            raise ValueError("history length, max_age and max_replay must not be negative")


@dataclass(frozen=True)
class ServerConfig:
    """Everything a server instance needs besides its Redis connection and signing secret."""

    # Presence (docs/protocol.md §9), flat for the CLI and callers; validated as one PresenceConfig (.presence).
    heartbeat_interval: float = _P.heartbeat_interval
    presence_timeout: float = _P.timeout
    sweep_interval: float = _P.sweep_interval
    presence_mode: PresenceMode = _P.mode
    visibility_beat: bool = _P.visibility_beat
    leave_grace: float = _P.leave_grace
    max_frame_bytes: int = 64 * 1024
    rate_limit: float = 100.0  # frames per second, sustained
    rate_burst: int = 200
    # Inbound bytes per connection: a budget beside the frame rate, so 64 KiB frames at the frame rate (6.4 MB/s,
    # re-sent to every member of the workspace) cannot monopolise the loop for the neighbours.
    byte_rate: float = 256 * 1024  # bytes per second, sustained
    byte_burst: int = 512 * 1024
    # Outbound bytes one connection's requests may make this instance write, per second (burst: banked): an
    # update costs its size x the workspace's other connections here, a task.get/task.list reply its size. The
    # inbound budgets above cannot bound this: a 60 KB update is re-sent to every member, so ten members within
    # their own inbound budgets had the server write ~100 MB/s and stalled the loop. Over budget, the server
    # pauses reading from that connection (nothing is refused or lost); one pause is at most 10 s.
    fanout_rate: float = 1024 * 1024
    fanout_burst: int = 1024 * 1024
    # Frames refused in a row (each answered with `rate_limited`) before the connection is closed 1008.
    rate_limit_strikes: int = 50
    # Open connections of one user on one instance; the next handshake is refused with 429. A bound on what
    # one (possibly stolen) token can hold open: each connection costs memory and a share of every broadcast.
    max_connections_per_user: int = 20
    # Handshakes accepted per second on one instance, after a burst: a storm of new connections (a reconnect
    # wave, or an attack) is served over time instead of stalling every open connection at once. A handshake
    # that would wait longer than handshake_max_wait is refused with 503 (retry with backoff).
    handshake_rate: float = 200.0
    handshake_burst: int = 10
    handshake_max_wait: float = 5.0
    # New connections being read and checked at once (before the pacing above); the rest of a storm waits
    # unread in the kernel, so a storm's handshakes cannot fill the event loop's iterations. Measured with
    # bench/hostile/: at 8 the storm's first ~150 ms cost the neighbour 10-20 ms spikes; at 2 they were gone
    # from storm-only runs (p99 5.0-5.2 ms vs 9-16) and the storm of 400 still took 2.1 s (the pacing's 200/s).
    handshake_concurrency: int = 2
    # Kernel receive buffer of each client socket (SO_RCVBUF on the listening socket, inherited; 0 = the OS
    # default, often several MiB with autotuning). It bounds how many bytes one read hands the WebSocket parser:
    # a client that pipelines thousands of tiny frames made the server parse 256 KiB (4-5 ms) in one go. At
    # 32 KiB a 64 KiB frame takes two reads; the per-connection byte budget is far below what it allows.
    receive_buffer: int = 32 * 1024
    # Unsent bytes queued for one client above which it is a slow consumer and is closed 1013.
    max_write_buffer: int = 8 * 1024 * 1024
    allowed_origins: tuple[str, ...] | None = None  # None: any Origin; a missing Origin is always allowed
    server_id: str = ""
    # "atomic": version bump + field write + publish in one Redis script (publish order = version order).
    # "split": bump+write, then publish as a second call, the natural implementation that races (a study mode).
    publish_mode: PublishMode = "atomic"
    history_length: int = 1000
    history_age: float = 300.0
    max_replay: int = 1000
    # A task.update with a ref is idempotent per (user, ref) for this long (0: off): a retried request gets the
    # first attempt's ack instead of bumping the version twice.
    idempotency_ttl: float = 300.0
    # The pub/sub subscriber is checked end to end every pubsub_check_interval: a probe published to the
    # instance's own channel must come back within pubsub_check_timeout, else Redis counts as unreachable from
    # this instance: the subscriber is replaced and every open connection is caught up from the history once it
    # is back (docs/protocol.md §11b). A deaf subscriber is caught within interval + timeout (3 s).
    pubsub_check_interval: float = 1.0
    pubsub_check_timeout: float = 2.0
    # Redis unreachable (paused, restarting, failing over): connections stay open this long, task requests are
    # answered `unavailable` (retry after broker_retry_after seconds), presence beats are held; then they are
    # closed 1013, spread uniformly over broker_close_spread seconds so their reconnects do not arrive at once.
    # 30 s covers a Sentinel or Cluster failover (cluster-node-timeout 15 s + an election) and is the most a
    # viewer beating every 30 s under a 60 s timeout can be unheard before another instance sweeps it.
    broker_grace: float = 30.0
    broker_retry_after: float = 1.0
    broker_close_spread: float = 10.0
    # The fan-out budget charges an update by the workspace's connections on every instance; each instance
    # reads that count from Redis at most this often (in the background: an update never waits for it).
    member_count_refresh: float = 2.0
    # When a task.update is acked (docs/protocol.md §2): "async" once the master ran it (Redis replicates after
    # the reply, so a failover can lose an acked update); "replica" once at least one replica has it too (WAIT 1
    # on the master's connection, at most replica_timeout seconds; past that the client gets `not_replicated`).
    durability: Durability = "async"
    replica_timeout: float = 1.0
    presence: PresenceConfig = field(init=False)
    history: HistoryConfig = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(
            self, "presence", PresenceConfig(self.heartbeat_interval, self.presence_timeout, self.sweep_interval,
                                             self.leave_grace, self.presence_mode, self.visibility_beat)
        )
        object.__setattr__(self, "history", HistoryConfig(self.history_length, self.history_age, self.max_replay))
        if self.idempotency_ttl < 0:
            raise ValueError("idempotency_ttl must not be negative")
        if self.max_frame_bytes < 256:
            raise ValueError("max_frame_bytes must be at least 256")
        if self.rate_limit <= 0 or self.rate_burst < 1 or self.rate_limit_strikes < 1:
            raise ValueError("rate_limit > 0, rate_burst >= 1 and rate_limit_strikes >= 1 are required")
        if self.byte_rate <= 0 or self.byte_burst < self.max_frame_bytes:
            raise ValueError("byte_rate > 0 and byte_burst >= max_frame_bytes are required (else a largest "
                             "frame could never pass)")
        if self.fanout_rate <= 0 or self.fanout_burst < 0:
            raise ValueError("fanout_rate > 0 and fanout_burst >= 0 are required")
        if self.handshake_rate <= 0 or self.handshake_burst < 1 or not 0 <= self.handshake_max_wait < 9:
            raise ValueError("handshake_rate > 0, handshake_burst >= 1 and 0 <= handshake_max_wait < 9 (the "
                             "handshake's own 10 s timeout) are required")
        if self.receive_buffer < 0:
            raise ValueError("receive_buffer must not be negative (0: the OS default)")
        if self.broker_grace < 0 or self.broker_retry_after <= 0 or self.broker_close_spread < 0:
            raise ValueError("broker_grace >= 0, broker_retry_after > 0 and broker_close_spread >= 0 are required")
        if self.member_count_refresh <= 0:
            raise ValueError("member_count_refresh must be positive")
        if self.handshake_concurrency < 1:
            raise ValueError("handshake_concurrency must be at least 1")
        if self.max_connections_per_user < 1:
            raise ValueError("max_connections_per_user must be at least 1")
        if self.durability not in ("async", "replica") or self.replica_timeout <= 0:
            raise ValueError(f"durability must be 'async' or 'replica' and replica_timeout > 0, got "
                             f"{self.durability!r}, {self.replica_timeout!r}")
        if self.publish_mode not in ("atomic", "split"):
            raise ValueError(f"publish_mode must be 'atomic' or 'split', got {self.publish_mode!r}")
