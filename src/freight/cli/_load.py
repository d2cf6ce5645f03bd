"""The job behind ``freight load`` (also rebuilt by ``resume`` and ``retry-failed``).

What the command was asked (:class:`Load`, recorded with the run), the checks that
refuse a file or a target before anything is created (a header the target cannot take,
a table name it reserves or would cut, a --key or --types the file lacks, a file that
does not fit the existing table), and the sink and source of each target. A refusal is
a :class:`~freight.ConfigError` with the one line the user sees; the commands and their
error boundary are in :mod:`freight.cli._app`.
"""

from __future__ import annotations

import itertools
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from freight._core._retry import Retry
from freight._errors import ConfigError, TargetError
from freight.connectors import pgtypes
from freight.connectors.sqlite import SqliteSink, sqlite_path
from freight.connectors.sqlite import table_types as sqlite_table_types
from freight.jobs import CsvSource, Job, JsonlSource, ParquetSource
from freight.jobs._sources import FileFormat, Record, file_format, is_blank
from freight.store import Store

__all__ = ["Load", "load_job"]

# The most columns a table may have: PostgreSQL's fixed limit (MaxHeapAttributeNumber),
# and SQLite's as compiled into the library this Python uses (2000 by default).
POSTGRES_MAX_COLUMNS = 1600
with closing(sqlite3.connect(":memory:")) as _db:
    SQLITE_MAX_COLUMNS = _db.getlimit(sqlite3.SQLITE_LIMIT_COLUMN)
# PostgreSQL cuts longer names to 63 bytes (NAMEDATALEN - 1) without an error.
POSTGRES_MAX_NAME_BYTES = 63
# MariaDB / MySQL: 4,096 columns a table, names of at most 64 characters (refused past that).
MYSQL_MAX_COLUMNS = 4096
MYSQL_MAX_NAME_CHARS = 64


_POSTGRES = ("postgresql://", "postgres://")


@dataclass(frozen=True, slots=True, kw_only=True)
class Load:
    """What ``freight load`` was asked; recorded with the run (:meth:`metadata`), so that
    ``resume`` and ``retry-failed`` rebuild the same job (:meth:`from_metadata`)."""

    file: Path
    into: str
    table: str
    key: str | None = None
    schema: str | None = None
    types: str | None = None
    chunk_size: int = 10_000
    workers: int = 1
    max_failures: int | None = None
    max_failure_rate: float | None = None
    format: str | None = None  # --format: csv, jsonl or parquet (default: from the suffix)

    @property
    def file_format(self) -> FileFormat:
        """The file's format: ``--format``, else its suffix's, a ``.gz`` or ``.zst``
        looked through (the compression itself is read from the suffix or the file's
        first bytes, :class:`~freight.jobs.CsvSource`)."""
        try:
            return file_format(self.file, self.format)
        except ConfigError:
            if self.format is not None:
                raise
            raise ConfigError(
                f"cannot load {self.file.name}: give a .csv or .jsonl file (maybe .gz or "
                ".zst compressed) or a .parquet file, or name its format with "
                "--format csv|jsonl|parquet"
            ) from None

    @property
    def postgres(self) -> bool:
        """Whether the target is a PostgreSQL database (else a SQLite file)."""
        return self.into.startswith(_POSTGRES)

    @property
    def mysql(self) -> bool:
        """Whether the target is a MariaDB / MySQL database (extra ``freight[mysql]``)."""
        return self.into.startswith(("mysql://", "mariadb://"))

    def metadata(self) -> dict[str, Any]:
        return {
            "command": "load", "file": str(self.file.resolve()), "into": self.into,
            "table": self.table, "key": self.key, "chunk_size": self.chunk_size,
            "workers": self.workers,
            "schema": self.schema, "types": self.types, "max_failures": self.max_failures,
            "max_failure_rate": self.max_failure_rate, "format": self.format,
        }  # fmt: skip

    @classmethod
    def from_metadata(cls, meta: dict[str, Any]) -> Load:
        return cls(
            file=Path(meta["file"]), into=meta["into"], table=meta["table"],
            key=meta.get("key"), schema=meta.get("schema"), types=meta.get("types"),
            chunk_size=int(meta["chunk_size"]), workers=int(meta.get("workers", 1)),
            max_failures=meta.get("max_failures"),
            max_failure_rate=meta.get("max_failure_rate"), format=meta.get("format"),
        )  # fmt: skip


