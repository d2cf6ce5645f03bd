"""The batcher options: declared once, validated once, shared by every batcher.

:class:`Batcher`, :class:`ThreadBatcher` and ``@batched`` take the same keyword
options. They are declared here twice, side by side: as :class:`BatcherOptions` (the
frozen, validated record the drivers read) and as :class:`BatcherKwargs` (the typed
``**options`` of the public constructors). A test holds the two to the same names, so
adding an option is one edit in this module (plus its use in the driver).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass, fields
from typing import Any, Generic, Literal, TypedDict, TypeVar

from freight._core._clock import Clock
from freight._core._retry import Retry
from freight._core._stats import BatchEvent
from freight._core._time import to_positive_int
from freight._errors import ConfigError
from freight._ratelimit import RateLimiter

__all__ = [
    "BatcherKwargs",
    "BatcherOptions",
    "Overflow",
    "Subscriber",
    "check_rate_limit",
    "check_retry",
    "options_from",
]

T = TypeVar("T")

Overflow = Literal["block", "reject"]
Subscriber = Callable[[BatchEvent], None]


def check_retry(retry: object) -> Retry | None:
    """``retry`` as a policy, or a :class:`ConfigError` saying what to pass."""
    if retry is None or isinstance(retry, Retry):
        return retry
    raise ConfigError(f"retry must be a freight.Retry or None, got {retry!r}")


def check_rate_limit(rate_limit: object) -> RateLimiter | None:
    """``rate_limit`` as a limiter (a number is batches per second)."""
    if rate_limit is None or isinstance(rate_limit, RateLimiter):
        return rate_limit
    if isinstance(rate_limit, int | float) and not isinstance(rate_limit, bool):
        return RateLimiter(rate_limit)
    raise ConfigError(
        "rate_limit must be a freight.RateLimiter or a number of batches per second, "
        f"got {rate_limit!r}"
    )


class BatcherKwargs(TypedDict, Generic[T], total=False):
    """The keyword options of :class:`~freight.Batcher`, :class:`~freight.ThreadBatcher`
    and :func:`~freight.batched` (see :class:`BatcherOptions` for their meaning)."""

    key: Callable[[T], Hashable] | None
    where: Callable[[T], bool] | None
    max_concurrent_batches: int
    max_pending: int
    overflow: Overflow
    ordered: bool
    retry: Retry | None
    rate_limit: RateLimiter | float | None
    clock: Clock | None
    name: str | None
    subscribers: Iterable[Subscriber]


@dataclass(frozen=True, slots=True, kw_only=True)
class BatcherOptions:
    """How a batcher runs, beyond when a batch is due (that is the :class:`BatchSpec`).

    Attributes:
        key: ``item -> hashable``; each key is batched separately with its own timer.
        where: ``item -> bool``; rejected items raise :class:`~freight.Skipped`.
        max_concurrent_batches: handler calls running at once.
        max_pending: items accepted and not yet settled; beyond it ``submit`` waits
            (``overflow="block"``) or raises :class:`~freight.QueueFull` (``"reject"``).
            Once ``max_pending`` items are pending, the open batches flush at once
            (reason ``"pending"``), even below ``size``: nothing more can join them.
        overflow: ``"block"`` or ``"reject"``.
        ordered: a key's next batch starts only after its previous batch finished.
        retry: a :class:`~freight.Retry` policy (attempts, backoff, poison isolation);
            ``None`` delivers a raising handler's error to every item of the batch.
        rate_limit: a :class:`~freight.RateLimiter` (or batches per second) pacing
            handler calls.
        clock: a :class:`~freight.testing.FakeClock` in tests; the real clock otherwise.
        name: the batcher's name in events and metrics (default: the handler's name).
        subscribers: callables receiving a :class:`~freight.BatchEvent` after every batch.
    """

    key: Callable[[Any], Hashable] | None = None
    where: Callable[[Any], bool] | None = None
    max_concurrent_batches: int = 1
    max_pending: int = 10_000
    overflow: Overflow = "block"
    ordered: bool = False
    retry: Retry | None = None
    rate_limit: RateLimiter | float | None = None
    clock: Clock | None = None
    name: str | None = None
    subscribers: Iterable[Subscriber] = ()

    def __post_init__(self) -> None:
        for label in ("key", "where"):
            value = getattr(self, label)
            if value is not None and not callable(value):
                raise ConfigError(f"{label} must be a function of the item or None, got {value!r}")
        to_positive_int(self.max_concurrent_batches, "max_concurrent_batches")
        object.__setattr__(self, "max_pending", to_positive_int(self.max_pending, "max_pending"))
        if self.overflow not in ("block", "reject"):
            raise ConfigError(f"overflow must be 'block' or 'reject', got {self.overflow!r}")
        if not isinstance(self.ordered, bool):
            raise ConfigError(f"ordered must be True or False, got {self.ordered!r}")
        object.__setattr__(self, "retry", check_retry(self.retry))
        object.__setattr__(self, "rate_limit", check_rate_limit(self.rate_limit))
        if self.clock is not None and not isinstance(self.clock, Clock):
            raise ConfigError(f"clock must implement freight's Clock protocol, got {self.clock!r}")
        if self.name is not None and not isinstance(self.name, str):
            raise ConfigError(f"name must be a string, got {self.name!r}")
        subscribers = tuple(self.subscribers)
        for subscriber in subscribers:
            if not callable(subscriber):
                raise ConfigError(
                    f"a subscriber must be callable (BatchEvent -> None), got {subscriber!r}"
                )
        object.__setattr__(self, "subscribers", subscribers)

    @property
    def limiter(self) -> RateLimiter | None:
        """The rate limiter (a number was turned into one at construction)."""
        assert self.rate_limit is None or isinstance(self.rate_limit, RateLimiter)
        return self.rate_limit


_NAMES = frozenset(f.name for f in fields(BatcherOptions))


def options_from(owner: str, options: dict[str, Any]) -> BatcherOptions:
    """Validate a constructor's ``**options``; an unknown name is refused by name."""
    unknown = sorted(set(options) - _NAMES)
    if unknown:
        raise ConfigError(
            f"{owner} got unknown option(s) {', '.join(unknown)}; the options are "
            f"{', '.join(sorted(_NAMES))}"
        )
    return BatcherOptions(**options)
