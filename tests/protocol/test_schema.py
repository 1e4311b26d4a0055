"""The schema module: timestamps on the wire, and the decoder's classification of hostile input."""

import json
import random
from datetime import UTC, datetime

import pytest

from rtlib.protocol.errors import ErrorCode, ProtocolError
from rtlib.protocol.jsonschema import json_schema
from rtlib.protocol.schema import MAX_DEPTH, decode_client_frame, is_id, iso_timestamp, nested_deeper_than


def test_iso_timestamp_matches_datetime_including_rollovers() -> None:
    rng = random.Random(1)
    samples = [rng.uniform(0, 4e9) for _ in range(20_000)] + [1795639769.9999996, 1795639769.0, 0.0, 59.9999999]
    for t in samples:
        want = datetime.fromtimestamp(round(t * 1e6) / 1e6, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        assert iso_timestamp(t) == want


def test_iso_timestamp_shape() -> None:
    assert iso_timestamp(1795639769.123456) == "2026-11-25T20:49:29.123456Z"


# --- hostile input: the decoder classifies it, never raises anything but ProtocolError -------------------



def _update(changes: str = '{"a":1}', task: str = '"T-1"') -> str:
    return f'{{"type":"task.update","workspaceId":"w","payload":{{"taskId":{task},"changes":{changes}}}}}'


def _code(frame: str | bytes) -> ErrorCode | None:
    try:
        decode_client_frame(frame)
    except ProtocolError as exc:
        return exc.code
    return None


@pytest.mark.parametrize("frame", [
    _update('{"note":"x').encode() + b"\xc0\xaf" + b'"}',   # invalid UTF-8 inside a string (stored poison)
    b"\xff\xfe{}",                                          # invalid UTF-8 outside strings
    _update().encode()[:-3] + b"\xed\xa0\x80}}",            # an encoded surrogate: not UTF-8
    "1x", "[,", "12 13", "[1,", "{", "",                     # malformed JSON, whatever its first character
    "[" * 5000 + "]" * 5000, '{"a":' * 5000,                # deep: refused before parsing, no RecursionError
    _update('{"a":' + "[" * MAX_DEPTH + "]" * MAX_DEPTH + "}"),  # too deep inside a field value
])
def test_invalid_json(frame: str | bytes) -> None:
    assert _code(frame) == ErrorCode.INVALID_JSON


def test_depth_bound_is_exact() -> None:
    def value(depth: int) -> str:
        return _update('{"a":' + "[" * depth + "]" * depth + "}")

    assert _code(value(MAX_DEPTH - 3)) is None  # the envelope, payload and changes objects are 3 levels
    assert _code(value(MAX_DEPTH - 2)) == ErrorCode.INVALID_JSON
    assert _code(_update('{"a":"' + "[" * 100 + '\\"{{"}')) is None  # brackets inside strings do not nest


def test_nested_deeper_than() -> None:
    assert not nested_deeper_than("[[]]", 2) and nested_deeper_than("[[[]]]", 2)
    assert not nested_deeper_than('[{"a":"]]]\\"[[["}]', 2) and nested_deeper_than('[{"a":[1]}]', 2)


@pytest.mark.parametrize("frame", ["[1,2]", "42", '"x"', "null", '{"type":"task.get"}'])
def test_valid_json_that_is_not_an_envelope(frame: str) -> None:
    assert _code(frame) == ErrorCode.INVALID_ENVELOPE


@pytest.mark.parametrize("task", ['"T-1\\n"', '"T-1\\u0000"', '"\\t"', '"tâche"', '"a:b"', '""', '"' + "x" * 129 + '"'])
def test_ids_match_whole(task: str) -> None:
    assert _code(_update(task=task)) == ErrorCode.INVALID_PAYLOAD


@pytest.mark.parametrize("field", ["a\\n", "a b", "1a", "é", "a" * 65])
def test_field_names_match_whole(field: str) -> None:
    assert _code(_update(f'{{"{field}":1}}')) == ErrorCode.INVALID_PAYLOAD


def test_binary_and_text_frames_decode_alike() -> None:
    text = _update('{"note":"caf\\u00e9 ☕"}')
    for frame in (text, text.encode()):
        _, payload = decode_client_frame(frame)
        assert json.loads(bytes(payload.changes["note"])) == "café ☕"


def test_is_id() -> None:
    assert is_id("T-1") and is_id("a" * 128)
    assert not any(is_id(v) for v in ("T-1\n", "", "a" * 129, "x y", None, 5))


def test_schema_patterns_are_ecma_anchored() -> None:
    text = json.dumps(json_schema())
    assert "\\\\A" not in text and "\\\\Z" not in text and "^[A-Za-z0-9_.\\\\-]{1,128}$" in text
