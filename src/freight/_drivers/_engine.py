"""What the asyncio and thread batchers share: validation, settlement and events.

A driver owns a :class:`~freight._core._buffer.BatchBuffer` (when a batch is due),
a :class:`~freight._core._dispatch.DispatchQueue` (when it may start) and runs each
batch's plan through a runner (:mod:`freight._drivers._runner`: how it is executed,
which items come back and when). This base holds the bookkeeping both drivers do
identically: counting pending items, settling each caller's future with its own
outcome, remembering the tries of items sent back, emitting a
:class:`~freight.BatchEvent` per batch, changing the limits at runtime
(:meth:`EngineBase.reconfigure`) and, with ``size="auto"``, feeding the core's
:class:`~freight._core._adaptive.SizeTuner` and applying its size and wait.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import inspect
import logging
import random
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager
from datetime import timedelta
from typing import Any, Generic, Literal, TypeVar

from freight._core._adaptive import Observation, SizeTuner
from freight._core._buffer import BatchBuffer, Flush
from freight._core._clock import Clock, TimerHandle
from freight._core._dispatch import DispatchQueue
from freight._core._plan import Outcome
from freight._core._spec import BatchSpec
from freight._core._stats import BatcherStats, BatchEvent, StatsRecorder
from freight._drivers._options import BatcherOptions, Overflow, Subscriber
from freight._errors import ConfigError, QueueFull, Skipped

__all__ = ["EngineBase", "fan_out"]

T = TypeVar("T")
R = TypeVar("R")
E = TypeVar("E")

_log = logging.getLogger("freight")

_INVALID_STATE = (asyncio.InvalidStateError, concurrent.futures.InvalidStateError)

_KEEP: Any = object()


def fan_out(subscribers: Iterable[Callable[[E], object]], event: E, owner: str) -> None:
    """Hand ``event`` to every subscriber; a failing subscriber is logged, not raised.

    Every shape's observers (a batcher's :class:`~freight.BatchEvent` subscribers, a
    Flow's span subscribers) are called here: a broken metrics exporter or tracer must
    never fail the items it observes.
    """
    for subscriber in subscribers:
        try:
            subscriber(event)
        except Exception:
            _log.exception("freight: %s subscriber %r failed on %r", owner, subscriber, event)


class EngineBase(Generic[T, R]):
    """State and bookkeeping shared by :class:`Batcher` and :class:`ThreadBatcher`."""

    # Set by each driver: its clock (a Batcher's is None until bound to a loop), its
    # timer and the buffer's current timeout, which it reads on its hot path.
    _clock: Clock | None
    _timer: TimerHandle | None
    _timeout: float | None

    def __init__(
        self, handler: Callable[..., Any], spec: BatchSpec, options: BatcherOptions
    ) -> None:
        if not callable(handler):
            raise ConfigError(f"handler must be callable (list of items -> list), got {handler!r}")
        if not isinstance(spec, BatchSpec):
            raise ConfigError(
                f"spec must be a freight.BatchSpec (e.g. BatchSpec(size=100, timeout=0.05)), "
                f"got {spec!r}"
            )
        if inspect.isgeneratorfunction(handler) or inspect.isgeneratorfunction(
            getattr(handler, "__call__", None)  # noqa: B004  (the method, not callable())
        ):
            raise ConfigError(
                f"handler {self._name_of(handler, options)!r} is a generator function; a "
                "batch handler returns a list with one result per item. To stream steps, "
                "make it an `async def` that yields them and use Batcher.stream(item) or "
                "@freight.batched"
            )
        self._handler = handler
        self.options = options
        self._check_spec(spec, self._name_of(handler, options))
        # Drivers check where= on the caller's side (and raise Skipped there), then
        # use the buffer's check-free put() on their hot path.
        self._buffer: BatchBuffer[T] = BatchBuffer(spec, key=options.key, where=options.where)
        self._where = options.where
        self.spec = spec
        self._dispatch: DispatchQueue[T] = DispatchQueue(
            options.max_concurrent_batches, ordered=options.ordered
        )
        self.max_concurrent_batches = options.max_concurrent_batches
        self.max_pending = options.max_pending
        self.overflow: Overflow = options.overflow
        self.ordered = options.ordered
        self._retry = options.retry
        self._limiter = options.limiter
        self.name: str = self._name_of(handler, options)
        self._subscribers: list[Subscriber] = list(options.subscribers)
        self._priced = spec.cost is not None  # items to refuse at submit if over max_cost
        self._tuner: SizeTuner | None = None
        if spec.auto:
            self._tuner = self._new_tuner(spec)
            self._buffer.retune(self._tuner.size, self._tuner.wait, 0.0)  # empty: no flush
        self._stats = StatsRecorder(self._buffer.size, self._buffer.timeout)
        self._tried: dict[Any, int] = {}  # per-item tries so far, of items sent back
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

    def reconfigure(
        self,
        *,
        size: int | Literal["auto"] = _KEEP,
        timeout: float | timedelta | None = _KEEP,
        max_bytes: int | None = _KEEP,
        max_cost: float | None = _KEEP,
        latency_target: float | timedelta | None = _KEEP,
        max_size: int = _KEEP,
    ) -> None:
        """Change when batches are due, from now on; the arguments not given are kept.

        The new values are checked exactly as :class:`BatchSpec` checks them (the same
        :class:`~freight.ConfigError`), and nothing changes if one is refused. Batches
        already flushed keep the rule they were made by; the open batch is judged by the
        new one at once, and flushed if it is now due (its size, bytes or cost
        reached, or its first item older than the new ``timeout``). ``max_bytes=None``
        or ``max_cost=None`` removes that limit; ``size="auto"`` (with a
        ``latency_target``) hands the size and wait to the tuner, a number takes them
        back. ``batcher.spec`` is the spec now in force. A :class:`Batcher` is
        reconfigured from its event loop's thread; a :class:`ThreadBatcher` from any.
        """
        given: dict[str, Any] = {
            "size": size,
            "timeout": timeout,
            "max_bytes": max_bytes,
            "max_cost": max_cost,
            "latency_target": latency_target,
            "max_size": max_size,
        }
        spec = self.spec.replace(**{k: v for k, v in given.items() if v is not _KEEP})
        spec.size  # noqa: B018  (a time-only spec raises ConfigError here, changing nothing)
        self._check_spec(spec, self.name)
        # Everything that may raise runs before anything changes: a new tuner is made
        # first, and the buffer weighs its open batches by the new spec before it takes
        # it (a sizer or cost that raises on an open item refuses the spec there). So
        # a refused reconfigure leaves the spec, the open batch and its deadline alone.
        tuner = self._tuner
        fresh = self._new_tuner(spec) if spec.auto and tuner is None else None
        with self._guard():
            now = self._clock_now()
            flushes = self._buffer.reconfigure(spec, now)
            self.spec = spec
            self._priced = spec.cost is not None
            tuner = self._tuner
            if not spec.auto:
                self._tuner = tuner = None
            elif tuner is None:
                self._tuner = tuner = fresh or self._new_tuner(spec)
            else:  # keep what it learnt of the handler; the next batch re-plans
                assert spec.latency_target is not None
                tuner.latency_target = spec.latency_target
                tuner.max_size, tuner.max_wait = spec.size, spec.timeout
                tuner.size = min(tuner.size, spec.size)
                tuner.wait = tuner.wait if spec.timeout is None else min(tuner.wait, spec.timeout)
            if tuner is not None:
                flushes += self._buffer.retune(tuner.size, tuner.wait, now)
            self._limits_changed(flushes)

    # -- shared internals ------------------------------------------------------

    @staticmethod
    def _name_of(handler: Callable[..., Any], options: BatcherOptions) -> str:
        if options.name is not None:
            return options.name
        return str(getattr(handler, "__qualname__", "batcher"))

    def _check_spec(self, spec: BatchSpec, name: str) -> None:
        """Refuse a spec this driver cannot honour (at construction and at
        :meth:`reconfigure`, before anything changes); every spec by default."""

    def _start(self, flushes: Sequence[Flush[T]]) -> None:
        """Hand due batches to the dispatch queue (each driver runs them its way)."""
        raise NotImplementedError

    def _arm(self) -> None:
        """Set the driver's timer for the buffer's next deadline, if it has one."""
        raise NotImplementedError

    def _guard(self) -> AbstractContextManager[object]:
        """What makes a change of limits atomic: nothing on one event loop; the
        :class:`ThreadBatcher` takes its lock."""
        return contextlib.nullcontext()

    def _clock_now(self) -> float:
        # A Batcher not yet bound to a loop has no clock, and then no buffered item.
        return 0.0 if self._clock is None else self._clock.now()

    def _new_tuner(self, spec: BatchSpec) -> SizeTuner:
        assert spec.latency_target is not None
        return SizeTuner(
            spec.latency_target,
            max_size=spec.size,
            max_wait=spec.timeout,
            concurrency=self.max_concurrent_batches,
        )

    def _limits_changed(self, flushes: Sequence[Flush[T]]) -> None:
        """The buffer's size or timeout moved: start what fell due, re-arm the timer
        (the next deadline may now be earlier or gone), report the new limits."""
        self._timeout = self._buffer.timeout
        self._stats.size = self._buffer.size
        self._stats.current_timeout = self._buffer.timeout
        self._start(flushes)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._timeout is not None:
            self._arm()

    def _accepted(self) -> int:
        """Items accepted so far: settled, cancelled or still pending."""
        stats = self._stats
        return stats.succeeded + stats.failed + stats.cancelled + self.pending

    def _tune(
        self, size: int, wait: float, duration: float, calls: int, *, retried: int, settled: int
    ) -> None:
        """Feed one handled batch to the tuner; apply the size and wait it answers.

        ``settled``: the batch's items already uncounted from ``pending`` and not yet
        counted in the stats (the event is recorded after this).
        """
        tuner = self._tuner
        assert tuner is not None
        now = self._clock_now()
        observation = Observation(
            size=size,
            latency=wait + duration,
            duration=duration if calls == 1 and not retried else None,
            accepted=self._accepted() + settled,
            now=now,
        )
        if tuner.observe(observation):
            self._limits_changed(self._buffer.retune(tuner.size, tuner.wait, now))

    def _skip(self, item: T) -> Skipped:
        self._stats.skipped += 1
        return Skipped(f"item rejected by the where= predicate: {item!r:.200}")

    def _queue_full(self) -> QueueFull:
        return QueueFull(
            f"batcher {self.name!r} holds max_pending={self.max_pending} items; wait for room "
            "(overflow='block' and the waiting submit), or raise max_pending"
        )

    def _settle(
        self, items: list[T], tickets: list[Any], outcome: Outcome
    ) -> tuple[int, int, list[tuple[T, Any]]]:
        """Deliver each final outcome to its caller; return (succeeded, failed, items
        the plan sends back for another try)."""
        counted = self._sort_out(items, tickets, outcome)
        self._deliver(tickets, outcome)
        return counted

    def _sort_out(
        self, items: list[T], tickets: list[Any], outcome: Outcome
    ) -> tuple[int, int, list[tuple[T, Any]]]:
        """The first half of :meth:`_settle`, delivering nothing: count the final
        outcomes and keep the tries of the items sent back (forget the others').

        A driver whose callers' done-callbacks run in its own thread gives back the
        settled items' room between the halves, so a callback that submits finds it.
        """
        tried = self._tried
        outcomes = outcome.outcomes
        again = outcome.again
        retry_items: list[tuple[T, Any]] = []
        kept: set[int] | tuple[()] = ()
        if again:
            kept = set(again)
            attempts = outcome.attempts
            for i in again:
                tried[tickets[i]] = attempts[i]
                retry_items.append((items[i], tickets[i]))
        failed = 0
        for i, result in enumerate(outcomes):
            if i in kept:
                continue
            if tried:
                tried.pop(tickets[i], None)
            if isinstance(result, BaseException):
                failed += 1
        return len(outcomes) - len(kept) - failed, failed, retry_items

    @staticmethod
    def _deliver(tickets: list[Any], outcome: Outcome) -> None:
        """The second half of :meth:`_settle`: set each final outcome on its future
        (a future its caller already gave up is left as it is)."""
        kept = set(outcome.again) if outcome.again else None
        for i, (future, result) in enumerate(zip(tickets, outcome.outcomes, strict=True)):
            if kept is not None and i in kept:
                continue
            try:
                if isinstance(result, BaseException):
                    future.set_exception(result)
                else:
                    future.set_result(result)
            except _INVALID_STATE:
                pass

    def _full_flushes(self) -> list[Flush[T]]:
        """What the buffer holds, flushed now if ``max_pending`` items are pending.

        No item can join those batches until some pending ones settle, so waiting
        for their ``size`` (or ``max_bytes``) would wait for the timeout, or forever
        without one (rule 6 of the buffer, reason ``"pending"``). Call it after every
        change that puts items in the buffer.
        """
        if self._pending >= self.max_pending and len(self._buffer):
            return self._buffer.flush("pending")
        return []

    def _tried_of(self, tickets: list[Any]) -> list[int] | None:
        """Per item, its tries in earlier batches (``None``: all fresh)."""
        tried = self._tried
        if not tried:
            return None
        return [tried.get(ticket, 0) for ticket in tickets]

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
        """Fold one batch into the stats and return its event (call :meth:`_publish` next).

        With ``size="auto"`` the batch also feeds the tuner first, so the event and
        the stats carry the size it chose.
        """
        if self._tuner is not None:
            self._tune(size, wait, duration, calls, retried=retried, settled=succeeded + failed)
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
            current_size=self._buffer.size,
        )
        self._stats.record(event)
        return event

    def _publish(self, event: BatchEvent) -> None:
        """Hand ``event`` to every subscriber (see :func:`fan_out`)."""
        fan_out(self._subscribers, event, f"batcher {self.name!r}:")