def default_chunk_size(into: str) -> int:
    """Rows per chunk where ``--chunk-size`` is not given: 50,000 into PostgreSQL (a
    chunk is one COPY and one commit; fewer, larger ones cost less per row: 1M rows
    load about 5-10 % sooner than in chunks of 10,000), 10,000 into the others."""
    return 50_000 if into.startswith(_POSTGRES) else 10_000


def default_workers(into: str) -> int:
    """Chunks written at once where ``--workers`` is not given: 2 into PostgreSQL (one
    chunk's COPY runs on the server while the other's rows are read and checked here:
    1M rows load 1.5-1.8x sooner than with one), 1 into the others (a SQLite file
    has one writer; the MariaDB sink's work holds Python's lock)."""
    return 2 if into.startswith(_POSTGRES) else 1


def load_job(spec: Load, name: str | None, open_store: Callable[[], Store]) -> Job:
    """The job behind ``freight load`` (also rebuilt by ``resume`` and ``retry-failed``).

    Everything is checked first (the table's name, the file's columns, --key, --types,
    the table when it exists, then the store ``open_store`` opens); only then is the
    table created: a refused load leaves no table and no run behind. A user error is a
    :class:`~freight.ConfigError` (one line, exit 2 at the CLI's error boundary).
    """
    file = spec.file
    if not file.is_file():
        raise ConfigError(f"no such file {str(file)!r}")
    _check_target(spec)
    _check_table(spec)
    kind = spec.file_format
    source: CsvSource | JsonlSource | ParquetSource
    if kind == "csv":
        source = CsvSource(file)
        columns = source.columns() or []
    elif kind == "jsonl":
        source = JsonlSource(file, convert=_an_object)  # as PostgreSQL's refuses it
        columns = _first_columns(source)
    else:
        source = ParquetSource(file)
        columns = source.column_names()
    if spec.mysql:
        _check_mysql_columns(columns, file)
    else:
        _check_columns(columns, file, spec.postgres)
    # (JSONL into PostgreSQL: --key is checked against the table, which may exist)
    checked = kind != "jsonl" or not spec.postgres
    if spec.key is not None and checked and columns and spec.key not in columns:
        raise ConfigError(
            f"--key {spec.key!r} is not a column of {file.name} (columns: {', '.join(columns)})"
        )
    opened = _not_the_store(spec, open_store)  # opened early for a store table's name
    column_types, exists = _table_types(source, spec, columns)
    opened = opened or open_store()
    sink: Any
    if spec.postgres:
        if not exists:
            _create_postgres_table(spec, column_types)
        sink, source = _postgres_sink(spec, column_types)
    elif spec.mysql:
        sink, source = _mysql_sink(spec, column_types, exists)
    elif kind == "csv" and isinstance(source, CsvSource):
        # the file's lines as they are, typed by the sink a whole column at a time (it
        # creates a missing table with these types)
        sink = SqliteSink(
            sqlite_path(spec.into), spec.table, key=spec.key, types=column_types,
            format="csv", columns=columns, delimiter=source.delimiter,
            quotechar=source.quotechar, lines_checked=True,  # raw CsvSource counts fields
        )  # fmt: skip
        source = CsvSource(file, raw=True)
    else:  # the sink creates a missing table with these types, and types every row
        sink = SqliteSink(sqlite_path(spec.into), spec.table, key=spec.key, types=column_types)
    return Job(
        name or f"load {file.name} into {spec.table}",
        source,
        sink,
        chunk_size=spec.chunk_size,
        workers=spec.workers,
        retry=Retry(attempts=3, backoff=0.05),
        max_failures=spec.max_failures,
        max_failure_rate=spec.max_failure_rate,
        store=opened,
        metadata=spec.metadata(),
        ordered_writes=spec.key is not None,  # the file's last value of a key wins
    )


def _check_target(spec: Load) -> None:
    """Refuse a target URL freight cannot load into, or a --schema it does not take."""
    if spec.mysql:
        _check_mysql(spec)
    elif not spec.postgres:
        sqlite_path(spec.into)  # a clear error for anything that is neither
        if spec.schema is not None:
            raise ConfigError("--schema applies to PostgreSQL targets (postgresql://…)")


