"""The resume rule and offset helpers, with plain data."""

import pytest

from rtlib.protocol.history import decide_resume, offset_key, offset_of, with_offset


def test_offsets_sort_numerically() -> None:
    assert offset_key("1700000000000-10") > offset_key("1700000000000-9") > offset_key("999-99")


def test_with_offset_and_back() -> None:
    event = b'{"type":"task.updated","payload":{"taskId":"t"}}'
    delivered = with_offset(event, "17-3", "42")
    assert delivered == b'{"type":"task.updated","payload":{"taskId":"t"},"offset":"17-3","epoch":"42"}'
    assert offset_of(delivered) == "17-3" and offset_of(event) is None


@pytest.mark.parametrize(("offset", "epoch", "first", "last", "after", "recovered"), [
    ("10-0", "e1", "5-0", "20-0", 3, True),      # inside the history: replay the 3 after it
    ("20-0", "e1", "5-0", "20-0", 0, True),      # up to date
    ("5-0", "e1", "5-0", "20-0", 7, True),       # exactly the oldest kept entry
    ("4-0", "e1", "5-0", "20-0", 8, False),      # older than the history kept: entries may be trimmed
    ("21-0", "e1", "5-0", "20-0", 0, False),     # from the future
    ("10-0", "e0", "5-0", "20-0", 3, False),     # another epoch: the history was lost
    ("10-0", "e1", "5-0", "20-0", 1001, False),  # more than max_replay missed
    ("0-0", "e1", None, None, 0, True),          # nothing ever written
    ("10-0", "e1", None, None, 0, False),        # history gone (evicted) under the same epoch
    ("0-0", "e1", "5-0", "20-0", 9, False),      # saw an empty history; cannot prove nothing was trimmed
])
def test_decide_resume(offset: str, epoch: str, first: str | None, last: str | None, after: int,
                       recovered: bool) -> None:
    outcome = decide_resume(offset, epoch, "e1", first, last, after, max_replay=1000)
    assert outcome.recovered is recovered, outcome.reason
    assert outcome.replay == (after if recovered else 0)
