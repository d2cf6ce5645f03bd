"""SQLite column types and values: freight's (PostgreSQL) types as SQLite declares them,
and each value bound as SQLite stores it exactly, or refused with the reason.

The mapping (freight type -> declared type -> what is stored) is the table in
:mod:`freight.connectors.sqlite`'s docstring: a typed column keeps every value as it was
converted. What SQLite would change on the way in is refused with a
:class:`~freight.PermanentError` naming the column (the row is dead-lettered with the
reason): ``NaN`` (stored as NULL), a NUL byte in text (PostgreSQL refuses it, and the
targets must agree), an integer beyond 64 bits, a ``numeric`` with more significant
digits than a REAL keeps (``NUMERIC`` affinity would round ``12345678901234567.89``).

The sink (:mod:`freight.connectors.sqlite`) builds its statements and runs them; this
module decides only what a column is declared as and what a value is bound as.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping
from datetime import date, datetime, time
from decimal import Decimal
from typing import Any

from freight._errors import ConfigError, PermanentError
from freight.connectors import pgtypes

__all__ = [
    "DDL_TYPES",
    "TYPED_BINDERS",
    "Binder",
    "bind",
    "bind_column",
    "canonical_types",
    "declared_type",
    "freight_type",
]

_INT64 = (-(2**63), 2**63 - 1)

DDL_TYPES = {
    "bigint": "BIGINT",
    "integer": "BIGINT",
    "smallint": "BIGINT",
    "numeric": "NUMERIC",
    "double precision": "REAL",
    "real": "REAL",
    "boolean": "BOOLEAN",
    "timestamptz": "TIMESTAMPTZ",
    "date": "DATE",
    "text": "TEXT",
    "jsonb": "TEXT",
    "json": "TEXT",
}
"""freight (PostgreSQL) type -> SQLite declared type: a fixed allow-list, never user text."""

# SQLite declared type -> freight type (what table_types reports back).
_KINDS = {
    "BIGINT": "bigint",
    "INTEGER": "bigint",
    "INT": "bigint",
    "NUMERIC": "numeric",
    "DECIMAL": "numeric",
    "REAL": "double precision",
    "DOUBLE": "double precision",
    "DOUBLE PRECISION": "double precision",
    "FLOAT": "double precision",
    "BOOLEAN": "boolean",
    "BOOL": "boolean",
    "TIMESTAMPTZ": "timestamptz",
    "DATE": "date",
}

# A type pgtypes does not (yet) know falls back to the nearest one it does.
_FALLBACK = {"double precision": "numeric", "date": "text"}


def canonical_types(types: Mapping[str, str]) -> dict[str, str]:
    """``types`` with each type named as :mod:`~freight.connectors.pgtypes` names it, and
    known to have a SQLite column type; a :class:`ConfigError` otherwise."""
    out = {}
    for column, type_name in types.items():
        kind = pgtypes.canonical(type_name)
        if kind not in DDL_TYPES:
            raise ConfigError(
                f"column {column!r}: type {type_name!r} has no SQLite column type in freight; "
                f"use one of {', '.join(sorted(set(DDL_TYPES) & set(pgtypes.TYPES)))}"
            )
        out[column] = kind
    return out


def freight_type(declared: str) -> str:
    """The freight type of a column SQLite declares as ``declared`` (SQLite's rules:
    any name with ``INT`` holds integers; what freight does not know is text)."""
    upper = " ".join(declared.upper().split())
    kind = _KINDS.get(upper) or ("bigint" if "INT" in upper else "text")
    if kind not in pgtypes.TYPES:
        kind = _FALLBACK.get(kind, "text")
    return kind


_PYTHON_KINDS: tuple[tuple[type | tuple[type, ...], str], ...] = (
    (bool, "BOOLEAN"),  # before int: a bool is an int
    (int, "BIGINT"),
    (float, "REAL"),
    (Decimal, "NUMERIC"),
    (datetime, "TIMESTAMPTZ"),  # before date: a datetime is a date
    (date, "DATE"),
    (bytes, "BLOB"),
)


def declared_type(value: Any) -> str:
    """The declared type of a column created from a first item's ``value``."""
    return next((kind for cls, kind in _PYTHON_KINDS if isinstance(value, cls)), "TEXT")


# -- values: what SQLite stores exactly, or a reason ----------------------------------------


def _nul(column: str) -> PermanentError:
    return PermanentError(f"column {column!r}: text fields cannot contain NUL (0x00) bytes")


def _not_finite(column: str, value: float | Decimal) -> PermanentError:
    nan = value.is_nan() if isinstance(value, Decimal) else math.isnan(value)  # sNaN too
    text = "NaN" if nan else ("Infinity" if value > 0 else "-Infinity")
    return PermanentError(f"column {column!r}: {text} is not a finite number")


