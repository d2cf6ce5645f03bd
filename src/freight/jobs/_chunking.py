"""Cutting a source into chunks: kept boundaries on resume, then sized chunks.

Records come through a :class:`Feed`, which takes them one at a time (phase 1, the
boundaries an earlier execution recorded) or many at once (phase 2, the hot loop). A
source read in groups (``CsvSource``) hands plain lines over as :class:`Lines`, and a
chunk made of them only is one :class:`Lines`: its records are made only when asked for.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from dataclasses import dataclass

from freight.jobs._lines import Lines
from freight.jobs._sources import Position, Record
from freight.store import ChunkCheckpoint

__all__ = ["OPEN", "Chunk", "ChunkSizer", "Feed", "fixed_boundaries", "started_chunks"]


@dataclass(slots=True)
class Chunk:
    index: int
    records: Sequence[Record]  # a list, or Lines (plain lines, records made when asked)
    end: Position | None = None


class Feed(Iterator[Record]):
    """A source's records, from groups (each :class:`Lines` or any iterable of records):
    taken one at a time (``next``) or up to ``n`` at once (:meth:`take`), where a group
    of lines stays lines. Each record is handled once: a group of lines is read through
    a cursor (never copied past it), a record looked at by :meth:`peek` is kept aside."""

    __slots__ = ("_at", "_groups", "_lines", "_offset", "_peeked", "_records")

    def __init__(self, groups: Iterable[Iterable[Record]]) -> None:
        self._groups = iter(groups)
        self._lines: Lines | None = None  # the group being read, if lines: from line _at
        self._at = 0
        self._offset = 0  # where line _at starts
        self._records: Iterator[Record] | None = None  # the group being read, if records
        self._peeked: Record | None = None  # read from _records, not handed out yet

    def _advance(self) -> bool:
        """Whether a record is left, the group holding it made current."""
        while True:
            if self._peeked is not None:
                return True
            if self._lines is not None:
                if self._at < len(self._lines):
                    return True
                self._lines = None
            if self._records is not None:
                self._peeked = next(self._records, None)
                if self._peeked is not None:
                    return True
                self._records = None
            group = next(self._groups, None)
            if group is None:
                return False
            if isinstance(group, Lines):
                self._lines, self._at, self._offset = group, 0, group.offset
            else:
                self._records = iter(group)

    def __next__(self) -> Record:
        if not self._advance():
            raise StopIteration
        record = self._peeked
        if record is not None:
            self._peeked = None
            return record
        lines, at = self._lines, self._at
        assert lines is not None  # _advance: a record is left, in lines or records
        record = Record(self._offset, lines.line + at, lines.texts[at])
        self._at, self._offset = at + 1, self._offset + lines.lengths[at]
        return record

    def take(self, n: int) -> list[Sequence[Record]]:
        """Up to ``n`` records (fewer only where the source ends), as parts."""
        parts: list[Sequence[Record]] = []
        while n > 0 and self._advance():
            part: Sequence[Record]
            if self._peeked is not None:
                part = [self._peeked]
                self._peeked = None
                if self._records is not None:
                    part.extend(itertools.islice(self._records, n - 1))
            else:
                lines, at = self._lines, self._at
                assert lines is not None  # _advance: a record is left, in lines or records
                stop = min(len(lines), at + n)
                if at == 0 and stop == len(lines):
                    part = lines
                elif lines.is_block:  # cut as bytes, the rest kept as the group
                    assert at == 0  # a group read one record at a time is made texts
                    part, self._lines = lines.split(stop)
                    stop = 0
                else:
                    part = Lines(self._offset, lines.line + at, lines.lengths[at:stop],
                                 lines.texts[at:stop])  # fmt: skip
                self._at, self._offset = stop, self._offset + part.length
            parts.append(part)
            n -= len(part)
        return parts

    def peek(self) -> Position | None:
        """Where the next record starts (``None``: the source ended), not taking it."""
        if not self._advance():
            return None
        if self._peeked is not None:
            return self._peeked.position
        assert self._lines is not None
        return (self._offset, self._lines.line + self._at)

    def chunks(self, current: list[Record], index: int, size: Callable[[], int]) -> Iterator[Chunk]:
        """Phase 2 of chunking: chunks of ``size()`` records (the first one completing
        ``current``, the records phase 1 read past its chunks), each knowing where the
        next one starts."""
        parts: list[Sequence[Record]] = [current] if current else []
        parts += self.take(max(0, size() - len(current)))
        while parts:
            end = self.peek()
            yield Chunk(index, _joined(parts), end)
            if end is None:
                return
            index += 1
            parts = self.take(size())


def _joined(parts: list[Sequence[Record]]) -> Sequence[Record]:
    """One sequence of the records of ``parts``: :class:`Lines` if they are all lines."""
    if all(isinstance(p, Lines) for p in parts):
        lines = Lines.joined(parts)  # type: ignore[arg-type]  # all Lines, checked above
        if lines is not None:
            return lines
    if len(parts) == 1 and isinstance(parts[0], list):
        return parts[0]
    return list(itertools.chain.from_iterable(parts))


OPEN = -1  # the end of the last started chunk: not recorded, so free to choose


def fixed_boundaries(started: list[ChunkCheckpoint]) -> list[tuple[int, int | None, bool]]:
    """``(index, end ordinal, done)`` of chunks an earlier execution started.

    A done chunk ends where it recorded (``None``: the end of the source); a chunk
    that was not done ends where the next started one begins; the last one is open.
    """
    out: list[tuple[int, int | None, bool]] = []
    for n, chunk in enumerate(started):
        end: int | None
        if chunk.status == "done":
            end = chunk.end[1] if chunk.end else None
        elif n + 1 < len(started):
            end = started[n + 1].start[1]
        else:
            end = OPEN
        out.append((chunk.index, end, chunk.status == "done"))
    return out


def started_chunks(
    fixed: list[tuple[int, int | None, bool]], records: Iterator[Record], next_index: int
) -> Generator[Chunk, None, tuple[list[Record], int] | None]:
    """Phase 1 of chunking: chunks an earlier execution started keep their boundaries.

    Yields those not done; returns the records read past them and the next chunk
    index, or ``None`` when the source ended.
    """
    current: list[Record] = []
    for slot, (index, end, done) in enumerate(fixed):
        if end == OPEN:  # the last one started: refill it to the current size
            return current, index
        for record in records:
            if end is not None and record.ordinal >= end:
                if current and not done:
                    yield Chunk(index, current, record.position)
                current = [record]
                break
            current.append(record)
        else:  # the source ended inside this chunk
            if current and not done:
                yield Chunk(index, current, None)
            return None
        if slot == len(fixed) - 1:
            break
    return current, next_index


class ChunkSizer:
    """Chunk size: fixed, or ``"auto"``: aiming at ``target`` seconds per chunk."""

    def __init__(self, chunk_size: int | None, target: float, low: int, high: int) -> None:
        self.auto = chunk_size is None
        self.size = chunk_size if chunk_size is not None else min(max(1000, low), high)
        self.target, self.low, self.high = target, low, high

    def observe(self, items: int, seconds: float) -> None:
        """Adjust from a finished chunk's measured throughput (halfway to the ideal)."""
        if not self.auto or items == 0 or seconds <= 0:
            return
        ideal = items / seconds * self.target
        self.size = int(min(self.high, max(self.low, (self.size + ideal) / 2)))
