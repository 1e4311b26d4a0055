"""Unit and seeded property tests of the client-side ordering strategies: no clock, no I/O."""

from __future__ import annotations

import random
from typing import Any

import pytest

from rtlib.clientmodels.ordering import (
    STRATEGIES,
    Apply,
    GapResyncCache,
    Outcome,
    diverged,
    make_cache,
)

# A task's history as the server commits it: v1 sets title and status, v2 renames, v3 closes.
HISTORY = [
    (1, {"title": "draft", "status": "open"}),
    (2, {"title": "final"}),
    (3, {"status": "done"}),
]
TRUTH = {"t1": (3, {"title": "final", "status": "done"})}


def deliver(strategy: str, order: list[int]) -> Any:
    cache = make_cache(strategy)
    for i, version in enumerate(order):
        cache.on_update("t1", version, HISTORY[version - 1][1], now=float(i))
    return cache


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_in_order_delivery_converges(strategy: str) -> None:
    cache = deliver(strategy, [1, 2, 3])
    assert cache.strategy == strategy
    assert cache.view("t1") == TRUTH["t1"]
    assert diverged(cache, TRUTH) == []
    assert cache.take_resync_requests() == []


def test_reordering_loses_a_field_under_the_version_gate() -> None:
    cache = make_cache("version_gate")
    cache.on_update("t1", 1, HISTORY[0][1], now=0.0)
    assert cache.on_update("t1", 3, HISTORY[2][1], now=1.0) == [Apply("t1", 3, Outcome.APPLIED)]
    late = cache.on_update("t1", 2, HISTORY[1][1], now=2.0)
    assert late == [Apply("t1", 2, Outcome.STALE_DROPPED, out_of_order=True)]
    # The version claims the cache is current, yet v2's title is gone for good.
    assert cache.view("t1") == (3, {"title": "draft", "status": "done"})
    assert diverged(cache, TRUTH) == ["t1"]


def test_reordering_rolls_the_naive_version_back() -> None:
    cache = deliver("naive", [1, 3, 2])
    assert cache.view("t1") == (2, {"title": "final", "status": "done"})  # right fields, wrong version
    assert diverged(cache, TRUTH) == ["t1"]


def test_gap_resync_buffers_and_drains_without_a_snapshot() -> None:
    cache = make_cache("gap_resync")
    assert isinstance(cache, GapResyncCache)
    cache.on_update("t1", 1, HISTORY[0][1], now=0.0)
    assert cache.on_update("t1", 3, HISTORY[2][1], now=1.0) == [Apply("t1", 3, Outcome.GAP_BUFFERED)]
    assert cache.buffered("t1") == [3] and cache.pending() == ["t1"]
    records = cache.on_update("t1", 2, HISTORY[1][1], now=1.5)
    assert records == [
        Apply("t1", 2, Outcome.APPLIED, out_of_order=True),
        Apply("t1", 3, Outcome.APPLIED, drained=True),
    ]
    assert diverged(cache, TRUTH) == []
    # The gap closed before the driver sent task.get: the request is withdrawn.
    assert cache.take_resync_requests() == [] and cache.pending() == []


def test_gap_resync_requests_once_and_converges_after_a_lost_update() -> None:
    cache = GapResyncCache()
    cache.on_update("t1", 1, HISTORY[0][1], now=0.0)
    cache.on_update("t1", 3, HISTORY[2][1], now=1.0)  # v2 never arrives
    cache.on_update("t1", 4, {"title": "v4"}, now=1.1)
    assert cache.take_resync_requests() == ["t1"]
    assert cache.take_resync_requests() == []  # at most one outstanding request per task
    cache.on_update("t1", 5, {"status": "v5"}, now=1.2)
    assert cache.take_resync_requests() == [] and cache.buffered("t1") == [3, 4, 5]
    # The snapshot was taken at v3; buffered v4 and v5 follow it.
    records = cache.on_snapshot("t1", 3, TRUTH["t1"][1], now=2.0)
    assert [(r.version, r.outcome, r.drained) for r in records] == [
        (3, Outcome.RESYNCED, False),
        (4, Outcome.APPLIED, True),
        (5, Outcome.APPLIED, True),
    ]
    assert cache.view("t1") == (5, {"title": "v4", "status": "v5"})
    assert cache.pending() == [] and cache.stalled(100.0, 1.0) == []


