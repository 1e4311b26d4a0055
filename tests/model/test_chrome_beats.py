"""The bulk Chrome hidden-tab draws (rtlib.model.chrome_beats) are the per-viewer model, beat for beat, float for float.

``ChromeHiddenTab.beats`` (one viewer, one ``random.Random``, the rule of ``rtlib.clientmodels.chromium``) stays the
reference; ``draw_beats`` draws ``chrome:`` populations in bulk. Equality is exact (``==`` on floats, not a
tolerance) over many seeds and every parameter the model has, with viewers departing at random times.
"""

from __future__ import annotations

import numpy as np
import pytest

from rtlib.clientmodels.heartbeat import ChromeHiddenTab, Lossy, parse_model
from rtlib.model import chrome_beats as bulk
from rtlib.model.beats import draw_beats, per_viewer_beats
from rtlib.model.scenario import ModelScenario, PresenceConfig
from rtlib.model.timelines import generate

SPECS = [
    "chrome:30:60",  # the measured grace (the benchmark's model)
    "chrome:30:300",  # Chrome's documented 5 minutes
    "chrome:30:0:120:90",  # no grace, short episodes: many hides, many with no grid point inside
    "chrome:45:60:300:200:60:17.3",  # an interval that does not divide the minute, the monotonic clock offset
    "chrome:20:30:60:600:15:0.5",  # long hides, 15 s alignment
    "chromevis:30:60",
    "chromevis:30:60:120:240",
    "chromevis:10:0:40:40:60:3",
    "lossy:0.1:chrome:30:60",
    "lossy:0.3:chromevis:30:60:120:240",
]


def _population(seed: int, n: int, hours: float) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng([seed, 99])
    start = rng.uniform(0.0, 60.0, n)
    horizon = 3600.0 * hours
    stop = np.where(rng.random(n) < 0.4, rng.uniform(start, horizon), horizon + 600.0)
    return start, stop


def _assert_same(spec: str, seed: int, n: int = 12, hours: float = 1.5) -> int:
    model = parse_model(spec)
    start, stop = _population(seed, n, hours)
    want_open, got_open = np.full(n, np.nan), np.full(n, np.nan)
    want = per_viewer_beats(model, start, stop, seed, want_open)
    got = draw_beats(model, start, stop, np.random.default_rng(0), seed, got_open)
    for name, w, g in zip(("viewer", "t", "delivered"), want[:3], got[:3], strict=True):
        assert g.dtype == w.dtype and g.tolist() == w.tolist(), (spec, seed, name)
    assert np.isnan(got[3]).all() and np.isnan(got_open).all() and np.isnan(want_open).all()
    return len(want[1])


@pytest.mark.parametrize("spec", SPECS)
def test_bulk_equals_per_viewer_on_many_seeds(spec: str) -> None:
    beats = sum(_assert_same(spec, seed) for seed in range(8))
    assert beats > 100  # not vacuous


def test_bulk_equals_per_viewer_with_a_sub_second_timer() -> None:
    """Whole-second wake-ups longer than the interval (few viewers: the reference runs a day past each stop)."""
    for seed in range(2):
        _assert_same("chrome:0.6:1:5:5:1:0.25", seed, n=4, hours=0.5)
        _assert_same("chromevis:0.6:1:5:5:1:0.25", seed, n=4, hours=0.5)


def test_bulk_equals_per_viewer_over_a_working_day() -> None:
    """8 h, as the benchmark runs it: hundreds of hides per viewer-day, the throttled chain, staying viewers."""
    assert _assert_same("chrome:30:60", seed=1, n=20, hours=8) > 10_000
    _assert_same("chromevis:30:60", seed=2, n=10, hours=8)


@pytest.mark.parametrize("seed", range(4))
def test_bulk_equals_per_viewer_with_random_parameters(seed: int) -> None:
    rng = np.random.default_rng([seed, 7])
    tab = ChromeHiddenTab(interval=float(rng.choice([5, 15, 30, 40])), grace=float(rng.choice([0, 10, 60, 300])),
                          visible_mean=float(rng.uniform(20, 900)), hidden_mean=float(rng.uniform(20, 900)),
                          align=float(rng.choice([7.5, 30, 60])), phase=float(rng.uniform(-90, 90)),
                          visibility_beat=bool(rng.random() < 0.5))
    model = Lossy(tab, float(rng.uniform(0, 0.5))) if rng.random() < 0.5 else tab
    _assert_same(model.spec, seed)


def test_viewers_that_need_more_draws_draw_on(monkeypatch: pytest.MonkeyPatch) -> None:
    """With no spare draws at first, most viewers' episodes outrun them: the second pass draws on in each
    viewer's own stream, and the beats do not change."""
    monkeypatch.setattr(bulk, "_SPARE_SD", -3.0)
    for spec in ("chrome:30:60:120:90", "lossy:0.2:chromevis:30:60:120:90"):
        _assert_same(spec, seed=5, n=30)


def test_outside_the_proven_range_it_draws_per_viewer() -> None:
    """Times of more than 1e8 intervals: the bulk form declines and draw_beats goes per viewer (same beats)."""
    model = parse_model("chrome:30:60:120:90")
    start, stop = np.array([2e9, 2.5e9]), np.array([2e9 + 3600.0, 2.5e9 + 1800.0])
    assert bulk.chrome_beats(model, start, stop, 1, 86400.0) is None
    want = per_viewer_beats(model, start, stop, 1, np.full(2, np.nan))
    got = draw_beats(model, start, stop, np.random.default_rng(0), 1, np.full(2, np.nan))
    assert got[1].tolist() == want[1].tolist() and len(want[1]) > 0


def test_a_lossy_wrapper_over_a_lossy_chrome_keeps_its_draws() -> None:
    """``lossy:A:lossy:B:chrome``: B from each viewer's stream (as before), A from the scenario's numpy stream."""
    inner = parse_model("lossy:0.2:chrome:30:60")
    start, stop = _population(3, 10, 1.0)
    want = per_viewer_beats(inner, start, stop, 3, np.full(10, np.nan))
    got = draw_beats(Lossy(inner, 0.3), start, stop, np.random.default_rng(5), 3, np.full(10, np.nan))
    outer = np.random.default_rng(5).random(len(want[1])) >= 0.3
    assert got[1].tolist() == want[1].tolist() and got[2].tolist() == (want[2] & outer).tolist()


def test_generate_draws_chrome_in_bulk_with_the_per_viewer_beats() -> None:
    sc = ModelScenario(viewers=25, hours=1.0, client="chrome:{hb}:60", departures=0.3, seed=11)
    cfg = PresenceConfig(30, 60, 5)
    tl = generate(sc, cfg)
    want = per_viewer_beats(parse_model("chrome:30:60"), tl.start, np.minimum(tl.depart, tl.end), sc.seed,
                            np.full(tl.n, np.nan))
    assert tl.beat_t.tolist() == want[1].tolist()
    assert tl.offsets.tolist() == np.concatenate([[0], np.cumsum(np.bincount(want[0], minlength=tl.n))]).tolist()