def _decimal(value: Decimal, column: str) -> int | float:
    """``value`` as the INTEGER or REAL that holds it exactly, or a PermanentError."""
    if not value.is_finite():
        raise _not_finite(column, value)
    if value == value.to_integral_value() and _INT64[0] <= value <= _INT64[1]:
        return int(value)
    as_float = float(value)
    if math.isfinite(as_float) and Decimal(repr(as_float)) == value:
        return as_float  # its shortest repr reads back as the same number
    raise PermanentError(
        f"column {column!r}: {value} has more significant digits than SQLite keeps in a "
        "number (about 15); load this column as text to keep it exact"
    )


def _text(value: str, column: str) -> str:
    if "\x00" in value:
        raise _nul(column)
    return value


def _integer(value: int, column: str) -> int:
    if not _INT64[0] <= value <= _INT64[1]:
        raise PermanentError(
            f"column {column!r}: {value} is out of range for SQLite's 64-bit integers"
        )
    return value


def _float(value: float, column: str) -> float:
    if math.isnan(value):  # sqlite3 would bind NaN as NULL
        raise _not_finite(column, value)
    return value


def _iso(value: date | time, column: str) -> str:
    return value.isoformat()


def _json(value: dict[str, Any] | list[Any], column: str) -> str:
    return json.dumps(value, ensure_ascii=False)


_ADAPTERS: tuple[tuple[type | tuple[type, ...], Callable[[Any, str], Any]], ...] = (
    (bool, lambda value, column: value),  # before int: a bool is an int (bound as 0/1)
    (int, _integer),
    (float, _float),
    (str, _text),  # a subclass (a str enum) is bound as its text
    (Decimal, _decimal),
    ((datetime, date, time), _iso),
    ((dict, list), _json),
)


def bind(value: Any, column: str) -> Any:
    """``value`` as SQLite stores it without altering it, or a PermanentError saying why not."""
    if type(value) is str:  # the common case first: a CSV load binds text
        return _text(value, column)
    if value is None:
        return None
    for cls, adapt in _ADAPTERS:
        if isinstance(value, cls):
            return adapt(value, column)
    return value  # bytes are a BLOB; anything else sqlite3 refuses by itself


def _same(value: Any, column: str) -> Any:
    return value


def _numeric(value: Decimal | None, column: str) -> int | float | None:
    return None if value is None else _decimal(value, column)


def _iso_or_none(value: date | None, column: str) -> str | None:
    return None if value is None else value.isoformat()


Binder = Callable[[Any, str], Any]
"""Binds one value of a column, or raises the row's PermanentError."""

TYPED_BINDERS: dict[str, Binder] = {
    "bigint": _same,
    "integer": _same,
    "smallint": _same,
    "boolean": _same,
    "numeric": _numeric,
    "timestamptz": _iso_or_none,
    "date": _iso_or_none,
}
"""The binder of a typed column (freight type -> binder; the others: :func:`bind`).
What :func:`~freight.connectors.pgtypes.converter` gives a typed column is of its type
(or None), its range checked (bigint): bound without asking the value's type again."""


# -- whole columns: the fast path of a typed load ------------------------------------------
#
# A chunk of a CSV load is a few columns of text. Converting and binding each value in
# Python (pgtypes.converter, then a binder) was most of a SQLite load's time: 4 of the
# 5 µs a row of 5 columns cost. Most files hold values in one plain form, which can be
# recognised a whole column at a time in C (one regular expression over the column's
# text, one map of a C function). For those, what SQLite stores is exactly what the
# per-value path stores, so the column is bound in one go; a column holding anything
# else (an empty field, a sign, leading zeros, more digits, another spelling) takes the
# per-value path, which converts it or gives the row's reason.

_SEPARATOR = "\n"  # between the values of a column, to look at them all in one pass
_DIGITS = b"0123456789"
_NONZERO_TO_ONE = bytes.maketrans(b"23456789", b"11111111")
_INTEGER_CHARS = 18  # "-" and 17 digits, or 18 digits: within 64 bits
_DIGITS_TO_ZERO = bytes.maketrans(_DIGITS + b"+", b"0" * 10 + b"-")
# A number of at most 15 characters has at most 15 significant digits: a double holds it
# exactly, and its shortest repr reads back as the same number (the per-value path would
# not refuse it either).
_NUMBER_CHARS = 15
# Python's own isoformat() of an aware datetime, to the second: each digit read as 0 and
# the offset's sign as "-", every value of the column has this shape.
_TIMESTAMPTZ_SHAPE = "0000-00-00T00:00:00-00:00"
_TIMESTAMPTZ_TEXT = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]{6})?[+-][0-9]{2}:[0-9]{2}"
)
_BOOLEANS = dict.fromkeys(("t", "true", "y", "yes", "on", "1"), 1) | dict.fromkeys(
    ("f", "false", "n", "no", "off", "0"), 0
)


