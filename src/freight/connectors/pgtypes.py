"""Column types for loading text files into PostgreSQL: inference, DDL, typed conversion.

``freight load FILE --into postgresql://…`` infers each column's type from the first
rows (bigint, numeric, boolean, timestamptz, text; ``--types`` overrides), creates the
table if missing, and converts every record to those types before it is written. A value
that does not fit its column's type makes that record a validation dead letter (with
its line number): it is never loaded as text and never aborts the load.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from freight._errors import ConfigError

__all__ = ["TYPES", "converter", "infer_types", "parse_types"]

_BIGINT = (-(2**63), 2**63 - 1)
# What PostgreSQL's input functions take, so that a value is refused on every target
# alike: ASCII digits only (Python's int() and Decimal() also take "1_000" and other
# scripts' digits), and the spellings of booleans the server accepts.
_INTEGER = re.compile(r"\s*[+-]?[0-9]+\s*")
_NUMBER = re.compile(r"\s*[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?\s*")
_TRUE = {"t", "tr", "tru", "true", "y", "ye", "yes", "on", "1"}
_FALSE = {"f", "fa", "fal", "fals", "false", "n", "no", "of", "off", "0"}


def _bigint(text: str) -> int:
    if _INTEGER.fullmatch(text) is None:  # int()'s own words, as before the check
        raise ValueError(f"invalid literal for int() with base 10: {text!r}")
    number = text.strip()
    sign = number[0] if number[0] in "+-" else ""
    digits = number[len(sign) :].lstrip("0") or "0"
    if len(digits) > 19:  # past any bigint (and int()'s 4,300 digits: 00…07 is 7)
        raise ValueError(f"{number} is out of range for bigint")
    value = int(sign + digits)
    if not _BIGINT[0] <= value <= _BIGINT[1]:
        raise ValueError(f"{text.strip()} is out of range for bigint")
    return value


def _numeric(text: str) -> Decimal:
    if _NUMBER.fullmatch(text) is None:
        try:
            value = Decimal(text)
        except InvalidOperation:
            value = Decimal(0)
        if not value.is_finite():
            raise ValueError(f"{non_finite_name(value)} is not a finite number")
        raise ValueError(f"{text!r} is not a number")
    return Decimal(text)


def non_finite_name(value: Decimal | float) -> str:
    """``NaN``, ``Infinity`` or ``-Infinity``: how a refused non-finite value is named,
    whatever its spelling in the file (``nan``, ``inf``, ``-INFINITY``, ``sNaN``), so
    that every target gives the same reason for it."""
    if value.is_nan() if isinstance(value, Decimal) else math.isnan(value):
        return "NaN"
    return "Infinity" if value > 0 else "-Infinity"


def _boolean(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ValueError(f"{text!r} is not a boolean (true/false)")


# The ISO 8601 times PostgreSQL reads as Python does (fromisoformat also takes the basic
# format, "20240101T1000", and more than 6 digits of a second, which the server reads
# otherwise or refuses): a date, then a time to the minute or more, then a zone.
_ISO_TIME = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}(?:[T ][0-9]{2}:[0-9]{2}(?::[0-9]{2}(?:\.[0-9]{1,6})?)?"
    r"(?:Z|[+-][0-9]{2}(?::?[0-9]{2})?)?)?"
)


def _timestamptz(text: str) -> datetime:
    if _ISO_TIME.fullmatch(text) is None:  # fromisoformat's own words
        raise ValueError(f"Invalid isoformat string: {text!r}")
    value = datetime.fromisoformat(text)
    if value.tzinfo is None:
        raise ValueError(f"{text!r} has no time zone (timestamptz needs one, e.g. +00:00)")
    return value


TYPES: dict[str, Callable[[str], Any]] = {
    "bigint": _bigint,
    "numeric": _numeric,
    "boolean": _boolean,
    "timestamptz": _timestamptz,
    "text": str,
}
"""The column types a load may create, most specific first, with their parsers."""

_ALIASES = {
    "int8": "bigint",
    "integer": "bigint",
    "int": "bigint",
    "decimal": "numeric",
    "bool": "boolean",
    "timestamp with time zone": "timestamptz",
    "character varying": "text",
    "varchar": "text",
}


# The most a PostgreSQL row may take in its page (MaxHeapTupleSize for 8 kB pages): a
# table whose fixed-width columns exceed it refuses every row ("row is too big").
MAX_ROW_BYTES = 8160
_FIXED_BYTES = {"bigint": 8, "timestamptz": 8, "boolean": 1}


def check_row(table: str, types: Mapping[str, str]) -> None:
    """Refuse, with :class:`ConfigError`, a table of these column types whose row of
    fixed-width values (8 bytes a bigint or timestamptz, 1 a boolean, after a 24-byte
    header and the null bitmap) cannot fit in a PostgreSQL row: the server would
    create it, then refuse each of its rows."""
    kinds = [canonical(t) for t in types.values()]
    fixed = sum(_FIXED_BYTES.get(k, 0) for k in kinds)
    size = 24 + (len(kinds) + 7) // 8 + fixed
    if size > MAX_ROW_BYTES:
        counts = ", ".join(f"{kinds.count(k):,} {k}" for k in _FIXED_BYTES if kinds.count(k))
        raise ConfigError(
            f"cannot create {table!r}: a row of its fixed-width columns ({counts}) takes "
            f"{size:,} bytes, more than the {MAX_ROW_BYTES:,} a PostgreSQL row can hold: "
            "load fewer columns, or some of them as text (--types COLUMN=text)"
        )


def canonical(type_name: str) -> str:
    """``type_name`` as one of :data:`TYPES`, or raise :class:`ConfigError`."""
    name = _ALIASES.get(type_name.strip().lower(), type_name.strip().lower())
    if name not in TYPES:
        raise ConfigError(f"unsupported column type {type_name!r}; use one of {', '.join(TYPES)}")
    return name


def parse_types(spec: str | None) -> dict[str, str]:
    """``"amount=numeric,seen=timestamptz"`` → ``{"amount": "numeric", ...}``."""
    out: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in (spec or "").split(","))):
        column, sep, type_name = part.partition("=")
        if not sep or not column:
            raise ConfigError(f"--types expects COLUMN=TYPE[,COLUMN=TYPE…], got {part!r}")
        out[column.strip()] = canonical(type_name)
    return out


def _text(value: Any) -> str:
    """A JSON value as the text a CSV would hold (for JSONL loads)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def infer_types(
    columns: Sequence[str], rows: Iterable[Mapping[str, Any]], *, tolerance: float = 0.01
) -> dict[str, str]:
    """The most specific type of :data:`TYPES` that the column's non-empty values fit.

    Up to ``tolerance`` of the sampled values may not fit (a few malformed rows must
    not turn a numeric column into text): those rows are dead-lettered when loaded.
    """
    fits = {c: dict.fromkeys(TYPES, 0) for c in columns}
    filled = dict.fromkeys(columns, 0)
    for row in rows:
        for column in columns:
            value = _text(row.get(column))
            if value == "":
                continue
            filled[column] += 1
            for name, parse in TYPES.items():
                try:
                    parse(value)
                except ValueError:
                    continue
                fits[column][name] += 1
    out = {}
    for column in columns:
        needed = filled[column] * (1 - tolerance)
        out[column] = next(
            (name for name in TYPES if filled[column] and fits[column][name] >= needed), "text"
        )
    return out


def converter(types: Mapping[str, str]) -> Callable[[Mapping[str, Any]], dict[str, Any]]:
    """A record converter: empty → ``None``, else the column type's parser (or a ValueError)."""
    parsers = {column: TYPES[canonical(t)] for column, t in types.items()}

    def convert(row: Mapping[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for column, parse in parsers.items():
            value = _text(row.get(column))
            if value == "":
                out[column] = None
                continue
            try:
                out[column] = parse(value)
            except ValueError as exc:
                raise ValueError(f"column {column!r}: {exc}") from None
        return out

    return convert
