"""How the PostgreSQL connector meets its server: errors mapped to freight's classes in
one place (:func:`classify`), the row a COPY failed on (:func:`copy_line`,
:func:`record_at`), the rows refused before they are sent (:func:`non_finite`, :func:`unreadable`,
both in one pass: :func:`refused_before_copy`) and the
reasons given for refused rows (:func:`typed_refusal`), what a write's errors mean to
the sink and its async twin alike (:func:`row_refusal`, :func:`met_twice`,
:func:`classified`, :func:`unsendable_error`, :class:`TriedLines`), and connections
opened with freight's errors."""

from __future__ import annotations

import csv
import functools
import io
import re
from collections.abc import Awaitable, Callable
from datetime import date
from decimal import Decimal, InvalidOperation
from typing import Any, NoReturn

from freight._errors import ConfigError, PermanentError, TargetError, TransientError
from freight.connectors import pgtypes
from freight.connectors._isolate import unsendable

try:
    import psycopg
    import psycopg.conninfo
except ImportError as exc:  # pragma: no cover - only without the extra
    raise ImportError(
        "freight.connectors.postgres needs psycopg 3: pip install 'freight[postgres]'"
    ) from exc

__all__ = [
    "TriedLines",
    "_connect",
    "_reraise",
    "aclassified",
    "classified",
    "_where",
    "classify",
    "copy_line",
    "copy_shown",
    "met_twice",
    "non_finite",
    "plain_lines",
    "reason",
    "record_at",
    "refused_before_copy",
    "row_refusal",
    "trusted_refusals",
    "typed_refusal",
    "unreadable",
    "unsendable_error",
]

# SQLSTATEs that refuse the statement, not a row: whatever the rows hold, none can land.
# Class 42 is "syntax error or access rule violation" (no such table or column, no
# privilege, no unique index for ON CONFLICT, ...).
_TARGET_CLASSES = ("42",)
_TARGET_STATES = frozenset({
    "3F000",  # invalid_schema_name: no such schema
    "25006",  # read_only_sql_transaction: a read-only database or standby
    "54011",  # too_many_columns: more than the 1,600 a table may have
    "54023",  # too_many_arguments
})  # fmt: skip


def classify(error: BaseException) -> BaseException:
    """Map a psycopg error to freight's classes (the original as ``__cause__``).

    - A statement the target refuses whatever the rows hold (a missing table, schema
      or column, no privilege, a read-only database, too many columns: SQLSTATE class
      42, 3F000, 25006, 54011, 54023) is a :class:`~freight.TargetError`: not any
      row's fault, so it is never bisected into one dead letter per row.
    - Connection and server-availability problems (``OperationalError``,
      ``InterfaceError``: a dropped connection, a restart, a lock timeout, a deadlock)
      are :class:`~freight.TransientError`: the job's ``Retry`` tries again; but a
      program limit a row exceeds (54000: an index row too big) is that row's, and a
      row too big for a page is the table's (a :class:`~freight.TargetError`: its
      columns cannot hold a row, whatever the values).
    - Data the server refuses (``DataError``, ``IntegrityError``: a value of the wrong
      type or out of range, a null in a ``NOT NULL`` column, a unique or check
      violation) is :class:`~freight.PermanentError`: retrying the same row cannot fix
      it. Its message is :func:`reason`: the server's error class and text, which names
      the value and the column, without the COPY's context (the line it names is the
      line in one write, not in the file: a job's dead letter has the file's line).
    - Anything else (a freight error already, a client-side error) is returned as is.
    """
    mapped: BaseException
    state = getattr(error, "sqlstate", None) or ""
    if isinstance(error, psycopg.Error) and (
        state in _TARGET_STATES or state.startswith(_TARGET_CLASSES)
    ):
        mapped = TargetError(f"the target refuses the write: {reason(error)}")
    elif isinstance(error, psycopg.errors.ProgramLimitExceeded) and state == "54000":
        # a row too big for the table's page is the table's (its columns), not a row's
        table = (error.diag.message_primary or "").startswith("row is too big")
        mapped = (TargetError if table else PermanentError)(reason(error))
    elif isinstance(error, psycopg.OperationalError | psycopg.InterfaceError):
        mapped = TransientError(f"PostgreSQL unavailable: {error}")
    elif isinstance(error, psycopg.DataError | psycopg.IntegrityError):
        mapped = PermanentError(reason(error))
    else:
        return error
    mapped.__cause__ = error
    return mapped


