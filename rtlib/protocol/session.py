"""One client connection's protocol state, sans-I/O (the server's ``protocol.py``).

:meth:`Session.receive` takes one frame and ``now`` and returns what to do: a :class:`Request` for the
driver to carry out against the store, or an ``error`` frame to send back. It raises
:class:`~rtlib.protocol.errors.ConnectionMustClose` when the connection has to end. It never reads a clock, sleeps
or touches a socket, so every frame handler is unit-testable and fuzzable with plain data.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import msgspec

from rtlib.protocol import events
from rtlib.protocol.config import ServerConfig
from rtlib.protocol.errors import CloseCode, ConnectionMustClose, ErrorCode, ProtocolError
from rtlib.protocol.ratelimit import DebtBucket, TokenBucket
from rtlib.protocol.schema import PresenceRequest, TaskGet, TaskList, TaskUpdate, decode_client_frame

__all__ = ["Request", "Session"]


@dataclass(frozen=True)
class Request:
    """A valid client request: ``type`` is a client event type, ``payload`` its decoded struct."""

    type: str
    payload: TaskUpdate | TaskGet | TaskList | PresenceRequest


@dataclass(slots=True)
class Session:
    """Protocol state of one connection: one user in one workspace."""

    conn_id: str
    user_id: str
    workspace_id: str
    config: ServerConfig
    #: Tasks this connection views: joined and not left. Kept when an entry expires, so a later heartbeat or
    #: probe answer re-joins it; whatever is left is removed when the connection closes.
    tasks: set[str] = field(default_factory=set)
    bucket: TokenBucket = field(init=False)
    byte_bucket: TokenBucket = field(init=False)
    #: Outbound bytes this connection's requests made the server write (see :meth:`fanout`).
    fanout_bucket: DebtBucket = field(init=False)
    #: Frames refused in a row by either bucket; past ``rate_limit_strikes`` the client is ignoring its errors.
    strikes: int = 0

    def __post_init__(self) -> None:
        self.bucket = TokenBucket(self.config.rate_limit, self.config.rate_burst)
        self.byte_bucket = TokenBucket(self.config.byte_rate, self.config.byte_burst)
        self.fanout_bucket = DebtBucket(self.config.fanout_rate, self.config.fanout_burst)

    def welcome(self, now: float, epoch: str | None = None, offset: str | None = None,
                recovered: bool | None = None) -> bytes:
        cfg = self.config
        return events.welcome(self.workspace_id, self.user_id, self.conn_id, cfg.server_id,
                              cfg.heartbeat_interval, cfg.presence_timeout, now, epoch, offset, recovered,
                              cfg.presence_mode, cfg.visibility_beat, cfg.leave_grace)

    def receive(self, data: str | bytes, now: float) -> Request | bytes:
        """Handle one frame at ``now`` (Unix seconds; also stamps the reply): a :class:`Request`, or an error frame."""
        # Both budgets are checked before any parsing: refusing a flood must cost less than handling it.
        # (A text frame's length is counted in characters: within 4x of its bytes, and bounded by max_frame_bytes.)
        cfg = self.config
        if not self.bucket.take(now):
            return self._refuse(f"over {cfg.rate_limit:g} frames/s (burst {cfg.rate_burst}); frame dropped", now)
        if not self.byte_bucket.take(now, len(data)):
            return self._refuse(f"over {cfg.byte_rate:g} bytes/s (burst {cfg.byte_burst}); frame dropped", now)
        self.strikes = 0
        try:
            envelope, payload = decode_client_frame(data)
            if envelope.workspaceId != self.workspace_id:
                raise ProtocolError(
                    ErrorCode.FORBIDDEN_WORKSPACE,
                    f"this connection belongs to workspace {self.workspace_id!r}, not {envelope.workspaceId!r}",
                    getattr(payload, "ref", None))
        except ProtocolError as exc:
            return self.error(exc, now)
        return Request(envelope.type, payload)  # type: ignore[arg-type]

    def _refuse(self, message: str, now: float) -> bytes:
        self.strikes += 1
        if self.strikes > self.config.rate_limit_strikes:
            raise ConnectionMustClose(CloseCode.POLICY_VIOLATION, "rate limit exceeded")
        return self.error(ProtocolError(ErrorCode.RATE_LIMITED, message), now)

    def fanout(self, size: int, recipients: int, now: float) -> float:
        """Charge the bytes a request made the servers write (``size`` x ``recipients``: an update's fan-out to
        the workspace's other connections on every instance, or a reply's size x 1); the seconds to pause before
        reading this connection's next frame.

        Nothing is refused: the request was served, and the client is slowed down instead (TCP backpressure),
        so one member's big updates cannot make the server write without bound for the whole workspace.
        """
        return self.fanout_bucket.charge(now, size * recipients)

    def error(self, exc: ProtocolError, now: float) -> bytes:
        return events.error_from(self.workspace_id, self.user_id, exc, now)

    # Replies to this connection, built after the driver carried out a request.
    def ack(self, update: TaskUpdate, version: int, now: float) -> bytes:
        return events.ack(self.workspace_id, self.user_id, update.ref, update.taskId, version, now)

    def snapshot(self, get: TaskGet, version: int, fields: dict[str, msgspec.Raw], now: float) -> bytes:
        return events.snapshot(self.workspace_id, self.user_id, get.taskId, version, fields, now, get.ref)

    def task_page(self, request: TaskList, tasks: list[tuple[str, int, dict[str, msgspec.Raw]]],
                  next_cursor: str | None, now: float) -> bytes:
        return events.task_page(self.workspace_id, self.user_id, tasks, next_cursor, now, request.ref)

    def presence_state(self, task_id: str, viewers: list[str], now: float) -> bytes:
        return events.presence_state(self.workspace_id, self.user_id, task_id, viewers, now)
