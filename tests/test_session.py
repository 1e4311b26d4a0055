"""The sans-I/O session: frames in, requests or error frames out; fuzzed with hypothesis."""

from __future__ import annotations

import json

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rtlib.config import ServerConfig
from rtlib.errors import CloseCode, ConnectionMustClose, ErrorCode
from rtlib.schema import TaskUpdate
from rtlib.session import Request, Session


def session(**cfg: object) -> Session:
    return Session("c1", "alice", "w1", ServerConfig(server_id="s", **cfg))  # type: ignore[arg-type]


def frame(type_: str, payload: object, ws: str = "w1", **extra: object) -> str:
    return json.dumps({"type": type_, "workspaceId": ws, "payload": payload, **extra})


def test_valid_update_becomes_a_request_with_raw_values() -> None:
    out = session().receive(frame("task.update", {"taskId": "t1", "changes": {"a": {"b": [1, 2]}}, "ref": "r"}), 0)
    assert isinstance(out, Request) and out.type == "task.update"
    assert isinstance(out.payload, TaskUpdate) and out.payload.ref == "r"
    assert msgspec.json.decode(bytes(out.payload.changes["a"])) == {"b": [1, 2]}


@pytest.mark.parametrize(("data", "code"), [
    ("nope", ErrorCode.INVALID_JSON),
    ('{"type":"task.get","workspaceId":"w1"}', ErrorCode.INVALID_ENVELOPE),
    (frame("task.delete", {"taskId": "t"}), ErrorCode.UNKNOWN_TYPE),
    (frame("task.get", {"taskId": ""}), ErrorCode.INVALID_PAYLOAD),
    (frame("task.update", {"taskId": "t", "changes": {"9bad": 1}}), ErrorCode.INVALID_PAYLOAD),
    (frame("task.update", {"taskId": "t", "changes": {f"f{i}": i for i in range(257)}}), ErrorCode.INVALID_PAYLOAD),
    (frame("task.get", {"taskId": "t"}, ws="w2"), ErrorCode.FORBIDDEN_WORKSPACE),
])
def test_errors_are_classified(data: str, code: ErrorCode) -> None:
    out = session().receive(data, 0)
    assert isinstance(out, bytes)
    event = json.loads(out)
    assert event["type"] == "error" and event["payload"]["code"] == code.value
    assert event["userId"] == "alice" and event["workspaceId"] == "w1"


def test_error_echoes_ref_when_salvageable() -> None:
    out = session().receive(frame("task.update", {"taskId": "t", "ref": "r9"}), 0)
    assert json.loads(out)["payload"]["ref"] == "r9"


def test_rate_limit_then_close_1008() -> None:
    s = session(rate_limit=10, rate_burst=2, rate_limit_strikes=3)
    get = frame("task.get", {"taskId": "t"})
    assert isinstance(s.receive(get, 0), Request) and isinstance(s.receive(get, 0), Request)
    for _ in range(3):
        assert json.loads(s.receive(get, 0))["payload"]["code"] == "rate_limited"
    with pytest.raises(ConnectionMustClose) as closed:
        s.receive(get, 0)
    assert closed.value.code == CloseCode.POLICY_VIOLATION
    assert isinstance(session(rate_limit=10, rate_burst=2).receive(get, 0.1), Request)


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=5),
                           lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=5), kids,
                                                                                     max_size=3), max_leaves=8)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.binary(max_size=64), st.text(max_size=64),
                 st.builds(lambda t, p, w: json.dumps({"type": t, "workspaceId": w, "payload": p}),
                           st.sampled_from(["task.update", "task.get", "presence.join", "presence.heartbeat",
                                            "presence.leave", "x"]),
                           json_values, st.sampled_from(["w1", "w2", 3]))))
def test_fuzz_receive_never_raises_and_always_answers(data: str | bytes) -> None:
    out = session(rate_burst=10_000).receive(data, 0)
    if isinstance(out, bytes):
        assert json.loads(out)["type"] == "error"
    else:
        assert isinstance(out, Request)