def reason(error: psycopg.Error) -> str:
    """``Class: message (column c); detail`` from the server's fields, on one line.

    The server's ``CONTEXT`` (``COPY t, line 37, column amount: "x"``) is left out but
    for the column it names: its line counts lines of one write, which misleads once
    the write is a part of a chunk; where a row came from is the job's to say.
    """
    diag = error.diag
    primary = diag.message_primary
    if not primary:  # raised by psycopg itself, or built by hand
        return f"{type(error).__name__}: {' '.join(str(error).split())}"
    text = primary
    column = _COPY_COLUMN.search(diag.context or "")
    if column is not None:
        text += f" (column {column.group(1)})"
    if diag.message_detail:
        text += f"; {diag.message_detail}"
    return f"{type(error).__name__}: {' '.join(text.split())}"


_COPY_COLUMN = re.compile(r"^COPY .*?, line \d+, column (.+?)(?:: .*)?$", re.MULTILINE)


def copy_line(error: psycopg.Error, relation: str) -> int | None:
    """The line of the COPY data the server failed on, or ``None`` when it does not say.

    PostgreSQL names it in the error's context, ``COPY <relation>, line <n>…`` (the
    entry of the COPY: inner entries, such as a trigger's, come before it). For a CSV
    record spanning several lines (a quoted newline) it is a line of that record.
    """
    context = error.diag.context or ""
    prefix = f"COPY {relation}, line "
    if context.startswith(prefix):
        start = len(prefix)
    else:
        found = context.find("\n" + prefix)
        if found < 0:
            return None
        start = found + 1 + len(prefix)
    digits = re.match(r"\d+", context[start:])
    return int(digits.group()) if digits is not None else None


def copy_shown(error: psycopg.Error) -> str | None:
    """What the COPY's context quotes of the failed row (the field's value, or the
    line), without the ``...`` of a long one cut short; ``None`` when it quotes none.

    A check that a row found by counting lines is the one the server meant.
    """
    context = error.diag.context or ""
    found = re.search(r'(?:^|\n)COPY .*?, line \d+(?:, column .*?)?: "', context)
    if found is None:
        return None
    shown = context[found.end() :]
    if not shown.endswith('"'):
        return None
    shown = shown[:-1]
    return shown.removesuffix("...")


def record_at(texts: list[str], line: int) -> int | None:
    """The index of the CSV record holding ``line`` (1-based) of ``"".join(texts)``:
    lines are counted as the server counts them, a quoted newline included."""
    end = 0
    for index, text in enumerate(texts):
        end += text.count("\n")
        if line <= end:
            return index
    return None


def typed_refusal(
    columns: list[str], types: list[str], text: str, refusal: BaseException
) -> BaseException:
    """The reason a typed load into SQLite gives for this CSV record
    (:func:`freight.connectors.pgtypes.converter`'s: ``column 'amount': 'x' is not a
    number``), where it refuses the value the server refused too; else the server's
    ``refusal``.

    A file must give the same dead letters on every target; the server's error stays
    the reason's ``__cause__``. Only a value the server names (its column) is checked:
    a constraint, a trigger or a malformed record keep the server's reason.
    """
    error = refusal.__cause__
    if not isinstance(error, psycopg.DataError):
        return refusal
    named = _COPY_COLUMN.search(error.diag.context or "")
    if named is None or named.group(1) not in columns:
        return refusal
    index = columns.index(named.group(1))
    fields = next(csv.reader(io.StringIO(text)), [])
    if index >= len(fields) or fields[index] == "":
        return refusal
    parse = _CONVERTERS.get(types[index])  # as unreadable reads it (smallint too)
    if parse is None:
        try:
            parse = pgtypes.TYPES[pgtypes.canonical(types[index])]
        except ConfigError:
            return refusal  # a type the converter does not know
    try:
        parse(fields[index])
    except ValueError as exc:
        typed = PermanentError(f"column {columns[index]!r}: {exc}")
        typed.__cause__ = error
        return typed
    return refusal


