"""``Retry``: how often, how long to wait, and which errors are worth it.

Classification (one function, used everywhere):

- :class:`~freight.PermanentError` is never retried.
- :class:`~freight.TransientError`, ``TimeoutError`` and ``ConnectionError`` are
  transient, and so is anything the policy's ``retry_on`` accepts.
- Everything else is permanent.

Backoff is exponential with a cap and jitter: before attempt ``n + 1`` the
driver waits ``min(max_backoff, backoff * multiplier ** (n - 1))``, of which the
``jitter`` fraction is randomised (``jitter=1`` is "full jitter"). The random
number is handed in by the driver; this module never draws one.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from datetime import timedelta

from freight._core._time import to_positive_int, to_seconds
from freight._errors import ConfigError, PermanentError, TransientError

__all__ = ["Retry", "is_transient"]

_ALWAYS_TRANSIENT: tuple[type[BaseException], ...] = (
    TransientError,
    TimeoutError,
    ConnectionError,
)

RetryOn = tuple[type[BaseException], ...] | type[BaseException] | Callable[[BaseException], bool]


def is_transient(error: BaseException, retry_on: Callable[[BaseException], bool] | None) -> bool:
    """True if ``error`` is worth retrying under the module's classification."""
    if isinstance(error, PermanentError):
        return False
    if isinstance(error, _ALWAYS_TRANSIENT):
        return True
    return retry_on is not None and bool(retry_on(error))


class Retry:
    """Retry policy: attempts, exponential backoff with cap and jitter, what to retry.

    A whole batch that fails transiently is retried as a batch. When it fails
    permanently, or runs out of attempts, and ``isolate`` is true, the batch is
    bisected to find the poison item(s): healthy items get their results, each
    poison item gets its own error. An item that fails transiently on its own is
    sent back to the buffer to be retried in a later batch, up to ``attempts``.

    Args:
        attempts: total tries per batch and per item, the first included (≥ 1).
        backoff: the first wait, in seconds (``float`` or ``timedelta``).
        multiplier: growth factor of the wait per attempt (≥ 1).
        max_backoff: cap on a single wait.
        jitter: fraction of each wait that is randomised, in ``[0, 1]``.
        retry_on: exception types, or a predicate ``error -> bool``, to treat as
            transient in addition to timeouts, connection errors and
            :class:`~freight.TransientError`.
        isolate: bisect a failing batch to isolate poison items.
    """

    __slots__ = (
        "_retry_on",
        "attempts",
        "backoff",
        "isolate",
        "jitter",
        "max_backoff",
        "multiplier",
    )

    def __init__(
        self,
        attempts: int = 3,
        backoff: float | timedelta = 0.1,
        *,
        multiplier: float = 2.0,
        max_backoff: float | timedelta = 30.0,
        jitter: float = 1.0,
        retry_on: RetryOn | None = None,
        isolate: bool = True,
    ) -> None:
        self.attempts = to_positive_int(attempts, "Retry.attempts")
        self.backoff = to_seconds(backoff, "Retry.backoff")
        self.max_backoff = to_seconds(max_backoff, "Retry.max_backoff")
        if self.max_backoff < self.backoff:
            raise ConfigError(
                f"Retry.max_backoff ({self.max_backoff}) must be >= Retry.backoff ({self.backoff})"
            )
        if (
            not isinstance(multiplier, int | float)
            or isinstance(multiplier, bool)
            or not math.isfinite(multiplier)
            or multiplier < 1
        ):
            raise ConfigError(f"Retry.multiplier must be a finite number >= 1, got {multiplier!r}")
        self.multiplier = float(multiplier)
        if not isinstance(jitter, int | float) or isinstance(jitter, bool) or not 0 <= jitter <= 1:
            raise ConfigError(f"Retry.jitter must be a fraction in [0, 1], got {jitter!r}")
        self.jitter = float(jitter)
        if not isinstance(isolate, bool):
            raise ConfigError(f"Retry.isolate must be True or False, got {isolate!r}")
        self.isolate = isolate
        self._retry_on = _predicate(retry_on)

    def __repr__(self) -> str:
        return (
            f"Retry(attempts={self.attempts}, backoff={self.backoff}, "
            f"multiplier={self.multiplier}, max_backoff={self.max_backoff}, "
            f"jitter={self.jitter}, isolate={self.isolate})"
        )

    def is_transient(self, error: BaseException) -> bool:
        """True if ``error`` should be retried under this policy."""
        return is_transient(error, self._retry_on)

    def delay(self, attempt: int, random: float) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based).

        ``random`` is a number in ``[0, 1)`` supplied by the driver.
        """
        base = min(self.max_backoff, self.backoff * self.multiplier ** (attempt - 1))
        return base * (1.0 - self.jitter) + base * self.jitter * random

    def wait(self, attempt: int, random: float, errors: Iterable[BaseException]) -> float:
        """:meth:`delay`, or longer if one of ``errors`` asks for longer: a
        :class:`~freight.TransientError` with ``retry_after`` (an HTTP 429's
        ``Retry-After``) is waited out in full, even past ``max_backoff``: the server
        said when it will take the next try."""
        asked = [
            e.retry_after
            for e in errors
            if isinstance(e, TransientError) and isinstance(e.retry_after, int | float)
        ]
        return max([self.delay(attempt, random), *asked])


def _predicate(retry_on: RetryOn | None) -> Callable[[BaseException], bool] | None:
    if retry_on is None:
        return None
    if isinstance(retry_on, type) and issubclass(retry_on, BaseException):
        types: tuple[type[BaseException], ...] = (retry_on,)
    elif isinstance(retry_on, tuple):
        if not all(isinstance(t, type) and issubclass(t, BaseException) for t in retry_on):
            raise ConfigError(f"Retry.retry_on must hold exception types only, got {retry_on!r}")
        types = retry_on
    elif callable(retry_on):
        return retry_on  # type: ignore[return-value]  # a predicate, by elimination
    else:
        raise ConfigError(
            "Retry.retry_on must be an exception type, a tuple of them, or a predicate "
            f"(error -> bool), got {retry_on!r}"
        )
    return lambda error: isinstance(error, types)
