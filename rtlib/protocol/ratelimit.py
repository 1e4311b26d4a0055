"""A token bucket per connection, sans-I/O: the caller passes ``now`` in seconds (any clock; a clock that
steps backwards mints no tokens)."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["DebtBucket", "Pacer", "TokenBucket"]


@dataclass(slots=True)
class TokenBucket:
    """``rate`` tokens per second refill a bucket of at most ``burst`` tokens; :meth:`take` spends ``cost``.

    A session keeps two: frames (cost 1 each) and bytes (cost = the frame's length).
    """

    rate: float
    burst: float
    tokens: float = field(init=False)
    last: float | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        if self.rate <= 0 or self.burst < 1:
            raise ValueError(f"need rate > 0 and burst >= 1, got rate={self.rate} burst={self.burst}")
        self.tokens = float(self.burst)

    def take(self, now: float, cost: float = 1.0) -> bool:
        """Spend ``cost`` tokens at ``now``; False (and nothing spent) if the bucket holds fewer."""
        _refill(self, now)
        if self.tokens >= cost:
            self.tokens -= cost
            return True
        return False


@dataclass(slots=True)
class Pacer:
    """Spaces events ``1/rate`` apart after a burst of ``burst`` (GCRA, the virtual-scheduling form), sans-I/O.

    Instead of refusing, :meth:`reserve` books the next free slot and says how long to wait for it, so a storm
    of handshakes is served at ``rate`` rather than all in one loop iteration (which stalls every open
    connection for the whole storm's CPU time). A wait above ``max_wait`` books nothing and returns None.
    """

    rate: float
    burst: int
    max_wait: float
    next_free: float = field(default=float("-inf"), init=False)

    def __post_init__(self) -> None:
        if self.rate <= 0 or self.burst < 1 or self.max_wait < 0:
            raise ValueError(f"need rate > 0, burst >= 1, max_wait >= 0; got {self.rate}, {self.burst}, "
                             f"{self.max_wait}")

    def reserve(self, now: float) -> float | None:
        """Book a slot at ``now``: seconds to wait before using it (0.0 within the burst), or None if too far."""
        interval = 1.0 / self.rate
        # An idle pacer has banked at most `burst` slots: the earliest slot is burst intervals in the past.
        slot = max(self.next_free, now - (self.burst - 1) * interval)
        wait = max(0.0, slot - now)
        if wait > self.max_wait:
            return None
        self.next_free = slot + interval
        return wait


@dataclass(slots=True)
class DebtBucket:
    """A budget that is paid for *after* the fact, sans-I/O: :meth:`charge` always accepts ``cost`` and says how
    long the payer must pause before its next event (0.0 while the balance is positive).

    Used for the bytes a connection's requests make the server write (its fan-out): the cost of an update is
    only known once it is accepted, and any single update must stay possible, even one whose fan-out exceeds
    ``burst``. So a cost is never refused; it may leave the bucket in debt, and the connection is not read again
    until ``rate`` has paid it back. ``max_debt`` (seconds of ``rate``) bounds one pause.
    """

    rate: float
    burst: float
    max_debt: float = 10.0
    tokens: float = field(init=False)
    last: float | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        if self.rate <= 0 or self.burst < 0 or self.max_debt <= 0:
            raise ValueError(f"need rate > 0, burst >= 0 and max_debt > 0, got rate={self.rate} "
                             f"burst={self.burst} max_debt={self.max_debt}")
        self.tokens = float(self.burst)

    def charge(self, now: float, cost: float) -> float:
        """Spend ``cost`` at ``now``; return the seconds until the balance is back to zero (0.0 if not in debt)."""
        _refill(self, now)
        self.tokens = max(self.tokens - cost, -self.max_debt * self.rate)
        return -self.tokens / self.rate if self.tokens < 0 else 0.0


def _refill(bucket: TokenBucket | DebtBucket, now: float) -> None:
    """Add what ``rate`` minted since the bucket was last used, up to ``burst``; a clock that steps backwards
    mints nothing (and does not move ``last`` back)."""
    if bucket.last is not None and now > bucket.last:
        bucket.tokens = min(bucket.burst, bucket.tokens + (now - bucket.last) * bucket.rate)
    if bucket.last is None or now > bucket.last:
        bucket.last = now
