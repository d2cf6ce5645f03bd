"""Which flushed batches may start: the concurrency limit and per-key order.

Rules:

1. At most ``max_concurrent`` batches run at once; the rest wait in FIFO order.
2. With ``ordered=True``, a key's next batch starts only after its previous
   batch finished (order per key); other keys may overtake a blocked key.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable
from typing import Any, Generic, TypeVar

from freight._core._buffer import Flush
from freight._core._time import to_positive_int

__all__ = ["DispatchQueue"]

T = TypeVar("T")


class DispatchQueue(Generic[T]):
    """Admits flushed batches under a concurrency limit and, optionally, per-key order."""

    __slots__ = ("_busy", "_max", "_ordered", "_waiting", "running")

    def __init__(self, max_concurrent: int, *, ordered: bool = False) -> None:
        self._max = to_positive_int(max_concurrent, "max_concurrent_batches")
        self._ordered = ordered
        self._waiting: deque[Flush[T]] = deque()
        self._busy: set[Hashable] = set()
        self.running = 0

    def __len__(self) -> int:
        """Batches waiting to start."""
        return len(self._waiting)

    def push(self, flush: Flush[T]) -> list[Flush[T]]:
        """Queue ``flush``; return the batches that may start now (the caller starts them)."""
        if (
            not self._waiting
            and self.running < self._max
            and not (self._ordered and flush.key in self._busy)
        ):
            self._admit(flush)
            return [flush]
        self._waiting.append(flush)
        return self._drain() if self.running < self._max else []

    def done(self, flush: Flush[T]) -> list[Flush[T]]:
        """Record that ``flush`` finished; return the batches that may start now."""
        self.running -= 1
        if self._ordered:
            self._busy.discard(flush.key)
        return self._drain()

    def take_all(self) -> list[Flush[T]]:
        """Remove and return every waiting batch (used when closing without draining)."""
        out = list(self._waiting)
        self._waiting.clear()
        return out

    def _admit(self, flush: Flush[Any]) -> None:
        self.running += 1
        if self._ordered:
            self._busy.add(flush.key)

    def _drain(self) -> list[Flush[T]]:
        out: list[Flush[T]] = []
        if not self._ordered:
            while self._waiting and self.running < self._max:
                flush = self._waiting.popleft()
                self._admit(flush)
                out.append(flush)
            return out
        skipped: deque[Flush[T]] = deque()
        while self._waiting and self.running < self._max:
            flush = self._waiting.popleft()
            if flush.key in self._busy:
                skipped.append(flush)
                continue
            self._admit(flush)
            out.append(flush)
        skipped.extend(self._waiting)
        self._waiting = skipped
        return out
