"""``PostgresSink``: COPY, insert or upsert job items into PostgreSQL (extra ``freight[postgres]``),
exported by :mod:`freight.connectors.postgres`; the rules of its writes (the async twin
there shares them, and this module never imports that one):

- A write that fails on a bad row (COPY aborts the whole statement) is taken apart
  inside the write, which then returns one outcome per row: where the server names the
  row (COPY's line), the rows before it go in, the bad row gets its own
  :class:`~freight.PermanentError` (the server's error as its ``__cause__``), and the
  rest is written again; where it does not, the core's poison isolation bisects
  (:mod:`freight.connectors._isolate`); keys met again are found at once
  (:mod:`~freight.connectors._pgdups`). Every part of one write commits together.
- A statement the target refuses whatever the rows hold (no such table or column, no
  privilege) is a :class:`~freight.TargetError` for every row: not bisected.
- Upserts: the last value of a key within one write wins (the file's order).
- Items of different shapes (``format="rows"`` mappings without ``columns=``) are written
  in runs of the same fields, in order, each with its own column list, in the write's
  one transaction (:func:`~freight.connectors._isolate.runs`): no field is dropped, an
  upsert sets only the columns an item carries, a new row gets the table's defaults.
  Items of one shape, the rule, are one COPY as before; with several shapes, a long run
  is a COPY and short runs go together as pipelined INSERTs (``_ALONE``). A field the
  table lacks fails its item (a :class:`~freight.PermanentError` naming it) unless every
  item carries it: then the server refuses the write, a :class:`~freight.TargetError`.
  With ``columns=``, a field outside them fails its item the same way: never dropped.
- Lost connections are transient (retried by the job's ``Retry``); the pool replaces
  broken connections. Errors are mapped to freight's classes in one place, :func:`classify`.
"""

from __future__ import annotations

import operator
import sys
import threading
import uuid
from collections.abc import Hashable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Literal

from freight._errors import ConfigError, PermanentError, TargetError, TransientError
from freight.connectors._isolate import (
    Refused,
    Run,
    isolate,
    known_runs,
    locate,
    run_located,
    segments,
    settled,
    shaped,
)
from freight.connectors._pgbinary import TYPES_SQL, BinaryColumns, binary_columns, fits
from freight.connectors._pgdups import UniqueIndex, first_try
from freight.connectors._pgerrors import (
    TriedLines,
    _reraise,
    classified,
    classify,
    copy_line,
    copy_shown,
    met_twice,
    plain_lines,
    record_at,
    refused_before_copy,
    row_refusal,
    trusted_refusals,
    typed_refusal,
    unsendable_error,
)
from freight.connectors._pgkeys import COMMUTES_SQL, conflict_keys
from freight.connectors._pgplan import ROLLBACK, Planner, _WritePlan, send

try:
    import psycopg
    import psycopg.conninfo
    import psycopg.rows
    from psycopg import sql
    from psycopg_pool import ConnectionPool
except ImportError as exc:  # pragma: no cover - only without the extra
    raise ImportError(
        "freight.connectors.postgres needs psycopg 3: pip install 'freight[postgres]'"
    ) from exc

__all__ = ["COLUMNS_SQL", "Mode", "PostgresSink"]

Mode = Literal["copy", "insert", "upsert"]
"""How :class:`PostgresSink` writes: ``COPY``, an ``INSERT`` per row (pipelined), or
``COPY`` into a staging table then ``INSERT … ON CONFLICT`` (an upsert on ``key``)."""

_LAST = operator.itemgetter(-1)
# What a pickled sink leaves behind (connections, locks, what it read from the server).
_UNPICKLED = (
    "_pool", "_lock", "_opened", "_local", "_table", "_binary", "_types", "_planner",
    "_pipelined",
)  # fmt: skip
# The table's columns and types, in the table's order (bound parameters: table, schema).
COLUMNS_SQL = TYPES_SQL + " ORDER BY ordinal_position"
# The upsert's temporary table (one per transaction), named per sink so that it never
# shadows a table of the user's (pg_temp comes first in the search path).
_STAGING = "freight_stage_"
# Items of several shapes in one write: a run of this many rows or more is a COPY of its
# own; shorter runs go together as pipelined INSERTs, one per row (~30-40 us a row on the
# loaded dev box against COPY's ~3-5, but no round trips per run). For COPY the cut
# matters little (100,000 rows, 1 % of another shape: 1.2 s at 64, 1.6 s at 16, 2.9 s at
# 1,000). An upsert empties its staging table after each COPY, and TRUNCATEs in one
# transaction cost more than linearly (500 of them 2.3 s, 2,000 16 s), so its cut bounds
# them to one per 1,000 rows: 10,000 rows of two shapes in turn took 263 s as 10,000
# upsert COPYs, 0.8 s now. Insert mode's runs are all pipelined.
_ALONE: dict[str, int] = {"copy": 64, "upsert": 1000}


