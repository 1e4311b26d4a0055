"""The wire contract: the event envelope, every payload, decoding with classified errors, encoding, JSON Schema.

Every frame is one JSON envelope ``{"type", "workspaceId", "payload", "userId", "timestamp"}``. Decoding is
two-step so that each failure gets its own documented error code (see :mod:`rtlib.protocol.errors`): the envelope
first (``invalid_json`` / ``invalid_envelope``), then the type (``unknown_type``), then the payload of that type
(``invalid_payload``). Sans-I/O: nothing here reads a clock; callers pass ``now``.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any

import msgspec

from rtlib.protocol.errors import ErrorCode, ProtocolError

__all__ = [
    "CLIENT_TYPES",
    "ID_PATTERN",
    "MAX_DEPTH",
    "SERVER_PAYLOADS",
    "ServerEnvelope",
    "Envelope",
    "Id",
    "LIST_DEFAULT_LIMIT",
    "LIST_MAX_LIMIT",
    "PresencePong",
    "PresenceProbe",
    "PresenceRequest",
    "TaskGet",
    "TaskList",
    "TaskUpdate",
    "decode_client_frame",
    "encode_event",
    "is_id",
    "iso_timestamp",
    "nested_deeper_than",
]

#: Ids of workspaces, tasks and users: short, and free of the ``:`` rtlib uses inside Redis keys. Matched
#: whole (``\A...\Z``): a ``$`` would also match before a final newline, letting ``"T-1\n"`` in.
ID_PATTERN = r"[A-Za-z0-9_.\-]{1,128}"
FIELD_PATTERN = r"[A-Za-z_][A-Za-z0-9_]{0,63}"
_ID_RE = re.compile(ID_PATTERN)

Id = Annotated[str, msgspec.Meta(pattern=rf"\A{ID_PATTERN}\Z", description="an id: 1-128 of A-Z a-z 0-9 _ . -")]
FieldName = Annotated[str, msgspec.Meta(pattern=rf"\A{FIELD_PATTERN}\Z")]
Ref = Annotated[str, msgspec.Meta(max_length=128, description="client's correlation id, echoed in ack/error")]

#: Deepest nesting of arrays and objects a frame may have (the envelope object is level 1). RFC 8259 lets a
#: parser bound it; without a bound, deep input ends in a RecursionError somewhere in the decoder.
MAX_DEPTH = 32


def is_id(value: object) -> bool:
    """True if ``value`` is a string that is an id as a whole (the one id rule, shared with the tokens)."""
    return isinstance(value, str) and _ID_RE.fullmatch(value) is not None


class Envelope(msgspec.Struct, forbid_unknown_fields=True):
    """The envelope as a client sends it; ``userId`` and ``timestamp`` are accepted and ignored."""

    type: str
    workspaceId: str
    payload: msgspec.Raw
    userId: Any = None
    timestamp: Any = None


class ServerEnvelope(msgspec.Struct):
    """The envelope as the server sends it (open: a client ignores keys it does not know). Broadcast events
    carry ``offset`` and ``epoch``: their place in the workspace history (:mod:`rtlib.protocol.history`)."""

    type: str
    workspaceId: str
    payload: msgspec.Raw
    userId: str
    timestamp: str
    offset: str | None = None
    epoch: str | None = None


# --- client -> server payloads -------------------------------------------------------------------------
class TaskUpdate(msgspec.Struct, forbid_unknown_fields=True):
    """``task.update``: a partial update, only the changed fields (values are any JSON)."""

    taskId: Id
    changes: Annotated[dict[FieldName, msgspec.Raw], msgspec.Meta(min_length=1, max_length=256)]
    ref: Ref | None = None


class TaskGet(msgspec.Struct, forbid_unknown_fields=True):
    """``task.get``: ask for a task's snapshot (to resync after a version gap)."""

    taskId: Id
    ref: Ref | None = None


#: ``task.list`` page size: the default, and the most one page may hold (a page of 200 tasks of a few fields
#: stays well under a megabyte; bigger boards take several round trips rather than one huge frame).
LIST_DEFAULT_LIMIT = 100
LIST_MAX_LIMIT = 200


class TaskList(msgspec.Struct, forbid_unknown_fields=True):
    """``task.list``: one page of the workspace's tasks, in task id order, after ``cursor`` (exclusive).

    The only request that names no task: it lists tasks (fields and versions), never who is viewing them.
    """

    cursor: Annotated[Id | None, msgspec.Meta(
        description="nextCursor of the previous page; omit or null for the first page")] = None
    limit: Annotated[int, msgspec.Meta(ge=1, le=LIST_MAX_LIMIT)] = LIST_DEFAULT_LIMIT
    ref: Ref | None = None


class PresenceRequest(msgspec.Struct, forbid_unknown_fields=True):
    """``presence.join`` / ``presence.heartbeat`` / ``presence.leave``: about one task."""

    taskId: Id
    ref: Ref | None = None


