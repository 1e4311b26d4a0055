"""A token bucket per connection, sans-I/O: the caller passes ``now`` in seconds (any clock; a clock that
steps backwards mints no tokens)."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["TokenBucket"]


@dataclass(slots=True)
class TokenBucket:
    """``rate`` tokens per second refill a bucket of at most ``burst`` tokens; a frame costs one token.

    ``strikes`` counts frames refused since the last accepted one: the session closes a connection whose
    strikes pass its limit (a client that ignores ``rate_limited`` errors).
    """

    rate: float
    burst: float
    tokens: float = field(init=False)
    last: float | None = field(default=None, init=False)
    strikes: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        if self.rate <= 0 or self.burst < 1:
            raise ValueError(f"need rate > 0 and burst >= 1, got rate={self.rate} burst={self.burst}")
        self.tokens = float(self.burst)

    def take(self, now: float) -> bool:
        """Spend one token at ``now``; False (and one more strike) if the bucket is empty."""
        if self.last is not None and now > self.last:
            self.tokens = min(self.burst, self.tokens + (now - self.last) * self.rate)
        if self.last is None or now > self.last:
            self.last = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            self.strikes = 0
            return True
        self.strikes += 1
        return False
