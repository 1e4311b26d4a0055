"""Unit tests of the presence rules with an injected clock: no sleeping, no I/O."""

from __future__ import annotations

import pytest

from rtlib.protocol.presence import (
    EntryFact,
    PresenceBook,
    PresenceConfig,
    joined_change,
    left_change,
    member,
    split_member,
)


def test_defaults_are_the_design_reviews() -> None:
    cfg = PresenceConfig()
    assert (cfg.heartbeat_interval, cfg.timeout, cfg.sweep_interval) == (30.0, 60.0, 5.0)
    assert cfg.worst_case_detection() == 65.0


@pytest.mark.parametrize("bad", [0, -1, float("nan"), float("inf"), "30"])
def test_config_rejects_non_positive_or_non_numbers(bad: object) -> None:
    with pytest.raises(ValueError, match="positive number of seconds"):
        PresenceConfig(heartbeat_interval=bad)  # type: ignore[arg-type]


def test_expiry_boundary_is_inclusive() -> None:
    cfg = PresenceConfig(timeout=60)
    assert not cfg.is_expired(last_heartbeat=100.0, now=159.999)
    assert cfg.is_expired(last_heartbeat=100.0, now=160.0)
    assert cfg.next_sweep(10.0) == 15.0 and cfg.next_sweep(11.0) == 15.0 and cfg.next_sweep(14.999) == 15.0
    assert cfg.sweep_at_or_after(15.0) == 15.0 and cfg.sweep_at_or_after(15.001) == 20.0


def test_member_roundtrip_keeps_user_ids_with_dots() -> None:
    assert split_member(member("srv-1-7", "usr_4.5")) == ("srv-1-7", "usr_4.5")


def test_joined_only_for_first_entry_and_left_only_for_last() -> None:
    first = EntryFact("w", "t", "c1", "u", changed=True, user_entries=1)
    second_tab = EntryFact("w", "t", "c2", "u", changed=True, user_entries=2)
    refresh = EntryFact("w", "t", "c1", "u", changed=False, user_entries=1)
    assert joined_change(first) is not None and joined_change(first).exclude_conn == "c1"
    assert joined_change(second_tab) is None and joined_change(refresh) is None
    last = EntryFact("w", "t", "c2", "u", changed=True, user_entries=0)
    not_last = EntryFact("w", "t", "c1", "u", changed=True, user_entries=1)
    lost_race = EntryFact("w", "t", "c2", "u", changed=False, user_entries=0)  # someone else removed it
    assert left_change(last, "timeout").reason == "timeout"
    assert left_change(not_last, "leave") is None and left_change(lost_race, "leave") is None


def test_book_timeline_join_heartbeat_expire() -> None:
    cfg, book = PresenceConfig(heartbeat_interval=30, timeout=60, sweep_interval=5), PresenceBook()
    fact, viewers = book.upsert("w", "t", "c1", "alice", now=0.0)
    assert joined_change(fact) and viewers == ["alice"]
    book.upsert("w", "t", "c1", "alice", now=30.0)  # heartbeat
    assert book.expire(cfg.cutoff(89.9)) == []  # 59.9 s since the last beat
    popped = book.expire(cfg.cutoff(90.0))
    assert [left_change(f, "timeout").user_id for f in popped] == ["alice"]
    assert book.viewers("w", "t") == [] and book.expire(cfg.cutoff(1000)) == []


def test_book_multi_tab_expiry_keeps_user_until_last_entry() -> None:
    book = PresenceBook()
    book.upsert("w", "t", "tab1", "alice", now=0.0)
    fact, _ = book.upsert("w", "t", "tab2", "alice", now=10.0)
    assert joined_change(fact) is None
    popped = book.expire(cutoff=5.0)
    assert len(popped) == 1 and left_change(popped[0], "timeout") is None
    assert book.viewers("w", "t") == ["alice"]
    assert left_change(book.remove("w", "t", "tab2", "alice"), "disconnect") is not None


def test_book_remove_missing_entry_is_a_no_op() -> None:
    book = PresenceBook()
    fact = book.remove("w", "t", "c1", "alice")
    assert not fact.changed and fact.user_entries == 0 and left_change(fact, "leave") is None