class PresencePong(msgspec.Struct, forbid_unknown_fields=True):
    """``presence.pong``: the answer to a ``presence.probe`` (presence mode ``probe``); it is the heartbeat of
    every task this connection views. Any ``seq`` is accepted: a late answer is still proof of life."""

    seq: Annotated[int, msgspec.Meta(ge=0, le=2**53 - 1)]


CLIENT_TYPES: dict[str, type[msgspec.Struct]] = {
    "task.update": TaskUpdate,
    "task.get": TaskGet,
    "task.list": TaskList,
    "presence.join": PresenceRequest,
    "presence.heartbeat": PresenceRequest,
    "presence.leave": PresenceRequest,
    "presence.pong": PresencePong,
}


# --- server -> client payloads (documentation and schema; hot paths encode dicts/bytes directly) ---------
class SessionWelcome(msgspec.Struct):
    connectionId: str
    serverId: str
    heartbeatInterval: float
    presenceTimeout: float
    presenceMode: Annotated[str, msgspec.Meta(pattern="^(timer|probe)$")] = "timer"
    visibilityBeat: bool = False  # also beat when the page becomes hidden or visible
    leaveGrace: float = 0.0  # seconds a timeout's presence.left is held back
    epoch: str | None = None  # the workspace history's epoch (absent when history is off)
    offset: str | None = None  # the history's newest offset when this connection was subscribed
    recovered: bool | None = None  # only after a resume request: were the missed events replayed?


class TaskUpdated(msgspec.Struct):
    taskId: Id
    version: int
    changes: dict[FieldName, Any]


class Ack(msgspec.Struct):
    ref: Ref | None
    taskId: Id
    version: int


class TaskSnapshot(msgspec.Struct):
    taskId: Id
    version: int
    fields: dict[FieldName, Any]
    ref: Ref | None = None


class TaskEntry(msgspec.Struct):
    """One task of a ``task.page``: the same consistent (version, fields) pair a ``task.snapshot`` carries."""

    taskId: Id
    version: int
    fields: dict[FieldName, Any]


class TaskPage(msgspec.Struct):
    tasks: list[TaskEntry]
    nextCursor: Id | None
    ref: Ref | None = None


class PresenceJoined(msgspec.Struct):
    taskId: Id
    userId: Id


class PresenceState(msgspec.Struct):
    taskId: Id
    viewers: list[Id]


class PresenceProbe(msgspec.Struct):
    seq: int


class PresenceLeft(msgspec.Struct):
    taskId: Id
    userId: Id
    reason: Annotated[str, msgspec.Meta(pattern="^(leave|disconnect|timeout)$")]


class ErrorPayload(msgspec.Struct):
    code: ErrorCode
    message: str
    ref: Ref | None = None
    retryAfter: float | None = None  # code "unavailable": seconds to wait before retrying (docs/protocol.md §11b)


class SessionResync(msgspec.Struct):
    """After a Redis outage the connection stayed open but its missed events cannot be replayed: reload every
    task, re-join presence (docs/protocol.md §11b)."""

    reason: str
    epoch: str | None = None  # the history's epoch now (absent when history is off)
    offset: str | None = None  # where this connection stands in it


SERVER_PAYLOADS: dict[str, type[msgspec.Struct]] = {
    "session.welcome": SessionWelcome,
    "session.resync": SessionResync,
    "task.updated": TaskUpdated,
    "ack": Ack,
    "task.snapshot": TaskSnapshot,
    "task.page": TaskPage,
    "presence.joined": PresenceJoined,
    "presence.state": PresenceState,
    "presence.left": PresenceLeft,
    "presence.probe": PresenceProbe,
    "error": ErrorPayload,
}

_envelope_decoder = msgspec.json.Decoder(Envelope)
_payload_decoders = {name: msgspec.json.Decoder(cls) for name, cls in CLIENT_TYPES.items()}


class _RefOnly(msgspec.Struct):
    ref: Any = None


_ref_decoder = msgspec.json.Decoder(_RefOnly)


def _salvage_ref(raw: msgspec.Raw) -> str | None:
    """Best effort: the ``ref`` of a payload that failed validation, so the error can echo it."""
    try:
        ref = _ref_decoder.decode(raw).ref
    except msgspec.DecodeError:
        return None
    return ref if isinstance(ref, str) and len(ref) <= 128 else None


_ESCAPE = re.compile(r"\\.", re.DOTALL)
_STRING = re.compile(r'"[^"]*"')
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_SQUARE = str.maketrans("{}", "[]")


