"""Unit tests of the token bucket with an injected clock."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rtlib.protocol.ratelimit import TokenBucket


def test_burst_then_sustained_rate() -> None:
    bucket = TokenBucket(rate=100, burst=200)
    assert all(bucket.take(0.0) for _ in range(200))
    assert not bucket.take(0.0)
    assert bucket.take(0.01)  # 10 ms refills one token
    assert not bucket.take(0.01)


def test_refill_is_capped_at_burst() -> None:
    bucket = TokenBucket(rate=10, burst=5)
    for _ in range(5):
        bucket.take(0.0)
    assert sum(bucket.take(1000.0) for _ in range(10)) == 5


def test_clock_going_backwards_never_mints_tokens() -> None:
    bucket = TokenBucket(rate=1, burst=1)
    assert bucket.take(100.0)
    assert not bucket.take(50.0) and not bucket.take(100.5)
    assert bucket.take(101.0)


@pytest.mark.parametrize(("rate", "burst"), [(0, 10), (-1, 10), (10, 0)])
def test_invalid_parameters(rate: float, burst: float) -> None:
    with pytest.raises(ValueError):
        TokenBucket(rate, burst)


def test_cost_is_spent_whole_or_not_at_all() -> None:
    bucket = TokenBucket(rate=1000, burst=1500)  # a byte budget: 1,000 B/s, burst 1,500 B
    assert bucket.take(0.0, 1000)
    assert not bucket.take(0.0, 600) and bucket.tokens == 500  # refused: nothing spent
    assert bucket.take(0.0, 500)
    assert not bucket.take(0.5, 600) and bucket.take(0.6, 600)  # 0.6 s refills 600 B


def test_pacer_serves_a_burst_then_spaces_the_rest() -> None:
    from rtlib.protocol.ratelimit import Pacer

    pacer = Pacer(rate=100, burst=3, max_wait=0.05)
    waits = [pacer.reserve(10.0) for _ in range(8)]
    assert waits[:3] == [0.0, 0.0, 0.0]
    assert waits[3:6] == pytest.approx([0.01, 0.02, 0.03])
    assert waits[6] == pytest.approx(0.04) and waits[7] == pytest.approx(0.05)
    assert pacer.reserve(10.0) is None  # 60 ms away: over max_wait, nothing booked
    assert pacer.reserve(10.06) == pytest.approx(0.0, abs=1e-9)
    assert pacer.reserve(100.0) == 0.0  # idle for long: the burst is available again, no more
    assert [pacer.reserve(100.0) for _ in range(3)] == pytest.approx([0.0, 0.0, 0.01])


def test_debt_bucket_accepts_any_cost_and_says_how_long_to_pause() -> None:
    from rtlib.protocol.ratelimit import DebtBucket

    budget = DebtBucket(rate=1000, burst=2000)  # 1,000 B/s of fan-out, 2,000 B banked
    assert budget.charge(0.0, 1500) == 0.0  # within the burst: no pause
    assert budget.charge(0.0, 1500) == pytest.approx(1.0)  # 1,000 B in debt: one second of rate
    assert budget.charge(0.5, 0) == pytest.approx(0.5)  # half of it paid back
    assert budget.charge(1.0, 0) == 0.0
    assert budget.charge(100.0, 0) == 0.0 and budget.tokens == 2000  # idle: the burst again, no more
    # A cost larger than the burst is still served (an update is never refused), then paid back.
    assert budget.charge(100.0, 7000) == pytest.approx(5.0)


def test_debt_bucket_bounds_one_pause_and_ignores_a_clock_that_steps_back() -> None:
    from rtlib.protocol.ratelimit import DebtBucket

    budget = DebtBucket(rate=1000, burst=0, max_debt=3.0)
    assert budget.charge(10.0, 1_000_000) == pytest.approx(3.0)  # at most max_debt seconds
    assert budget.charge(9.0, 0) == pytest.approx(3.0)  # backwards: nothing minted
    assert budget.charge(11.0, 0) == pytest.approx(2.0)


@pytest.mark.parametrize(("rate", "burst", "max_debt"), [(0, 10, 1), (10, -1, 1), (10, 10, 0)])
def test_debt_bucket_invalid_parameters(rate: float, burst: float, max_debt: float) -> None:
    from rtlib.protocol.ratelimit import DebtBucket

    with pytest.raises(ValueError):
        DebtBucket(rate, burst, max_debt)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 2), st.integers(0, 50_000)), min_size=1, max_size=60))
def test_debt_bucket_bounds_what_a_caller_that_honours_its_pauses_can_spend(steps: list[tuple[float, int]]) -> None:
    """Whatever the costs and gaps, a payer that waits each returned pause spends at most burst + rate x elapsed
    + its last cost (the one still being paid for)."""
    from rtlib.protocol.ratelimit import DebtBucket

    rate, burst = 10_000.0, 20_000.0
    budget = DebtBucket(rate, burst, max_debt=1000.0)
    now, spent = 0.0, 0
    for gap, cost in steps:
        now += gap
        pause = budget.charge(now, cost)
        spent += cost
        assert spent <= burst + rate * now + cost + 1e-6
        now += pause  # the connection is not read until then
    assert budget.tokens <= burst
