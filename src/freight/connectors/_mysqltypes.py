"""MariaDB / MySQL column types and values for :mod:`freight.connectors.mysql`: freight's
(PostgreSQL) types as MariaDB declares them, and each value as MariaDB stores it exactly,
or refused with the reason.

Rules:

- The mapping (freight type -> MariaDB column) is the table in
  :mod:`freight.connectors.mysql`'s docstring; :data:`DDL_TYPES` is a fixed allow-list,
  never user text. A **key** text column is :data:`KEY_TEXT` (an index needs a length).
- What the server would alter (``NaN`` and infinities, a NUL byte in text, an integer
  beyond 64 bits, a ``numeric`` with more digits than ``DECIMAL(65,30)`` keeps) is a
  :class:`~freight.PermanentError` naming the column, with the same reasons as the
  SQLite and PostgreSQL targets; a datetime is stored in UTC.
- :func:`bind` (the general path) and :func:`literals` / :func:`row_literal` (the CSV
  load's fast path, typed text straight to SQL literals) accept the same values and give
  the same reasons.
- No connection, statement or I/O here: the sink (:mod:`freight.connectors.mysql`)
  builds and runs statements; this module only decides types and values. It imports
  nothing from the sink (no cycle).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from freight._errors import PermanentError
from freight.connectors import pgtypes

try:
    import pymysql  # type: ignore[import-untyped]
except ImportError as exc:  # pragma: no cover - only without the extra
    raise ImportError(
        "freight.connectors.mysql needs PyMySQL: pip install 'freight[mysql]'"
    ) from exc

__all__ = [
    "DDL_TYPES",
    "KEY_TEXT",
    "ToLiteral",
    "bind",
    "declared_type",
    "freight_type",
    "freight_types",
    "literals",
    "row_literal",
]

KEY_TEXT = "VARCHAR(255)"
_DECIMAL_DIGITS = (35, 30)  # DECIMAL(65,30): digits before and after the point

DDL_TYPES = {
    "bigint": "BIGINT",
    "integer": "BIGINT",
    "smallint": "BIGINT",
    "numeric": "DECIMAL(65,30)",
    "double precision": "DOUBLE",
    "real": "DOUBLE",
    "boolean": "BOOLEAN",
    "timestamptz": "DATETIME(6)",
    "date": "DATE",
    "text": "LONGTEXT",
    "jsonb": "LONGTEXT",
    "json": "LONGTEXT",
}
"""freight (PostgreSQL) type -> MariaDB column type: a fixed allow-list, never user text."""

_PYTHON_KINDS: tuple[tuple[type | tuple[type, ...], str], ...] = (
    (bool, "boolean"),  # before int: a bool is an int
    (int, "bigint"),
    (float, "double precision"),
    (Decimal, "numeric"),
    (datetime, "timestamptz"),  # before date: a datetime is a date
    (date, "date"),
)


def freight_types(types: Mapping[str, str]) -> dict[str, str]:
    """``types`` named as :mod:`~freight.connectors.pgtypes` names them (or as one of
    :data:`DDL_TYPES`), each known to have a MariaDB column type."""
    out = {}
    for column, type_name in types.items():
        lowered = type_name.strip().lower()
        kind = lowered if lowered in DDL_TYPES else pgtypes.canonical(type_name)
        out[column] = kind
    return out


def freight_type(data_type: str, column_type: str) -> str:
    """The freight type of a MariaDB column (what
    :func:`freight.connectors.mysql.table_types` reports)."""
    kind = data_type.lower()
    if kind == "tinyint" and column_type.lower().startswith("tinyint(1)"):
        return "boolean"
    if kind in ("bigint", "int", "integer", "mediumint", "smallint", "tinyint"):
        return "bigint"
    if kind in ("decimal", "numeric", "double", "float", "real"):
        return "numeric"
    if kind in ("datetime", "timestamp"):
        return "timestamptz"
    return "text"


# -- values: what MariaDB stores exactly, or a reason -----------------------------------------


def _not_finite(column: str, value: float | Decimal) -> PermanentError:
    return PermanentError(
        f"column {column!r}: {pgtypes.non_finite_name(value)} is not a finite number"
    )


def _decimal(value: Decimal, column: str) -> Decimal:
    if not value.is_finite():
        raise _not_finite(column, value)
    # Counted on the exact digits (normalize() would round to the context's 28 digits);
    # trailing zeros after the point are not digits DECIMAL must keep.
    _sign, digits, exponent = value.as_tuple()
    assert isinstance(exponent, int)
    kept = len(digits)
    while exponent < 0 and kept > 1 and digits[kept - 1] == 0:
        kept, exponent = kept - 1, exponent + 1
    before = max(kept + exponent, 0)
    after = max(-exponent, 0)
    if before > _DECIMAL_DIGITS[0] or after > _DECIMAL_DIGITS[1]:
        raise PermanentError(
            f"column {column!r}: {value} has more digits than MariaDB's DECIMAL(65,30) "
            "keeps (35 before the point, 30 after); load this column as text to keep it exact"
        )
    return value


def _text(value: str, column: str) -> str:
    if "\x00" in value:
        raise PermanentError(f"column {column!r}: text fields cannot contain NUL (0x00) bytes")
    return value


def _integer(value: int, column: str) -> int:
    if not -(2**63) <= value < 2**63:
        raise PermanentError(f"column {column!r}: {value} is out of range for bigint")
    return value


def _float(value: float, column: str) -> float:
    if not math.isfinite(value):  # a DOUBLE holds neither NaN nor an infinity
        raise _not_finite(column, value)
    return value


def _utc(value: datetime, column: str) -> datetime:
    """Stored in UTC, the session's time zone (DATETIME keeps no offset)."""
    return value if value.tzinfo is None else value.astimezone(UTC).replace(tzinfo=None)