def nested_deeper_than(text: str, limit: int) -> bool:
    """True if JSON ``text`` nests arrays and objects more than ``limit`` levels deep (brackets inside strings
    do not count; for malformed text the answer is only a bound, and the text is refused either way).

    C-speed string passes, no Python loop per character: drop escapes (so every string left is ``"[^"]*"``),
    drop strings, keep the brackets, then peel the innermost ``[]`` pairs once per level.
    """
    if "\\" in text:
        text = _ESCAPE.sub("", text)
    brackets = _NOT_BRACKET.sub("", _STRING.sub("", text)).translate(_SQUARE)
    for _ in range(limit):
        peeled = brackets.replace("[]", "")
        if peeled == brackets:
            break
        brackets = peeled
    return "[" in brackets


def _check_text(data: str | bytes) -> str:
    """The frame as text, refused with ``invalid_json`` unless it is UTF-8 nested at most :data:`MAX_DEPTH` deep.

    Text frames arrive as ``str`` (the websockets library already closed the connection with 1007 on bad
    UTF-8); a binary frame is decoded strictly here, so no invalid byte can reach a stored value or a
    broadcast text frame, whatever frame type carried it.
    """
    if isinstance(data, (bytes, bytearray, memoryview)):
        try:
            data = bytes(data).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ProtocolError(ErrorCode.INVALID_JSON, f"not valid UTF-8: {exc.reason} at byte {exc.start}") from None
    # Counting opening brackets is a cheap upper bound of the depth: only frames with many pay the full scan.
    if data.count("[") + data.count("{") > MAX_DEPTH and nested_deeper_than(data, MAX_DEPTH):
        raise ProtocolError(ErrorCode.INVALID_JSON, f"JSON nested deeper than {MAX_DEPTH} levels")
    return data


def decode_client_frame(data: str | bytes) -> tuple[Envelope, msgspec.Struct]:
    """Decode one client frame into ``(envelope, typed payload)`` or raise :class:`ProtocolError`.

    The workspace check (``forbidden_workspace``) is the session's job: it knows the connection's workspace.
    """
    text = _check_text(data)
    try:
        env = _envelope_decoder.decode(text)
    except msgspec.ValidationError as exc:
        # The typed decoder stops at the first value of the wrong type, before it has seen the rest: input
        # such as ``1x`` or ``[,`` is malformed JSON, not a wrong-shaped envelope.
        try:
            msgspec.json.decode(text)
        except msgspec.DecodeError as bad:
            raise ProtocolError(ErrorCode.INVALID_JSON, f"malformed JSON: {bad}") from None
        raise ProtocolError(ErrorCode.INVALID_ENVELOPE, f"not an envelope: {exc}") from None
    except msgspec.DecodeError as exc:
        raise ProtocolError(ErrorCode.INVALID_JSON, f"malformed JSON: {exc}") from None
    decoder = _payload_decoders.get(env.type)
    if decoder is None:
        known = ", ".join(CLIENT_TYPES)
        raise ProtocolError(
            ErrorCode.UNKNOWN_TYPE, f"unknown type {env.type!r}; expected one of {known}", _salvage_ref(env.payload)
        )
    try:
        payload = decoder.decode(env.payload)
    except msgspec.DecodeError as exc:
        raise ProtocolError(
            ErrorCode.INVALID_PAYLOAD, f"invalid {env.type} payload: {_in_words(str(exc))}", _salvage_ref(env.payload)
        ) from None
    return env, payload


#: msgspec names a failed pattern by its regex; a client author reads what is allowed instead.
_PATTERN_WORDS = {
    "Expected `str` matching regex " + repr(rf"\A{ID_PATTERN}\Z"):
        "Expected an id (1-128 characters, each a letter A-Z or a-z, a digit, '_', '.' or '-')",
    "Expected `str` matching regex " + repr(rf"\A{FIELD_PATTERN}\Z"):
        "Expected a field name (a letter or '_', then at most 63 letters, digits or '_')",
}


def _in_words(message: str) -> str:
    """A msgspec validation message with each rtlib pattern said in words (``at `key` in `$.changes``` stays)."""
    for regex, words in _PATTERN_WORDS.items():
        message = message.replace(regex, words)
    return message


_second_cache: list[Any] = [None, ""]  # (whole second, its "YYYY-MM-DDTHH:MM:SS" text)


def iso_timestamp(now: float) -> str:
    """ISO 8601 UTC with microseconds, e.g. ``2026-11-25T20:17:19.123456Z``, for a Unix time ``now``."""
    # Every event is stamped: format the seconds once per second and only append the microseconds.
    second, micros = divmod(round(now * 1_000_000), 1_000_000)
    if _second_cache[0] != second:
        _second_cache[0] = second
        _second_cache[1] = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{_second_cache[1]}.{micros:06d}Z"


_encode = msgspec.json.Encoder().encode


def encode_event(type_: str, workspace_id: str, payload: Any, user_id: str, now: float) -> bytes:
    """Encode one server event envelope as UTF-8 JSON bytes (``payload``: a Struct, dict or list)."""
    return _encode(
        {"type": type_, "workspaceId": workspace_id, "payload": payload, "userId": user_id,
         "timestamp": iso_timestamp(now)}
    )
