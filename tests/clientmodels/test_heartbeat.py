"""Unit tests of the heartbeat schedule models and the false-departure rule: seeded, no clock, no I/O."""

from __future__ import annotations

import itertools
import math
import random

import pytest

from rtlib.clientmodels.analytic import false_departures, gaps
from rtlib.clientmodels.heartbeat import (
    BackgroundTab,
    Beat,
    HeartbeatModel,
    Interval,
    Jitter,
    Lossy,
    parse_model,
)
from rtlib.protocol.presence import PresenceBook, PresenceConfig, left_change


def run(model: HeartbeatModel, start: float, end: float, seed: int = 0) -> list[Beat]:
    return list(model.beats(start, end, random.Random(seed)))


def test_interval_is_exact_and_the_window_is_half_open() -> None:
    beats = run(Interval(30), start=7.5, end=7.5 + 300)
    assert [b.t for b in beats] == [7.5 + 30 * k for k in range(1, 11)]  # start excluded, end included
    assert all(b.delivered for b in beats)
    assert run(Interval(30), start=0, end=29.9) == []
    # Computed, not accumulated: no drift after many beats of an inexact period.
    assert run(Interval(0.1), 0, 1000)[-1].t == pytest.approx(1000.0, abs=1e-9)


def test_jitter_stays_in_bounds_and_is_reproducible() -> None:
    model = Jitter(30, 5)
    beats = run(model, 0, 36000, seed=42)
    periods = gaps(beats, 0)
    assert all(25 <= p <= 35 for p in periods)
    assert min(periods) < 26 and max(periods) > 34  # the whole range is used
    assert run(model, 0, 36000, seed=42) == beats
    assert run(model, 0, 36000, seed=43) != beats


def test_jitter_wider_than_the_interval_is_clamped_positive() -> None:
    periods = gaps(run(Jitter(10, 20), 0, 10000, seed=1), 0)
    assert min(periods) == pytest.approx(0.1) and max(periods) <= 30  # 1 % of the interval at least


def test_lossy_loses_about_the_given_fraction() -> None:
    base = Interval(1)
    beats = run(Lossy(base, 0.1), 0, 100_000, seed=7)
    assert [b.t for b in beats] == [b.t for b in run(base, 0, 100_000)]
    lost = sum(not b.delivered for b in beats) / len(beats)
    assert lost == pytest.approx(0.1, abs=0.005)
    assert all(b.delivered for b in run(Lossy(base, 0.0), 0, 1000))
    assert not any(b.delivered for b in run(Lossy(base, 1.0), 0, 1000))
    # A beat its base lost stays lost.
    assert not any(b.delivered for b in run(Lossy(Lossy(base, 1.0), 0.0), 0, 100))


@pytest.mark.parametrize("start", [0.0, 7.0, 59.5, 1234.25])
def test_background_tab_aligns_to_the_minute_once_throttled(start: float) -> None:
    model = BackgroundTab(interval=30, hidden_after=300, align=60)
    beats = run(model, start, start + 3600)
    visible = [b.t for b in beats if b.t < start + 300]
    hidden = [b.t for b in beats if b.t >= start + 300]
    assert visible == [start + 30 * k for k in range(1, len(visible) + 1)]
    assert hidden and all(t % 60 == 0 for t in hidden)
    assert all(b - a == 60 for a, b in itertools.pairwise(hidden))  # at most one wake-up per minute
    assert max(gaps(beats, start)) <= 60 + 30


def test_background_tab_before_hiding_is_a_plain_interval() -> None:
    assert run(BackgroundTab(30, hidden_after=1e9), 3, 3000) == run(Interval(30), 3, 3000)


def test_gaps_count_only_delivered_beats_from_the_join() -> None:
    beats = [Beat(10), Beat(20, delivered=False), Beat(30), Beat(45)]
    assert gaps(beats, start=5) == [5, 20, 15]
    assert gaps([], start=5) == []


# --- false departures ------------------------------------------------------------------------------


@pytest.mark.parametrize("start", [0.0, 2.5, 7.3, 59.9])
@pytest.mark.parametrize("model", [Interval(30), Jitter(30, 5)])
def test_visible_tab_never_falsely_departs(model: HeartbeatModel, start: float) -> None:
    for seed in range(20):
        beats = run(model, start, start + 7200, seed)
        assert false_departures(beats, start, start + 7200, timeout=60, sweep_interval=5) == []


def test_background_tab_flaps_with_a_60s_timeout() -> None:
    model = BackgroundTab(30, hidden_after=300, align=60)
    # Joined off the minute (start 7): the last visible beat is at 277, the next timer is due at 307 and
    # fires at 360, an 83 s gap; the 5 s sweeper sees the entry expired at 340 and the beat at 360 re-joins.
    beats = run(model, 7, 3607)
    assert false_departures(beats, 7, 3607, timeout=60, sweep_interval=5, ties="beat_first") == [340.0]
    # After that every gap is exactly 60 s = the timeout, and a sweep lands on every minute boundary, at
    # the same instant as the beat. Expiry is inclusive (score <= now - timeout, PresenceConfig.is_expired),
    # so a sweep that runs first pops the entry and the beat re-adds it: a flap every minute. Live, which
    # runs first is a race decided by network delay, so the default counts the tie as a departure.
    departures = false_departures(beats, 7, 3607, timeout=60, sweep_interval=5)
    assert departures[0] == 340.0
    assert departures[1:] == [420.0 + 60 * k for k in range(len(departures) - 1)]
    assert departures[-1] == 3600.0
    # Joined on the minute, only the ties remain: nothing if the beat wins them, every minute if not.
    beats = run(model, 0, 3600)
    assert false_departures(beats, 0, 3600, timeout=60, sweep_interval=5, ties="beat_first") == []
    assert false_departures(beats, 0, 3600, timeout=60, sweep_interval=5)[:2] == [360.0, 420.0]