def _check_table(spec: Load) -> None:
    """Refuse a table name (or schema) the target would refuse or alter."""
    if not spec.table.strip():
        raise ConfigError("--table is empty: give the name of the target table")
    if spec.schema is not None and not spec.schema.strip():
        raise ConfigError("--schema is empty: give a schema's name, or leave --schema out")
    if not spec.postgres:
        return  # SQLite's reserved names: table_types refuses them (one line)
    for option, value in (("--table", spec.table), ("--schema", spec.schema)):
        if value is not None and len(value.encode()) > POSTGRES_MAX_NAME_BYTES:
            raise ConfigError(
                f"{option} {value!r} is {len(value.encode())} bytes long; PostgreSQL "
                f"names are at most {POSTGRES_MAX_NAME_BYTES} (it would cut it): "
                "choose a shorter name"
            )


# The tables a PostgreSQL store keeps in its schema (freight.store's migrations).
_STORE_TABLES = frozenset({
    "jobs", "chunks", "events", "dead_letters", "freight_schema", "races",
    "flow_consumers", "flow_artifacts", "flow_dead_letters", "flow_deliveries",
})  # fmt: skip


def _not_the_store(spec: Load, open_store: Callable[[], Store]) -> Store | None:
    """Refuse a load into one of the store's own tables (a PostgreSQL store in the
    target's database and schema): its rows would mix with the runs, or the load fail on
    them. The store is opened (and returned) only for a table named like one of them."""
    if not spec.postgres or spec.table not in _STORE_TABLES:
        return None
    from freight.connectors.postgres import where_tables  # noqa: PLC0415 (extra)
    from freight.store import PostgresStore  # noqa: PLC0415 (extra)

    store = open_store()
    if not isinstance(store, PostgresStore):
        return store
    if where_tables(spec.into, spec.schema) != where_tables(store.path):
        return store
    store.close()
    raise ConfigError(
        f"--table {spec.table!r} is a table of the freight store in the same database "
        "and schema: load another table, another --schema, or keep the store elsewhere "
        "(--store)"
    )


def _first_columns(source: JsonlSource) -> list[str]:
    """The fields of a JSONL file's first readable record (the table's columns)."""
    first = next((r.item for r in _sample(source)), None)
    return [str(name) for name in first] if isinstance(first, dict) else []


def _sample(source: CsvSource | JsonlSource | ParquetSource) -> Iterator[Record]:
    """The records inference may read: not blank, not bad (their dead letters come when
    they are loaded), and for JSONL only objects (another value is refused then too)."""
    for record in source.read():
        if record.error is None and not is_blank(record) and isinstance(record.item, dict):
            yield record


def _check_columns(columns: Sequence[str], file: Path, postgres: bool) -> None:
    """Refuse a header the target cannot take (a table-level error, which would
    otherwise fail every row): an empty or duplicate name, too many columns, and for
    PostgreSQL a name it would cut to 63 bytes."""
    target, limit = (
        ("PostgreSQL", POSTGRES_MAX_COLUMNS) if postgres else ("SQLite", SQLITE_MAX_COLUMNS)
    )
    if len(columns) > limit:
        raise ConfigError(
            f"{file.name} has {len(columns)} columns; a {target} table has at most "
            f"{limit} columns: split the file, or load fewer columns"
        )
    seen: dict[str, str] = {}
    for number, column in enumerate(columns, 1):
        if not column.strip():
            raise ConfigError(
                f"empty column name: column {number} of {file.name} has none; name it"
            )
        if postgres and len(column.encode()) > POSTGRES_MAX_NAME_BYTES:
            raise ConfigError(
                f"column {column!r} of {file.name} is {len(column.encode())} bytes long; "
                f"PostgreSQL names are at most {POSTGRES_MAX_NAME_BYTES}: rename it"
            )
        # SQLite compares column names without ASCII case; PostgreSQL (quoted) exactly
        same = column if postgres else column.translate(_ASCII_LOWER)
        if same in seen:
            raise ConfigError(
                f"duplicate column name {column!r} in {file.name} (columns "
                f"{list(seen).index(same) + 1} and {number}): rename one"
            )
        seen[same] = column


