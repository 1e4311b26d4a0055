"""A token bucket per connection, sans-I/O: the caller passes ``now`` in seconds (any clock; a clock that
steps backwards mints no tokens)."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["TokenBucket"]


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
        if self.last is not None and now > self.last:
            self.tokens = min(self.burst, self.tokens + (now - self.last) * self.rate)
        if self.last is None or now > self.last:
            self.last = now
        if self.tokens >= cost:
            self.tokens -= cost
            return True
        return False