def test_gap_still_open_after_a_snapshot_is_requested_again() -> None:
    cache = GapResyncCache()
    cache.on_update("t1", 1, HISTORY[0][1], now=0.0)
    cache.on_update("t1", 3, HISTORY[2][1], now=1.0)
    assert cache.take_resync_requests() == ["t1"]
    cache.on_update("t1", 6, {"title": "v6"}, now=1.5)
    cache.on_snapshot("t1", 4, {"title": "v4", "status": "done"}, now=2.0)  # v3 covered, v5 missing
    assert cache.view("t1")[0] == 4 and cache.buffered("t1") == [6]
    assert cache.take_resync_requests() == ["t1"]


def test_stale_snapshot_is_dropped_but_answers_the_request() -> None:
    cache = GapResyncCache()
    cache.on_update("t1", 1, HISTORY[0][1], now=0.0)
    cache.on_update("t1", 3, HISTORY[2][1], now=1.0)
    assert cache.take_resync_requests() == ["t1"]
    cache.on_update("t1", 2, HISTORY[1][1], now=1.1)  # gap filled; the sent request is still in flight
    assert cache.pending() == ["t1"]
    assert cache.on_snapshot("t1", 1, HISTORY[0][1], now=2.0) == [Apply("t1", 1, Outcome.STALE_DROPPED)]
    assert cache.view("t1") == TRUTH["t1"] and cache.pending() == []


def test_lost_reply_is_retried_after_the_stall_timeout() -> None:
    cache = GapResyncCache()
    cache.on_update("t1", 1, HISTORY[0][1], now=0.0)
    cache.on_update("t1", 3, HISTORY[2][1], now=10.0)
    assert cache.take_resync_requests() == ["t1"]
    assert cache.stalled(14.9, after=5.0) == []
    assert cache.stalled(15.0, after=5.0) == ["t1"]
    assert cache.retry_stalled(15.0, after=5.0) == ["t1"]
    assert cache.take_resync_requests() == ["t1"]
    assert cache.stalled(19.0, after=5.0) == []  # the retry restarted the clock
    cache.on_snapshot("t1", 3, TRUTH["t1"][1], now=20.0)
    assert cache.stalled(100.0, after=5.0) == [] and diverged(cache, TRUTH) == []


def test_buffer_is_bounded_and_the_snapshot_recovers() -> None:
    cache = GapResyncCache(max_buffer=3)
    cache.on_update("t1", 1, {"n": 1}, now=0.0)
    for v in range(3, 8):  # v2 lost: 5 updates into a 3-entry buffer
        cache.on_update("t1", v, {"n": v}, now=float(v))
    assert cache.buffered("t1") == [6, 7]  # v6 overflowed the buffer, which was dropped
    assert cache.take_resync_requests() == ["t1"]
    cache.on_snapshot("t1", 7, {"n": 7}, now=10.0)
    assert cache.view("t1") == (7, {"n": 7}) and cache.buffered("t1") == []
    assert cache.pending() == [] and cache.take_resync_requests() == []


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_duplicates_are_stale(strategy: str) -> None:
    cache = make_cache(strategy)
    cache.on_update("t1", 1, HISTORY[0][1], now=0.0)
    cache.on_update("t1", 2, HISTORY[1][1], now=1.0)
    again = cache.on_update("t1", 2, HISTORY[1][1], now=2.0)
    if strategy == "naive":  # naive re-applies the duplicate; harmless for an identical payload
        assert again[0].outcome is Outcome.APPLIED
    else:
        assert again == [Apply("t1", 2, Outcome.STALE_DROPPED)]
    assert cache.view("t1") == (2, {"title": "final", "status": "open"})


def test_duplicate_of_a_buffered_update_is_stale() -> None:
    cache = GapResyncCache()
    cache.on_update("t1", 3, {"a": 3}, now=0.0)
    assert cache.on_update("t1", 3, {"a": 3}, now=1.0)[0].outcome is Outcome.STALE_DROPPED


def test_diverged_counts_missing_tasks_only_above_version_zero() -> None:
    cache = make_cache("version_gate")
    assert diverged(cache, {"never": (0, {}), "updated": (1, {"a": 1})}) == ["updated"]
    cache.on_update("extra", 1, {"a": 1}, now=0.0)
    assert diverged(cache, {}) == ["extra"]


def test_unknown_strategy_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown ordering strategy 'lww'"):
        make_cache("lww")


# --- seeded property test --------------------------------------------------------------------------

FIELDS = ("title", "status", "assignee", "priority")


