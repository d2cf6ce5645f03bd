"""``RateLimiter``: a token bucket usable from asyncio, from threads, and as ``rate_limit=``."""

from __future__ import annotations

import math
import threading
from datetime import timedelta
from typing import Literal

from freight._core._clock import Clock
from freight._core._ratelimit import TokenBucket
from freight._core._time import to_seconds
from freight._drivers._clocks import ThreadClock
from freight._errors import ConfigError

__all__ = ["RateLimiter"]


class RateLimiter:
    """Allow ``rate`` units per ``per`` seconds, with bursts of up to ``burst`` units.

    Used as ``Batcher(..., rate_limit=RateLimiter(10))`` it paces handler calls:
    with ``unit="batches"`` each call takes one token, with ``unit="items"`` it takes
    one token per item in the call. It is also usable on its own::

        limiter = RateLimiter(100, per=60)       # 100 per minute
        await limiter.acquire()                  # asyncio
        limiter.acquire_sync()                   # threads (blocks)
        if limiter.try_acquire(): ...            # never waits

    Callers are served first come, first served. Thread-safe.

    Args:
        rate: units allowed per ``per`` seconds (> 0).
        per: the period, seconds or ``timedelta`` (default one second).
        burst: most units that may be taken at once after a quiet spell
            (default: ``max(1, rate)``, one period's worth).
        unit: what a token pays for when used as ``rate_limit=``.
        clock: a :class:`~freight.testing.FakeClock` in tests; the real monotonic
            clock otherwise. A batcher uses its own clock instead.
        period: another name for ``per``.
    """

    def __init__(
        self,
        rate: float,
        per: float | timedelta = 1.0,
        *,
        burst: float | None = None,
        unit: Literal["batches", "items"] = "batches",
        clock: Clock | None = None,
        period: float | timedelta | None = None,
    ) -> None:
        if period is not None:  # an alias of `per`, for those who think of a period
            per = period
        if (
            not isinstance(rate, int | float)
            or isinstance(rate, bool)
            or not math.isfinite(rate)
            or rate <= 0
        ):
            raise ConfigError(f"RateLimiter.rate must be a finite number > 0, got {rate!r}")
        period = to_seconds(per, "RateLimiter.per", allow_zero=False)
        if burst is None:
            burst = max(1.0, float(rate))
        elif (
            not isinstance(burst, int | float)
            or isinstance(burst, bool)
            or not math.isfinite(burst)
            or burst < 1
        ):
            raise ConfigError(f"RateLimiter.burst must be a number >= 1, got {burst!r}")
        if unit not in ("batches", "items"):
            raise ConfigError(f"RateLimiter.unit must be 'batches' or 'items', got {unit!r}")
        self.rate = float(rate)
        self.per = period
        self.burst = float(burst)
        self.unit: Literal["batches", "items"] = unit
        self._clock = clock
        self._bucket = TokenBucket(self.rate / period, self.burst)
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return (
            f"RateLimiter({self.rate:g}, per={self.per:g}, burst={self.burst:g}, "
            f"unit={self.unit!r})"
        )

    def _clock_for(self, clock: Clock | None) -> Clock:
        return clock or self._clock or _SYSTEM_CLOCK

    def reserve(self, n: float = 1, *, now: float) -> float:
        """Take ``n`` tokens at time ``now``; return the seconds to wait before using them."""
        with self._lock:
            return self._bucket.reserve(n, now)

    def try_acquire(self, n: float = 1) -> bool:
        """Take ``n`` tokens if available now; return False (taking nothing) otherwise."""
        now = self._clock_for(None).now()
        with self._lock:
            return self._bucket.try_take(n, now)

    async def acquire(self, n: float = 1, *, clock: Clock | None = None) -> None:
        """Wait (asynchronously) until ``n`` tokens are available, and take them."""
        chosen = self._clock_for(clock)
        delay = self.reserve(n, now=chosen.now())
        if delay > 0:
            await chosen.sleep(delay)

    def acquire_sync(self, n: float = 1, *, clock: Clock | None = None) -> None:
        """Block the calling thread until ``n`` tokens are available, and take them."""
        chosen = self._clock_for(clock)
        delay = self.reserve(n, now=chosen.now())
        if delay > 0:
            chosen.sleep_sync(delay)


_SYSTEM_CLOCK: Clock = ThreadClock("freight-ratelimit")