def _text_column(values: list[str], joined: str) -> list[Any] | None:
    return None if "\x00" in joined else values


def _boolean_column(values: list[str], joined: str) -> list[Any] | None:
    try:
        return list(map(_BOOLEANS.__getitem__, values))
    except KeyError:
        return None


def _integer_column(values: list[str], joined: str) -> list[Any] | None:
    """The values, when each is an integer as ``str(int)`` writes it (ASCII digits, a
    ``-`` first or nothing, no leading zero) in at most 18 characters (so within 64
    bits): ``BIGINT`` affinity stores each as the INTEGER the per-value path binds.
    (``int()`` takes more spellings: a ``+``, spaces, ``_``, other scripts' digits; those
    take the per-value path.)"""
    text = (_SEPARATOR + joined).encode()
    if text.translate(None, _DIGITS + b"-" + _SEPARATOR.encode()):
        return None
    shape = text.translate(_NONZERO_TO_ONE)
    if b"\n00" in shape or b"\n01" in shape or b"\n-0" in shape:
        return None  # a leading zero, or minus zero
    if shape.count(b"-") != shape.count(b"\n-") or b"-\n" in shape + b"\n":
        return None  # a "-" not first, or alone ("1-2", "--1", "-"): the per-value path
    if max(map(len, values)) > _INTEGER_CHARS:
        return None
    return values  # BIGINT affinity stores the text of an integer as that INTEGER


def _numeric_column(values: list[str], joined: str) -> list[Any] | None:
    """Floats, when each value is a plain decimal number (digits, ``.``, ``-``) of at most
    15 characters: ``float()`` reads those as PostgreSQL's ``numeric`` does, and a
    ``NUMERIC`` column stores an integral one as INTEGER, as the per-value path does."""
    if joined.encode().translate(None, _DIGITS + b".-" + _SEPARATOR.encode()):
        return None  # another character: a sign, a space, an exponent, not ASCII
    if max(map(len, values)) > _NUMBER_CHARS:
        return None
    try:
        return list(map(float, values))
    except ValueError:  # "1.2.3", "-": the per-value path gives the reason
        return None


def _timestamptz_column(values: list[str], joined: str) -> list[Any] | None:
    """The values as they are, when each is a valid aware datetime written as
    ``isoformat()`` writes it (what the per-value path stores)."""
    shape = joined.encode().translate(_DIGITS_TO_ZERO)
    if shape != (_TIMESTAMPTZ_SHAPE + _SEPARATOR).encode() * (len(values) - 1) + (
        _TIMESTAMPTZ_SHAPE.encode()
    ):
        return _timestamptz_other(values)
    if "-00:00" in joined:  # isoformat() writes a zero offset +00:00
        return None
    try:
        list(map(datetime.fromisoformat, values))  # February 30th, hour 25: refused
    except ValueError:
        return None
    return values


def _timestamptz_other(values: list[str]) -> list[Any] | None:
    """Timestamps with fractions of a second (or mixed shapes): each written back as the
    per-value path stores it, compared with the file's text."""
    if not all(map(_TIMESTAMPTZ_TEXT.fullmatch, values)):
        return None
    try:
        stored = list(map(datetime.isoformat, map(datetime.fromisoformat, values)))
    except ValueError:
        return None
    return values if stored == values else None


_COLUMN_BINDERS: dict[str, Callable[[list[str], str], list[Any] | None]] = {
    "text": _text_column,
    "boolean": _boolean_column,
    "bigint": _integer_column,
    "numeric": _numeric_column,
    "timestamptz": _timestamptz_column,
}


def bind_column(kind: str, values: list[Any]) -> list[Any] | None:
    """The values of a typed column of SQLite's declared type for ``kind`` (``DDL_TYPES``),
    as they are bound so that SQLite stores what :func:`~freight.connectors.pgtypes.converter`
    and the column's binder would have it store, when the whole column is text in the
    plain form of its type; ``None`` otherwise (the per-value path then converts each
    value, or refuses it with the row's reason).

    Integers and timestamps are bound as their text (``BIGINT`` affinity stores the
    integer; ``TIMESTAMPTZ``'s keeps the text); numbers as floats (``NUMERIC`` affinity
    stores an integral one as INTEGER, as the per-value path does); booleans as 1 or 0.
    """
    column = _COLUMN_BINDERS.get(kind)
    if column is None or not values:
        return None if column is None else values
    try:
        joined = _SEPARATOR.join(values)
    except TypeError:  # not all text
        return None
    if "" in values or joined.count(_SEPARATOR) != len(values) - 1:
        return None  # an empty value (NULL) or a value holding the separator
    return column(values, joined)
