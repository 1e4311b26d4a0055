"""Unit tests of the token bucket with an injected clock."""

import pytest

from rtlib.ratelimit import TokenBucket


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
