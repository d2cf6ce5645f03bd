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
