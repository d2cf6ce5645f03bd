"""The statements a :class:`~freight.connectors.postgres.PostgresSink` runs, composed once
per column list: COPY (text or binary), an upsert's staging table and its
``INSERT … ON CONFLICT``, one row's INSERT, the savepoints around each try, the
rendering of pipelined INSERTs, and the sending of a write's rows (:func:`send`).
Identifiers are composed with ``psycopg.sql``, never by string formatting."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

from freight.connectors._pgbinary import BinaryColumns

try:
    import psycopg
    from psycopg import abc, sql
except ImportError as exc:  # pragma: no cover - only without the extra
    raise ImportError(
        "freight.connectors.postgres needs psycopg 3: pip install 'freight[postgres]'"
    ) from exc

__all__ = ["ROLLBACK", "Planner", "_WritePlan", "_statements", "send"]


class Planner:
    """The statements of a sink's writes into ``target`` in ``mode`` (``key``: an
    upsert's conflict columns; ``staging``: its temporary table's name in ``pg_temp``),
    each composed once per column list."""

    def __init__(
        self,
        target: sql.Identifier,
        staging: str,
        *,
        mode: Literal["copy", "insert", "upsert"],
        key: list[str],
        format: Literal["rows", "csv"],
    ) -> None:
        self._target = target
        self._staging = staging
        self.mode = mode
        self.key = key
        self.format = format
        self._cache: dict[tuple[str, ...], _WritePlan] = {}
        self._inserts: dict[tuple[str, ...], sql.Composed] = {}

    def plan(self, columns: list[str]) -> _WritePlan:
        """The statements of one write of ``columns`` in this sink's mode (shared with the
        async twin, which runs the same statements on its own connections)."""
        key = tuple(columns)
        plan = self._cache.get(key)
        if plan is None:
            plan = self._cache[key] = self._compose(columns)
        return plan

    def _compose(self, columns: list[str]) -> _WritePlan:
        """:meth:`plan`, composed."""
        if not columns or self.mode == "insert":
            return _WritePlan(insert=self.insert(columns), before=self.before())
        names = sql.SQL(", ").join(map(sql.Identifier, columns))
        options = sql.SQL(" (FORMAT csv)" if self.format == "csv" else "")
        binary = sql.SQL(" (FORMAT BINARY)")
        copy = sql.SQL("COPY {} ({}) FROM STDIN{}")
        if self.mode == "copy":
            return _WritePlan(
                copy=copy.format(self._target, names, options),
                copy_binary=copy.format(self._target, names, binary),
                copy_lines=self._lines(copy.format(self._target, names, _LINES)),
            )
        return self._upsert_plan(columns, names, copy, options, binary)

    def _lines(self, copy: sql.Composed) -> sql.Composed | None:
        """``copy`` (text format, read as plain CSV lines) where the sink takes CSV texts."""
        return copy if self.format == "csv" else None

    def _upsert_plan(
        self,
        columns: list[str],
        names: sql.Composed,
        copy: sql.SQL,
        options: sql.SQL,
        binary: sql.SQL,
    ) -> _WritePlan:
        """COPY into a temporary table shaped like the target (its defaults and checks,
        so that a refused value is refused by the COPY, which names its line), then one
        ``INSERT … ON CONFLICT``.

        Of several rows of one key in a write, the last one wins. The plain ``INSERT``
        refuses them (``ON CONFLICT DO UPDATE`` cannot touch a row twice); only then
        are the rows written again, ranked, so that a write without such a key pays
        nothing for it (ranking costs ~30 % of an upsert). The rank is the row's place
        in the staging table (``ctid``): it is empty when each COPY begins (created in
        this transaction, emptied after each write) and COPY appends, so its physical
        order is the order written.

        The staging table is created per transaction (``ON COMMIT DROP``): it always
        has the target's current columns and checks.
        """
        staging = sql.Identifier("pg_temp", self._staging)
        rank = sql.Identifier("freight upsert rank")
        keys = sql.SQL(", ").join(map(sql.Identifier, self.key))
        action = self._action(columns)
        upsert = sql.SQL("INSERT INTO {} ({}) SELECT {} FROM {} ON CONFLICT ({}) {}").format(
            self._target, names, names, staging, keys, action
        )
        # A key with a NULL never conflicts: every such row is kept.
        kept = sql.SQL(" OR ").join(
            [sql.SQL("{} = 1").format(rank)]
            + [sql.SQL("{} IS NULL").format(sql.Identifier(k)) for k in self.key]
        )
        last_wins = sql.SQL(
            "INSERT INTO {target} ({names}) SELECT {names} FROM (SELECT {names}, row_number()"
            " OVER (PARTITION BY {keys} ORDER BY ctid DESC) AS {rank} FROM {staging}) AS s"
            " WHERE {kept} ON CONFLICT ({keys}) {action}"
        ).format(
            target=self._target, names=names, keys=keys, rank=rank, staging=staging,
            kept=kept, action=action,
        )  # fmt: skip
        # Several writes may share one transaction: each empties the staging table.
        empty = sql.SQL("TRUNCATE {}").format(staging)
        return _WritePlan(
            before=self.before(),
            copy=copy.format(staging, names, options),
            copy_binary=copy.format(staging, names, binary),
            copy_lines=self._lines(copy.format(staging, names, _LINES)),
            after=[upsert, empty],
            after_last_wins=[last_wins, empty],
        )

    def _action(self, columns: list[str]) -> sql.Composed:
        """An upsert's ``ON CONFLICT`` action: set the item's columns but the key."""
        updates = [c for c in columns if c not in self.key]
        if not updates:
            return sql.Composed([sql.SQL("DO NOTHING")])
        return sql.SQL("DO UPDATE SET ") + sql.SQL(", ").join(
            sql.SQL("{} = EXCLUDED.{}").format(sql.Identifier(c), sql.Identifier(c))
            for c in updates
        )

    def insert(self, columns: list[str]) -> sql.Composed:
        """One row's INSERT of ``columns`` (an upsert's with its ``ON CONFLICT``); with
        no column, a row of the table's defaults."""
        key = tuple(columns)
        insert = self._inserts.get(key)
        if insert is not None:
            return insert
        if not columns:
            insert = sql.SQL("INSERT INTO {} DEFAULT VALUES").format(self._target)
        else:
            names = sql.SQL(", ").join(map(sql.Identifier, columns))
            marks = sql.SQL(", ").join(sql.Placeholder() * len(columns))
            insert = sql.SQL("INSERT INTO {} ({}) VALUES ({})").format(self._target, names, marks)
            if self.mode == "upsert":
                keys = sql.SQL(", ").join(map(sql.Identifier, self.key))
                conflict = sql.SQL(" ON CONFLICT ({}) ").format(keys)
                insert = insert + conflict + self._action(columns)
        self._inserts[key] = insert
        return insert

    def before(self) -> list[sql.Composed]:
        """What a write does once, before its first run: an upsert's staging table."""
        if self.mode != "upsert":
            return []
        create = sql.SQL(
            "CREATE TEMPORARY TABLE IF NOT EXISTS {} (LIKE {} INCLUDING DEFAULTS"
            " INCLUDING CONSTRAINTS) ON COMMIT DROP"
        )
        return [create.format(sql.Identifier("pg_temp", self._staging), self._target)]


