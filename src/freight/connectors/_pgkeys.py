"""The keys an upsert into PostgreSQL touches, as the server compares them.

A job with ordered writes (``freight load --key``) lets two chunks write at once when
no key is in both (:class:`~freight.jobs._chunk.WriteOrder`): their upserts commute.
The keys must be read as the server reads them, or two spellings of one key would
pass as two keys and the older chunk's value could land last. So only key columns
whose values freight reads exactly as the server does are read: integers (``int``
takes every spelling PostgreSQL takes, and refuses the prefixed ones of PostgreSQL
16, which then count as unknown) and text (compared as written: the default
collations are deterministic). Any other type, or a value that cannot be read, makes
the keys unknown (``None``): the chunk then waits for every chunk before it.

Reading more keys than the write touches is harmless (a chunk waits when it need
not); reading fewer is not. A NULL is kept as ``None`` (a unique index may treat NULLs
as equal), and an empty field of a quoted chunk, which may be NULL or ``''``, as
``''``: a key of every chunk that may hold it.
"""

from __future__ import annotations

import csv
import io
import itertools
import operator
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any

__all__ = ["conflict_keys"]

_INTEGERS = frozenset({"bigint", "integer", "smallint"})
_TEXTS = frozenset({"text", "character varying"})


def conflict_keys(
    items: Sequence[Any],
    *,
    csv_texts: bool,
    columns: Sequence[str] | None,
    key: Sequence[str],
    types: Mapping[str, str] | None,
) -> set[Hashable] | None:
    """The keys of ``items`` (CSV record texts in ``columns`` order, or mappings), or
    ``None`` when any cannot be read as the server reads it (see the module)."""
    if not key or types is None or any(types.get(k) not in _INTEGERS | _TEXTS for k in key):
        return None
    if csv_texts:
        if columns is None or any(k not in columns for k in key):
            return None
        fields = _csv_fields(items, [list(columns).index(k) for k in key])
    else:
        fields = _mapping_fields(items, key)
    if fields is None:
        return None
    try:
        read = [_reader(types[k], csv_texts)(values) for k, values in zip(key, fields, strict=True)]
    except (TypeError, ValueError):
        return None
    return set(read[0]) if len(read) == 1 else set(zip(*read, strict=True))


def _csv_fields(texts: Sequence[str], places: list[int]) -> list[list[str | None]] | None:
    """The fields at ``places`` of each CSV record text, an unquoted empty one as
    ``None`` (NULL), or ``None`` when a record has too few fields."""
    if '"' in "".join(texts):  # quoted fields: read as the csv module does
        rows = list(csv.reader(io.StringIO("".join(texts))))
        if len(rows) != len(texts):
            return None
        try:
            return [[row[place] for row in rows] for place in places]
        except IndexError:
            return None
    last = max(places)
    split = list(map(str.split, texts, itertools.repeat(","), itertools.repeat(last + 1)))
    out: list[list[str | None]] = []
    for place in places:
        try:
            values = list(map(operator.itemgetter(place), split))
        except IndexError:
            return None
        if place == last:  # it may be the record's last field, with the line's end
            values = [v.rstrip("\r\n") for v in values]
        out.append([v or None for v in values])
    return out


def _mapping_fields(items: Sequence[Any], key: Sequence[str]) -> list[list[Any]] | None:
    """The key fields of each mapping, or ``None`` when an item is not a mapping or
    lacks one (its row would take the column's default)."""
    try:
        return [[item[k] for item in items] for k in key]
    except (KeyError, TypeError, IndexError):
        return None


def _reader(kind: str, csv_texts: bool) -> Callable[[list[Any]], list[Hashable]]:
    """How the values of a key column of type ``kind`` are read (ValueError, TypeError:
    one cannot be read as the server would)."""
    return _integers if kind in _INTEGERS else _csv_texts if csv_texts else _texts


def _integers(values: list[Any]) -> list[Hashable]:
    """Integer keys: a CSV field read by ``int``, a mapping's value an ``int``; NULL and
    an empty quoted field (refused: no row) as ``None``."""
    if all(map(isinstance, values, itertools.repeat(str))) and "" not in values:
        return list(map(int, values))  # the rule, in C: every field of a CSV chunk
    read: list[Hashable] = []
    for value in values:
        if value is None or value == "":
            read.append(None)
        elif type(value) is str or type(value) is int:
            read.append(int(value))
        else:  # a bool, a float, another type: the server's cast may differ
            raise TypeError(value)
    return read


def _csv_texts(values: list[Any]) -> list[Hashable]:
    return values


def _texts(values: list[Any]) -> list[Hashable]:
    """Text keys of mappings: strings (or NULL), as written."""
    if not all(value is None or type(value) is str for value in values):
        raise TypeError("a text key that is not a string")
    return values
