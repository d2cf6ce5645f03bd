"""The duplicate keys of a refused COPY, found in one statement.

A load run again over rows already in its table refuses every row for its key, and the
rule of a write (find the row COPY names, write the rest again) then costs one failed
statement per row: 1M rows took ~330 s. Where a COPY of CSV texts is refused by a
unique index, :func:`duplicates` reads the texts into a temporary table shaped like the
target (its types, NOT NULLs and checks) and asks, in one query, which rows hold a key
that the table has, or that a row before them in the write has: the rows the server
would refuse for that index, each with the server's own reason. They are not sent; the
rest is written as any write is.

Only where that answer is exact (:data:`ELIGIBLE_SQL`): a plain table whose only unique
or exclusion index is the one that refused, immediate, on plain columns of
deterministic collations, NULLs distinct; no foreign key, user trigger, rule or
row-level security (each could refuse a row another way, or first); every column of the
table written (no default computed); and the temporary table takes every text (a value
refused for its type, NULL or check fails there first, as it would in the target: the
rule of a write then finds it). Anything else keeps the rule of a write.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from typing import Any

import psycopg
from psycopg import sql

from freight._errors import PermanentError

__all__ = [
    "ELIGIBLE_SQL",
    "UniqueIndex",
    "duplicates",
    "first_try",
    "found_duplicates",
    "unique_index",
]

# The unique index %(table)s (a regclass's text) has, when duplicate keys of a write of
# every column %(columns)s may be found in one query: its name, each key column as the
# server's message shows it, its name, and the type its operator class reads (schema and
# name; '': a pseudo-type), whose output the message shows. No row: they may not.
ELIGIBLE_SQL = """
SELECT ic.relname,
       array_agg(pg_get_indexdef(i.indexrelid, k, true) ORDER BY k),
       array_agg(a.attname::text ORDER BY k),
       array_agg(CASE WHEN ty.typtype = 'p' THEN '' ELSE tn.nspname::text END ORDER BY k),
       array_agg(CASE WHEN ty.typtype = 'p' THEN '' ELSE ty.typname::text END ORDER BY k)
FROM pg_index i
JOIN pg_class ic ON ic.oid = i.indexrelid
JOIN pg_class t ON t.oid = i.indrelid
CROSS JOIN generate_series(1, i.indnkeyatts) AS k
JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[k - 1]
JOIN pg_opclass o ON o.oid = i.indclass[k - 1]
JOIN pg_type ty ON ty.oid = o.opcintype
JOIN pg_namespace tn ON tn.oid = ty.typnamespace
LEFT JOIN pg_collation c ON c.oid = a.attcollation
WHERE i.indrelid = %(table)s::regclass
  AND i.indisunique AND i.indimmediate AND i.indisvalid
  AND i.indexprs IS NULL AND i.indpred IS NULL
  AND NOT coalesce((to_jsonb(i) ->> 'indnullsnotdistinct')::boolean, false)
  AND t.relkind = 'r' AND NOT t.relispartition AND NOT t.relhassubclass
  AND NOT t.relhasrules AND NOT t.relrowsecurity
  AND (SELECT count(*) FROM pg_index o
       WHERE o.indrelid = i.indrelid AND (o.indisunique OR o.indisexclusion)) = 1
  AND NOT EXISTS (SELECT 1 FROM pg_constraint f
                  WHERE f.conrelid = i.indrelid AND f.contype IN ('f', 'x'))
  AND NOT EXISTS (SELECT 1 FROM pg_trigger g
                  WHERE g.tgrelid = i.indrelid AND NOT g.tgisinternal)
  AND (SELECT array_agg(b.attname::text ORDER BY b.attname) FROM pg_attribute b
       WHERE b.attrelid = i.indrelid AND b.attnum > 0 AND NOT b.attisdropped)
      = (SELECT array_agg(w ORDER BY w) FROM unnest(%(columns)s::text[]) AS w)
