"""Consecutive lines of a file as raw records, kept as their texts: no tuple per line.

A load of plain CSV lines into ``COPY`` needs of each line only its text; the engine
needs a chunk's first and last positions and its length. A :class:`Lines` holds the
texts and byte lengths of lines that follow one another in a file and is a sequence
of the very records :class:`~freight.jobs.CsvSource` makes of them in raw mode
(``Record(offset, line, text)``), made only when asked for: a dead letter, a worker
process, a checkpoint's first and last record. A million lines cost a list of texts and
a list of lengths instead of a million tuples (about 0.3 s of CPU on the bench's
machine, the largest single cost of a load's reading).

Lines of a UTF-8 file go further: they are kept as the one text they were read as
(:meth:`Lines.of_block`), cut and joined as bytes, and a sink that takes CSV lines as
one text (:meth:`Lines.block`) never has a string made per line: ~0.15 s less CPU per
1M lines. Their texts and lengths are made the first time something asks for them.
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

    __slots__ = (
        "_begin", "_crlf", "_data", "_lengths", "_n", "_open", "_stop", "_texts", "length",
        "line", "offset",
    )  # fmt: skip

    def __init__(self, offset: int, line: int, lengths: list[int], texts: list[str]) -> None:
        if len(lengths) != len(texts):
            raise ValueError(f"{len(lengths)} lengths for {len(texts)} texts")
        self.offset, self.line = offset, line
        self._lengths: list[int] | None = lengths
        self._texts: list[str] | None = texts
        self._n, self.length = len(texts), sum(lengths)
        self._data: bytes | None = None
        self._begin = self._stop = 0
        self._crlf = self._open = False

    @classmethod
    def of_block(
        cls,
        offset: int,
        line: int,
        data: bytes,
        count: int,
        *,
        crlf: bool = False,
        open_end: bool = False,
        begin: int = 0,
        stop: int | None = None,
    ) -> Lines:
        """``count`` lines kept as one text: ``data[begin:stop]``, UTF-8, each line ending
        in ``\\n`` and holding no ``\\r``. ``crlf``: each was read ending in ``\\r\\n``;
        ``open_end``: the last one was read without an ending (the file's last line)."""
        self = cls.__new__(cls)
        self.offset, self.line, self._n = offset, line, count
        self._data, self._begin = data, begin
        self._stop = len(data) if stop is None else stop
        self._crlf, self._open = crlf, open_end and count > 0
        self._texts = self._lengths = None
        self.length = self._stop - begin + crlf * (count - self._open) - self._open
        return self

    @property
    def texts(self) -> list[str]:
        """Each line's text, ending in ``\\n`` (made now if kept as one text)."""
        if self._texts is None:
            self._made()
        assert self._texts is not None
        return self._texts

    @property
    def lengths(self) -> list[int]:
        """Each line's length in bytes, as read (made now if kept as one text)."""
        if self._lengths is None:
            self._made()
        assert self._lengths is not None
        return self._lengths

    @property
    def is_block(self) -> bool:
        """Whether these lines are kept as one text only (no texts made yet)."""
        return self._data is not None and self._texts is None

    def block(self) -> bytes | None:
        """The lines as one UTF-8 text, each ending in ``\\n`` (what ``COPY`` reads), if
        they are kept so (:meth:`of_block`); ``None``: kept as texts."""
        return None if self._data is None else self._data[self._begin : self._stop]

    def _made(self) -> None:
        """The texts and lengths of lines kept as one text."""
        assert self._data is not None
        # No \r in the text: splitlines cuts at \n alone, as the lines were read.
        lines = self._data[self._begin : self._stop].splitlines(keepends=True)
        lengths = list(map(len, lines))
        if self._crlf:
            lengths = [n + 1 for n in lengths]
        if lengths:
            lengths[-1] += self.length - sum(lengths)  # an open last line: no ending read
        self._texts, self._lengths = list(map(bytes.decode, lines)), lengths

    def __len__(self) -> int:
        return self._n

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
        data = self._data
        if self._texts is None and data is not None:  # the first or last, found as bytes
            if i == 0:
                text = data[self._begin : data.index(b"\n", self._begin) + 1]
                return Record(self.offset, self.line, text.decode())
            if i == self._n - 1:
                text = data[data.rindex(b"\n", self._begin, self._stop - 1) + 1 : self._stop]
                read = len(text) - 1 if self._open else len(text) + self._crlf
                return Record(self.offset + self.length - read, self.line + i, text.decode())
        lengths = self.lengths
        # from the nearer end: a chunk's last record is asked for at each checkpoint
        before = sum(lengths[:i]) if 2 * i <= len(self) else self.length - sum(lengths[i:])
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

    def texts_only(self) -> Lines:
        """These lines kept as texts (their texts and lengths made now if need be)."""
        if self._data is None:
            return self
        return Lines(self.offset, self.line, self.lengths, self.texts)

    def split(self, n: int) -> tuple[Lines, Lines]:
        """The first ``n`` lines and the rest (of lines kept as one text: cut where the
        ``n``-th line ends, the text shared, not copied)."""
        data = self._data
        if data is None or not self.is_block:
            lengths, texts = self.lengths, self.texts
            head = Lines(self.offset, self.line, lengths[:n], texts[:n])
            return head, Lines(*head.end, lengths[n:], texts[n:])
        n = max(0, min(n, self._n))
        cut = _after(data, self._begin, self._stop, n, self._n)
        head = Lines.of_block(self.offset, self.line, data, n, crlf=self._crlf,
                              open_end=self._open and n == self._n, begin=self._begin,
                              stop=cut)  # fmt: skip
        rest = Lines.of_block(*head.end, data, self._n - n, crlf=self._crlf,
                              open_end=self._open, begin=cut, stop=self._stop)  # fmt: skip
        return head, rest

    @classmethod
    def joined(cls, parts: Sequence[Lines]) -> Lines | None:
        """One :class:`Lines` of ``parts`` that follow one another, else ``None`` (kept as
        one text where they all are, with the same line ending)."""
        first = parts[0]
        for before, after in itertools.pairwise(parts):
            if before.end != after.start:
                return None
        if len(parts) == 1:
            return first
        parts = [p for p in parts if len(p)] or [first]  # an empty one joins nothing
        if len(parts) == 1:
            return parts[0]
        first, last = parts[0], parts[-1]
        if all(
            p._data is not None and p._crlf == first._crlf and (p is last or not p._open)
            for p in parts
        ):
            data = b"".join(memoryview(p._data or b"")[p._begin : p._stop] for p in parts)
            return cls.of_block(first.offset, first.line, data, sum(map(len, parts)),
                                crlf=first._crlf, open_end=last._open)  # fmt: skip
        lengths = list(itertools.chain.from_iterable(p.lengths for p in parts))
        texts = list(itertools.chain.from_iterable(p.texts for p in parts))
        return cls(first.offset, first.line, lengths, texts)


def _after(data: bytes, begin: int, stop: int, n: int, count: int) -> int:
    """Where the ``n``-th of the ``count`` lines of ``data[begin:stop]`` ends (each ends
    in ``\\n``): newlines counted in halving windows, in C, about the lines' own bytes
    scanned, not the whole text's (a chunk of 100 lines cut from 1 MiB)."""
    if n <= 0:
        return begin
    if n >= count:
        return stop
    lo, need = begin, n
    # A first window of 5/4 of the mean line's length per line: it most often holds them.
    hi = min(stop, begin + (stop - begin) * n // count * 5 // 4 + 1024)
    if data.count(b"\n", lo, hi) < need:
        hi = stop
    while need > 8:
        mid = (lo + hi) // 2
        found = data.count(b"\n", lo, mid)
        if found >= need:
            hi = mid
        else:
            lo, need = mid, need - found
    for _ in range(need):
        lo = data.index(b"\n", lo) + 1
    return lo
