"""Every error rtlib can report, and the one table mapping it to a wire outcome.

A failure ends in exactly one of three ways, and this module is the only place that decides which:

* an ``error`` event (the connection stays open): :class:`ErrorCode`;
* a WebSocket close code: :class:`CloseCode`;
* an HTTP status refusing the handshake: :class:`HandshakeError` (401 bad token, 403 not allowed,
  404 wrong path, 429 too many connections for this user on this instance, 503 this instance cannot reach Redis
  right now).
"""

from __future__ import annotations

from enum import IntEnum, StrEnum
from http import HTTPStatus

__all__ = [
    "ERROR_DESCRIPTIONS",
    "CloseCode",
    "ConnectionMustClose",
    "ErrorCode",
    "HandshakeError",
    "ProtocolError",
]


class ErrorCode(StrEnum):
    """Codes of the ``error`` event; the connection stays open after each of them."""

    INVALID_JSON = "invalid_json"
    INVALID_ENVELOPE = "invalid_envelope"
    UNKNOWN_TYPE = "unknown_type"
    INVALID_PAYLOAD = "invalid_payload"
    FORBIDDEN_WORKSPACE = "forbidden_workspace"
    RATE_LIMITED = "rate_limited"
    #: Not a client mistake: Redis cannot be reached (docs/protocol.md §11b). The only retryable code; the
    #: error carries ``retryAfter`` (seconds).
    UNAVAILABLE = "unavailable"
    #: ``--durability replica`` only: the task.update was applied on the master (and broadcast) but no replica
    #: confirmed it within ``--replica-timeout``; a failover now could lose it (docs/protocol.md §2).
    NOT_REPLICATED = "not_replicated"


ERROR_DESCRIPTIONS: dict[ErrorCode, str] = {
    ErrorCode.INVALID_JSON: "the frame is not valid UTF-8 JSON",
    ErrorCode.INVALID_ENVELOPE: "the JSON is not an envelope object {type, workspaceId, payload, ...}",
    ErrorCode.UNKNOWN_TYPE: "the envelope's type is not a client-to-server event type",
    ErrorCode.INVALID_PAYLOAD: "the payload does not match the schema of its event type",
    ErrorCode.FORBIDDEN_WORKSPACE: "the envelope's workspaceId is not the connection's workspace",
    ErrorCode.RATE_LIMITED: "the connection sent frames or bytes faster than its budgets allow; frame dropped",
    ErrorCode.UNAVAILABLE: "the server cannot reach Redis right now; the request was not carried out (a "
                           "task.update in flight when Redis stopped answering: its outcome is unknown), retry "
                           "after retryAfter seconds (a task.update with the same ref)",
    ErrorCode.NOT_REPLICATED: "the task.update was applied on the master and broadcast, but no replica confirmed it "
                              "in time, so a failover could still lose it; (--durability replica only) the same "
                              "ref again waits once more and is acked with the same version",
}


class CloseCode(IntEnum):
    """WebSocket close codes rtlib uses (RFC 6455 section 7.4.1)."""

    NORMAL = 1000
    GOING_AWAY = 1001  # server shutting down
    # persistent rate-limit abuse ("rate limit exceeded"), "token expired", or "too many connections" (a
    # handshake that raced past the 429 check)
    POLICY_VIOLATION = 1008
    MESSAGE_TOO_BIG = 1009  # frame above --max-frame-bytes (websockets enforces it via max_size)
    INTERNAL_ERROR = 1011  # unexpected server fault; no internals are sent
    # "slow consumer": its unsent backlog passed the write-buffer limit; "redis unavailable": Redis was
    # unreachable for longer than --broker-grace (reconnect with backoff, preferably to another instance)
    TRY_AGAIN_LATER = 1013


class ProtocolError(Exception):
    """A client mistake answered with an ``error`` event; the connection stays open."""

    def __init__(self, code: ErrorCode, message: str, ref: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.ref = ref


class ConnectionMustClose(Exception):
    """A condition that ends the connection with ``code``; ``reason`` is short and safe to show."""

    def __init__(self, code: CloseCode, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


class HandshakeError(Exception):
    """The opening handshake is refused with an HTTP status (401 bad token, 403 not allowed, 429 too many
    connections, 503 unavailable)."""

    def __init__(self, status: HTTPStatus, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message

    @classmethod
    def unauthorized(cls, message: str) -> HandshakeError:
        return cls(HTTPStatus.UNAUTHORIZED, message)

    @classmethod
    def forbidden(cls, message: str) -> HandshakeError:
        return cls(HTTPStatus.FORBIDDEN, message)

    @classmethod
    def too_many(cls, message: str) -> HandshakeError:
        return cls(HTTPStatus.TOO_MANY_REQUESTS, message)

    @classmethod
    def unavailable(cls, message: str) -> HandshakeError:
        return cls(HTTPStatus.SERVICE_UNAVAILABLE, message)
