"""CSV record texts for ``SqliteSink(format="csv")``: split a whole column at a time, or
read one by one as ``CsvSource`` reads them.

Rules:

1. A chunk takes the whole-column path only when it can land exactly as its mappings
   would: every column declared as freight declares its type (:func:`csv_kinds`), no
   quote and no ``\\r`` in its texts, each text one line of the columns (checked here
   unless the source already counted each line's fields), and each column in its
   type's plain form (:func:`~freight.connectors._sqltypes.bind_column`).
2. Any other chunk is read text by text as ``CsvSource`` reads a record (a field past
   the csv module's limit too): the per-item path then converts each row or refuses it
   with its reason, as for a load of mappings. A text that is not one record of the
   columns stays a text, refused alone.
3. Nothing here writes: the sink binds and writes what these give it.
"""

from __future__ import annotations

import contextlib
import csv
import itertools
from collections.abc import Mapping, Sequence
from typing import Any

from freight._csvrecord import FIELD_TOO_LARGE, read_big
from freight.connectors._sqltypes import DDL_TYPES, bind_column

__all__ = ["CsvTexts", "csv_kinds"]


def csv_kinds(
    declared: Mapping[str, str], types: Mapping[str, str], names: Sequence[str]
) -> list[str] | None:
    """The freight type of each column ``names`` a text holds, when each is declared as
    freight declares it (the affinity :func:`bind_column` counts on); else ``None``."""
    kinds = []
    for column in names:
        if " ".join(declared.get(column, "").upper().split()) != DDL_TYPES[types[column]]:
            return None
        kinds.append(types[column])
    return kinds


class CsvTexts:
    """How a sink reads CSV record texts of the columns ``names`` (rules above).

    Args:
        names: the columns of a text, in order (the file's header).
        kinds: their freight types, or ``None`` when the whole-column path cannot be
            taken (:func:`csv_kinds`).
        delimiter, quotechar: the dialect.
        lines_checked: each text is known to be one line of the columns (a raw
            ``CsvSource`` counted its fields): :meth:`rows` does not check it again.
    """

    __slots__ = ("delimiter", "kinds", "lines_checked", "names", "quotechar")

    def __init__(
        self,
        names: Sequence[str],
        kinds: list[str] | None,
        delimiter: str,
        quotechar: str,
        lines_checked: bool,
    ) -> None:
        self.names = list(names)
        self.kinds = kinds
        self.delimiter = delimiter
        self.quotechar = quotechar
        self.lines_checked = lines_checked

    def rows(self, texts: list[Any]) -> list[tuple[Any, ...]] | None:
        """The rows of ``texts`` bound a whole column at a time, or ``None`` when they
        need :meth:`items` (rule 1): the texts joined, split at the delimiter in C,
        each column a slice, no dict per row."""
        kinds = self.kinds
        try:
            joined = "".join(texts)
        except TypeError:  # not all text
            return None
        if kinds is None or self.quotechar in joined or "\r" in joined:
            return None
        delimiter, width = self.delimiter, len(kinds)
        if not self.lines_checked and not _one_line_each(texts, joined, delimiter, width):
            return None
        return self._bound(joined, len(texts))

    def rows_of(self, text: str) -> list[tuple[Any, ...]] | None:
        """:meth:`rows` of plain CSV lines given as one text (each ending in ``\\n``, one
        record each: lines :class:`~freight.jobs.CsvSource` read as plain)."""
        if self.kinds is None or self.quotechar in text or "\r" in text:
            return None
        return self._bound(text, text.count("\n"))

    def _bound(self, joined: str, count: int) -> list[tuple[Any, ...]] | None:
        """The rows of ``count`` records of ``joined``, each column bound in C."""
        assert self.kinds is not None
        delimiter, kinds, width = self.delimiter, self.kinds, len(self.kinds)
        values = joined.replace("\n", delimiter).split(delimiter)
        if values.pop() != "" or len(values) != width * count:
            return None  # (cheap, and enough when each text is known to be one line)
        bound = [bind_column(kind, values[index::width]) for index, kind in enumerate(kinds)]
        if any(column is None for column in bound):
            return None
        return list(zip(*bound, strict=True))

    def items(self, texts: list[Any]) -> list[Any]:
        """``texts`` as the mappings ``CsvSource`` makes of them (rule 2)."""
        names, delimiter, quote = self.names, self.delimiter, self.quotechar
        items: list[Any] = []
        for text in texts:
            try:
                rows = list(csv.reader([text], delimiter=delimiter, quotechar=quote, strict=True))
            except csv.Error as exc:
                rows = []
                if str(exc).startswith(FIELD_TOO_LARGE):  # read as CsvSource reads it
                    with contextlib.suppress(csv.Error):
                        rows = [read_big(iter(text.splitlines(keepends=True)), delimiter, quote)]
            except TypeError:  # not text
                rows = []
            if len(rows) == 1 and len(rows[0]) == len(names):
                items.append(dict(zip(names, rows[0], strict=True)))
            else:
                items.append(text)
        return items


def _one_line_each(texts: list[str], joined: str, delimiter: str, width: int) -> bool:
    """Each of ``texts`` is one line of ``width`` fields, ending in its only ``\\n`` (so
    that the columns of their joined text line up), checked a whole chunk at a time in C
    (~0.14 s a million rows)."""
    repeat = itertools.repeat
    return (
        joined.count("\n") == len(texts)
        and all(map(str.endswith, texts, repeat("\n")))
        and set(map(str.count, texts, repeat(delimiter))) == {width - 1}
    )
