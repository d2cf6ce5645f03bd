"""Observability records: one :class:`BatchEvent` per handled batch, and running stats.

Subscribers are plain callables ``(BatchEvent) -> None`` (structlog-style), so
Prometheus, OpenTelemetry, the store or a test list are all just subscribers.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Hashable
from dataclasses import dataclass, field

from freight._core._buffer import FlushReason

__all__ = ["BatchEvent", "BatcherStats", "Percentiles", "StatsRecorder"]

_WINDOW = 4096  # batches kept for latency percentiles


@dataclass(frozen=True, slots=True, kw_only=True)
class BatchEvent:
    """What happened to one batch, emitted once after its last item was settled.

    Attributes:
        batcher: the batcher's name.
        key: the batch's partition key.
        size: items handed to the handler (after dropping cancelled callers).
        reason: why the batch was flushed.
        wait: seconds the oldest item waited before the handler started.
        duration: seconds from the handler's first call to the batch's settlement,
            retries and isolation included.
        succeeded: items that got a result.
        failed: items that got an error.
        retried: items sent back to the buffer for a later attempt.
        calls: handler calls made for this batch (1 without retries or isolation).
        queue_depth: items pending in the batcher after this batch settled.
        current_size: the batch size the batcher flushes at after this batch (moved
            by ``reconfigure`` and, with ``size="auto"``, by the tuner); ``None``
            when the emitter has none.
    """

    batcher: str
    key: Hashable
    size: int
    reason: FlushReason
    wait: float
    duration: float
    succeeded: int
    failed: int
    retried: int = 0
    calls: int = 1
    queue_depth: int = 0
    current_size: int | None = None

    @property
    def wait_time(self) -> float:
        """Alias of :attr:`wait`: how long the oldest item waited."""
        return self.wait

    @property
    def handler_duration(self) -> float:
        """Alias of :attr:`duration`: the handler's time for this batch."""
        return self.duration


@dataclass(frozen=True, slots=True)
class Percentiles:
    """Latency percentiles in seconds (``nan`` before the first batch)."""

    p50: float
    p90: float
    p99: float
    max: float


@dataclass(frozen=True, slots=True, kw_only=True)
class BatcherStats:
    """A snapshot of a batcher's counters (see :meth:`Batcher.stats`).

    ``efficiency`` is the mean batch size divided by the configured ``size`` (the
    current one, after a ``reconfigure`` or the tuner's last step): 1.0 means every
    batch was full; low values mean timeouts are doing the flushing.
    ``current_size`` and ``current_timeout`` are the limits batches are flushed at
    now: the spec's, a ``reconfigure``'s, or with ``size="auto"`` the tuner's.
    ``latency`` is, per batch, the oldest item's wait plus the handler duration.
    ``submitted`` counts accepted items (``skipped`` ones were refused, not accepted).
    """

    submitted: int
    succeeded: int
    failed: int
    skipped: int
    cancelled: int
    pending: int
    batches: int
    flushes: dict[str, int] = field(default_factory=dict)
    mean_batch_size: float
    efficiency: float
    handler_calls: int
    latency: Percentiles
    current_size: int
    current_timeout: float | None = None

    @property
    def size(self) -> int:
        """Alias of :attr:`current_size`: the batch size used now."""
        return self.current_size


def _percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return math.nan
    index = min(len(sorted_values) - 1, max(0, math.ceil(q * len(sorted_values)) - 1))
    return sorted_values[index]


class StatsRecorder:
    """Accumulates counters from events; cheap per batch, nothing per item."""

    __slots__ = (
        "batches",
        "calls",
        "cancelled",
        "current_timeout",
        "failed",
        "flushes",
        "items",
        "latencies",
        "size",
        "skipped",
        "succeeded",
    )

    def __init__(self, size: int, timeout: float | None = None) -> None:
        self.size = size  # the current size: the spec's, reconfigured or tuned
        self.current_timeout = timeout
        self.skipped = 0
        self.cancelled = 0
        self.succeeded = 0
        self.failed = 0
        self.batches = 0
        self.items = 0
        self.calls = 0
        self.flushes: dict[str, int] = {}
        self.latencies: deque[float] = deque(maxlen=_WINDOW)

    def record(self, event: BatchEvent) -> None:
        """Fold one batch's event into the counters."""
        self.batches += 1
        self.items += event.size
        self.calls += event.calls
        self.succeeded += event.succeeded
        self.failed += event.failed
        self.flushes[event.reason] = self.flushes.get(event.reason, 0) + 1
        self.latencies.append(event.wait + event.duration)

    def snapshot(self, pending: int) -> BatcherStats:
        """The counters as a frozen :class:`BatcherStats`."""
        mean = self.items / self.batches if self.batches else 0.0
        ordered = sorted(self.latencies)
        return BatcherStats(
            submitted=self.succeeded + self.failed + self.cancelled + pending,
            succeeded=self.succeeded,
            failed=self.failed,
            skipped=self.skipped,
            cancelled=self.cancelled,
            pending=pending,
            batches=self.batches,
            flushes=dict(self.flushes),
            mean_batch_size=mean,
            efficiency=mean / self.size,
            handler_calls=self.calls,
            current_size=self.size,
            current_timeout=self.current_timeout,
            latency=Percentiles(
                p50=_percentile(ordered, 0.50),
                p90=_percentile(ordered, 0.90),
                p99=_percentile(ordered, 0.99),
                max=ordered[-1] if ordered else math.nan,
            ),
        )
