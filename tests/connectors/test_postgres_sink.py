"""PostgresSink against the real PostgreSQL: modes, bad-row isolation, reconnects, names."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from freight import ConfigError, Job, PermanentError, Retry, TargetError, TransientError
from freight.connectors.postgres import Mode, PostgresSink, classify
from freight.store import SqliteStore
from tests.services import POSTGRES_URL, require


@pytest.fixture
def schema() -> Iterator[str]:
    require("127.0.0.1", 5432, "PostgreSQL")
    name = f"freight_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(name)))
    yield name
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(name)))


def create(schema: str, table: str, body: str) -> None:
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        conn.execute(
            sql.SQL("CREATE TABLE {} (" + body + ")").format(sql.Identifier(schema, table))
        )


def rows(schema: str, table: str, order: str = "1") -> list[tuple[object, ...]]:
    with psycopg.connect(POSTGRES_URL) as conn:
        query = sql.SQL("SELECT * FROM {} ORDER BY " + order).format(sql.Identifier(schema, table))
        return conn.execute(query).fetchall()


@pytest.mark.parametrize("mode", ["copy", "insert", "upsert"])
def test_round_trip_in_every_mode(schema: str, mode: Mode) -> None:
    create(schema, "t", "id bigint PRIMARY KEY, amount numeric, note text")
    key = "id" if mode == "upsert" else None
    sink = PostgresSink(POSTGRES_URL, "t", schema=schema, mode=mode, key=key)
    assert (
        sink.write(
            [{"id": 1, "amount": Decimal("1.5"), "note": "a"}, {"id": 2, "amount": 2, "note": None}]
        )
        is None
    )
    assert sink.write([]) is None
    if mode == "upsert":
        sink.write([{"id": 1, "amount": 9, "note": "new"}])
    sink.close()
    expected_first = (1, Decimal(9), "new") if mode == "upsert" else (1, Decimal("1.5"), "a")
    assert rows(schema, "t") == [expected_first, (2, Decimal(2), None)]


def test_copy_with_3_bad_rows_among_10000_commits_the_rest(schema: str) -> None:
    create(schema, "t", "id bigint PRIMARY KEY, amount numeric NOT NULL")
    bad = {17, 5_000, 9_999}
    items = [{"id": i, "amount": None if i in bad else i} for i in range(10_000)]
    sink = PostgresSink(POSTGRES_URL, "t", schema=schema)
    outcomes = sink.write(items)
    sink.close()
    assert outcomes is not None
    failed = {i for i, o in enumerate(outcomes) if isinstance(o, Exception)}
    assert failed == bad
    assert isinstance(outcomes[17], PermanentError)
    assert isinstance(outcomes[17].__cause__, psycopg.errors.NotNullViolation)
    with psycopg.connect(POSTGRES_URL) as conn:
        count = conn.execute(
            sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(schema, "t"))
        ).fetchone()
    assert count == (9_997,)


@pytest.mark.parametrize(
    "table", ['we"ird', "with space", "Select", "UPPER", 'x"; DROP TABLE victims; --']
)
def test_names_are_taken_literally_and_injection_is_inert(schema: str, table: str) -> None:
    create(schema, "victims", "id int")
    create(schema, table, '"Order" int, "a b" text')
    sink = PostgresSink(POSTGRES_URL, table, schema=schema)
    sink.write([{"Order": 1, "a b": "x"}])
    sink.close()
    assert rows(schema, table) == [(1, "x")]
    assert rows(schema, "victims") == []


def test_reconnects_after_the_server_drops_the_connection(schema: str) -> None:
    create(schema, "t", "id int")
    url = f"{POSTGRES_URL}?application_name={schema}"
    sink = PostgresSink(url, "t", schema=schema, pool_size=1)
    sink.write([{"id": 1}])
    with psycopg.connect(POSTGRES_URL, autocommit=True) as admin:
        killed = admin.execute(
            "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE application_name = %s",
            (schema,),
        ).fetchone()
    assert killed == (1,)  # the sink's pooled connection is gone
    retry = Retry(attempts=3, backoff=0, jitter=0)
    report = Job("pg-reconnect", [{"id": 2}, {"id": 3}], sink, retry=retry,
                 store=SqliteStore(":memory:")).run()  # fmt: skip
    sink.close()
    assert report.summary["succeeded"] == 2
    assert rows(schema, "t") == [(1,), (2,), (3,)]


def test_huge_field_and_job_dead_letters(schema: str, tmp_path: Path) -> None:
    create(schema, "t", "id int PRIMARY KEY, body text, n int")
    sink = PostgresSink(POSTGRES_URL, "t", schema=schema, key="id")
    items = [
        {"id": 1, "body": "x" * 5_000_000, "n": 1},
        {"id": 2, "body": "y", "n": "not a number"},
    ]
    report = Job("pg-job", items, sink, store=SqliteStore(tmp_path / "s.db")).run()
    sink.close()
    assert [e["item"] for e in report["errors"]] == ["item 1"]
    assert report["errors"][0]["error_type"] == "PermanentError"
    assert report["errors"][0]["message"].startswith("InvalidTextRepresentation: ")
    assert rows(schema, "t")[0][1] == "x" * 5_000_000


def test_configuration_and_error_mapping() -> None:
    with pytest.raises(ConfigError, match="needs key"):
        PostgresSink(POSTGRES_URL, "t", mode="upsert")
    with pytest.raises(ConfigError, match="mode"):
        PostgresSink(POSTGRES_URL, "t", mode="merge")  # type: ignore[arg-type]
    lost = classify(psycopg.OperationalError("server closed the connection"))
    assert isinstance(lost, TransientError)
    assert isinstance(lost.__cause__, psycopg.OperationalError)
    data = psycopg.errors.NotNullViolation("null")
    refused = classify(data)
    assert isinstance(refused, PermanentError)
    assert refused.__cause__ is data
    assert str(refused) == "NotNullViolation: null"
    statement = psycopg.errors.UndefinedTable("no such table")
    refusal = classify(statement)  # the schema does not fit: not a row's fault
    assert isinstance(refusal, TargetError)
    assert refusal.__cause__ is statement
    client_side = psycopg.ProgrammingError("cannot adapt type 'object'")
    assert classify(client_side) is client_side


def test_csv_format_copies_text_as_it_is(schema: str) -> None:
    create(schema, "t", "id bigint PRIMARY KEY, note text")
    sink = PostgresSink(POSTGRES_URL, "t", schema=schema, columns=["id", "note"], format="csv")
    outcomes = sink.write(['1,"a, b"\n', "x,bad id\n", '2,"multi\nline"\n'])
    sink.close()
    assert outcomes is not None
    assert [type(o).__name__ for o in outcomes] == ["NoneType", "PermanentError", "NoneType"]
    # refused before the COPY, with the converter's reason (as a SQLite target gives)
    assert str(outcomes[1]) == "column 'id': invalid literal for int() with base 10: 'x'"
    assert rows(schema, "t") == [(1, "a, b"), (2, "multi\nline")]
    with pytest.raises(ConfigError, match="format='csv' needs columns="):
        PostgresSink(POSTGRES_URL, "t", format="csv")
    with pytest.raises(ConfigError, match="format must be"):
        PostgresSink(POSTGRES_URL, "t", format="xml")  # type: ignore[arg-type]


@pytest.mark.parametrize("mode", ["copy", "upsert"])
def test_typed_rows_go_by_binary_copy_and_the_rest_by_text(schema: str, mode: Mode) -> None:
    from datetime import UTC, date, datetime

    create(
        schema, "t",
        "id bigint PRIMARY KEY, small int, amount numeric, at timestamptz, day date, ok boolean,"
        " ratio double precision, note text, data jsonb",
    )  # fmt: skip
    typed = ["id", "small", "amount", "at", "day", "ok", "ratio", "note"]
    sink = PostgresSink(POSTGRES_URL, "t", schema=schema, mode=mode,
                        key="id" if mode == "upsert" else None, columns=typed)  # fmt: skip
    at = datetime(2026, 11, 25, 10, 30, tzinfo=UTC)
    good = [(1, 7, Decimal("1.25"), at, date(2026, 1, 2), True, 0.5, "é"),
            (2, None, 3, None, None, False, None, None)]  # fmt: skip
    assert sink.write(good) is None
    assert sink.binary_for(typed, good) is not None  # every value fits: binary
    # a string for the timestamp, an int past int4: text COPY, where the server decides
    mixed = [(3, 1, Decimal(1), "2026-11-25T10:30:00+00:00", None, None, None, "x"),
             (4, 2**40, Decimal(1), None, None, None, None, "too big")]  # fmt: skip
    assert sink.binary_for(typed, mixed) is None
    outcomes = sink.write(mixed)
    assert outcomes is not None
    assert outcomes[0] is None
    assert isinstance(outcomes[1], PermanentError)
    assert isinstance(outcomes[1].__cause__, psycopg.errors.NumericValueOutOfRange)
    assert rows(schema, "t")[0][:8] == (1, 7, Decimal("1.25"), at, date(2026, 1, 2), True, 0.5, "é")
    assert [r[0] for r in rows(schema, "t")] == [1, 2, 3]
    assert rows(schema, "t")[2][3] == at
    # a column type without a binary form here (jsonb): text COPY for every write
    json_sink = PostgresSink(POSTGRES_URL, "t", schema=schema, columns=["id", "data"])
    assert json_sink.write([(10, '{"a": 1}')]) is None
    assert json_sink.binary_for(["id", "data"], [(11, "{}")]) is None
    sink.close()
    json_sink.close()
