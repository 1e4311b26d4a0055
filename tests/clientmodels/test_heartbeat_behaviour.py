"""The browser/device behaviour models: Chrome hidden tabs, iOS background, laptop sleep (seeded, no I/O)."""

from __future__ import annotations

import math
import random

import pytest

from rtlib.clientmodels.analytic import gaps
from rtlib.clientmodels.heartbeat import ChromeHiddenTab, IOSBackground, LaptopSleep, Lossy, parse_model


def _beats(model, end=36000.0, seed=1):  # noqa: ANN001, ANN202
    return list(model.beats(0.0, end, random.Random(seed)))


@pytest.mark.parametrize("spec", ["chrome:30", "chrome:30:60", "chrome:20:300:900:120:60",
                                  "chrome:30:60:600:300:60:1.25", "chromevis:30:60", "ios:30", "ios:30:300:60:5",
                                  "sleep:30", "sleep:15:2:300:3", "lossy:0.1:chrome:30:60"])
def test_specs_round_trip_and_are_seeded(spec: str) -> None:
    model = parse_model(spec)
    assert parse_model(model.spec) == model
    assert _beats(model) == _beats(model) and _beats(model) != _beats(model, seed=2)


def test_chrome_hidden_tab_gaps() -> None:
    """Visible: the interval. Hidden before the grace: whole seconds (+ < 1 s). After: whole minutes, so a
    30 s interval gives 60 s gaps, and the switch into intensive throttling up to 90 s; never more. A gap
    shorter than the interval only right after the tab was shown (the overdue run, then the grid point)."""
    model = ChromeHiddenTab(30, grace=60, visible_mean=300, hidden_mean=600)
    beats = _beats(model)
    g = gaps(beats, 0.0)
    assert min(g) > 0 and max(g) <= 90 + 1e-9
    short = [i for i, x in enumerate(g) if x < 30 - 1e-9]
    assert short and all(beats[i - 1].t % 1 != 0 for i in short)  # after a run at a show, not a throttled one
    assert any(abs(x - 60) < 1e-9 for x in g)
    # Gaps over 60 s need the interval's grid off the monotonic minute (phase 0 and a start at 0 put it on).
    offset = gaps(_beats(ChromeHiddenTab(30, grace=60, visible_mean=300, hidden_mean=600, phase=17.3)), 0.0)
    assert any(60 < x <= 90 + 1e-9 for x in offset)
    minute = [b.t for b in beats if b.t % 60 == 0]
    assert len(minute) > len(beats) / 4  # much of the time is spent throttled
    assert all(math.isnan(b.away_since) for b in beats)  # a hidden tab is still open: not away
    never_hidden = ChromeHiddenTab(30, visible_mean=1e9)
    assert [b.t for b in _beats(never_hidden, 600)] == pytest.approx([30.0 * k for k in range(1, 21)])


def test_ios_background_suspends_and_marks_the_absence() -> None:
    model = IOSBackground(30, foreground_mean=300, background_mean=200, suspend_after=5)
    beats = _beats(model)
    back = [b for b in beats if not math.isnan(b.away_since)]
    assert back and all(b.t - b.away_since >= 5 for b in back)
    assert max(gaps(beats, 0.0)) > 120


def test_laptop_sleep_rate_and_wake() -> None:
    model = LaptopSleep(30, per_hour=1, sleep_mean=600, wake_delay=3)
    beats = _beats(model, end=3600.0 * 200)
    woke = [b for b in beats if not math.isnan(b.away_since)]
    assert 150 < len(woke) < 250  # ~1 an hour over 200 h (each long enough to skip a beat, mostly)
    assert all(b.t - b.away_since >= 3 for b in woke)


def test_lossy_keeps_the_absence_mark() -> None:
    beats = _beats(Lossy(IOSBackground(30, 300, 200), 0.5))
    assert any(not math.isnan(b.away_since) for b in beats)