GROUP BY ic.relname
HAVING bool_and(c.oid IS NULL OR c.collisdeterministic)
"""


class UniqueIndex:
    """The unique index a write's duplicate keys are found for (:data:`ELIGIBLE_SQL`)."""

    __slots__ = ("columns", "name", "read_as", "shown")

    def __init__(
        self,
        name: str,
        shown: Sequence[str],
        columns: Sequence[str],
        read_as: Sequence[tuple[str, str]],
    ) -> None:
        self.name, self.shown, self.columns = name, list(shown), list(columns)
        self.read_as = list(read_as)


def first_try(
    cur: psycopg.Cursor[Any],
    target: sql.Identifier,
    *,
    rows: list[str],
    refused: dict[int, PermanentError],
    failed: list[psycopg.Error],
    send: Callable[[list[str]], psycopg.Error | None],
    columns: list[str],
    indexes: dict[tuple[str, ...], UniqueIndex | None],
) -> tuple[dict[int, PermanentError], list[psycopg.Error]] | None:
    """The first try of a COPY of the CSV texts ``rows`` but those ``refused`` (by
    ``send``, unless ``failed`` holds its error already): ``None`` when they went in.
    Else, where a unique index refused it, ``refused`` with the rows that index refuses
    (found at once: :func:`found_duplicates`) and no failed try (the rest is written
    again); or ``refused`` as it is and the failed try, the plan's first write.
    ``indexes``: the table's eligible index per column list, asked once."""
    if not failed:
        error = send([rows[i] for i in range(len(rows)) if i not in refused])
        if error is None:
            return None
        failed = [error]
    found = found_duplicates(cur, failed[0], target, columns=columns, rows=rows,
                             refused=refused, indexes=indexes)  # fmt: skip
    return (refused, failed) if found is None else (found, [])


def found_duplicates(
    cur: psycopg.Cursor[Any],
    error: psycopg.Error,
    target: sql.Identifier,
    *,
    columns: list[str],
    rows: list[str],
    refused: dict[int, PermanentError],
    indexes: dict[tuple[str, ...], UniqueIndex | None],
) -> dict[int, PermanentError] | None:
    """``refused`` with the rows of ``rows`` the unique index that refused their COPY
    (``error``) refuses; ``None`` where they cannot be found so (:data:`ELIGIBLE_SQL`,
    :func:`duplicates`)."""
    if not isinstance(error, psycopg.errors.UniqueViolation):
        return None
    key = tuple(columns)
    if key not in indexes:
        indexes[key] = unique_index(cur, target.as_string(cur), columns)
    index = indexes[key]
    diag = error.diag  # the server's own words, as they are rebuilt (lc_messages)
    if (
        index is None
        or diag.constraint_name != index.name
        or diag.message_primary != _MESSAGE.format(index.name)
        or not (diag.message_detail or "").startswith("Key (")
    ):
        return None
    sent = [i for i in range(len(rows)) if i not in refused]
    text = "".join(rows[i] for i in sent)
    found = duplicates(cur, target, columns, text, index, records=len(sent))
    if found is None:
        return None
    return {**refused, **{sent[n]: refusal for n, refusal in found.items()}}


def unique_index(
    cur: psycopg.Cursor[Any], table: str, columns: Sequence[str]
) -> UniqueIndex | None:
    """The table's unique index, if duplicate keys of a write of ``columns`` may be found
    in one query (``table``: the quoted, qualified name)."""
    row = cur.execute(ELIGIBLE_SQL, {"table": table, "columns": list(columns)}).fetchone()
    if row is None:
        return None
    return UniqueIndex(row[0], row[1], row[2], list(zip(row[3], row[4], strict=True)))


