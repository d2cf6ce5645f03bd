"""The keys an upsert into PostgreSQL touches, as the server compares them.

A job with ordered writes (``freight load --key``) lets two chunks write at once when
no key is in both (:class:`~freight.jobs._chunk.WriteOrder`): their upserts commute.
The keys must be read so that two values the server holds equal are one key here, or
the older chunk's value could land last. Reading more keys equal than the server does
is harmless (a chunk waits when it need not); fewer is not. So:

- only integer and text key columns are read (any other type: unknown, ``None``, and
  the chunk waits for every chunk before it), and only where the sink found the table
  free of what makes writes of distinct keys interact (a nondeterministic collation,
  another unique index, a trigger: :data:`COMMUTES_SQL`);
- integers are read by ``int``, which takes every spelling PostgreSQL takes (spaces,
  sign, leading zeros) and refuses the prefixed ones of PostgreSQL 16 (unknown then);
- a text is its characters without trailing spaces (a ``varchar(n)`` cuts the spaces
  past ``n``) and, in a chunk with quotes, without its quote characters (PostgreSQL
  opens a quoted part at a quote anywhere in a field, the csv module only at its
  start: without them both read the same characters, once each record has as many
  fields as columns);
- a NULL is the empty text (a unique index may treat NULLs as equal; an unquoted and a
  quoted empty field are one to the csv module), and a NULL or empty integer ``None``.
"""

from __future__ import annotations

import csv
import io
import itertools
import operator
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

__all__ = ["COMMUTES_SQL", "conflict_keys"]

_INTEGERS = frozenset({"bigint", "integer", "smallint"})
_TEXTS = frozenset({"text", "character varying"})

# Whether upserts of distinct keys into the table %(table)s (a regclass's text) may run
# in any order: a plain table (not partitioned, no rule), no nondeterministic collation
# on a column or in an index, no unique or exclusion index but on exactly the conflict
# key's columns (%(key)s), no foreign key to itself, no user trigger. False: they may not.
COMMUTES_SQL = """
SELECT (SELECT relkind = 'r' AND NOT relhasrules FROM pg_class WHERE oid = %(table)s::regclass)
AND NOT EXISTS (
    SELECT 1 FROM pg_attribute a JOIN pg_collation c ON c.oid = a.attcollation
    WHERE a.attrelid = %(table)s::regclass AND NOT c.collisdeterministic
) AND NOT EXISTS (
    SELECT 1 FROM pg_index i, unnest(i.indcollation::oid[]) AS ic(oid)
    JOIN pg_collation c ON c.oid = ic.oid
    WHERE i.indrelid = %(table)s::regclass AND NOT c.collisdeterministic
) AND NOT EXISTS (
    SELECT 1 FROM pg_index i
    WHERE i.indrelid = %(table)s::regclass AND (i.indisunique OR i.indisexclusion)
      AND NOT (i.indisunique AND i.indexprs IS NULL AND i.indpred IS NULL
               AND (SELECT array_agg(a.attname::text ORDER BY a.attname)
                    FROM pg_attribute a
                    WHERE a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey))
                   = (SELECT array_agg(k ORDER BY k) FROM unnest(%(key)s::text[]) AS k))
) AND NOT EXISTS (
    SELECT 1 FROM pg_constraint f
    WHERE f.conrelid = %(table)s::regclass AND f.confrelid = f.conrelid AND f.contype = 'f'
) AND NOT EXISTS (
    SELECT 1 FROM pg_trigger t WHERE t.tgrelid = %(table)s::regclass AND NOT t.tgisinternal
)
"""


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
    quoted = False
    if csv_texts:
        if columns is None or any(k not in columns for k in key):
            return None
        quoted = '"' in "".join(items)
        found = _csv_fields(items, [list(columns).index(k) for k in key], len(columns), quoted)
    else:
        found = _mapping_fields(items, key)
    if found is None:
        return None
    try:
        read = [
            _integers(values) if types[k] in _INTEGERS else _texts(values, quoted)
            for k, values in zip(key, found, strict=True)
        ]
    except (TypeError, ValueError):
        return None
    return set(read[0]) if len(read) == 1 else set(zip(*read, strict=True))


def _csv_fields(
    texts: Sequence[str], places: list[int], width: int, quoted: bool
) -> list[list[str | None]] | None:
    """The fields at ``places`` of each CSV record text (an unquoted empty one ``None``
    where no record is quoted), or ``None`` when a record is not ``width`` fields."""
    if quoted:  # read as the csv module does; as many fields as PostgreSQL reads
        rows = list(csv.reader(io.StringIO("".join(texts))))
        if len(rows) != len(texts) or any(len(row) != width for row in rows):
            return None
        return [[row[place] for row in rows] for place in places]
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


def _integers(values: list[Any]) -> list[Hashable]:
    """Integer keys: a CSV field (or a mapping's string) read by ``int``, a mapping's
    ``int`` as it is; NULL and an empty field (NULL, or refused: no row) ``None``."""
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


def _texts(values: list[Any], quoted: bool) -> list[Hashable]:
    """Text keys: strings (or NULL, as ``''``) without trailing spaces, and without
    quote characters when ``quoted`` (see the module)."""
    if not all(value is None or type(value) is str for value in values):
        raise TypeError("a text key that is not a string")
    if quoted:
        return [(value or "").replace('"', "").rstrip(" ") for value in values]
    return [(value or "").rstrip(" ") for value in values]