_ADAPTERS: tuple[tuple[type | tuple[type, ...], Callable[[Any, str], Any]], ...] = (
    (bool, lambda value, column: value),  # before int: a bool is an int (bound as 0/1)
    (int, _integer),
    (float, _float),
    (str, lambda value, column: _text(str.__str__(value), column)),  # a str enum: its text
    (Decimal, _decimal),
    (datetime, _utc),
    ((dict, list), lambda value, column: json.dumps(value, ensure_ascii=False)),
)


def bind(value: Any, column: str) -> Any:
    """``value`` as MariaDB stores it without altering it, or a PermanentError saying why."""
    if type(value) is str:  # the common case first: a CSV load binds text
        return _text(value, column)
    if value is None:
        return None
    for cls, adapt in _ADAPTERS:
        if isinstance(value, cls):
            return adapt(value, column)
    return value  # date, time, bytes: PyMySQL's own literals


# -- typed text straight to SQL literals (the CSV load's fast path) -------------------------

ToLiteral = Callable[[str], str]
"""A non-empty text of a typed column as its SQL literal, or a ValueError saying why not."""


def _literal(kind: str, column: str) -> ToLiteral:
    """How a text of ``column`` (of freight type ``kind``) is written: parsed as
    :func:`~freight.connectors.pgtypes.converter` parses it, checked as :func:`bind`
    checks the parsed value, and made a literal without PyMySQL's per-value dispatch.
    The same values and reasons as the converter and :func:`bind`, ~2x faster a row."""
    parse = pgtypes.TYPES[kind]
    escape = pymysql.converters.escape_string
    if kind == "bigint":
        return lambda text: str(parse(text))
    if kind == "numeric":

        def numeric_literal(text: str) -> str:
            value = parse(text)
            # A plain number of at most 31 characters has at most 30 digits: it fits.
            if len(text) > 31 or "e" in text or "E" in text:
                _decimal(value, column)
            return format(value, "f")

        return numeric_literal
    if kind == "boolean":
        return lambda text: "1" if parse(text) else "0"
    if kind == "timestamptz":

        def time_literal(text: str) -> str:
            value: datetime = parse(text)
            if value.utcoffset():  # a time already in UTC (the common file) stays as is
                value = value.astimezone(UTC)
            # escape_datetime's literal, made in C (microseconds only where there are
            # some): with the conversion, ~30 % of a MariaDB load's CPU went here
            return "'" + value.replace(tzinfo=None).isoformat(" ") + "'"

        return time_literal

    def text_literal(text: str) -> str:
        return "'" + str(escape(_text(text, column))) + "'"

    return text_literal


def literals(types: Mapping[str, str]) -> dict[str, ToLiteral]:
    """:func:`_literal` of each typed column pgtypes parses (the others take the slow path)."""
    return {c: _literal(k, c) for c, k in types.items() if k in pgtypes.TYPES}


def row_literal(item: Mapping[str, Any], literals: dict[str, ToLiteral]) -> str | None:
    """``item``'s ``(…)`` literal when every value is a text of a typed column that
    fits it, else ``None``: the general path then writes the row, or refuses it with the
    reason it gives (the first column the converter refuses, in the table's order)."""
    if set(map(type, item.values())) != {str} or not literals.keys() >= item.keys():
        return None
    try:
        texts = [
            "NULL" if text == "" else literals[column](text)  # the converter's rule
            for column, text in item.items()
        ]
    except (ValueError, PermanentError):
        return None
    return "(" + ",".join(texts) + ")"


def declared_type(value: Any, key: bool) -> str:
    """The column type of a table created from a first item's ``value``."""
    kind = next((k for cls, k in _PYTHON_KINDS if isinstance(value, cls)), "text")
    if isinstance(value, bytes):
        return "VARBINARY(255)" if key else "LONGBLOB"
    return KEY_TEXT if key and kind == "text" else DDL_TYPES[kind]