_FLOATING = frozenset({"double precision", "real"})
_NUMERIC = _FLOATING | {"numeric"}


def non_finite(columns: list[str], texts: list[str], types: list[str]) -> dict[int, PermanentError]:
    """The CSV records holding ``NaN`` (any spelling) in a numeric or floating-point
    column, or an infinity in a numeric one, each with its reason.

    PostgreSQL would store them (``numeric`` and ``double precision`` take ``'NaN'``);
    a SQLite REAL cannot hold a NaN, and a load must give the same rows on every
    target, so both refuse them, with the same reason. A float column keeps
    ``Infinity``, which both can hold. Only records whose text holds ``nan`` or
    ``inf`` are parsed: the common file costs one pass over its text (~4 ms per
    50,000 records).
    """
    kinds = {i: t for i, t in enumerate(types) if t == "numeric" or t in _FLOATING}
    if not kinds:
        return {}
    lowered = "".join(texts).lower()
    if "nan" not in lowered and "inf" not in lowered:
        return {}
    refused: dict[int, PermanentError] = {}
    for index, text in enumerate(texts):
        low = text.lower()
        if "nan" not in low and "inf" not in low:
            continue
        fields = next(csv.reader(io.StringIO(text)), [])
        for column, kind in kinds.items():
            if column >= len(fields):
                continue
            try:
                value = Decimal(fields[column].strip())
            except InvalidOperation:
                continue
            if value.is_finite() or (kind in _FLOATING and value.is_infinite()):
                continue
            name = columns[column]
            refused[index] = PermanentError(
                f"column {name!r}: {pgtypes.non_finite_name(value)} is not a finite number"
            )
            break
    return refused


# What the converter (pgtypes) and the server read alike, by a column's data_type: a
# CSV field of this form goes to COPY as it is (or both refuse it). Any other is first
# read by the converter, which refuses what the server would read its own way (``now``,
# ``epoch``, ``infinity``, a time without a zone read in the server's, ``24:00``, a
# leap second, ``1_000`` on PostgreSQL 16). Booleans need no check: the server takes
# exactly the converter's spellings. Quantifiers are possessive: they never backtrack.
# (digits spelled out: [0-9][0-9] runs faster than [0-9]{2} in re, ~25 % here)
_D = "[0-9]"
_DATE = f"{_D}{_D}{_D}{_D}-{_D}{_D}-{_D}{_D}"
_PLAIN = {
    "bigint": r"(?:[+-]?+[0-9]{1,18}+)?+",
    "integer": r"(?:[+-]?+[0-9]{1,9}+)?+",
    "smallint": r"(?:[+-]?+[0-9]{1,4}+)?+",
    "numeric": r"[-+0-9.eE]*+",  # what both read alike, or both refuse
    "date": f"(?:{_DATE})?+",
    "timestamp with time zone": f"(?:{_DATE}[T ](?:[01]{_D}|2[0-3]):[0-5]{_D}"
    f"(?::[0-5]{_D}(?:\\.{_D}{{1,6}}+)?+)?+(?:Z|[+-]{_D}{_D}(?::?+{_D}{_D})?+))?+",
}  # fmt: skip
_TEXT_FIELD = r'(?:"(?:[^"]|"")*+"|[^",\n]*+)'  # any other column's field, as COPY splits it


def _date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a date (YYYY-MM-DD)") from None


_CONVERTERS = {
    "bigint": pgtypes.TYPES["bigint"],
    "integer": pgtypes.TYPES["bigint"],
    "smallint": pgtypes.TYPES["bigint"],
    "numeric": pgtypes.TYPES["numeric"],
    "boolean": pgtypes.TYPES["boolean"],
    "date": _date,
    "timestamp with time zone": pgtypes.TYPES["timestamptz"],
}


