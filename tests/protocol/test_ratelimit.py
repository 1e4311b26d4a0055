"""Unit tests of the token bucket with an injected clock."""

import pytest

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
