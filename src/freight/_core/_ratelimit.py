"""Token-bucket arithmetic for rate limits (no clock reads, no sleeping).

The bucket holds up to ``burst`` tokens and refills at ``rate`` tokens per second.
:meth:`TokenBucket.reserve` takes tokens *now* and answers how long the caller
must wait before using them; the balance may go negative, which queues callers
fairly (first come, first served) without any waiting list.
"""

from __future__ import annotations

__all__ = ["TokenBucket"]


class TokenBucket:
    """A token bucket refilled at ``rate`` tokens/second, holding at most ``burst``."""

    __slots__ = ("_tokens", "_updated", "burst", "rate")

    def __init__(self, rate: float, burst: float, now: float | None = None) -> None:
        self.rate = rate
        self.burst = burst
        self._tokens = burst
        self._updated = now

    def _refill(self, now: float) -> None:
        if self._updated is None:
            self._updated = now
        elif now > self._updated:
            self._tokens = min(self.burst, self._tokens + (now - self._updated) * self.rate)
            self._updated = now

    def reserve(self, n: float, now: float) -> float:
        """Take ``n`` tokens at ``now``; return the seconds to wait before using them."""
        self._refill(now)
        self._tokens -= n
        if self._tokens >= 0:
            return 0.0
        return -self._tokens / self.rate

    def try_take(self, n: float, now: float) -> bool:
        """Take ``n`` tokens if they are available at ``now``; never goes negative."""
        self._refill(now)
        if self._tokens >= n:
            self._tokens -= n
            return True
        return False

    def available(self, now: float) -> float:
        """Tokens available at ``now`` (negative while reservations are outstanding)."""
        self._refill(now)
        return self._tokens