# Checked on every server: the server reads these its own way (now, epoch, infinity,
# no zone). PostgreSQL 16 also reads 1_000, 0x1F, 0o17 and 0b101 as numbers.
_ALWAYS = frozenset({"date", "timestamp with time zone"})
_SINCE_16 = 160000


# A field of a numeric or floating-point column made of these characters only is never
# NaN nor an infinity (what :func:`non_finite` refuses), whatever the server's version.
_FINITE = r"[-+0-9.eE]*+"


@functools.lru_cache(maxsize=64)
def _plain_records(
    types: tuple[str, ...],
    *,
    numbers: bool,
    quotes: bool,
    finite: bool = False,
    lines: bool = False,
) -> re.Pattern[str] | None:
    """The pattern of the records whose checked fields are all plain (:data:`_PLAIN`),
    one or many; ``None``: no column to check. ``numbers``: integer and numeric
    columns are checked too; ``finite``: numeric and floating-point columns hold
    only :data:`_FINITE` characters (no NaN, no infinity); ``quotes``: the text may
    hold quoted fields (each field is then read as COPY splits it; without, the
    fields after the last checked one are skipped: a line is a record); ``lines``
    (without quotes): each record is trusted to be one line of ``len(types)`` fields,
    so a field is skipped up to the next delimiter alone (``[^,]*+``: re's fastest
    repeat, ~35 % less time than ``[^,\n]*+``); a record that is not would be read
    out of line, so the caller must prove it (:func:`refused_before_copy`)."""
    patterns = {
        i: _PLAIN[t] if t in _ALWAYS or (numbers and t in _PLAIN) else _FINITE
        for i, t in enumerate(types)
        if t in _ALWAYS or (numbers and t in _PLAIN) or (finite and t in _NUMERIC)
    }
    if not patterns:
        return None
    checked = list(patterns)
    last = checked[-1]
    trusted = lines and not quotes
    other = _TEXT_FIELD if quotes else r"[^,]*+" if trusted else r"[^,\n]*+"
    fields = [patterns.get(i, other) for i in range(len(types))]
    if quotes:
        record = ",".join(fields) + r"\r?+"
    else:
        after = r",[^\n]*+" if trusted else r"(?:,[^\n]*+)?+"
        rest = after if last < len(types) - 1 else r"\r?+"
        record = ",".join(fields[: last + 1]) + rest
    return re.compile(f"(?:{record}\n)*+")


def unreadable(
    columns: list[str], texts: list[str], types: list[str], *, server_version: int = _SINCE_16
) -> dict[int, PermanentError]:
    """The CSV records holding a value the converter refuses in a typed column (bigint,
    integer, numeric, boolean, date, timestamptz), each with the converter's reason.

    The server would read some of them its own way (``now`` as the load's time, a time
    without a zone in the server's zone, ``epoch``, ``infinity``, which psycopg cannot
    read back) where a SQLite target refuses them: a load must give the same rows and
    dead letters on every target. One pass of one compiled pattern over the write's
    text answers for a clean write (dates and times only before PostgreSQL 16,
    ``server_version``: older servers refuse the numbers the converter refuses);
    only when it stops short are the records matched one by one, and the converter
    reads the fields of those that do not match.
    """
    numbers = server_version >= _SINCE_16
    text = "".join(texts)
    plain = _plain_records(tuple(types), numbers=numbers, quotes='"' in text)
    if plain is None or plain.fullmatch(text) is not None:
        return {}
    plain = _plain_records(tuple(types), numbers=numbers, quotes=True)
    assert plain is not None
    checked = {i: t for i, t in enumerate(types) if t in _CONVERTERS and t != "boolean"}
    refused: dict[int, PermanentError] = {}
    for index, row in enumerate(texts):
        if plain.fullmatch(row if row.endswith("\n") else row + "\n") is not None:
            continue
        fields = next(csv.reader(io.StringIO(row)), [])
        for column, kind in checked.items():
            if column >= len(fields) or fields[column] == "":
                continue
            try:
                _CONVERTERS[kind](fields[column])
            except ValueError as exc:
                refused[index] = PermanentError(f"column {columns[column]!r}: {exc}")
                break
    return refused