# COPY's text format read with CSV's delimiter and NULL: CSV lines without a quote, a
# backslash or a carriage return (each ending in one \n) are read as the CSV format
# reads them, field for field, with the same errors; the server reads them with ~7 %
# less CPU (1M rows of the bench's file: 1.25 s against 1.36 s of \copy).
_LINES = sql.SQL(" (FORMAT text, DELIMITER ',', NULL '')")

_SAVEPOINT = sql.SQL("SAVEPOINT freight_try")
ROLLBACK = sql.SQL("ROLLBACK TO SAVEPOINT freight_try")  # the savepoint stays
_MOVE_ON = sql.SQL("RELEASE SAVEPOINT freight_try; SAVEPOINT freight_try")


@dataclass(frozen=True, slots=True)
class _WritePlan:
    """The statements of one write: an executemany INSERT, or COPY between setup steps.

    ``start`` runs once per write (the setup, then the first savepoint), ``done``
    after each try that went in (what follows the COPY, then the savepoint moves on);
    each is one query of several statements, one round trip.
    """

    insert: sql.Composed | None = None
    # one INSERT per row, each row a (statement, values) pair, in one pipeline
    pipelined: bool = False
    before: list[sql.Composed] = field(default_factory=list)
    copy: sql.Composed | None = None
    copy_binary: sql.Composed | None = None  # the same COPY in binary format
    # The same COPY of CSV texts in text format (:data:`_LINES`), or None (not CSV).
    copy_lines: sql.Composed | None = None
    after: list[sql.Composed] = field(default_factory=list)
    # ``after`` again where a key came twice: the last row of each key
    after_last_wins: list[sql.Composed] = field(default_factory=list)

    @property
    def start(self) -> sql.Composed:
        return sql.SQL("; ").join([*self.before, _SAVEPOINT])

    @property
    def done(self) -> sql.Composed:
        return sql.SQL("; ").join([*self.after, _MOVE_ON])

    @property
    def done_last_wins(self) -> sql.Composed | None:
        return (
            sql.SQL("; ").join([*self.after_last_wins, _MOVE_ON]) if self.after_last_wins else None
        )


