"""The sans-I/O session: frames in, requests or error frames out; fuzzed with hypothesis."""

from __future__ import annotations

import json

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rtlib.protocol.config import ServerConfig
from rtlib.protocol.errors import CloseCode, ConnectionMustClose, ErrorCode
from rtlib.protocol.schema import TaskUpdate
from rtlib.protocol.session import Request, Session


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


# --- hostile input classes (issue 7): appended by the hostile-harness work --------------------------------------
ID_CHARS = "ABCXYZabcxyz0189_.-"
INVALID_UTF8 = [b"\xc0\xaf", b"\xff", b"\xfe", b"\xed\xa0\x80", b"\xf5\x80\x80\x80", b"\x80", b"\xe2\x82",
                b"\xf0\x9f\x98", b"\xc3\x28", b"\xe0\x80\xaf"]


def code_of(out: Request | bytes) -> str | None:
    """The error code of a reply, None for an accepted request; every reply must be valid UTF-8 JSON."""
    if isinstance(out, Request):
        return None
    return json.loads(out.decode("utf-8"))["payload"]["code"]


def nest(levels: int, pick: list[bool]) -> str:
    """A JSON value ``levels`` containers deep (``pick[i]``: array or object at level i)."""
    opens = "".join("[" if pick[i % len(pick)] else '{"k":' for i in range(levels))
    closes = "".join("]" if pick[i % len(pick)] else "}" for i in reversed(range(levels)))
    return opens + "1" + closes


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(INVALID_UTF8), st.sampled_from(["value", "key", "taskId", "ref", "type", "ws", "tail"]),
       st.text(alphabet=ID_CHARS, min_size=0, max_size=8))
def test_binary_frame_with_invalid_utf8_anywhere_is_invalid_json(bad: bytes, where: str, pad: str) -> None:
    """Issue 7's stored poison: invalid UTF-8 inside a JSON string of a *binary* frame is never accepted."""
    payload = {"taskId": "t1", "changes": {"note": "@@"}, "ref": "r"}
    text = {"value": frame("task.update", payload), "key": frame("task.update", {**payload, "changes": {"@@": 1}}),
            "taskId": frame("task.update", {**payload, "taskId": "@@"}),
            "ref": frame("task.update", {**payload, "ref": "@@"}), "type": frame("@@", payload),
            "ws": frame("task.update", payload, ws="@@"), "tail": frame("task.update", payload) + "@@"}[where]
    data = text.encode().replace(b"@@", pad.encode() + bad + pad.encode())
    assert code_of(session().receive(data, 0)) == "invalid_json"


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=0, max_value=2000), st.lists(st.booleans(), min_size=1, max_size=5),
       st.sampled_from(["changes", "userId", "top"]), st.booleans())
def test_nesting_deeper_than_32_is_invalid_json_and_never_raises(levels: int, pick: list[bool], where: str,
                                                                 binary: bool) -> None:
    """Depth counts arrays and objects, the envelope object being level 1; deeper than 32 -> invalid_json."""
    if where == "top":
        text, depth = nest(levels, pick), levels
    elif where == "userId":
        text, depth = frame("task.get", {"taskId": "t1"}).replace("}}", '}, "userId": @@}').replace(
            "@@", nest(levels, pick)), 1 + levels
    else:
        text = frame("task.update", {"taskId": "t1", "changes": {"a": "@@"}}).replace('"@@"', nest(levels, pick))
        depth = 3 + levels
    code = code_of(session().receive(text.encode() if binary else text, 0))
    if depth > 32:
        assert code == "invalid_json"
    else:
        assert code != "invalid_json"


@settings(max_examples=300, deadline=None)
@given(st.text(min_size=0, max_size=140), st.sampled_from(["task.update", "task.get", "presence.join",
                                                           "presence.heartbeat", "presence.leave"]))
def test_task_ids_must_match_the_whole_pattern(task_id: str, type_: str) -> None:
    """Trailing newlines, control characters, non-ASCII, empty or over 128: invalid_payload, never accepted."""
    import re

    payload = {"taskId": task_id, "changes": {"a": 1}} if type_ == "task.update" else {"taskId": task_id}
    code = code_of(session().receive(frame(type_, payload), 0))
    valid = re.fullmatch(r"[A-Za-z0-9_.\-]{1,128}", task_id) is not None
    assert code == (None if valid else "invalid_payload")


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.text(min_size=0, max_size=70), st.sampled_from(["a\n", "a\r\n", "\na", "a" * 65, "_" * 64,
                                                                    "\u00e9", "a\x00", "A9_"])))
def test_field_names_must_match_the_whole_pattern(name: str) -> None:
    import re

    code = code_of(session().receive(frame("task.update", {"taskId": "t1", "changes": {name: 1}}), 0))
    valid = re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,63}", name) is not None
    assert code == (None if valid else "invalid_payload")


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=20).filter(lambda w: w != "w1"))
def test_any_other_workspace_id_is_forbidden(ws: str) -> None:
    """Including "w1\\n", "W1", "w1 " and non-ASCII look-alikes."""
    assert code_of(session().receive(frame("task.get", {"taskId": "t1", "ref": "r"}, ws=ws), 0)) == \
        "forbidden_workspace"


@settings(max_examples=50, deadline=None)
@given(st.integers(min_value=1000, max_value=12000), st.sampled_from(["array", "string", "object"]))
def test_huge_json_is_classified_not_crashed(n: int, shape: str) -> None:
    text = {"array": "[" + ",".join(["0"] * n) + "]",
            "string": json.dumps("x" * n),
            "object": frame("task.update", {"taskId": "t1", "changes": {f"f{i}": i for i in range(n // 40)}})}[shape]
    code = code_of(session().receive(text, 0))
    assert code == {"array": "invalid_envelope", "string": "invalid_envelope",
                    "object": None if n // 40 <= 256 else "invalid_payload"}[shape]


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.binary(max_size=200),
                 st.builds(lambda head, bad, tail: head + bad + tail, st.binary(max_size=40),
                           st.sampled_from(INVALID_UTF8), st.binary(max_size=40)),
                 st.builds(lambda v: frame("task.update", {"taskId": "t1", "changes": {"a": v}}).encode(),
                           st.text(max_size=30))))
def test_nothing_accepted_can_carry_invalid_utf8(data: bytes) -> None:
    """Whatever a binary frame holds: an error, or a request whose every string and raw value is valid UTF-8."""
    out = session().receive(data, 0)
    if isinstance(out, Request):
        data.decode("utf-8")  # accepted only if the whole frame was valid UTF-8
        for raw in getattr(out.payload, "changes", {}).values():
            bytes(raw).decode("utf-8")
    else:
        code_of(out)


def test_fanout_budget_pauses_a_member_whose_updates_cost_the_workspace_too_much() -> None:
    cfg = ServerConfig(fanout_rate=1_000_000, fanout_burst=2_000_000)
    big, small = Session("c1", "alice", "ws-1", cfg), Session("c2", "bob", "ws-1", cfg)
    # 60 KB to 40 other connections is 2.4 MB of writes: served, then 0.4 s without reading alice's frames.
    assert big.fanout(60_000, 40, 0.0) == pytest.approx(0.4)
    assert big.fanout(60_000, 40, 0.4) == pytest.approx(2.4)  # paid for the first, in debt for the second
    # Another member's budget is its own: bob's small updates to the same 40 are never paused.
    assert all(small.fanout(300, 40, t / 10) == 0.0 for t in range(100))
    with pytest.raises(ValueError):
        ServerConfig(fanout_rate=0)
