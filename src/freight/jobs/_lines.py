"""Consecutive lines of a file as raw records, kept as their texts: no tuple per line.

A load of plain CSV lines into ``COPY`` needs of each line only its text; the engine
needs a chunk's first and last positions and its length. A :class:`Lines` holds the
texts and byte lengths of lines that follow one another in a file and is a sequence
of the very records :class:`~freight.jobs.CsvSource` makes of them in raw mode
(``Record(offset, line, text)``), made only when asked for: a dead letter, a worker
process, a checkpoint's first and last record. A million lines cost a list of texts and
a list of lengths instead of a million tuples (about 0.3 s of CPU on the bench's
machine, the largest single cost of a load's reading).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from typing import overload

from freight._core._source import Position, Record

__all__ = ["Lines"]


class Lines(Sequence[Record]):
    """Raw records of consecutive lines: line ``i`` is
    ``Record(offset + sum(lengths[:i]), line + i, texts[i])``.

    Args:
        offset: the byte offset (in the decompressed stream) where the first line starts.
        line: the first line's number.
        lengths: each line's length in bytes, as read (``\\r\\n`` counts two).
        texts: each line's text, as its record's item.
    """

    __slots__ = ("length", "lengths", "line", "offset", "texts")

    def __init__(self, offset: int, line: int, lengths: list[int], texts: list[str]) -> None:
        if len(lengths) != len(texts):
            raise ValueError(f"{len(lengths)} lengths for {len(texts)} texts")
        self.offset, self.line, self.lengths, self.texts = offset, line, lengths, texts
        self.length = sum(lengths)

    def __len__(self) -> int:
        return len(self.texts)

    @overload
    def __getitem__(self, index: int) -> Record: ...

    @overload
    def __getitem__(self, index: slice) -> Sequence[Record]: ...

    def __getitem__(self, index: int | slice) -> Record | Sequence[Record]:
        if isinstance(index, slice):
            start, stop, step = index.indices(len(self))
            if step != 1:
                return list(self)[index]
            return self.split(start)[1].split(max(0, stop - start))[0]
        i = index + len(self) if index < 0 else index
        if not 0 <= i < len(self):
            raise IndexError("Lines index out of range")
        # from the nearer end: a chunk's last record is asked for at each checkpoint
        before = (
            sum(self.lengths[:i]) if 2 * i <= len(self) else self.length - sum(self.lengths[i:])
        )
        return Record(self.offset + before, self.line + i, self.texts[i])

    def __iter__(self) -> Iterator[Record]:
        repeat = itertools.repeat
        starts = itertools.accumulate(self.lengths, initial=self.offset)
        fields = zip(
            starts, itertools.count(self.line), self.texts, repeat(None), repeat(""),
            repeat("line"),
        )  # fmt: skip
        return map(tuple.__new__, repeat(Record), fields)  # in C: no frame per record

    def __repr__(self) -> str:
        return f"Lines({self.offset}, {self.line}, {len(self)} lines)"

    @property
    def start(self) -> Position:
        """Where the first line starts."""
        return (self.offset, self.line)

    @property
    def end(self) -> Position:
        """Where the line after the last one starts."""
        return (self.offset + self.length, self.line + len(self))

    def split(self, n: int) -> tuple[Lines, Lines]:
        """The first ``n`` lines and the rest."""
        head = Lines(self.offset, self.line, self.lengths[:n], self.texts[:n])
        rest = Lines(*head.end, self.lengths[n:], self.texts[n:])
        return head, rest

    @classmethod
    def joined(cls, parts: Sequence[Lines]) -> Lines | None:
        """One :class:`Lines` of ``parts`` that follow one another, else ``None``."""
        first = parts[0]
        for before, after in itertools.pairwise(parts):
            if before.end != after.start:
                return None
        if len(parts) == 1:
            return first
        lengths = list(itertools.chain.from_iterable(p.lengths for p in parts))
        texts = list(itertools.chain.from_iterable(p.texts for p in parts))
        return cls(first.offset, first.line, lengths, texts)
