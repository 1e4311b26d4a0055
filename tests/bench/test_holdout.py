"""The holdout recorder's schedules (``bench/presence/holdout.py``) are what its docstring says: seeded, hides
log-uniform 10 s - 20 min, visible gaps 5 - 120 s, the duration filled (a gap may overrun it), visible at both
ends. No browser."""

from __future__ import annotations

import random
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # bench/ is a package of the repository, not installed

from bench.presence.chromium_presence import parse_schedule  # noqa: E402
from bench.presence.holdout import FIRST_SHOW, HIDE, LAST_SHOW, MIN_HIDE, SHOW, draw_schedule, tab_seed  # noqa: E402


@pytest.mark.parametrize("tab", range(20))
def test_a_drawn_schedule_fills_the_duration_within_its_ranges(tab: int) -> None:
    spec = draw_schedule(random.Random(tab_seed(2112, "timer", 0, tab)), 1800.0)
    steps = parse_schedule(spec)
    states = [s for s, _ in steps]
    assert states[0] == "show" and steps[-1] == ("show", LAST_SHOW)
    assert FIRST_SHOW[0] <= steps[0][1] <= FIRST_SHOW[1]
    hides = [secs for s, secs in steps if s == "hide"]
    assert hides and all(MIN_HIDE <= h <= HIDE[1] for h in hides)
    assert all(HIDE[0] <= h for h in hides[:-1])
    gaps = [secs for s, secs in steps[1:-1] if s == "show"]
    assert all(SHOW[0] <= g <= SHOW[1] for g in gaps)
    assert all(a != b for a, b in zip(states, states[1:-1], strict=False)), "hide and show alternate"
    # The last hide is cut at the duration; a visible gap drawn before it can overrun it (then no last hide).
    assert 1800.0 - MIN_HIDE - 1 <= sum(secs for _, secs in steps) <= 1800.0 + SHOW[1] + 0.5


def test_schedules_are_seeded_and_differ_between_tabs() -> None:
    one = [draw_schedule(random.Random(tab_seed(2112, "probe", 1, t)), 1800.0) for t in range(5)]
    assert one == [draw_schedule(random.Random(tab_seed(2112, "probe", 1, t)), 1800.0) for t in range(5)]
    assert len(set(one)) == 5


def test_hides_are_log_uniform() -> None:
    """Over many draws, log(hide) is uniform on [log 10, log 1200]: its median is the geometric mean (~110 s)."""
    rng = random.Random(7)
    hides = sorted(secs for _ in range(300) for s, secs in parse_schedule(draw_schedule(rng, 1800.0))[:-2]
                   if s == "hide")
    assert 80 < hides[len(hides) // 2] < 150


def test_the_committed_holdout_schedules_are_their_seeds_draws() -> None:
    """Each recorded schedule is what its manifest seed draws: the holdout was not hand-picked."""
    from bench.presence.trace_manifest import DATA_DIR, load

    paths = sorted((DATA_DIR / "holdout").glob("*.json.gz"))
    assert len(paths) >= 10
    for path in paths:
        trace = load(path)
        meta = trace["holdout"]
        assert draw_schedule(random.Random(meta["tab_seed"]), meta["duration"]) == trace["schedule_spec"], path.name
