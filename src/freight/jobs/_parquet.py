"""``ParquetSource``: a Parquet file streamed batch by batch (extra ``freight[parquet]``).

A source like the others in :mod:`freight.jobs._sources`: it yields :class:`Record`
values with their positions (row indexes), never the whole file, and a row that
cannot be converted is yielded with its error so the job dead-letters it.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from freight._core._source import Position, Record, SourceSize
from freight._errors import ConfigError
from freight.jobs._sources import (
    _EXCERPT,
    _converter,
    _existing_file,
    _file_fingerprint,
    _validation,
    _wanted,
)

__all__ = ["ParquetSource"]


class ParquetSource:
    """A Parquet file (extra ``freight[parquet]``), streamed batch by batch.

    Positions are row indexes; a resume starts at the row group holding the row,
    so it reads at most one row group again, never the file.

    Args:
        path: the file.
        columns: the columns to read (default: all).
        batch_size: rows decoded at a time.
        convert: ``dict -> item`` or a pydantic model class.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        columns: Sequence[str] | None = None,
        batch_size: int = 10_000,
        convert: Any = None,
    ) -> None:
        try:
            import pyarrow.parquet as pq  # noqa: PLC0415  (optional extra)
        except ImportError as exc:  # pragma: no cover - only without the extra
            raise ConfigError(
                "ParquetSource needs pyarrow: pip install 'freight[parquet]'"
            ) from exc
        self.path = _existing_file(path, "ParquetSource")
        self._pq = pq
        try:
            meta = pq.ParquetFile(self.path).metadata
        except Exception as exc:
            raise ConfigError(
                f"ParquetSource: {str(self.path)!r} is not a Parquet file: {exc}"
            ) from exc
        names = set(meta.schema.names)
        missing = [c for c in columns or () if c not in names]
        if missing:
            raise ConfigError(
                f"ParquetSource: no column(s) {missing} in {self.path.name}; it has {sorted(names)}"
            )
        self.columns = list(columns) if columns is not None else None
        self.batch_size = batch_size
        self._names = list(meta.schema.to_arrow_schema().names)
        self._rows = meta.num_rows
        self._group_rows = [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]
        self._convert = _converter(convert)

    def column_names(self) -> list[str]:
        """The names of the columns read: ``columns``, else all the file's."""
        return list(self.columns) if self.columns is not None else list(self._names)

    def fingerprint(self) -> str:
        return _file_fingerprint(self.path)

    def size(self) -> SourceSize:
        return SourceSize(items=self._rows)

    def read(self, start: Position | None = None) -> Iterator[Record]:
        first = 0 if start is None else start[0]
        group, row = 0, 0
        while group < len(self._group_rows) and row + self._group_rows[group] <= first:
            row += self._group_rows[group]
            group += 1
        if group == len(self._group_rows):
            return
        parquet = self._pq.ParquetFile(self.path)
        batches = parquet.iter_batches(
            batch_size=self.batch_size,
            row_groups=list(range(group, len(self._group_rows))),
            columns=self.columns,
        )
        for batch in batches:
            for value in batch.to_pylist():
                if row >= first:
                    yield self._record(row, value)
                row += 1

    def read_at(self, positions: Iterable[Position]) -> Iterator[Record]:
        """The rows at ``positions`` (``(row, row)``), in order, in one pass that decodes
        only the row groups holding one of them."""
        wanted = [row for row, ordinal in _wanted(positions) if 0 <= row == ordinal < self._rows]
        if not wanted:
            return
        starts = list(itertools.accumulate(self._group_rows, initial=0))
        groups = sorted({bisect.bisect_right(starts, row) - 1 for row in wanted})
        parquet = self._pq.ParquetFile(self.path)
        targets = iter(wanted)
        target = next(targets)
        for group in groups:
            row = starts[group]
            batches = parquet.iter_batches(
                batch_size=self.batch_size, row_groups=[group], columns=self.columns
            )
            for batch in batches:
                for value in batch.to_pylist():
                    if row == target:
                        yield self._record(row, value)
                        target = next(targets, -1)
                    row += 1

    def _record(self, row: int, value: Any) -> Record:
        if self._convert is None:
            return Record(row, row, value, None, "", "row")
        try:
            return Record(row, row, self._convert(value), None, "", "row")
        except Exception as exc:
            return Record(row, row, None, _validation(exc), repr(value)[:_EXCERPT], "row")