def generate(rng: random.Random, n: int, n_tasks: int) -> tuple[list[tuple[str, int, dict]], dict]:
    """``n`` updates in commit order and every task's state after each version (``states[task][v]``)."""
    states: dict[str, list[tuple[int, dict[str, Any]]]] = {f"t{i}": [(0, {})] for i in range(n_tasks)}
    updates = []
    for _ in range(n):
        task = rng.choice(sorted(states))
        version, fields = states[task][-1]
        changes = {f: rng.randrange(100) for f in rng.sample(FIELDS, rng.randint(1, len(FIELDS)))}
        states[task].append((version + 1, {**fields, **changes}))
        updates.append((task, version + 1, changes))
    return updates, states


def state_at(updates: list[tuple[str, int, dict]], moment: int, task: str) -> tuple[int, dict[str, Any]]:
    """The server's state of ``task`` once the first ``moment`` updates are committed."""
    version, fields = 0, {}
    for t, v, changes in updates[:moment]:
        if t == task:
            version, fields = v, {**fields, **changes}
    return version, fields


def run_gap_resync(seed: int) -> tuple[GapResyncCache, list, dict, set[str]]:
    """Deliver a random history in a random order with some updates lost; answer resync requests with the
    server's state at a moment no earlier than anything already sent, some replies late (so they can be
    stale by the time they land) and some lost (so only :meth:`GapResyncCache.retry_stalled` recovers)."""
    rng = random.Random(seed)
    updates, states = generate(rng, rng.randint(1, 60), rng.randint(1, 4))
    loss = rng.choice([0.0, 0.0, 0.1, 0.3])
    order = rng.sample(range(len(updates)), len(updates))
    cache = GapResyncCache(max_buffer=rng.choice([2, 1000]))
    delivered, committed, now = set(), 0, 0.0
    in_flight: list[tuple[float, str, tuple[int, dict[str, Any]]]] = []  # (arrival, task, snapshot)
    for i in order:
        now += 1.0
        committed = max(committed, i + 1)  # the server sent update i, so it had committed it
        if rng.random() >= loss:
            task, version, changes = updates[i]
            cache.on_update(task, version, changes, now)
            delivered.add(i)
        for reply in [r for r in in_flight if r[0] <= now]:
            in_flight.remove(reply)
            cache.on_snapshot(reply[1], *reply[2], now=now)
        cache.retry_stalled(now, after=5.0)
        for task in cache.take_resync_requests():
            if rng.random() < 0.8:  # else the reply is lost
                moment = rng.randint(committed, len(updates))
                in_flight.append((now + rng.choice([0, 0, 1, 3]), task, state_at(updates, moment, task)))
    # The history is over: answer what is still asked for with the final state until nothing is.
    while True:
        cache.retry_stalled(now + 1e6, after=0.0)
        if not (requests := cache.take_resync_requests()):
            break
        for task in requests:
            version, fields = states[task][-1]
            cache.on_snapshot(task, version, fields, now)
    last = {t: max(i for i, u in enumerate(updates) if u[0] == t) for t in {u[0] for u in updates}}
    silent = {t for t, i in last.items() if i not in delivered}  # last update lost: no gap reveals it
    return cache, updates, states, silent


@pytest.mark.parametrize("seed", range(300))
def test_gap_resync_always_converges(seed: int) -> None:
    cache, _, states, silent = run_gap_resync(seed)
    truth = {t: s[-1] for t, s in states.items()}
    assert set(diverged(cache, truth)) <= silent
    for task, history in states.items():
        version, fields = cache.view(task)
        assert history[version] == (version, fields), "the view is always the true state at its version"
        assert cache.buffered(task) == []
    assert cache.stalled(1e9, after=0.0) == []


def test_version_gate_divergence_is_detected_in_some_permutation() -> None:
    caught = {"naive": 0, "version_gate": 0, "gap_resync": 0}
    for seed in range(200):
        rng = random.Random(seed)
        updates, states = generate(rng, 12, 2)
        truth = {t: s[-1] for t, s in states.items()}
        caches = {s: make_cache(s) for s in STRATEGIES}
        for now, i in enumerate(rng.sample(range(len(updates)), len(updates))):
            for cache in caches.values():
                cache.on_update(*updates[i], now=float(now))
        # Nothing lost, so gap_resync converges without ever needing the snapshots it asked for.
        for name, cache in caches.items():
            caught[name] += bool(diverged(cache, truth))
    assert caught["gap_resync"] == 0
    assert caught["version_gate"] > 0 and caught["naive"] > 0