_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def _table_types(
    source: CsvSource | JsonlSource | ParquetSource, spec: Load, columns: list[str]
) -> tuple[dict[str, str], bool]:
    """The column types of the target table and whether it exists: its own, or inferred
    from the file's first rows (--types first). Checked against the file; nothing is
    created. The same types on SQLite and PostgreSQL (:mod:`~freight.connectors.pgtypes`)."""
    overrides = pgtypes.parse_types(spec.types)
    if spec.postgres:
        from freight.connectors.postgres import table_types  # noqa: PLC0415 (extra)

        existing = table_types(spec.into, spec.table, spec.schema)
    elif spec.mysql:
        from freight.connectors.mysql import table_types as mysql_table_types  # noqa: PLC0415

        existing = mysql_table_types(spec.into, spec.table)
    else:
        existing = sqlite_table_types(sqlite_path(spec.into), spec.table)
    if existing is None and not columns:  # a JSONL file without a readable record
        raise ConfigError("cannot infer the columns: the file has no readable record")
    unknown = set(overrides) - set(columns if existing is None else existing)
    if unknown:
        raise ConfigError(f"--types names unknown column(s) {sorted(unknown)}")
    if existing is None:
        sample = [r.item for r in itertools.islice(_sample(source), 1000)]
        column_types = {**pgtypes.infer_types(columns, sample), **overrides}
        if spec.postgres:  # a table whose row cannot fit: refused before it is made
            pgtypes.check_row(spec.table, column_types)
    else:
        column_types = {c: pgtypes.canonical(t) for c, t in existing.items()}
    if spec.key is not None and spec.key not in column_types:
        raise ConfigError(f"--key {spec.key!r} is not a column of the table {spec.table!r}")
    if existing is not None:
        _check_fit(list(column_types), columns, spec, csv_text=isinstance(source, CsvSource))
    return column_types, existing is not None


def _check_fit(table: list[str], columns: list[str], spec: Load, *, csv_text: bool) -> None:
    """Refuse a file whose columns the existing table does not have, once, rather than
    failing every row (COPY, which takes the file's lines as they are, needs the
    table's columns in the file's order)."""
    if spec.postgres and csv_text:
        if table != columns:
            raise ConfigError(
                f"the columns of {spec.table!r} are not the file's, in its order: {table}"
            )
        return
    extra = [c for c in columns if c not in table]
    if extra:
        raise ConfigError(
            f"column(s) {extra} of {spec.file.name} are not columns of the table "
            f"{spec.table!r} (its columns: {table}): add them, or load another table"
        )


def _postgres_sink(spec: Load, column_types: dict[str, str]) -> tuple[Any, Any]:
    """The sink into the PostgreSQL table and the source that feeds it.

    A CSV file's lines go to COPY as they are (the server types them; the file has the
    table's columns, :func:`_check_fit`). JSONL records are typed here (a value that
    does not fit dead-letters its record) and each sets only the fields it carries
    (the sink writes records of other shapes in runs of their own columns): an upsert
    leaves the others of a row as they are and a new row gets their defaults, as on
    SQLite, instead of NULL.
    """
    from freight.connectors.postgres import PostgresSink  # noqa: PLC0415 (extra)

    if spec.file_format == "csv":
        sink = PostgresSink(
            spec.into, spec.table, schema=spec.schema, key=spec.key,
            columns=list(column_types), format="csv",
        )  # fmt: skip
        return sink, CsvSource(spec.file, raw=True)
    sink = PostgresSink(spec.into, spec.table, schema=spec.schema, key=spec.key)
    return sink, _typed_source(spec, column_types)


def _typed_source(spec: Load, column_types: dict[str, str]) -> JsonlSource | ParquetSource:
    """The JSONL or Parquet file's records typed here (:func:`_typed_record`)."""
    typed = _typed_record(spec.table, column_types)
    if spec.file_format == "parquet":
        return ParquetSource(spec.file, convert=typed)
    return JsonlSource(spec.file, convert=typed)


_SHAPES = 1024  # converters kept for the record shapes of one load (a file has a few)


def _an_object(record: Any) -> Any:
    """A JSONL record that is a JSON object, or a ValueError (its dead letter)."""
    if not isinstance(record, dict):
        raise ValueError(f"a record must be a JSON object, got {type(record).__name__}")
    return record


def _typed_record(table: str, column_types: dict[str, str]) -> Callable[[Any], dict[str, Any]]:
    """A JSONL record as the typed values of the fields it carries, or a ValueError (its
    dead letter) for a field the table lacks, refused on every target alike (SQLite's
    sink refuses it too; PostgreSQL's would refuse the whole chunk when each record
    carried it)."""
    converters: dict[frozenset[str], Callable[[Any], dict[str, Any]]] = {}

    def typed(record: Any) -> dict[str, Any]:
        fields = frozenset(_an_object(record))
        convert = converters.get(fields)
        if convert is None:
            unknown = sorted(f for f in record if f not in column_types)
            if unknown:
                raise ValueError(
                    f"fields {unknown} are not columns of {table!r} (its columns: "
                    f"{list(column_types)}); drop them from the record or add the columns"
                )
            # in the table's order: records of one set of fields make one shape
            own = {c: kind for c, kind in column_types.items() if c in fields}
            convert = pgtypes.converter(own)
            if len(converters) < _SHAPES:
                converters[fields] = convert
        return convert(record)

    return typed