def _statements(
    pairs: list[tuple[sql.Composed, Any]], context: abc.AdaptContext
) -> Iterator[tuple[bytes, list[Any]]]:
    """``(statement, values)`` pairs as each statement and its consecutive rows, each
    statement rendered once (psycopg renders a composed query on every call: a third of
    the time of pipelined runs of a few rows)."""
    rendered: dict[int, bytes] = {}
    start = 0
    for end in range(1, len(pairs) + 1):
        if end == len(pairs) or pairs[end][0] is not pairs[start][0]:
            statement = pairs[start][0]
            query = rendered.get(id(statement))
            if query is None:
                query = rendered[id(statement)] = statement.as_bytes(context)
            yield query, [values for _, values in pairs[start:end]]
            start = end


def send(
    cur: psycopg.Cursor[Any],
    plan: _WritePlan,
    rows: list[Any],
    sent: list[int],
    *,
    csv: bool,
    binary: BinaryColumns | None = None,
    text: str | bytes | None = None,
    lines: bool = False,
) -> None:
    """Send ``rows`` by ``plan``: executemany, pipelined INSERTs or COPY. COPY sends CSV
    texts (``csv``) as they are (``text``: already joined; ``lines``: in text format,
    :data:`_LINES`), other rows in ``binary`` format where given, else in text format.
    ``sent[0]`` is the row being written when psycopg itself refused a value (a NUL in
    a text, a type it cannot send)."""
    if plan.insert is not None:
        cur.executemany(plan.insert, rows)
        return
    if plan.pipelined:
        refused: psycopg.Error | None = None
        try:
            with cur.connection.pipeline():
                try:
                    for statement, values in _statements(rows, cur):
                        cur.executemany(statement, values)
                except psycopg.Error as exc:  # not left to the block's end, which
                    refused = exc  # would log it as an error it ignores
        except psycopg.errors.PipelineAborted:  # the block's end: ``refused`` again
            if refused is None:
                raise
        if refused is not None:
            raise refused
        return
    assert plan.copy is not None
    assert plan.copy_binary is not None
    if csv:
        query = plan.copy_lines if lines and plan.copy_lines is not None else plan.copy
        with cur.copy(query) as copy:
            copy.write("".join(rows) if text is None else text)
        return
    with cur.copy(plan.copy if binary is None else plan.copy_binary) as copy:
        if binary is not None:
            copy.set_types(binary.names)
        at = 0
        try:
            for at, row in enumerate(rows):  # noqa: B007 (read in the handler)
                copy.write_row(row)
        except BaseException:
            sent[0] = at
            raise
