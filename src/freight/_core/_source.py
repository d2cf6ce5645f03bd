"""The source port's values: records with resumable positions (pure data, no I/O)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

__all__ = ["Position", "Record", "SourceSize"]

Position = tuple[int, int]
"""``(offset, ordinal)``: where reading restarts, and the record number there."""


class Record(NamedTuple):
    """One record of a source (a tuple: cheap to make a million of).

    Attributes:
        offset: where reading can restart at this record.
        ordinal: the record's number there (its line number in a file).
        item: the converted value (``None`` when ``error`` is set).
        error: why the record could not be read or converted, if it could not.
        raw: an excerpt of the record as read, for dead letters.
        unit: what ``ordinal`` counts (``"line"``, ``"item"``).
    """

    offset: int
    ordinal: int
    item: Any
    error: Exception | None = None
    raw: str = ""
    unit: str = "line"

    @property
    def position(self) -> Position:
        """``(offset, ordinal)``: where a resumed read starts to get this record again."""
        return (self.offset, self.ordinal)

    @property
    def id(self) -> str:
        """How a person finds the record again (``"line 12"``, ``"item 5"``)."""
        return f"{self.unit} {self.ordinal}"


@dataclass(frozen=True, slots=True)
class SourceSize:
    """How big a source is, when that is cheap to know: items, bytes, or neither."""

    items: int | None = None
    bytes: int | None = None