def _create_postgres_table(spec: Load, column_types: dict[str, str]) -> None:
    """Create the table, with a schema that does not exist said in one line naming it."""
    import psycopg  # noqa: PLC0415 (extra freight[postgres])

    from freight.connectors.postgres import create_table  # noqa: PLC0415

    try:
        create_table(
            spec.into, spec.table, column_types, schema=spec.schema,
            key=[spec.key] if spec.key else [],
        )  # fmt: skip
    except (psycopg.Error, TargetError) as exc:  # the server's error, or freight's for it
        missing = psycopg.errors.InvalidSchemaName
        if not isinstance(exc, missing) and not isinstance(exc.__cause__, missing):
            raise
        raise ConfigError(
            f"--schema {spec.schema!r} does not exist in the target database: create it "
            "(CREATE SCHEMA …) or leave --schema out"
        ) from exc


# -- MariaDB / MySQL ------------------------------------------------------------------------


def _check_mysql(spec: Load) -> None:
    """Refuse what a MariaDB target cannot take: a --schema (its URL names the database),
    a table name past 64 characters or ending in a space (MariaDB refuses both)."""
    from freight.connectors._mysqlerrors import parse_url  # noqa: PLC0415 (extra)

    parse_url(spec.into)  # a clear error for a malformed URL
    if spec.schema is not None:
        raise ConfigError(
            "--schema applies to PostgreSQL targets; a MariaDB/MySQL URL names its "
            "database (mysql://USER@HOST:PORT/DB): leave --schema out"
        )
    if len(spec.table) > MYSQL_MAX_NAME_CHARS or spec.table.endswith(" "):
        raise ConfigError(
            f"--table {spec.table!r}: MariaDB table names are at most "
            f"{MYSQL_MAX_NAME_CHARS} characters and do not end with a space: choose another"
        )


def _check_mysql_columns(columns: Sequence[str], file: Path) -> None:
    """:func:`_check_columns` for a MariaDB table: at most 4,096 columns, names of at
    most 64 characters not ending in a space, unique without case (MariaDB compares
    column names so)."""
    if len(columns) > MYSQL_MAX_COLUMNS:
        raise ConfigError(
            f"{file.name} has {len(columns)} columns; a MariaDB table has at most "
            f"{MYSQL_MAX_COLUMNS} columns: split the file, or load fewer columns"
        )
    seen: dict[str, int] = {}
    for number, column in enumerate(columns, 1):
        if not column.strip():
            raise ConfigError(
                f"empty column name: column {number} of {file.name} has none; name it"
            )
        if len(column) > MYSQL_MAX_NAME_CHARS or column.endswith(" "):
            raise ConfigError(
                f"column {column!r} of {file.name}: MariaDB names are at most "
                f"{MYSQL_MAX_NAME_CHARS} characters and do not end with a space: rename it"
            )
        same = column.casefold()
        if same in seen:
            raise ConfigError(
                f"duplicate column name {column!r} in {file.name} (columns "
                f"{seen[same]} and {number}): rename one"
            )
        seen[same] = number


def _mysql_sink(spec: Load, column_types: dict[str, str], exists: bool) -> tuple[Any, Any]:
    """The sink into the MariaDB table (created with ``column_types`` when missing) and
    the source that feeds it: CSV records typed by the sink; JSONL records typed here,
    each setting only the fields it carries, a field the table lacks a dead letter, as
    on PostgreSQL (:func:`_typed_record`)."""
    from freight.connectors.mysql import MysqlSink, create_table  # noqa: PLC0415 (extra)

    if not exists:
        create_table(spec.into, spec.table, column_types, key=[spec.key] if spec.key else [])
    if spec.file_format == "csv":
        return MysqlSink(spec.into, spec.table, key=spec.key, types=column_types), CsvSource(
            spec.file
        )
    return MysqlSink(spec.into, spec.table, key=spec.key), _typed_source(spec, column_types)