class PostgresSink:
    """Write mappings (or sequences in ``columns`` order) into a PostgreSQL table.

    Args:
        conninfo: a libpq connection string or URL (``postgresql://user@host:5432/db``).
        table: the table, taken literally (quoted), whatever characters it holds.
        schema: its schema (default: the search path).
        columns: the columns written, each item's value or NULL; a mapping carrying a
            field outside them fails alone, naming it. By default each item's own
            fields: items of another shape are written in runs of their own columns
            (a column an item lacks keeps its value on an upsert and gets the table's
            default on a new row); a field the table lacks fails its item, or, when
            every item carries it, the write (a :class:`~freight.TargetError`).
        mode: ``"copy"`` (COPY FROM STDIN), ``"insert"`` (executemany, pipelined) or
            ``"upsert"`` (COPY into a temporary table, then INSERT … ON CONFLICT; of
            several rows of one key in a write, the last one wins).
        key: the conflict columns of ``"upsert"`` (required there).
        pool_size: connections kept (one per job worker is enough).
        format: ``"rows"`` (mappings or sequences) or ``"csv"``: items are CSV record
            texts (``CsvSource(raw=True)``), copied as they are and parsed by the
            server, which is the fast path for loading files (not with ``"insert"``).
            A ``NaN`` (any spelling) in a numeric column, or a ``NaN`` in a
            floating-point one, is refused there ("column 'x': NaN is not a finite
            number"), as a typed load into SQLite refuses it.
    """

    def __init__(
        self,
        conninfo: str,
        table: str,
        *,
        schema: str | None = None,
        columns: Sequence[str] | None = None,
        mode: Mode | None = None,
        key: str | Sequence[str] | None = None,
        pool_size: int = 2,
        format: Literal["rows", "csv"] = "rows",
    ) -> None:
        self.key = [key] if isinstance(key, str) else list(key or [])
        if format not in ("rows", "csv"):
            raise ConfigError(f"format must be 'rows' or 'csv', got {format!r}")
        self.format = format
        mode = mode or ("upsert" if self.key else "copy")
        if mode not in ("copy", "insert", "upsert"):
            raise ConfigError(f"mode must be 'copy', 'insert' or 'upsert', got {mode!r}")
        if mode == "upsert" and not self.key:
            raise ConfigError("mode='upsert' needs key= (the conflict column(s))")
        if format == "csv" and (mode == "insert" or columns is None):
            raise ConfigError("format='csv' needs columns= and mode 'copy' or 'upsert'")
        if not table:
            raise ConfigError("table must be a non-empty name")
        self.mode: Mode = mode
        self.conninfo = conninfo
        self.table = table
        self.schema = schema
        self.columns = list(columns) if columns is not None else None
        self._target = sql.Identifier(schema, table) if schema else sql.Identifier(table)
        self._staging = _STAGING + uuid.uuid4().hex[:12]
        self._pool = ConnectionPool(
            conninfo,
            min_size=1,
            max_size=max(1, pool_size),
            open=False,
            check=ConnectionPool.check_connection,
        )
        self._opened = False
        self._lock = threading.Lock()
        self._local = threading.local()
        # The table's columns and types (information_schema's data_type), read by the
        # first write and again when a write carries a column not among them (added
        # since); None: not read yet, or the table was not found.
        self._table: dict[str, str] | None = None
        # Whether upserts of distinct keys commute in the table (conflict_keys); None:
        # not asked yet, or asked again since the table's columns were read anew.
        self._commuting: bool | None = None
        # Per written column list: binary COPY types (None: text COPY), the columns'
        # types ("" when unknown), and the statements.
        self._binary: dict[tuple[str, ...], BinaryColumns | None] = {}
        self._types: dict[tuple[str, ...], list[str]] = {}
        self._planner = Planner(self._target, self._staging, mode=mode, key=self.key, format=format)
        self._pipelined = _WritePlan(pipelined=True, before=self._planner.before())
        self._tried = TriedLines()  # a chunk's one-text COPY that failed (_write_lines)
        self._unique: dict[tuple[str, ...], UniqueIndex | None] = {}  # see _pgdups

    def __repr__(self) -> str:
        return f"PostgresSink({self.table!r}, schema={self.schema!r}, mode={self.mode!r})"

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        for name in _UNPICKLED:
            del state[name]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(  # type: ignore[misc]
            state["conninfo"], state["table"], schema=state["schema"], columns=state["columns"],
            mode=state["mode"], key=state["key"] or None, format=state["format"],
        )  # fmt: skip

    def _ensure_open(self) -> None:
        with self._lock:
            if not self._opened:
                try:
                    self._pool.open(wait=True, timeout=30)
                except psycopg.Error as exc:  # PoolTimeout: no connection in 30 s
                    _reraise(exc)
                self._opened = True

    def close(self) -> None:
        """Close the pool."""
        with self._lock:
            if self._opened:
                self._pool.close()
                self._opened = False

    # -- the Sink port --------------------------------------------------------------

    def write(self, items: list[Any], context: object = None) -> list[Any] | None:
        """Write ``items``; return ``None``, or one outcome per item when some failed.

        Raises :class:`~freight.TransientError` when the server is unreachable (the job
        retries; nothing of this write was committed); a bad row never fails the good
        ones; a :class:`~freight.TargetError` (the table refuses every row) is every
        item's outcome.
        """
        if not items:
            return None
        self._ensure_open()
        planned, refused = self._runs(items)
        outcomes: list[Any] = [None] * len(items)
        tried = self._tried.take(context, len(items))
        try:
            with self._connection() as conn:
                if self._stale(planned):
                    with conn.cursor() as cur:
                        found = cur.execute(COLUMNS_SQL, (self.table, self.schema))
                        self._learn(found.fetchall())
                for index, (plan, columns, rows, places) in enumerate(
                    self._parts(planned, refused)
                ):
                    written = self._write_all(conn, plan, columns, rows, start=index == 0,
                                              tried=tried)  # fmt: skip
                    tried = None  # (CSV texts: one run)
                    if written.count(None) == len(written):
                        continue  # the rule: every row went in (in C, not a loop per row)
                    for place, outcome in zip(places, written, strict=True):
                        outcomes[place] = outcome
        except psycopg.Error as exc:
            mapped = self._unstaged(classify(exc))
            if isinstance(mapped, TargetError):
                return [mapped] * len(items)
            _reraise(exc)
        return settled(outcomes, refused)

    def _write_lines(self, text: bytes, context: object = None) -> bool:
        """Write plain CSV lines as one UTF-8 text (:class:`~freight.jobs._sink.LinesSink`,
        the job engine's fast path: no string per line) in one COPY, if the check finds
        them clean and they all go in; ``False``: none was written."""
        columns = list(self.columns or ())
        if self.format != "csv" or self.mode != "copy" or not columns or b'"' in text:
            return False
        self._ensure_open()
        plan = self._planner.plan(columns)
        with self._connection() as conn:
            if self._stale([Run(columns, [], [])]):
                with conn.cursor() as cur:
                    self._learn(cur.execute(COLUMNS_SQL, (self.table, self.schema)).fetchall())
            version = conn.info.server_version
            if not plain_lines(text, self._types_of(columns), server_version=version):
                return False
            lines = b"\\" not in text and b"\r" not in text
            # to a connection of another client encoding: a string psycopg encodes
            sent = text if conn.info.encoding == "utf-8" else text.decode()
            with conn.cursor() as cur:
                cur.execute(plan.start)
                error = self._try(cur, plan, columns, [], [0], text=sent, lines=lines)
        if error is not None:
            self._tried.keep(context, text.count(b"\n"), error)
        return error is None

    def conflict_keys(self, items: list[Any]) -> set[Hashable] | None:
        """The keys an upsert of ``items`` touches, or ``None`` (unknown: not an upsert,
        the table not read yet, a key type freight does not read as the server does).
        A job with ordered writes writes chunks of disjoint keys at once
        (:mod:`~freight.connectors._pgkeys`)."""
        if self.mode != "upsert" or not self._commutes():
            return None
        return conflict_keys(
            items, csv_texts=self.format == "csv", columns=self.columns, key=self.key,
            types=self._table,
        )  # fmt: skip

    def _commutes(self) -> bool:
        """Whether upserts of distinct keys into the table may run in any order
        (:data:`~freight.connectors._pgkeys.COMMUTES_SQL`), asked once; ``False`` while
        the server cannot say (then asked again)."""
        known = self._commuting
        if known is None:
            try:
                self._ensure_open()
                with self._pool.connection() as conn:
                    params = {"table": self._target.as_string(conn), "key": self.key}
                    row = conn.execute(COMMUTES_SQL, params).fetchone()
            except (psycopg.Error, TransientError):
                return False
            known = self._commuting = bool(row and row[0])
        return known

    def _runs(self, items: list[Any]) -> tuple[list[Run], dict[int, BaseException]]:
        """The runs that write ``items`` (one when they share their fields, the rule) and
        the items refused before writing, by place.

        CSV texts stay as they are, each ending with a newline (COPY reads them as one
        stream). With ``columns=``, a mapping's values in their order (NULL for a
        missing one); without, each run takes its items' own fields.
        """
        if self.format == "csv":
            try:  # the last characters, in one C-level pass (an empty text has none)
                ended = set(map(_LAST, items)) == {"\n"}
            except IndexError:
                ended = False
            texts = items if ended else [t if t.endswith("\n") else t + "\n" for t in items]
            return [Run(list(self.columns or ()), texts, list(range(len(items))))], {}
        return shaped(items, self.columns, refuse=_not_a_mapping)

    def _stale(self, planned: list[Run]) -> bool:
        """Whether the table's columns must be read (again) before writing ``planned``:
        never read, not found, or a written column is not among them (added since)."""
        known = self._table
        return not known or any(c not in known for run in planned for c in run.columns)

    def _learn(self, found: Sequence[tuple[str, str]]) -> None:
        """Keep the table's ``(column, data_type)`` rows; what was derived from the
        previous ones is derived again when next needed."""
        self._types, self._binary = {}, {}  # new dicts: a write in another thread keeps its own
        self._table = dict(found) or None
        self._commuting, self._unique = None, {}

    def _parts(
        self, planned: list[Run], refused: dict[int, BaseException]
    ) -> Iterator[tuple[_WritePlan, list[str], list[Any], list[int]]]:
        """The plan, columns, rows and items' places of each statement that writes
        ``planned``, in order; a pipelined part's rows are (INSERT, values) pairs.

        A field the table lacks fails its items (added to ``refused``) where the items
        chose their columns (:func:`~freight.connectors._isolate.known_runs`); one run,
        the rule, is written as it always was, whatever its size; several are
        :func:`~freight.connectors._isolate.segments`.
        """
        if self.columns is None:  # else the server refuses a column the table lacks
            planned = known_runs(planned, self._table, self.table, refused)
        one = len(planned) == 1
        alone = _ALONE.get(self.mode, sys.maxsize)
        for pipelined, group in [(False, planned)] if one else segments(planned, alone):
            if not pipelined:
                [run] = group
                yield self._planner.plan(run.columns), run.columns, run.rows, run.places
                continue
            pairs = [(self._planner.insert(run.columns), row) for run in group for row in run.rows]
            yield self._pipelined, [], pairs, [place for run in group for place in run.places]

    @contextmanager
    def transaction(self) -> Iterator[psycopg.Connection[Any]]:
        """Hold one transaction for every write of this thread until the block ends.

        A job whose store is this same database records each chunk's checkpoint in it,
        so the rows and the checkpoint commit together. Each write inside runs in a
        savepoint, so isolating a bad row does not abort the transaction.
        """
        self._ensure_open()
        with self._pool.connection() as conn, conn.transaction():
            self._local.conn = conn
            try:
                yield conn
            finally:
                self._local.conn = None

    @contextmanager
    def _connection(self) -> Iterator[psycopg.Connection[Any]]:
        """A connection in a transaction for one write: the held one's savepoint, or a
        pooled connection's own transaction."""
        held = getattr(self._local, "conn", None)
        if held is not None:
            with held.transaction():
                yield held
            return
        with self._pool.connection() as conn, conn.transaction():
            yield conn

    def _write_all(
        self,
        conn: psycopg.Connection[Any],
        plan: _WritePlan,
        columns: list[str],
        rows: list[Any],
        *,
        start: bool,
        tried: psycopg.Error | None = None,
    ) -> list[Any]:
        """Write ``rows`` in ``conn``'s transaction; return one outcome per row (see
        :func:`~freight.connectors._isolate.locate`). ``start``: the write's first run
        (its setup and first savepoint; the runs after it go on from there).

        Each try runs after a savepoint it moves past when it succeeds: the statements
        that follow a COPY, ``RELEASE`` and ``SAVEPOINT`` go as one query, so a try
        costs the COPY's two round trips and one more.
        """
        types = self._types_of(columns)
        with conn.cursor() as cur:
            if start:
                cur.execute(plan.start)
            refused, failed = self._checked(cur, plan, columns, rows, types, tried=tried)
            if failed is None:
                return [None] * len(rows)
            if self.mode == "copy" and self.format == "csv":  # keys met again: found at once
                first = first_try(cur, self._target, rows=rows, refused=refused, failed=failed,
                                  send=lambda part: self._try(cur, plan, columns, part, [0]),
                                  columns=columns, indexes=self._unique)  # fmt: skip
                if first is None:
                    return [refused.get(i) for i in range(len(rows))]
                refused, failed = first

            def write(indices: list[int]) -> Refused | None:
                part = rows if len(indices) == len(rows) else [rows[i] for i in indices]
                sent = [0]
                if failed:  # the plan's first write (all but those refused): tried already
                    error: psycopg.Error | None = failed.pop()
                else:
                    error = self._try(cur, plan, columns, part, sent)
                if error is None:
                    return None
                at = self._located(error, plan, part, sent[0])
                refusal = self._unstaged(classify(error))
                if at is not None and self.format == "csv":
                    refusal = typed_refusal(columns, types, part[at], refusal)
                return Refused(refusal, at)

            def run(part: list[Any]) -> None:
                error = self._try(cur, plan, columns, part, [0])
                if error is not None:
                    raise error

            def bisect(indices: list[int], error: BaseException) -> list[Any]:
                isolated = isolate([rows[i] for i in indices], classified(run), failed=error)
                return list(map(self._unstaged, isolated))

            return run_located(locate(len(rows), refused), write, bisect)

    def _checked(
        self,
        cur: psycopg.Cursor[Any],
        plan: _WritePlan,
        columns: list[str],
        rows: list[Any],
        types: list[str],
        *,
        tried: psycopg.Error | None = None,
    ) -> tuple[dict[int, PermanentError], list[psycopg.Error] | None]:
        """The CSV texts COPY must not be sent (:func:`refused_before_copy`), and the
        error of a try of them all (in a list: taken once), ``None``: they went in.

        The check first trusts each text to be one line of its fields (~35 % less
        time); when its clean answer rests on that (:func:`trusted_refusals`), a COPY
        of them all proves it (the server refuses any other line) or fails, and the
        check runs again without trusting. If it still refuses none, that failed try
        is the plan's first write, never sent twice (``tried``: that error, met by
        :meth:`_write_lines`). Without a backslash or ``\\r``, in text format
        (:data:`_pgplan._LINES`: read as CSV reads them, with less server CPU)."""
        if self.format != "csv":
            return {}, []
        version, text = cur.connection.info.server_version, "".join(rows)
        error = tried
        if error is None:
            refused, trusted = trusted_refusals(
                columns, rows, types, server_version=version, text=text
            )
            if not trusted:  # exact: the plan writes what is left
                return refused, []
            lines = "\\" not in text and "\r" not in text  # and no quote: trusted
            error = self._try(cur, plan, columns, rows, [0], text=text, lines=lines)
            if error is None:
                return {}, None
        refused = refused_before_copy(columns, rows, types, server_version=version, text=text)
        return refused, [] if refused else [error]

    def _try(
        self,
        cur: psycopg.Cursor[Any],
        plan: _WritePlan,
        columns: list[str],
        rows: list[Any],
        sent: list[int],
        *,
        text: str | bytes | None = None,
        lines: bool = False,
    ) -> psycopg.Error | None:
        """One try of ``rows`` (``text``: CSV texts already joined): ``None`` when they
        went in, else the server's error, rolled back to the savepoint. An outage or a
        refusal of the whole write is raised (rolled back too, if the connection
        lives): no row's fault."""
        done, last_wins = plan.done, plan.done_last_wins
        while True:
            try:
                try:
                    self._execute(cur, plan, columns, rows, sent, text=text, lines=lines)
                except UnicodeEncodeError as exc:  # a lone surrogate: psycopg cannot send it
                    raise unsendable_error(exc) from exc
                cur.execute(done)
            except psycopg.Error as exc:
                if not cur.connection.broken:
                    cur.execute(ROLLBACK)
                if last_wins is not None and met_twice(exc):  # again, the last of each key
                    done, last_wins = last_wins, None
                    continue
                if row_refusal(exc) is None:
                    raise
                return exc
            return None

    def _types_of(self, columns: list[str]) -> list[str]:
        """The types of ``columns`` ("" when unknown); their binary COPY types too."""
        key = tuple(columns)
        types = self._types.get(key)
        if types is None:
            table = self._table or {}
            self._binary[key] = binary_columns(list(table.items()), columns)
            types = self._types[key] = [table.get(c, "") for c in columns]
        return types

    def _execute(
        self,
        cur: psycopg.Cursor[Any],
        plan: _WritePlan,
        columns: list[str],
        rows: list[Any],
        sent: list[int],
        *,
        text: str | bytes | None = None,
        lines: bool = False,
    ) -> None:
        """Send ``rows`` (:func:`~freight.connectors._pgplan.send`), in binary COPY where
        they fit."""
        copies = plan.insert is None and not plan.pipelined and self.format == "rows"
        binary = self.binary_for(columns, rows) if copies else None
        send(cur, plan, rows, sent, csv=self.format == "csv", binary=binary, text=text,
             lines=lines)  # fmt: skip

    def _located(
        self, error: psycopg.Error, plan: _WritePlan, rows: list[Any], sent: int
    ) -> int | None:
        """The index in ``rows`` of the row ``error`` is about, or ``None``: unknown."""
        if plan.insert is not None or plan.pipelined:
            return None  # a pipelined executemany does not say which row
        if error.sqlstate is None:  # psycopg refused a value before sending it
            return sent if self.format == "rows" else None
        line = copy_line(error, self._staging if self.mode == "upsert" else self.table)
        if line is None:
            return None
        if self.format == "rows":  # one line per row: values' newlines are escaped
            return line - 1 if 1 <= line <= len(rows) else None
        index = record_at(rows, line)
        if index is None:
            return None
        shown = copy_shown(error)  # the value or line the server quotes, if any
        return index if shown is None or shown in rows[index] else None

    def _unstaged(self, outcome: Any) -> Any:
        """``outcome`` with the upsert's staging table named as the target: a reason
        names the user's table, never freight's temporary one (the original error
        stays its ``__cause__``)."""
        if not isinstance(outcome, BaseException) or self._staging not in str(outcome):
            return outcome
        renamed = type(outcome)(str(outcome).replace(self._staging, self.table))
        renamed.__cause__ = outcome.__cause__
        return renamed

    def binary_for(
        self, columns: Sequence[str], rows: Sequence[Sequence[Any]]
    ) -> BinaryColumns | None:
        """The binary COPY types for these rows, or ``None``: text COPY (the types are
        unknown, a column has no binary form, or a value does not fit its column)."""
        binary = self._binary.get(tuple(columns))
        return binary if binary is not None and fits(rows, binary) else None


def _not_a_mapping(item: Any) -> PermanentError:
    """The refusal of an item that is not a mapping, where there is no ``columns=``."""
    return PermanentError(
        f"PostgresSink needs mappings (or columns= for sequences), got {type(item).__name__}"
    )