def test_exactly_equal_gap_follows_the_inclusive_expiry() -> None:
    cfg = PresenceConfig(timeout=60, sweep_interval=5)
    assert cfg.is_expired(last_heartbeat=0.0, now=60.0)
    beats = [Beat(60.0), Beat(119.9)]
    assert false_departures(beats, 0, 150, timeout=60, sweep_interval=5) == [60.0]
    assert false_departures(beats, 0, 150, timeout=60, sweep_interval=5, ties="beat_first") == []


def test_a_long_gap_departs_only_if_a_sweep_falls_inside_it() -> None:
    # 62 s gap, but the first sweep at or after 1 + 60 is at 65, after the beat at 63: nobody noticed.
    assert false_departures([Beat(1), Beat(63)], 0, 100, timeout=60, sweep_interval=5) == []
    assert false_departures([Beat(1), Beat(66)], 0, 100, timeout=60, sweep_interval=5) == [65.0]


def test_departures_after_the_last_beat_stop_at_the_window_end() -> None:
    beats = [Beat(10, delivered=False)]
    assert false_departures(beats, 0, 59, timeout=60, sweep_interval=5) == []
    assert false_departures(beats, 0, 600, timeout=60, sweep_interval=5) == [60.0]  # one, not one per sweep


def reference_departures(beats: list[Beat], start: float, end: float, cfg: PresenceConfig) -> list[float]:
    """The same question answered by the presence store itself, sweeps ordered before beats at ties."""
    sweeps = [cfg.sweep_interval * k for k in range(math.ceil(start / cfg.sweep_interval),
                                                      math.floor(end / cfg.sweep_interval) + 1)]
    events = sorted([(s, 0) for s in sweeps if s > start] + [(b.t, 1) for b in beats if b.delivered])
    book, left = PresenceBook(), []
    book.upsert("ws", "task", "c1", "u1", start)
    for t, kind in events:
        if kind == 1:
            book.upsert("ws", "task", "c1", "u1", t)
        else:
            left += [t for fact in book.expire(cfg.cutoff(t)) if left_change(fact, "timeout")]
    return left


@pytest.mark.parametrize("spec", ["lossy:0.2:interval:30", "lossy:0.05:jitter:30:10", "background:30:300",
                                  "lossy:0.1:background:30:120:60", "jitter:50:15"])
def test_false_departures_agree_with_the_presence_store(spec: str) -> None:
    cfg = PresenceConfig(heartbeat_interval=30, timeout=60, sweep_interval=5)
    for seed in range(10):
        start = random.Random(seed).uniform(0, 100)
        beats = run(parse_model(spec), start, start + 3600, seed)
        expected = reference_departures(beats, start, start + 3600, cfg)
        assert false_departures(beats, start, start + 3600, cfg.timeout, cfg.sweep_interval) == expected


# --- parse_model -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("spec", "model"), [
    ("interval:30", Interval(30)),
    ("jitter:30:5", Jitter(30, 5)),
    ("lossy:0.1:interval:30", Lossy(Interval(30), 0.1)),
    ("lossy:0.5:lossy:0.25:jitter:30:2.5", Lossy(Lossy(Jitter(30, 2.5), 0.25), 0.5)),
    ("background:30:300:60", BackgroundTab(30, 300, 60)),
    ("background:0.3:3:0.6", BackgroundTab(0.3, 3, 0.6)),
])
def test_parse_model_round_trips(spec: str, model: HeartbeatModel) -> None:
    assert parse_model(spec) == model
    assert model.spec == spec
    assert parse_model(model.spec) == model


def test_parse_model_fills_in_the_default_alignment() -> None:
    assert parse_model(" background:30:300 ") == BackgroundTab(30, 300, 60)


@pytest.mark.parametrize(("spec", "message"), [
    ("", "unknown kind ''"),
    ("poisson:30", "unknown kind 'poisson'"),
    ("interval", "interval takes 1-1 numbers, got 0"),
    ("interval:30:5", "interval takes 1-1 numbers, got 2"),
    ("interval:abc", "'abc' is not a number"),
    ("interval:-1", "interval must be a positive number"),
    ("interval:inf", "interval must be a positive number"),
    ("jitter:30", "jitter takes 2-2 numbers"),
    ("jitter:30:-1", "jitter must be a non-negative"),
    ("background:30", "background takes 2-3 numbers"),
    ("background:30:300:0", "align must be a positive"),
    ("lossy:0.1", "lossy needs a loss and a base model"),
    ("lossy:1.5:interval:30", "loss must be a probability"),
    ("lossy:0.1:interval:x", "'x' is not a number"),
])
def test_parse_model_rejects_bad_specs(spec: str, message: str) -> None:
    with pytest.raises(ValueError, match="bad heartbeat model") as err:
        parse_model(spec)
    assert message in str(err.value)
