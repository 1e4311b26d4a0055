"""The published contract stays tied to the code.

``docs/events.schema.json`` is generated from ``rtlib/protocol/schema.py`` and is valid JSON Schema 2020-12; every
frame the event builders produce validates against it (and invalid frames do not); ``docs/protocol.md``
mentions every type and error code and its example frames are valid; and no message offers a
workspace-wide "who is online" list (task-level presence only, by design).
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import msgspec
import pytest

from rtlib.protocol import events
from rtlib.protocol.errors import ERROR_DESCRIPTIONS, CloseCode, ErrorCode, ProtocolError
from rtlib.protocol.jsonschema import json_schema, json_schema_text
from rtlib.protocol.presence import PresenceChange
from rtlib.protocol.schema import CLIENT_TYPES, SERVER_PAYLOADS, decode_client_frame

ROOT = Path(__file__).resolve().parents[2]
SCHEMA_FILE = ROOT / "docs" / "events.schema.json"
PROTOCOL_DOC = ROOT / "docs" / "protocol.md"
NOW = 1_764_100_000.123456
TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$")


# --- helpers ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    return json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))


def _validator(schema: dict[str, Any], root: str | None = None) -> jsonschema.Draft202012Validator:
    """A validator for the whole schema, or for one of its ``$defs`` (``ClientEvent`` / ``ServerEvent``)."""
    if root is not None:
        schema = {**copy.deepcopy(schema), "oneOf": [{"$ref": f"#/$defs/{root}"}]}
    return jsonschema.Draft202012Validator(schema)


def _is_valid(schema: dict[str, Any], frame: Any, root: str | None = None) -> bool:
    return _validator(schema, root).is_valid(frame)


def _assert_valid(schema: dict[str, Any], frame: Any, root: str) -> None:
    errors = [e.message for e in _validator(schema, root).iter_errors(frame)]
    assert not errors, f"{json.dumps(frame)} is invalid: {errors}"


def _client(type_: str, payload: Any, **extra: Any) -> dict[str, Any]:
    return {"type": type_, "workspaceId": "acme", "payload": payload, **extra}


def _doc() -> str:
    return PROTOCOL_DOC.read_text(encoding="utf-8")


# --- (a) + (b): the schema file is generated from code and is valid JSON Schema 2020-12 ------------------
def test_committed_schema_is_generated_from_code() -> None:
    assert SCHEMA_FILE.read_text(encoding="utf-8") == json_schema_text(), (
        "docs/events.schema.json is stale: run `make schema` (rtlib schema --out docs/events.schema.json)")


def test_schema_is_valid_json_schema_2020_12(schema: dict[str, Any]) -> None:
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.Draft202012Validator.check_schema(json_schema())


def test_schema_covers_every_client_and_server_type(schema: dict[str, Any]) -> None:
    def consts(group: str) -> list[str]:
        return [entry["properties"]["type"]["const"] for entry in schema["$defs"][group]["oneOf"]]

    assert consts("ClientEvent") == list(CLIENT_TYPES)
    assert consts("ServerEvent") == list(SERVER_PAYLOADS)
    assert not set(CLIENT_TYPES) & set(SERVER_PAYLOADS), "a type name must say which direction it travels"


# --- (c): example frames validate, invalid ones do not ----------------------------------------------------
VALID_CLIENT_FRAMES = [
    _client("task.update", {"taskId": "T-42", "changes": {"title": "Fix login", "status": "doing"}, "ref": "u-1"}),
    _client("task.update", {"taskId": "t.1_x-y", "changes": {"_n": None, "obj": {"a": [1, 2]}}}),
    _client("task.update", {"taskId": "T-42", "changes": {"a": 1}, "ref": None}),
    _client("task.update", {"taskId": "T" * 128, "changes": {f"f{i}": i for i in range(256)}, "ref": "r" * 128}),
    _client("task.update", {"taskId": "T-42", "changes": {"a": 1}}, userId="ignored", timestamp=123),
    _client("task.get", {"taskId": "T-42", "ref": "g-1"}),
    _client("task.get", {"taskId": "T-42"}),
    _client("task.list", {}),
    _client("task.list", {"cursor": "T-42", "limit": 200, "ref": "l-1"}),
    _client("presence.join", {"taskId": "T-42"}),
    _client("presence.heartbeat", {"taskId": "T-42", "ref": "h"}),
    _client("presence.leave", {"taskId": "T-42"}),
]

INVALID_CLIENT_FRAMES = {
    "missing taskId": _client("task.update", {"changes": {"a": 1}}),
    "missing taskId (get)": _client("task.get", {}),
    "missing taskId (join)": _client("presence.join", {"ref": "x"}),
    "bad id: space": _client("task.update", {"taskId": "T 42", "changes": {"a": 1}}),
    "bad id: colon": _client("task.get", {"taskId": "ws:task"}),
    "bad id: empty": _client("presence.join", {"taskId": ""}),
    "bad id: too long": _client("presence.heartbeat", {"taskId": "T" * 129}),
    "bad id: non-ascii": _client("task.get", {"taskId": "tâche"}),
    "taskId not a string": _client("task.get", {"taskId": 42}),
    "missing changes": _client("task.update", {"taskId": "T-42"}),
    "empty changes": _client("task.update", {"taskId": "T-42", "changes": {}}),
    "257 changes": _client("task.update", {"taskId": "T-42", "changes": {f"f{i}": i for i in range(257)}}),
    "bad field name": _client("task.update", {"taskId": "T-42", "changes": {"1st": 1}}),
    "field name too long": _client("task.update", {"taskId": "T-42", "changes": {"f" * 65: 1}}),
    "ref too long": _client("task.get", {"taskId": "T-42", "ref": "r" * 129}),
    "ref not a string": _client("task.get", {"taskId": "T-42", "ref": 7}),
    "unknown payload key": _client("task.update", {"taskId": "T-42", "changes": {"a": 1}, "bogus": 1}),
    "unknown envelope key": _client("task.get", {"taskId": "T-42"}, extra=1),
    "payload not an object": _client("task.get", ["T-42"]),
    "missing payload": {"type": "task.get", "workspaceId": "acme"},
    "missing workspaceId": {"type": "task.get", "payload": {"taskId": "T-42"}},
    "task.list limit 0": _client("task.list", {"limit": 0}),
    "task.list limit 201": _client("task.list", {"limit": 201}),
    "task.list bad cursor": _client("task.list", {"cursor": "a:b"}),
    "task.list unknown key": _client("task.list", {"taskId": "T-42"}),
    "unknown type": _client("presence.list", {"taskId": "T-42"}),
    "server type sent by a client": _client("task.updated", {"taskId": "T-42", "version": 1, "changes": {}}),
}


@pytest.mark.parametrize("frame", VALID_CLIENT_FRAMES, ids=lambda f: f["type"])
def test_valid_client_frames_validate_and_decode(schema: dict[str, Any], frame: dict[str, Any]) -> None:
    _assert_valid(schema, frame, "ClientEvent")
    assert _is_valid(schema, frame)
    env, payload = decode_client_frame(json.dumps(frame))
    assert env.type == frame["type"] and isinstance(payload, CLIENT_TYPES[frame["type"]])


@pytest.mark.parametrize("name", list(INVALID_CLIENT_FRAMES))
def test_invalid_client_frames_fail_schema_and_decoder(schema: dict[str, Any], name: str) -> None:
    frame = INVALID_CLIENT_FRAMES[name]
    assert not _is_valid(schema, frame), f"schema accepted: {name}"
    with pytest.raises(ProtocolError) as exc:
        decode_client_frame(json.dumps(frame))
    assert exc.value.code in {ErrorCode.INVALID_ENVELOPE, ErrorCode.UNKNOWN_TYPE, ErrorCode.INVALID_PAYLOAD}


def _change(kind: str, reason: str | None = None) -> PresenceChange:
    return PresenceChange("acme", "T-42", "bob", kind, reason=reason,  # type: ignore[arg-type]
                          exclude_conn="srv-a-1" if kind == "joined" else None)


def _built_events() -> dict[str, bytes]:
    """One frame from every builder in rtlib.protocol.events (several variants where a builder has options)."""
    raw = {"title": msgspec.Raw(b'"Fix login"'), "meta": msgspec.Raw(b'{"a": [1, 2]}'), "gone": msgspec.Raw(b"null")}
    prefix, suffix = events.task_updated_parts("acme", "bob", "T-42", raw, NOW)
    return {
        "welcome": events.welcome("acme", "alice", "srv-a-1", "srv-a", 30.0, 60.0, NOW),
        "welcome (probe, grace)": events.welcome("acme", "alice", "srv-a-1", "srv-a", 30.0, 60.0, NOW,
                                                 presence_mode="probe", visibility_beat=True, leave_grace=15.0),
        "presence_probe": events.presence_probe("acme", "alice", 12, NOW),
        "ack": events.ack("acme", "bob", "u-1", "T-42", 7, NOW),
        "ack (no ref)": events.ack("acme", "bob", None, "T-42", 1, NOW),
        "snapshot": events.snapshot("acme", "alice", "T-42", 3, raw, NOW),
        "snapshot (ref)": events.snapshot("acme", "alice", "T-42", 3, raw, NOW, ref="g-1"),
        "snapshot (unknown task)": events.snapshot("acme", "alice", "never", 0, {}, NOW),
        "task_page": events.task_page("acme", "alice", [("T-1", 2, raw), ("T-2", 1, {})], "T-2", NOW),
        "task_page (last, ref)": events.task_page("acme", "alice", [], None, NOW, ref="l-1"),
        "error": events.error("acme", "bob", ErrorCode.INVALID_PAYLOAD, "bad", "r-1", NOW),
        "error (no ref)": events.error("acme", "bob", ErrorCode.RATE_LIMITED, "slow down", None, NOW),
        "error (unavailable)": events.error("acme", "bob", ErrorCode.UNAVAILABLE, "redis", "u-9", NOW, 1.0),
        "resync": events.resync("acme", "bob", "1796676460962985", "1796676461670-0", "epoch changed", NOW),
        "resync (no history)": events.resync("acme", "bob", None, None, "history is off", NOW),
        "error_from": events.error_from("acme", "bob", ProtocolError(ErrorCode.FORBIDDEN_WORKSPACE, "no", "r"), NOW),
        "presence_state": events.presence_state("acme", "alice", "T-42", ["alice", "bob"], NOW),
        "presence_state (empty)": events.presence_state("acme", "alice", "T-42", [], NOW),
        "presence_change joined": events.presence_change(_change("joined"), NOW),
        "presence_change left leave": events.presence_change(_change("left", "leave"), NOW),
        "presence_change left disconnect": events.presence_change(_change("left", "disconnect"), NOW),
        "presence_change left timeout": events.presence_change(_change("left", "timeout"), NOW),
        "task_updated_parts": prefix + b"12" + suffix,
    }


def test_every_builder_is_exercised() -> None:
    covered = {name.split(" ")[0] for name in _built_events()}
    assert covered == set(events.__all__)


@pytest.mark.parametrize("name", list(_built_events()))
def test_built_server_events_validate(schema: dict[str, Any], name: str) -> None:
    frame = json.loads(_built_events()[name])
    _assert_valid(schema, frame, "ServerEvent")
    assert _is_valid(schema, frame)
    assert frame["type"] in SERVER_PAYLOADS
    assert TIMESTAMP.match(frame["timestamp"]), frame["timestamp"]
    # Each payload also decodes into its documented struct.
    msgspec.convert(frame["payload"], SERVER_PAYLOADS[frame["type"]])


def test_task_updated_parts_joined_with_a_version() -> None:
    raw = {"status": msgspec.Raw(b'"done"')}
    prefix, suffix = events.task_updated_parts("acme", "bob", "T-42", raw, NOW)
    frame = json.loads(prefix + b"5" + suffix)
    assert frame == {"type": "task.updated", "workspaceId": "acme",
                     "payload": {"taskId": "T-42", "version": 5, "changes": {"status": "done"}},
                     "userId": "bob", "timestamp": "2025-11-25T19:46:40.123456Z"}


def test_server_envelope_user_id_semantics() -> None:
    built = {k: json.loads(v) for k, v in _built_events().items()}
    for key in ("presence_change joined", "presence_change left timeout"):
        assert built[key]["userId"] == built[key]["payload"]["userId"] == "bob"
    assert built["task_updated_parts"]["userId"] == "bob"  # the editor
    assert built["welcome"]["userId"] == "alice"  # the connection's own user


INVALID_SERVER_FRAMES = {
    "task.updated missing taskId": {"type": "task.updated", "payload": {"version": 1, "changes": {}}},
    "task.updated bad taskId": {"type": "task.updated", "payload": {"taskId": "T 1", "version": 1, "changes": {}}},
    "task.updated version not int": {"type": "task.updated", "payload": {"taskId": "T", "version": "1", "changes": {}}},
    "presence.left bad reason": {"type": "presence.left", "payload": {"taskId": "T", "userId": "u", "reason": "bye"}},
    "presence.state missing taskId": {"type": "presence.state", "payload": {"viewers": ["u"]}},
    "ack missing ref": {"type": "ack", "payload": {"taskId": "T", "version": 1}},
    "error missing code": {"type": "error", "payload": {"message": "m"}},
    "unknown server type": {"type": "presence.online", "payload": {"users": ["u"]}},
}


@pytest.mark.parametrize("name", list(INVALID_SERVER_FRAMES))
def test_invalid_server_frames_do_not_validate(schema: dict[str, Any], name: str) -> None:
    frame = {"workspaceId": "acme", "userId": "bob", "timestamp": "2025-11-25T19:46:40.123456Z",
             **INVALID_SERVER_FRAMES[name]}
    assert not _is_valid(schema, frame)


def test_server_frame_without_user_or_timestamp_is_invalid(schema: dict[str, Any]) -> None:
    frame = json.loads(events.ack("acme", "bob", None, "T-42", 1, NOW))
    for key in ("userId", "timestamp"):
        assert not _is_valid(schema, {k: v for k, v in frame.items() if k != key})


# --- (d): protocol.md mentions every type and code, and its examples are real ------------------------------
def test_protocol_doc_mentions_every_type_error_code_and_close_code() -> None:
    doc = _doc()
    for type_ in [*CLIENT_TYPES, *SERVER_PAYLOADS]:
        assert f"`{type_}`" in doc, f"docs/protocol.md does not mention type {type_}"
    for code in ErrorCode:
        assert f"`{code.value}`" in doc, f"docs/protocol.md does not mention error code {code.value}"
        assert ERROR_DESCRIPTIONS[code].split(";")[0].split(" {")[0] in doc, f"description of {code.value}"
    for close in CloseCode:
        assert str(int(close)) in doc, f"docs/protocol.md does not mention close code {int(close)}"
    for status in ("401", "403", "404"):
        assert f"**{status}**" in doc


def test_protocol_doc_points_to_the_generated_schema() -> None:
    doc = _doc()
    assert "events.schema.json" in doc
    assert "rtlib schema --out docs/events.schema.json" in doc
    assert "make schema" in doc


def _json_blocks(doc: str) -> list[Any]:
    return [json.loads(block) for block in re.findall(r"```json\n(.*?)```", doc, flags=re.DOTALL)]


def _transcript_frames(doc: str) -> list[tuple[str, dict[str, Any]]]:
    """(direction, frame) of every line of the example session (the text block with a session.welcome)."""
    blocks = [b for b in re.findall(r"```text\n(.*?)```", doc, flags=re.DOTALL) if "session.welcome" in b]
    assert len(blocks) == 1, "expected exactly one example session transcript"
    frames = []
    for line in blocks[0].splitlines():
        if m := re.match(r"^\S+\s+(->|<-)\s+(\{.*\})\s*$", line):
            frames.append((m.group(1), json.loads(m.group(2))))
    return frames


def test_protocol_doc_example_frames_are_valid(schema: dict[str, Any]) -> None:
    examples = _json_blocks(_doc())
    typed = [e for e in examples if isinstance(e, dict) and "type" in e]
    assert len(typed) >= len(CLIENT_TYPES) + len(SERVER_PAYLOADS)
    seen = set()
    for frame in typed:
        seen.add(frame["type"])
        if frame["type"] in CLIENT_TYPES:
            _assert_valid(schema, frame, "ClientEvent")
            decode_client_frame(json.dumps(frame))
        else:
            _assert_valid(schema, frame, "ServerEvent")
            assert TIMESTAMP.match(frame["timestamp"])
    assert seen == set(CLIENT_TYPES) | set(SERVER_PAYLOADS), "every type needs an example frame"


def test_protocol_doc_transcript_is_valid(schema: dict[str, Any]) -> None:
    frames = _transcript_frames(_doc())
    assert len(frames) >= 20
    for direction, frame in frames:
        if direction == "->":
            assert frame["type"] in CLIENT_TYPES
            if frame["payload"].get("taskId") == "T 42":  # the deliberately invalid update
                assert not _is_valid(schema, frame)
                continue
            _assert_valid(schema, frame, "ClientEvent")
        else:
            _assert_valid(schema, frame, "ServerEvent")
    # Versions of the example task grow by exactly one.
    versions = [f["payload"]["version"] for d, f in frames if d == "<-" and f["type"] == "task.updated"]
    assert sorted(set(versions)) == list(range(1, max(versions) + 1))


# --- (e): task-level presence only: no workspace-wide online list ------------------------------------------
FORBIDDEN_TYPE_WORDS = ("online", "presence.list", "workspace.presence", "presence.all", "roster", "who")


def test_no_message_type_offers_a_workspace_online_list(schema: dict[str, Any]) -> None:
    schema_types = [e["properties"]["type"]["const"]
                    for group in ("ClientEvent", "ServerEvent") for e in schema["$defs"][group]["oneOf"]]
    for type_ in [*CLIENT_TYPES, *SERVER_PAYLOADS, *schema_types]:
        for word in FORBIDDEN_TYPE_WORDS:
            assert word not in type_.lower(), f"{type_!r} looks like a workspace-wide presence list"


#: The one request that names no task: it pages the workspace's tasks (fields and versions, no user list).
TASK_LISTING = {"task.list": "task.page"}


# presence.pong answers a per-connection probe: it is the heartbeat of every task the connection views.
PER_CONNECTION = {"presence.pong"}


def test_a_pong_requires_its_probe_seq(schema: dict[str, Any]) -> None:
    assert not _is_valid(schema, _client("presence.pong", {}))
    assert not _is_valid(schema, _client("presence.pong", {"seq": -1}))
    assert not _is_valid(schema, _client("presence.pong", {"seq": 1, "taskId": "T-1"}))
    assert _is_valid(schema, _client("presence.pong", {"seq": 3}))


@pytest.mark.parametrize("type_", [t for t in CLIENT_TYPES if t not in TASK_LISTING and t not in PER_CONNECTION])
def test_every_client_payload_requires_a_task_id(schema: dict[str, Any], type_: str) -> None:
    struct = CLIENT_TYPES[type_]
    fields = {f.name: f for f in msgspec.structs.fields(struct)}
    assert "taskId" in fields and fields["taskId"].required, f"{type_} must name one task"
    assert "taskId" in schema["$defs"][struct.__name__]["required"]
    assert not _is_valid(schema, _client(type_, {}))


def test_presence_events_are_per_task(schema: dict[str, Any]) -> None:
    """Every server payload that carries a list (of viewers) is about one task."""
    for type_, struct in SERVER_PAYLOADS.items():
        if type_ in TASK_LISTING.values():
            continue
        props = schema["$defs"][struct.__name__]["properties"]
        has_list = any(p.get("type") == "array" for p in props.values())
        if type_ == "presence.probe":  # a question to one connection: no task, no users
            assert set(props) == {"seq"}
        elif has_list or type_.startswith("presence."):
            assert "taskId" in schema["$defs"][struct.__name__]["required"], type_
    welcome = schema["$defs"][SERVER_PAYLOADS["session.welcome"].__name__]["properties"]
    assert not any(p.get("type") == "array" for p in welcome.values()), "welcome must not list users"


def test_task_listing_carries_tasks_and_no_users(schema: dict[str, Any]) -> None:
    """``task.page`` lists tasks (id, version, fields): no user ids, viewers or connection state."""
    for type_, reply in TASK_LISTING.items():
        assert set(schema["$defs"][CLIENT_TYPES[type_].__name__]["properties"]) == {"cursor", "limit", "ref"}
        props = schema["$defs"][SERVER_PAYLOADS[reply].__name__]["properties"]
        assert set(props) == {"tasks", "nextCursor", "ref"}
        entry = schema["$defs"]["TaskEntry"]
        assert set(entry["properties"]) == {"taskId", "version", "fields"} and set(entry["required"]) == set(
            entry["properties"])
