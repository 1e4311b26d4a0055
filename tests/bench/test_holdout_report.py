"""``bench/results/browser_holdout.md`` is what the committed traces give (``bench/presence/holdout_report.py``),
and its intervals are exact Poisson (Garwood) ones. No browser: the traces are replayed through the model."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from rtlib.model.metrics import poisson_interval, poisson_upper

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # bench/ is a package of the repository, not installed

from bench.presence.holdout_report import REPORT, render, rows, summary  # noqa: E402


@pytest.fixture(scope="module")
def holdout() -> list:
    return rows(holdout=True)


def test_the_committed_report_is_what_the_committed_traces_give(holdout: list) -> None:
    assert REPORT.read_text() == render(holdout, rows(holdout=False)), \
        "re-run: python -m bench.presence.holdout_report"


def test_the_holdout_has_both_modes_and_every_hide_was_a_hide(holdout: list) -> None:
    assert {r.mode for r in holdout} == {"timer", "probe"}
    assert all(r.visibility_ok for r in holdout)


def test_the_fitting_set_is_reproduced_in_sample() -> None:
    """The contrast row: the nine-recording fit reproduces its own timer flaps one for one (8 in 0.98 h)."""
    timer = summary(rows(holdout=False), "timer")
    assert timer["observed"] == timer["predicted"] == timer["matched"] == 8


@pytest.mark.parametrize(("count", "low", "high"), [
    (0, 0.0, 3.6889),  # Garwood's table (two-sided 95 %)
    (1, 0.0253, 5.5716),
    (2, 0.2422, 7.2247),
    (8, 3.4538, 15.7632),
    (20, 12.2165, 30.8884),
])
def test_the_interval_is_exact_poisson(count: int, low: float, high: float) -> None:
    assert poisson_interval(count) == pytest.approx((low, high), abs=2e-3)


def test_the_one_sided_bound_is_the_issues_3_over_t() -> None:
    """0 events: 3.0 (-ln 0.05 = 2.996); so 2.0 hidden hours give 1.5 per hour."""
    assert poisson_upper(0) == pytest.approx(2.9957, abs=1e-3)
    assert poisson_upper(1) == pytest.approx(4.7439, abs=1e-3)