def duplicates(
    cur: psycopg.Cursor[Any],
    target: sql.Identifier,
    columns: Sequence[str],
    text: str | bytes,
    index: UniqueIndex,
    *,
    records: int,
) -> dict[int, PermanentError] | None:
    """The rows of CSV ``text`` (``records`` of them, written as ``columns``) that
    ``index`` refuses, each with the reason the server gives; ``None`` when the
    temporary table refuses a text or reads another number of records (the rule of a
    write finds why). Runs in a savepoint of the write's transaction.

    The temporary table has an index on the key (a key too long for an index is refused
    there too) and the target's rows found are locked ``FOR KEY SHARE`` (a key deleted
    by a transaction not yet committed is waited for, as the COPY would)."""
    staging = sql.Identifier(f"freight_dups_{uuid.uuid4().hex[:12]}")
    names = sql.SQL(", ").join(map(sql.Identifier, columns))
    keys = [sql.Identifier(c) for c in index.columns]
    cur.execute("SAVEPOINT freight_dups")
    try:
        cur.execute(
            sql.SQL("CREATE TEMP TABLE {} (LIKE {} INCLUDING CONSTRAINTS) ON COMMIT DROP").format(
                staging, target
            )
        )
        cur.execute(sql.SQL("CREATE INDEX ON {} ({})").format(staging, sql.SQL(", ").join(keys)))
        copy_in = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT csv)").format(staging, names)
        with cur.copy(copy_in) as copy:
            copy.write(text)
        if cur.rowcount != records:  # a text of several records (or none)
            raise psycopg.DataError(f"{cur.rowcount} records read for {records}")
        found = cur.execute(_query(staging, target, keys, index.read_as)).fetchall()
        cur.execute(sql.SQL("DROP TABLE {}").format(staging))
        cur.execute("RELEASE SAVEPOINT freight_dups")
    except psycopg.Error:
        if cur.connection.broken:
            raise
        cur.execute("ROLLBACK TO SAVEPOINT freight_dups; RELEASE SAVEPOINT freight_dups")
        return None
    shown = ", ".join(index.shown)
    return {int(n): _refusal(index.name, shown, values) for n, values in found}


def _query(
    staging: sql.Identifier,
    target: sql.Identifier,
    keys: list[sql.Identifier],
    read_as: list[tuple[str, str]],
) -> sql.Composed:
    """Each row of ``staging`` (by its place, from 0) whose key is in ``target`` (its own
    rows: ``ONLY``) or in a row before it, with its key's values as the server shows them
    (the output of the type each key column's operator class reads: ``t``, not ``true``;
    ``char(n)`` padded)."""
    key = sql.SQL(", ").join(keys)
    same = sql.SQL(" AND ").join(sql.SQL("t.{k} = s.{k}").format(k=k) for k in keys)
    known = sql.SQL(" AND ").join(sql.SQL("s.{} IS NOT NULL").format(k) for k in keys)
    shown = sql.SQL(" || ', ' || ").join(
        sql.SQL("format('%s', s.{}::{})").format(k, sql.Identifier(*type_))
        if type_[1]
        else sql.SQL("format('%s', s.{})").format(k)
        for k, type_ in zip(keys, read_as, strict=True)
    )
    return sql.SQL(
        "SELECT s.n, {shown} FROM (SELECT {key}, row_number() OVER (ORDER BY ctid) - 1 AS n,"
        " row_number() OVER (PARTITION BY {key} ORDER BY ctid) AS r FROM {staging}) AS s"
        " WHERE {known} AND (s.r > 1 OR EXISTS"
        " (SELECT 1 FROM ONLY {target} AS t WHERE {same} FOR KEY SHARE))"
        " ORDER BY s.n"
    ).format(shown=shown, key=key, staging=staging, known=known, target=target, same=same)


_MESSAGE = 'duplicate key value violates unique constraint "{}"'


def _refusal(index: str, shown: str, values: str) -> PermanentError:
    """The reason :func:`~freight.connectors._pgerrors.reason` gives for the server's
    refusal of a duplicate key, its cause a ``UniqueViolation`` saying the same."""
    message = _MESSAGE.format(index)
    detail = f"Key ({shown})=({values}) already exists."
    refusal = PermanentError(f"UniqueViolation: {' '.join(f'{message}; {detail}'.split())}")
    refusal.__cause__ = psycopg.errors.UniqueViolation(f"{message}\nDETAIL:  {detail}")
    return refusal