def refused_before_copy(
    columns: list[str],
    texts: list[str],
    types: list[str],
    *,
    server_version: int = _SINCE_16,
    text: str | None = None,
    lines: bool = False,
) -> dict[int, PermanentError]:
    """The CSV records COPY must not be sent, each with its reason: those
    :func:`unreadable` refuses and those :func:`non_finite` refuses, found in one pass.

    One compiled pattern over the write's text proves a clean write (the common case)
    for both at once: the fields :func:`unreadable` checks are plain, and the fields
    of numeric and floating-point columns hold only digits, signs, points and
    exponents (never a NaN or an infinity). Only a write it stops short on is read by
    the two checks (:func:`unreadable` with PostgreSQL 16's rules on any server, see
    :func:`trusted_refusals`). The check of two passes cost ~0.6 s of CPU per 1M
    records of the bench's file (a timestamptz and a numeric column); one pass ~0.3 s.

    ``text``: the texts joined, when the caller has them. ``lines``: each text is
    trusted to be one line of ``len(types)`` fields (:func:`_plain_records`), so an
    empty answer may rest on that trust (:func:`trusted_refusals` says when): the
    caller proves it by a COPY of every text that succeeds (the server refuses a line
    of another field count), and asks again without ``lines`` when that COPY fails. A
    non-empty answer is always exact.
    """
    return trusted_refusals(
        columns, texts, types, server_version=server_version, text=text, lines=lines
    )[0]


def trusted_refusals(
    columns: list[str],
    texts: list[str],
    types: list[str],
    *,
    server_version: int = _SINCE_16,
    text: str | None = None,
    lines: bool = True,
) -> tuple[dict[int, PermanentError], bool]:
    """:func:`refused_before_copy`, and whether its answer rests on trusting each text
    to be one line of its fields: only an empty answer of the one-pass pattern does
    (one read record by record, or with quotes, is exact). Where the pattern stops
    short, the records are read by :func:`unreadable` with PostgreSQL 16's rules on
    any server (numbers checked too) and :func:`non_finite`."""
    numbers = server_version >= _SINCE_16
    if text is None:
        text = "".join(texts)
    quotes = '"' in text
    plain = _plain_records(tuple(types), numbers=numbers, quotes=quotes, finite=True, lines=lines)
    if plain is None:
        return {}, False
    if plain.fullmatch(text) is not None:
        return {}, lines and not quotes
    # Read record by record, numbers are checked before PostgreSQL 16 too: the server
    # refuses them then as the converter does (same rows, same reasons), and a row
    # refused here costs no failed COPY (~1 ms each: 500 bad amounts in 100,000 rows
    # took 2x the clean load's time).
    refused = {
        **unreadable(columns, texts, types, server_version=max(server_version, _SINCE_16)),
        **non_finite(columns, texts, types),
    }
    return refused, False


def plain_lines(text: bytes, types: list[str], *, server_version: int = _SINCE_16) -> bool:
    """Whether every checked field of ``text`` is plain (:func:`trusted_refusals`'s
    one pass trusting lines, over bytes): lines of ``len(types)`` fields, each ending
    in ``\\n``, without a quote. Like that pass's empty answer, a ``True`` rests on
    the trust: a COPY of the text proves it."""
    numbers = server_version >= _SINCE_16
    plain = _plain_records(tuple(types), numbers=numbers, quotes=False, finite=True, lines=True)
    return plain is None or _over_bytes(plain).fullmatch(text) is not None


@functools.lru_cache(maxsize=64)
def _over_bytes(pattern: re.Pattern[str]) -> re.Pattern[bytes]:
    """``pattern`` (ASCII) matching bytes: a UTF-8 byte of a field is never one of the
    characters it looks for, as the character it is part of is not."""
    return re.compile(pattern.pattern.encode())


# -- a write's errors, shared by PostgresSink and its async twin ---------------------


