"""``invalid_payload`` messages say what is allowed in words, never as a raw regular expression."""

from __future__ import annotations

import json
from typing import Any

import pytest

from rtlib.protocol.errors import ErrorCode, ProtocolError
from rtlib.protocol.schema import decode_client_frame

ID_WORDS = "Expected an id (1-128 characters, each a letter A-Z or a-z, a digit, '_', '.' or '-')"
FIELD_WORDS = "Expected a field name (a letter or '_', then at most 63 letters, digits or '_')"


def refusal(type_: str, payload: Any) -> str:
    with pytest.raises(ProtocolError) as refused:
        decode_client_frame(json.dumps({"type": type_, "workspaceId": "acme", "payload": payload}))
    assert refused.value.code == ErrorCode.INVALID_PAYLOAD
    return refused.value.message


@pytest.mark.parametrize(("type_", "payload", "said"), [
    ("task.update", {"taskId": "T 42", "changes": {"x": 1}},
     f"invalid task.update payload: {ID_WORDS} - at `$.taskId`"),
    ("task.get", {"taskId": "ws:task"}, f"invalid task.get payload: {ID_WORDS} - at `$.taskId`"),
    ("presence.join", {"taskId": ""}, f"invalid presence.join payload: {ID_WORDS} - at `$.taskId`"),
    ("task.list", {"cursor": "a b"}, f"invalid task.list payload: {ID_WORDS} - at `$.cursor`"),
    ("task.update", {"taskId": "T", "changes": {"my-field": 1}},
     f"invalid task.update payload: {FIELD_WORDS} - at `key` in `$.changes`"),
    ("task.update", {"taskId": "T", "changes": {"f" * 65: 1}},
     f"invalid task.update payload: {FIELD_WORDS} - at `key` in `$.changes`"),
])
def test_patterns_are_said_in_words(type_: str, payload: dict[str, Any], said: str) -> None:
    message = refusal(type_, payload)
    assert message == said
    assert "regex" not in message and "\\A" not in message


def test_other_messages_are_msgspecs_own() -> None:
    assert refusal("task.update", {"taskId": "T", "changes": {}}) == (
        "invalid task.update payload: Expected `object` of length >= 1 - at `$.changes`")
