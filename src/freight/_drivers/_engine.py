"""What the asyncio and thread batchers share: validation, settlement and events.

A driver owns a :class:`~freight._core._buffer.BatchBuffer` (when a batch is due),
a :class:`~freight._core._dispatch.DispatchQueue` (when it may start) and runs
:func:`~freight._core._plan.plan_batch` (how it is executed). This base holds the
bookkeeping both drivers do identically: counting pending items, settling each
caller's future with its own outcome, deciding per-item retries, and emitting a
:class:`~freight.BatchEvent` per batch.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import random
from collections.abc import Callable, Hashable, Iterable
from typing import Any, Generic, Literal, TypeVar

from freight._core._buffer import BatchBuffer, Flush
from freight._core._dispatch import DispatchQueue
from freight._core._retry import Retry
from freight._core._spec import BatchSpec
from freight._core._stats import BatcherStats, BatchEvent, StatsRecorder
from freight._core._time import to_positive_int
from freight._errors import ConfigError, QueueFull, Skipped
from freight._ratelimit import RateLimiter

__all__ = ["EngineBase", "Overflow", "Subscriber", "check_rate_limit", "check_retry"]

T = TypeVar("T")
R = TypeVar("R")

Overflow = Literal["block", "reject"]
Subscriber = Callable[[BatchEvent], None]

_log = logging.getLogger("freight")

_INVALID_STATE = (asyncio.InvalidStateError, concurrent.futures.InvalidStateError)


def check_retry(retry: object) -> Retry | None:
    if retry is None or isinstance(retry, Retry):
        return retry
    raise ConfigError(f"retry must be a freight.Retry or None, got {retry!r}")


def check_rate_limit(rate_limit: object) -> RateLimiter | None:
    if rate_limit is None or isinstance(rate_limit, RateLimiter):
        return rate_limit
    if isinstance(rate_limit, int | float) and not isinstance(rate_limit, bool):
        return RateLimiter(rate_limit)
    raise ConfigError(
        "rate_limit must be a freight.RateLimiter or a number of batches per second, "
        f"got {rate_limit!r}"
    )


class EngineBase(Generic[T, R]):
    """State and bookkeeping shared by :class:`Batcher` and :class:`ThreadBatcher`."""

    def __init__(
        self,
        handler: Callable[..., Any],
        spec: BatchSpec,
        *,
        key: Callable[[T], Hashable] | None,
        where: Callable[[T], bool] | None,
        max_concurrent_batches: int,
        max_pending: int,
        overflow: Overflow,
        ordered: bool,
        retry: Retry | None,
        rate_limit: RateLimiter | float | None,
        name: str | None,
        subscribers: Iterable[Subscriber],
    ) -> None:
        if not callable(handler):
            raise ConfigError(f"handler must be callable (list of items -> list), got {handler!r}")
        self._handler = handler
        # Drivers check where= on the caller's side (and raise Skipped there), then
        # use the buffer's check-free put() on their hot path.
        self._buffer: BatchBuffer[T] = BatchBuffer(spec, key=key, where=where)
        self._where = where
        self.spec = spec
        self._dispatch: DispatchQueue[T] = DispatchQueue(max_concurrent_batches, ordered=ordered)
        self.max_concurrent_batches = max_concurrent_batches
        self.max_pending = to_positive_int(max_pending, "max_pending")
        if overflow not in ("block", "reject"):
            raise ConfigError(f"overflow must be 'block' or 'reject', got {overflow!r}")
        self.overflow: Overflow = overflow
        if not isinstance(ordered, bool):
            raise ConfigError(f"ordered must be True or False, got {ordered!r}")
        self.ordered = ordered
        self._retry = check_retry(retry)
        self._limiter = check_rate_limit(rate_limit)
        self.name = name if name is not None else getattr(handler, "__qualname__", "batcher")
        if not isinstance(self.name, str):
            raise ConfigError(f"name must be a string, got {name!r}")
        self._subscribers: list[Subscriber] = []
        for subscriber in subscribers:
            self.subscribe(subscriber)
        self._stats = StatsRecorder(spec.size)
        self._attempts: dict[Any, int] = {}
        self._pending = 0
        self._random = random.random

    # -- public, shared --------------------------------------------------------

    def subscribe(self, subscriber: Subscriber) -> Callable[[], None]:
        """Call ``subscriber(event)`` after every batch; returns an unsubscribe function."""
        if not callable(subscriber):
            raise ConfigError(
                f"a subscriber must be callable (BatchEvent -> None), got {subscriber!r}"
            )
        self._subscribers.append(subscriber)

        def unsubscribe() -> None:
            if subscriber in self._subscribers:
                self._subscribers.remove(subscriber)

        return unsubscribe

    def stats(self) -> BatcherStats:
        """Counters so far: flushes by reason, efficiency, latency percentiles."""
        return self._stats.snapshot(self._pending)

    @property
    def pending(self) -> int:
        """Items accepted and not yet settled (buffered, queued, running or awaiting retry)."""
        return self._pending

    # -- shared internals ------------------------------------------------------

    def _skip(self, item: T) -> Skipped:
        self._stats.skipped += 1
        return Skipped(f"item rejected by the where= predicate: {item!r:.200}")

    def _queue_full(self) -> QueueFull:
        return QueueFull(
            f"batcher {self.name!r} holds max_pending={self.max_pending} items; wait for room "
            "(overflow='block' and the waiting submit), or raise max_pending"
        )

    def _settle(
        self, items: list[T], tickets: list[Any], outcomes: list[Any], tries: int
    ) -> tuple[int, int, list[tuple[T, Any]]]:
        """Deliver each outcome to its caller; return (succeeded, failed, items to retry).

        An item's attempts add up over the batches it was in (``tries`` whole-batch
        tries each); a transient error is final once they reach ``Retry.attempts``.
        """
        succeeded = failed = 0
        retry_items: list[tuple[T, Any]] = []
        retry = self._retry
        attempts = self._attempts
        for item, future, outcome in zip(items, tickets, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                if retry is not None and retry.is_transient(outcome):
                    tried = attempts.get(future, 0) + tries
                    if tried < retry.attempts:
                        attempts[future] = tried
                        retry_items.append((item, future))
                        continue
                failed += 1
                if attempts:
                    attempts.pop(future, None)
                try:
                    future.set_exception(outcome)
                except _INVALID_STATE:
                    pass
            else:
                succeeded += 1
                if attempts:
                    attempts.pop(future, None)
                try:
                    future.set_result(outcome)
                except _INVALID_STATE:
                    pass
        return succeeded, failed, retry_items

    def _record(
        self,
        flush: Flush[T],
        *,
        size: int,
        wait: float,
        duration: float,
        succeeded: int,
        failed: int,
        retried: int,
        calls: int,
    ) -> BatchEvent:
        """Fold one batch into the stats and return its event (call :meth:`_publish` next)."""
        event = BatchEvent(
            batcher=self.name,
            key=flush.key,
            size=size,
            reason=flush.reason,
            wait=wait,
            duration=duration,
            succeeded=succeeded,
            failed=failed,
            retried=retried,
            calls=calls,
            queue_depth=self._pending,
        )
        self._stats.record(event)
        return event

    def _publish(self, event: BatchEvent) -> None:
        """Hand ``event`` to every subscriber; a failing subscriber is logged, not raised."""
        for subscriber in self._subscribers:
            try:
                subscriber(event)
            except Exception:
                # A broken metrics exporter must not fail the callers' items.
                _log.exception("freight: subscriber %r failed on %r", subscriber, event)

    def _retry_delay(self, future: Any) -> float:
        assert self._retry is not None
        return self._retry.delay(self._attempts.get(future, 1), self._random())