def classified(write: Callable[[list[Any]], None]) -> Callable[[list[Any]], None]:
    """``write`` raising freight's classes, so that isolating bad rows stops bisecting
    when both halves of a part meet an outage, and splits on to the bad row otherwise."""

    def call(rows: list[Any]) -> None:
        try:
            write(rows)
        except psycopg.Error as exc:
            _reraise(exc)

    return call


def aclassified(
    write: Callable[[list[Any]], Awaitable[None]],
) -> Callable[[list[Any]], Awaitable[None]]:
    """:func:`classified` for an ``async`` write."""

    async def call(rows: list[Any]) -> None:
        try:
            await write(rows)
        except psycopg.Error as exc:
            _reraise(exc)

    return call


class TriedLines:
    """The failed COPY of a chunk's lines sent as one text (``PostgresSink._write_lines``),
    kept for the write of their texts that follows (the job engine's next call for that
    chunk): the first try of that write, its bad row found from it, never sent twice."""

    __slots__ = ("_kept",)

    _MOST = 64  # chunks whose write never came (an engine stopped between): forgotten

    def __init__(self) -> None:
        self._kept: dict[tuple[str, int], tuple[int, psycopg.Error]] = {}

    def keep(self, context: object, lines: int, error: psycopg.Error) -> None:
        chunk = _chunk_of(context)
        if chunk is not None:
            if len(self._kept) >= self._MOST:
                self._kept.clear()
            self._kept[chunk] = (lines, error)

    def take(self, context: object, lines: int) -> psycopg.Error | None:
        """The kept error of this chunk's lines, if a write of as many lines follows."""
        chunk = _chunk_of(context)
        kept = None if chunk is None else self._kept.pop(chunk, None)
        return kept[1] if kept is not None and kept[0] == lines else None


def _chunk_of(context: object) -> tuple[str, int] | None:
    """The job's chunk a write is of (a :class:`~freight.jobs.WriteContext`), if known."""
    job, index = getattr(context, "job_id", None), getattr(context, "chunk_index", None)
    return (job, index) if isinstance(job, str) and isinstance(index, int) else None


def row_refusal(error: psycopg.Error) -> BaseException | None:
    """``None`` when ``error`` ends the whole write (an outage, a target that refuses
    every row), else what the refused row gets."""
    mapped = classify(error)
    return None if isinstance(mapped, TransientError | TargetError) else mapped


def met_twice(error: psycopg.Error) -> bool:
    """An upsert met a key twice: ``ON CONFLICT DO UPDATE`` cannot touch a row twice."""
    return isinstance(error, psycopg.errors.CardinalityViolation)


def unsendable_error(error: UnicodeEncodeError) -> psycopg.DataError:
    """A text psycopg cannot encode, as the refusal of its row (found by the row being
    sent, else by bisection)."""
    return psycopg.DataError(unsendable(error))


def _reraise(error: psycopg.Error) -> NoReturn:
    """Raise ``error`` as freight's class (:func:`classify`), the original as its cause."""
    mapped = classify(error)
    if mapped is error:
        raise error
    raise mapped from error


def _connect(conninfo: str, *, autocommit: bool = False) -> psycopg.Connection[Any]:
    """``psycopg.connect`` with freight's errors: a connection string psycopg cannot
    parse is a :class:`~freight.ConfigError`, a server that does not answer (or refuses
    the user or the database) a :class:`~freight.TransientError` naming where it is."""
    try:
        return psycopg.connect(conninfo, autocommit=autocommit)
    except psycopg.ProgrammingError as exc:
        raise ConfigError(
            f"bad PostgreSQL connection string: {str(exc).strip()}; "
            "expected postgresql://USER@HOST:PORT/DB"
        ) from exc
    except psycopg.OperationalError as exc:
        reason = " ".join(str(exc).split())
        raise TransientError(f"cannot reach PostgreSQL at {_where(conninfo)}: {reason}") from exc


def _where(conninfo: str) -> str:
    """``host:port/db`` of a connection string that psycopg parsed (never the password)."""
    parts = psycopg.conninfo.conninfo_to_dict(conninfo)
    host, port, db = parts.get("host"), parts.get("port"), parts.get("dbname")
    return f"{host or 'localhost'}:{port or 5432}/{db or '(default database)'}"
