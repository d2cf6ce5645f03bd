"""The batch buffer: a pure state machine that decides when a batch is due.

Rules (every driver, job and flow in freight obeys exactly these):

1. Items are partitioned by ``key(item)`` (one partition when there is no key).
   Each key has at most one *open* batch.
2. A batch opens when its first item arrives; its deadline is that arrival time
   plus ``spec.timeout``. The timer is per batch: after a flush, the next batch of
   that key starts its own timer with its own first item.
3. ``add`` flushes a batch when it reaches ``spec.size`` items (reason ``"size"``),
   ``spec.max_bytes`` bytes (reason ``"bytes"``) or ``spec.max_cost`` (reason
   ``"cost"``). An item that would push the open batch past ``max_bytes`` first
   flushes that batch (``"bytes"``), then opens the next. An item larger than
   ``max_bytes`` on its own is flushed alone.
4. With ``spec.cost``, an item joins the open batch only if ``cost(items + [item])``
   stays within ``max_cost``; otherwise the open batch flushes first (``"cost"``)
   and the item opens the next. An item whose cost *alone* is over ``max_cost`` can
   join no batch: ``add`` raises :class:`~freight.ItemTooLarge` and buffers nothing.
5. ``tick(now)`` flushes every batch whose deadline is ``<= now`` (``"timeout"``),
   oldest deadline first.
6. ``flush()`` flushes every open batch (``"manual"``); ``close()`` does the same
   with ``"close"`` and refuses further ``add`` calls. A driver whose ``max_pending``
   items are all accepted calls ``flush("pending")``: no further item can arrive
   until some leave, so waiting for ``size`` (or the timeout) would stall it.
7. ``reconfigure(spec, now)`` (and ``retune(size, timeout, now)``, how a tuner moves
   the size and wait) applies new limits from ``now`` on: each open batch is judged
   again by them, and one now due (its size, bytes or cost reached, or its
   deadline, ``opened_at`` plus the new timeout, passed) is flushed at once, whole,
   with that reason; the others keep their items under the new deadline. A spec
   whose sizer or cost raises on an open item is refused with that error, and
   nothing changes (every open batch is weighed by it before any is touched).
8. Items rejected by ``where(item)`` are never buffered: ``add`` raises
   :class:`~freight.Skipped`, so the caller always learns what happened.
9. Within a key, items leave in the order they arrived. Every added item leaves
   in exactly one flush.

The buffer never reads a clock: ``now`` is always handed in, so tests (and the
Hypothesis properties in ``tests/core``) drive time by hand.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, TypeVar

from freight._core._spec import BatchSpec, CostFn, default_sizer
from freight._errors import BatcherClosed, ConfigError, ItemTooLarge, Skipped

__all__ = ["BatchBuffer", "Flush", "FlushReason", "OpenBatch"]

T = TypeVar("T")

FlushReason = Literal["size", "bytes", "cost", "timeout", "manual", "pending", "close"]

_NO_FLUSHES: tuple[()] = ()


@dataclass(frozen=True, slots=True)
class Flush(Generic[T]):
    """One batch leaving the buffer.

    Attributes:
        key: the partition key (``None`` without ``key=``).
        items: the items, in arrival order.
        reason: why it left: ``"size"``, ``"bytes"``, ``"cost"``, ``"timeout"``, ``"manual"``,
            ``"pending"`` (the driver held ``max_pending`` items), ``"close"``.
        opened_at: the ``now`` at which its first item arrived.
        tickets: opaque values added beside each item (drivers keep callers' futures
            here); ``None`` entries when ``add`` was called without a ticket.
    """

    key: Hashable
    items: list[T]
    reason: FlushReason
    opened_at: float
    tickets: list[Any] = field(default_factory=list, repr=False, compare=False)


@dataclass(frozen=True, slots=True)
class OpenBatch(Generic[T]):
    """A batch still open (for introspection): its key, items so far and times."""

    key: Hashable
    items: list[T]
    opened_at: float
    deadline: float | None


class _Open:
    """An open batch of one key."""

    __slots__ = ("cost", "deadline", "items", "nbytes", "opened_at", "tickets")

    def __init__(self, opened_at: float, deadline: float | None) -> None:
        self.items: list[Any] = []
        self.tickets: list[Any] = []
        self.nbytes = 0
        self.cost: float = 0
        self.opened_at = opened_at
        self.deadline = deadline


class BatchBuffer(Generic[T]):
    """Pure state machine deciding when batches are due; see the module rules.

    Args:
        spec: the :class:`BatchSpec` (size, timeout, max_bytes, sizer, max_cost, cost).
            With ``size="auto"`` the buffer starts at the tuner's cap
            (``spec.max_size``) and ``spec.timeout``; the driver's tuner moves them
            with :meth:`retune`.
        key: ``item -> hashable``; each key gets its own batch and timer.
        where: ``item -> bool``; items for which it is false are refused with
            :class:`~freight.Skipped` instead of being buffered.
    """

    __slots__ = (
        "_closed",
        "_cost",
        "_count",
        "_deadlines",
        "_key",
        "_max_bytes",
        "_max_cost",
        "_open",
        "_plain",
        "_seq",
        "_size",
        "_sizer",
        "_timeout",
        "_where",
        "spec",
    )

    def __init__(
        self,
        spec: BatchSpec,
        *,
        key: Callable[[T], Hashable] | None = None,
        where: Callable[[T], bool] | None = None,
    ) -> None:
        if not isinstance(spec, BatchSpec):
            raise ConfigError(f"spec must be a freight.BatchSpec, got {spec!r}")
        if key is not None and not callable(key):
            raise ConfigError(f"key must be a callable (item -> hashable), got {key!r}")
        if where is not None and not callable(where):
            raise ConfigError(f"where must be a callable (item -> bool), got {where!r}")
        self._key = key
        self._where = where
        self._open: dict[Hashable, _Open] = {}
        # (deadline, seq, key, batch): lazily invalidated when the batch left early.
        self._deadlines: list[tuple[float, int, Hashable, _Open]] = []
        self._seq = 0
        self._count = 0
        self._closed = False
        self._take(spec)

    def _take(self, spec: BatchSpec) -> None:
        size = spec.size  # first: a time-only spec raises here, changing nothing
        self.spec = spec
        self._size = size
        self._timeout = spec.timeout
        self._max_bytes = spec.max_bytes
        self._sizer: Callable[[Any], int] = spec.sizer or default_sizer
        self._max_cost = spec.max_cost
        self._cost: CostFn | None = spec.cost
        # Neither bytes nor cost to weigh: put() takes its short path.
        self._plain = self._max_bytes is None and self._cost is None

    # -- queries ---------------------------------------------------------------

    def __len__(self) -> int:
        """Items buffered and not yet flushed, over all keys."""
        return self._count

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called."""
        return self._closed

    @property
    def size(self) -> int:
        """The most items in a batch now (``spec.size``, or what :meth:`retune` set)."""
        return self._size

    @property
    def timeout(self) -> float | None:
        """The seconds a batch may stay open now (``spec.timeout``, or what :meth:`retune` set)."""
        return self._timeout

    def keys(self) -> list[Hashable]:
        """Keys that have an open batch."""
        return list(self._open)

    def open_batches(self) -> list[OpenBatch[T]]:
        """The open batches (key, items, opened_at, deadline), oldest first."""
        return [
            OpenBatch(key, list(batch.items), batch.opened_at, batch.deadline)
            for key, batch in sorted(self._open.items(), key=lambda kv: kv[1].opened_at)
        ]

    def next_deadline(self) -> float | None:
        """The earliest deadline of an open batch, or ``None`` when none has one."""
        heap = self._deadlines
        while heap:
            deadline, _, key, batch = heap[0]
            if self._open.get(key) is batch:
                return deadline
            heapq.heappop(heap)
        return None

    def check(self, item: T) -> None:
        """Raise :class:`~freight.ItemTooLarge` if ``item`` alone costs over ``max_cost``.

        For a driver that wants to refuse such an item on the caller's side, before
        it is queued for the buffer (which checks it again, rule 4).
        """
        if self._cost is not None:
            self._alone(item)

    # -- transitions -----------------------------------------------------------

    def add(self, item: T, now: float, *, ticket: Any = None) -> list[Flush[T]]:
        """Buffer ``item`` arriving at ``now``; return the flushes it caused.

        Raises:
            Skipped: ``where(item)`` is false; the item was not buffered.
            ItemTooLarge: the item alone costs over ``max_cost``; it was not buffered.
            BatcherClosed: :meth:`close` was called.
        """
        if self._closed:
            raise BatcherClosed("the batch buffer is closed; it accepts no new items")
        if self._where is not None and not self._where(item):
            raise Skipped(f"item rejected by the where= predicate: {item!r:.200}")
        flushes = self.put(item, now, ticket)
        return flushes if type(flushes) is list else []

    def put(self, item: T, now: float, ticket: Any = None) -> Sequence[Flush[T]]:
        """Buffer an item without the ``where`` and closed checks of :meth:`add`.

        For drivers: an item sent back for a retry in a later batch, or one whose
        ``where`` check already ran on the caller's side. After :meth:`close`,
        call :meth:`flush` or :meth:`close` again to emit it. Returns a shared
        empty tuple when nothing is due (no allocation on the hot path).

        Raises:
            ItemTooLarge: the item alone costs over ``max_cost``; it was not buffered.
        """
        key = None if self._key is None else self._key(item)
        if not self._plain:
            return self._put_weighed(key, item, now, ticket)
        batch = self._open.get(key)
        if batch is None:
            batch = self._start(key, now)
        batch.items.append(item)
        batch.tickets.append(ticket)
        self._count += 1
        if len(batch.items) >= self._size:
            return [self._emit(key, batch, "size")]
        return _NO_FLUSHES

    def _put_weighed(self, key: Hashable, item: T, now: float, ticket: Any) -> list[Flush[T]]:
        """:meth:`put` with bytes and/or cost to weigh (rules 3 and 4)."""
        max_bytes = self._max_bytes
        nbytes = 0 if max_bytes is None else self._measure(item)
        out: list[Flush[T]] = []
        batch = self._open.get(key)
        cost: float = 0
        if self._cost is not None:  # priced first: a refused item changes nothing
            cost, fits = self._price_with(batch, item)
            if batch is not None and not fits:
                out.append(self._emit(key, batch, "cost"))
                batch = None
        if batch is not None and max_bytes is not None and batch.nbytes + nbytes > max_bytes:
            out.append(self._emit(key, batch, "bytes"))
            batch = None
            if self._cost is not None:
                cost = self._alone(item)
        if batch is None:
            batch = self._start(key, now)
        batch.items.append(item)
        batch.tickets.append(ticket)
        batch.nbytes += nbytes
        batch.cost = cost
        self._count += 1
        reason = self._full(batch)
        if reason is not None:
            out.append(self._emit(key, batch, reason))
        return out

    def tick(self, now: float) -> list[Flush[T]]:
        """Flush every batch whose deadline is ``<= now``, oldest deadline first."""
        out: list[Flush[T]] = []
        heap = self._deadlines
        while heap and heap[0][0] <= now:
            _, _, key, batch = heapq.heappop(heap)
            if self._open.get(key) is batch:
                out.append(self._emit(key, batch, "timeout"))
        return out

    def flush(self, reason: Literal["manual", "pending"] = "manual") -> list[Flush[T]]:
        """Flush every open batch now, oldest first.

        ``reason`` is ``"manual"`` (an explicit flush) or ``"pending"`` (the driver
        holds ``max_pending`` items, rule 6).
        """
        return self._emit_all(reason)

    def close(self) -> list[Flush[T]]:
        """Flush every open batch (reason ``"close"``) and refuse further ``add``."""
        self._closed = True
        return self._emit_all("close")

    def reconfigure(self, spec: BatchSpec, now: float) -> list[Flush[T]]:
        """Take ``spec``'s limits from ``now`` on; return the open batches now due (rule 7).

        The batches already flushed are not touched; each open batch is judged
        again by the new size, bytes, cost and timeout (its deadline counts from
        its first item, as always).
        """
        if not isinstance(spec, BatchSpec):
            raise ConfigError(f"spec must be a freight.BatchSpec, got {spec!r}")
        spec.size  # noqa: B018  (a time-only spec raises ConfigError here, changing nothing)
        # Weigh every open batch by the new spec before anything changes: a sizer or a
        # cost that raises on an open item refuses the spec and leaves the buffer as it
        # was (its limits, its batches and their deadlines), never half-applied.
        sizer = spec.sizer or default_sizer
        weights = [
            (
                0 if spec.max_bytes is None else sum(_measured(sizer, i) for i in batch.items),
                0 if spec.cost is None else _priced(spec.cost, batch.items),
            )
            for batch in self._open.values()
        ]
        self._take(spec)
        for batch, (nbytes, cost) in zip(self._open.values(), weights, strict=True):
            batch.nbytes = nbytes
            batch.cost = cost
        return self._rejudge(now)

    def retune(self, size: int, timeout: float | None, now: float) -> list[Flush[T]]:
        """Move the size and timeout alone (a tuner's step); return the batches now due.

        Rule 7, like :meth:`reconfigure`, without measuring bytes and cost again.
        """
        self._size = size
        self._timeout = timeout
        return self._rejudge(now)

    def discard(self, item: T, ticket: Any) -> bool:
        """Remove a still-buffered item (its caller gave up); True if it was found.

        The item is found by its ``ticket`` (identity) in its key's open batch.
        """
        key = None if self._key is None else self._key(item)
        batch = self._open.get(key)
        if batch is None:
            return False
        for i, t in enumerate(batch.tickets):
            if t is ticket:
                del batch.tickets[i]
                removed = batch.items.pop(i)
                self._count -= 1
                if not batch.items:
                    del self._open[key]
                    return True
                if self._max_bytes is not None:
                    batch.nbytes -= self._sizer(removed)
                if self._cost is not None:
                    batch.cost = self._price(batch.items)
                return True
        return False

    # -- internals -------------------------------------------------------------

    def _start(self, key: Hashable, now: float) -> _Open:
        deadline = None if self._timeout is None else now + self._timeout
        batch = _Open(now, deadline)
        self._open[key] = batch
        if deadline is not None:
            self._seq += 1
            heapq.heappush(self._deadlines, (deadline, self._seq, key, batch))
        return batch

    def _emit(self, key: Hashable, batch: _Open, reason: FlushReason) -> Flush[T]:
        del self._open[key]
        self._count -= len(batch.items)
        return Flush(key, batch.items, reason, batch.opened_at, batch.tickets)

    def _emit_all(self, reason: FlushReason) -> list[Flush[T]]:
        ordered = sorted(self._open.items(), key=lambda kv: kv[1].opened_at)
        out = [self._emit(key, batch, reason) for key, batch in ordered]
        self._deadlines.clear()
        return out

    def _full(self, batch: _Open) -> FlushReason | None:
        """Why ``batch`` is due by its contents (size, bytes, cost), or ``None``."""
        if len(batch.items) >= self._size:
            return "size"
        if self._max_bytes is not None and batch.nbytes >= self._max_bytes:
            return "bytes"
        if self._max_cost is not None and batch.cost >= self._max_cost:
            return "cost"
        return None

    def _rejudge(self, now: float) -> list[Flush[T]]:
        """Judge every open batch again by the current limits (rule 7); it never raises
        (the batches were weighed first), so the deadlines are never left half rebuilt."""
        out: list[Flush[T]] = []
        self._deadlines.clear()
        for key, batch in sorted(self._open.items(), key=lambda kv: kv[1].opened_at):
            timeout = self._timeout
            batch.deadline = None if timeout is None else batch.opened_at + timeout
            reason = self._full(batch)
            if reason is None and batch.deadline is not None and batch.deadline <= now:
                reason = "timeout"
            if reason is not None:
                out.append(self._emit(key, batch, reason))
            elif batch.deadline is not None:
                self._seq += 1
                heapq.heappush(self._deadlines, (batch.deadline, self._seq, key, batch))
        return out

    def _measure(self, item: T) -> int:
        return _measured(self._sizer, item)

    def _price(self, items: list[T]) -> float:
        assert self._cost is not None
        return _priced(self._cost, items)

    def _alone(self, item: T) -> float:
        """The cost of ``item`` alone; :class:`~freight.ItemTooLarge` if over ``max_cost``."""
        cost = self._price([item])
        assert self._max_cost is not None
        if cost > self._max_cost:
            raise ItemTooLarge(
                f"this item costs {cost} alone, over max_cost={self._max_cost}, so no batch "
                f"can take it: raise BatchSpec.max_cost or split the item ({item!r:.200})"
            )
        return cost

    def _price_with(self, batch: _Open | None, item: T) -> tuple[float, bool]:
        """The cost of the batch ``item`` will be in, and whether that is ``batch``."""
        if batch is not None:
            together = self._price([*batch.items, item])
            assert self._max_cost is not None
            if together <= self._max_cost:
                return together, True
        return self._alone(item), False


def _measured(sizer: Callable[[Any], int], item: Any) -> int:
    """``sizer(item)``, checked: an int >= 0 (else a ``TypeError`` naming the item)."""
    nbytes = sizer(item)
    if not isinstance(nbytes, int) or isinstance(nbytes, bool) or nbytes < 0:
        raise TypeError(f"sizer must return an int >= 0, got {nbytes!r} for {item!r:.200}")
    return nbytes


def _priced(cost_fn: CostFn, items: list[Any]) -> float:
    """``cost_fn(items)``, checked: a number >= 0 (else a ``TypeError``)."""
    cost = cost_fn(items)
    if not isinstance(cost, int | float) or isinstance(cost, bool) or math.isnan(cost) or cost < 0:
        raise TypeError(f"cost must return a number >= 0, got {cost!r} for {len(items)} items")
    return cost
