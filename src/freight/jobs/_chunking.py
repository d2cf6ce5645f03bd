"""Cutting a source into chunks: kept boundaries on resume, then sized chunks."""

from __future__ import annotations

from collections.abc import Generator, Iterator
from dataclasses import dataclass

from freight.jobs._sources import Position, Record
from freight.store import ChunkCheckpoint

__all__ = ["OPEN", "Chunk", "ChunkSizer", "fixed_boundaries", "started_chunks"]


@dataclass(slots=True)
class Chunk:
    index: int
    records: list[Record]
    end: Position | None = None


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
