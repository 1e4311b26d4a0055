"""Builders for every server -> client event, each returning the encoded envelope (UTF-8 JSON bytes).

Events bound for a whole workspace are encoded once here and the same bytes reach every receiver.
``task.updated`` is special: its version is only known inside the Redis script that assigns it, so
:func:`task_updated_parts` returns the JSON before and after the version number and the script joins them.
"""

from __future__ import annotations

from typing import Any

import msgspec

from rtlib.protocol.errors import ErrorCode, ProtocolError
from rtlib.protocol.presence import PresenceChange
from rtlib.protocol.schema import encode_event, iso_timestamp

__all__ = [
    "ack",
    "error",
    "error_from",
    "presence_change",
    "presence_probe",
    "presence_state",
    "resync",
    "snapshot",
    "task_page",
    "task_updated_parts",
    "welcome",
]

_encode = msgspec.json.encode


def welcome(ws: str, user: str, conn_id: str, server_id: str, heartbeat: float, timeout: float, now: float,
            epoch: str | None = None, offset: str | None = None, recovered: bool | None = None,
            presence_mode: str = "timer", visibility_beat: bool = False, leave_grace: float = 0.0) -> bytes:
    """``session.welcome``: the presence settings the client follows; with history on, the workspace's
    ``epoch`` and current ``offset`` (resume from there), and ``recovered`` when the client asked to resume."""
    payload: dict[str, Any] = {"connectionId": conn_id, "serverId": server_id, "heartbeatInterval": heartbeat,
                               "presenceTimeout": timeout, "presenceMode": presence_mode,
                               "visibilityBeat": visibility_beat, "leaveGrace": leave_grace}
    if epoch is not None:
        payload["epoch"], payload["offset"] = epoch, offset
    if recovered is not None:
        payload["recovered"] = recovered
    return encode_event("session.welcome", ws, payload, user, now)


def ack(ws: str, user: str, ref: str | None, task_id: str, version: int, now: float) -> bytes:
    return encode_event("ack", ws, {"ref": ref, "taskId": task_id, "version": version}, user, now)


def snapshot(ws: str, user: str, task_id: str, version: int, fields: dict[str, msgspec.Raw], now: float,
             ref: str | None = None) -> bytes:
    payload: dict[str, Any] = {"taskId": task_id, "version": version, "fields": fields}
    if ref is not None:
        payload["ref"] = ref
    return encode_event("task.snapshot", ws, payload, user, now)


def task_page(ws: str, user: str, tasks: list[tuple[str, int, dict[str, msgspec.Raw]]], next_cursor: str | None,
              now: float, ref: str | None = None) -> bytes:
    """The reply to ``task.list``: one page of ``(taskId, version, fields)`` and the next page's cursor."""
    payload: dict[str, Any] = {
        "tasks": [{"taskId": t, "version": v, "fields": f} for t, v, f in tasks], "nextCursor": next_cursor}
    if ref is not None:
        payload["ref"] = ref
    return encode_event("task.page", ws, payload, user, now)


def error(ws: str, user: str, code: ErrorCode, message: str, ref: str | None, now: float,
          retry_after: float | None = None) -> bytes:
    """``error``; ``retry_after`` (code ``unavailable``): seconds to wait before sending the request again."""
    payload: dict[str, Any] = {"code": str(code), "message": message}
    if ref is not None:
        payload["ref"] = ref
    if retry_after is not None:
        payload["retryAfter"] = retry_after
    return encode_event("error", ws, payload, user, now)


def error_from(ws: str, user: str, exc: ProtocolError, now: float) -> bytes:
    return error(ws, user, exc.code, exc.message, exc.ref, now)


def resync(ws: str, user: str, epoch: str | None, offset: str | None, reason: str, now: float) -> bytes:
    """``session.resync``: the connection stayed open through a Redis outage, but the events it missed cannot be
    replayed (the history was lost or trimmed): reload every task and re-join presence, as after a welcome with
    ``recovered: false``; ``epoch``/``offset`` are where it stands now (absent with history off)."""
    payload: dict[str, Any] = {}
    if epoch is not None:
        payload["epoch"], payload["offset"] = epoch, offset
    payload["reason"] = reason
    return encode_event("session.resync", ws, payload, user, now)


def presence_probe(ws: str, user: str, seq: int, now: float) -> bytes:
    """``presence.probe``: "are you still viewing?"; the client answers ``presence.pong`` with the same ``seq``."""
    return encode_event("presence.probe", ws, {"seq": seq}, user, now)


def presence_state(ws: str, user: str, task_id: str, viewers: list[str], now: float) -> bytes:
    return encode_event("presence.state", ws, {"taskId": task_id, "viewers": viewers}, user, now)


def presence_change(change: PresenceChange, now: float) -> bytes:
    """``presence.joined`` / ``presence.left``; the envelope's userId is the user who joined or left."""
    payload: dict[str, Any] = {"taskId": change.task_id, "userId": change.user_id}
    if change.kind == "left":
        payload["reason"] = change.reason
    return encode_event(f"presence.{change.kind}", change.workspace_id, payload, change.user_id, now)


def task_updated_parts(ws: str, user: str, task_id: str, changes: dict[str, msgspec.Raw], now: float
                       ) -> tuple[bytes, bytes]:
    """``task.updated`` split around its version: ``prefix + str(version).encode() + suffix`` is the event."""
    prefix = b'{"type":"task.updated","workspaceId":%s,"payload":{"taskId":%s,"version":' % (
        _encode(ws), _encode(task_id))
    suffix = b',"changes":%s},"userId":%s,"timestamp":"%s"}' % (
        _encode(changes), _encode(user), iso_timestamp(now).encode())
    return prefix, suffix
