"""The presence lifecycle table: its shape, its lookups, the rules that consult it, its rendering in
``docs/protocol.md`` §9, and every entry row run through the in-memory store on an injected clock (no sleeping).
The same rows on the Lua scripts of a real Redis: ``tests/server/test_presence_table_redis.py``."""

from __future__ import annotations

from pathlib import Path

import pytest
from presence_cases import BookAdapter, Case, cases, expected_published, run_case

from rtlib.protocol.presence import EntryFact, joined_change, left_change
from rtlib.protocol.presence_table import (
    BEGIN,
    END,
    TABLE,
    Announcement,
    Change,
    EntryEvent,
    EntryState,
    PresenceStateError,
    Transition,
    ViewerEvent,
    ViewerState,
    announcement,
    left_reason,
    markdown,
    step,
    transition,
    viewer_event,
    with_table,
)

PROTOCOL_DOC = Path(__file__).resolve().parents[2] / "docs" / "protocol.md"
CASES = cases()


def test_every_state_has_rows_and_every_next_state_is_known() -> None:
    states = {s for s, _ in TABLE}
    assert states == set(EntryState) | set(ViewerState)
    assert {row.next for row in TABLE.values()} <= states
    assert {e for _, e in TABLE} == set(EntryEvent) | set(ViewerEvent)


def test_only_viewer_rows_announce_and_only_entry_rows_change_the_store() -> None:
    for (state, _event), row in TABLE.items():
        if isinstance(state, EntryState):
            assert row.announce is None and isinstance(row.next, EntryState)
            assert (row.change is Change.REMOVED) == (row.reason is not None)
            assert (row.change is Change.ADDED) == (state is EntryState.ABSENT and row.next is EntryState.LIVE)
        else:
            assert row.change is None and row.reason is None and isinstance(row.next, ViewerState)
    announcing = {key: row.announce for key, row in TABLE.items() if row.announce is not None}
    assert announcing == {(ViewerState.NOT_VIEWING, ViewerEvent.FIRST_ADDED): Announcement.JOINED,
                          (ViewerState.VIEWING, ViewerEvent.LAST_REMOVED): Announcement.LEFT}


def test_an_unlisted_pair_raises_a_clear_error() -> None:
    with pytest.raises(PresenceStateError, match=r"event UPSERT in state HELD \(the table allows: EXPIRY, SWEEP\)"):
        transition(EntryState.HELD, EntryEvent.UPSERT)
    with pytest.raises(PresenceStateError, match="event EXPIRY in state ABSENT"):
        step(EntryState.ABSENT, EntryEvent.EXPIRY, 0)
    with pytest.raises(PresenceStateError, match="LAST_REMOVED in state NOT_VIEWING"):
        transition(ViewerState.NOT_VIEWING, ViewerEvent.LAST_REMOVED)
    # A store reporting an impossible count after its change is refused rather than guessed about.
    with pytest.raises(PresenceStateError, match="0 entries after an entry was ADDED"):
        viewer_event(Change.ADDED, 0)
    with pytest.raises(PresenceStateError, match="-1 entries after an entry was REMOVED"):
        viewer_event(Change.REMOVED, -1)


def test_left_reasons_come_from_the_removing_event() -> None:
    assert [left_reason(e) for e in (EntryEvent.LEAVE, EntryEvent.DISCONNECT, EntryEvent.SWEEP)] == [
        "leave", "disconnect", "timeout"]
    with pytest.raises(PresenceStateError, match="UPSERT removes no entry"):
        left_reason(EntryEvent.UPSERT)


def test_steps_compose_entry_and_viewer_rows() -> None:
    alone, shared = step(EntryState.STALE, EntryEvent.SWEEP, 0), step(EntryState.STALE, EntryEvent.SWEEP, 1)
    assert (alone.entry, alone.viewer, alone.announce, alone.reason) == (
        EntryState.ABSENT, ViewerState.NOT_VIEWING, Announcement.LEFT, "timeout")
    assert (shared.entry, shared.viewer, shared.announce, shared.reason) == (
        EntryState.ABSENT, ViewerState.VIEWING, None, None)
    assert step(EntryState.ABSENT, EntryEvent.UPSERT, 0).announce is Announcement.JOINED
    assert step(EntryState.ABSENT, EntryEvent.UPSERT, 2).announce is None
    assert step(EntryState.LIVE, EntryEvent.LOST, 0) == step(EntryState.LIVE, EntryEvent.LOST, 0)
    assert step(EntryState.LIVE, EntryEvent.LOST, 0).entry is EntryState.HELD


@pytest.mark.parametrize("changed", [True, False])
@pytest.mark.parametrize("n", [0, 1, 2, 3])
def test_joined_change_and_left_change_answer_what_the_table_says(changed: bool, n: int) -> None:
    fact = EntryFact("w", "t", "c1", "u", changed, n)
    if not changed or n >= 1:
        joined = announcement(Change.ADDED if changed else None, n) is Announcement.JOINED
        assert (joined_change(fact) is not None) == joined == (changed and n == 1)
    left = announcement(Change.REMOVED if changed else None, n) is Announcement.LEFT
    change = left_change(fact, "timeout")
    assert (change is not None) == left == (changed and n == 0)
    assert change is None or (change.kind, change.reason) == ("left", "timeout")


def test_the_rules_consult_the_table(monkeypatch: pytest.MonkeyPatch) -> None:
    """Change one row and joined_change / left_change change with it: the table is their one definition."""
    first = EntryFact("w", "t", "c1", "u", True, 1)
    last = EntryFact("w", "t", "c1", "u", True, 0)
    assert joined_change(first) is not None and left_change(last, "leave") is not None
    monkeypatch.setitem(TABLE, (ViewerState.NOT_VIEWING, ViewerEvent.FIRST_ADDED), Transition(ViewerState.VIEWING))
    monkeypatch.setitem(TABLE, (ViewerState.VIEWING, ViewerEvent.LAST_REMOVED), Transition(ViewerState.NOT_VIEWING))
    assert joined_change(first) is None and left_change(last, "leave") is None


def test_the_cases_reach_every_row() -> None:
    used = {row for case in CASES for row in case.expected.rows}
    assert used == set(TABLE)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
async def test_every_entry_row_on_the_in_memory_store(case: Case) -> None:
    """Through the presence protocol on the BookStore the models run: the table's next states, and exactly
    the table's announcement published."""
    outcome, at = await run_case(case, BookAdapter())
    want = case.expected
    assert outcome.before is case.state, "the case's precondition was not set up"
    assert (outcome.entry, outcome.viewer) == (want.entry, want.viewer)
    assert outcome.published == expected_published(case, at)


# --- the rendering in docs/protocol.md §9 ---------------------------------------------------------------------
def test_the_table_in_the_protocol_doc_is_generated_from_the_code() -> None:
    doc = PROTOCOL_DOC.read_text(encoding="utf-8")
    assert doc.count(BEGIN) == 1 and doc.count(END) == 1
    assert doc.index(BEGIN) > doc.index("## 9. Presence") and doc.index(END) < doc.index("## 10.")
    assert with_table(doc) == doc, (
        "the presence table in docs/protocol.md §9 is stale: run `make schema` (scripts/presence_table.py)")


def test_with_table_replaces_only_between_the_markers() -> None:
    doc = f"# before\n{BEGIN}\nold rows\n{END}\nafter\n"
    new = with_table(doc)
    assert new == f"# before\n{BEGIN}\n{markdown()}{END}\nafter\n" and with_table(new) == new
    for row in TABLE.values():
        assert row.why in new
    with pytest.raises(ValueError, match="markers"):
        with_table("no markers here")
