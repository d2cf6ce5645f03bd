"""IterableSource: any iterable (a list, a generator, a query result) as a source.

Module rules: positions are item indexes, ``(index, index)``; records are built in C (a
map of ``tuple.__new__``), no Python frame per item on the hot path. It imports only the
shared helpers of :mod:`freight.jobs._sourcekit`, never :mod:`freight.jobs._sources`,
which re-exports it.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from freight._core._source import Position, Record, SourceSize
from freight.jobs._sourcekit import _wanted

__all__ = ["IterableSource"]


class IterableSource:
    """Any iterable (a list, a generator, a query result), read once, item by item.

    Positions are item indexes; a resume re-iterates and skips what is done, so
    pass a re-iterable (a list) or a factory (``lambda: gen()``) to resume.
    """

    def __init__(
        self, items: Iterable[Any] | Callable[[], Iterable[Any]], *, fingerprint: str | None = None
    ) -> None:
        self._items = items
        self._fingerprint = fingerprint

    def _iterable(self) -> Iterable[Any]:
        if callable(self._items) and not isinstance(self._items, Iterable):
            return self._items()
        return self._items

    def fingerprint(self) -> str:
        if self._fingerprint is not None:
            return self._fingerprint
        items = self._items
        if isinstance(items, Sequence):
            digest = hashlib.sha256(f"{type(items).__name__}:{len(items)}".encode())
            for item in (items[0], items[-1]) if items else ():
                digest.update(repr(item).encode())
            return digest.hexdigest()[:32]
        return f"iterable:{type(items).__name__}"

    def size(self) -> SourceSize:
        items = self._items
        return SourceSize(items=len(items) if isinstance(items, Sequence) else None)

    def read(self, start: Position | None = None) -> Iterator[Record]:
        skip = 0 if start is None else start[0]
        items = iter(self._iterable())
        if skip:
            next(itertools.islice(items, skip, skip), None)  # consume what is done
        # Records are built in C and returned as a map, not yielded: no Python frame per
        # item on this hot path.
        make = functools.partial(tuple.__new__, Record)
        return map(
            make,
            zip(
                itertools.count(skip),
                itertools.count(skip),
                items,
                itertools.repeat(None),
                itertools.repeat(""),
                itertools.repeat("item"),
            ),
        )

    def read_at(self, positions: Iterable[Position]) -> Iterator[Record]:
        """The items at ``positions`` (index, index), in order, iterating once."""
        wanted = [index for index, ordinal in _wanted(positions) if index == ordinal >= 0]
        if not wanted:
            return
        targets = iter(wanted)
        target = next(targets)
        for index, item in enumerate(self._iterable()):
            if index == target:
                yield Record(index, index, item, None, "", "item")
                target = next(targets, -1)
                if target < 0:
                    return
