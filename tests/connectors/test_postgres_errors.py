"""PostgreSQL errors mapped to freight's classes, against the real server.

Data the server refuses is a PermanentError of that row alone (the server's error as
its cause); an outage met while isolating a bad row is a TransientError and stops the
bisection, so the job retries the rows instead of dead-lettering each of them.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from freight import ConfigError, Job, PermanentError, TargetError, TransientError
from freight.connectors.postgres import (
    AsyncPostgresSink,
    PostgresSink,
    PostgresSource,
    create_table,
    table_types,
)
from freight.store import SqliteStore
from tests.services import POSTGRES_URL, require


@pytest.fixture
def schema() -> Iterator[str]:
    require("127.0.0.1", 5432, "PostgreSQL")
    name = f"freight_errors_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(name)))
        conn.execute(
            sql.SQL(
                "CREATE TABLE {} (id bigint PRIMARY KEY, amount int NOT NULL CHECK (amount >= 0))"
            ).format(sql.Identifier(name, "t"))
        )
    yield name
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(name)))


def stored_ids(schema: str) -> list[int]:
    with psycopg.connect(POSTGRES_URL) as conn:
        query = sql.SQL("SELECT id FROM {} ORDER BY id").format(sql.Identifier(schema, "t"))
        return [row[0] for row in conn.execute(query)]


REFUSED = [
    # (the bad row, the server's error class, a word of its message)
    ({"id": 900, "amount": None}, psycopg.errors.NotNullViolation, "not-null"),
    ({"id": 901, "amount": -5}, psycopg.errors.CheckViolation, "check constraint"),
    ({"id": 1, "amount": 7}, psycopg.errors.UniqueViolation, "duplicate key"),
    ({"id": 902, "amount": 2**40}, psycopg.errors.NumericValueOutOfRange, "out of range"),
    ({"id": 903, "amount": "seven"}, psycopg.errors.InvalidTextRepresentation, '"seven"'),
]


@pytest.mark.parametrize(("bad", "cause", "words"), REFUSED)
@pytest.mark.parametrize("mode", ["copy", "insert"])
def test_a_row_the_server_refuses_is_a_permanent_error_of_that_row_alone(
    schema: str,
    mode: str,
    bad: dict[str, object],
    cause: type[psycopg.Error],
    words: str,
) -> None:
    sink = PostgresSink(POSTGRES_URL, "t", schema=schema, mode=mode)  # type: ignore[arg-type]
    items: list[dict[str, object]] = [{"id": i, "amount": i} for i in range(6)]
    items.insert(3, bad)
    outcomes = sink.write(items)
    sink.close()
    assert outcomes is not None
    assert [i for i, o in enumerate(outcomes) if o is not None] == [3]
    error = outcomes[3]
    assert isinstance(error, PermanentError)
    assert isinstance(error.__cause__, cause)
    assert str(error).startswith(f"{cause.__name__}: ")
    assert words in str(error)
    assert stored_ids(schema) == [0, 1, 2, 3, 4, 5]


async def test_the_async_sink_maps_refused_rows_the_same_way(schema: str) -> None:
    sink = AsyncPostgresSink(POSTGRES_URL, "t", schema=schema)
    outcomes = await sink.write([{"id": 1, "amount": 1}, {"id": 2, "amount": -1}])
    await sink.aclose()
    assert outcomes is not None
    assert outcomes[0] is None
    assert isinstance(outcomes[1], PermanentError)
    assert isinstance(outcomes[1].__cause__, psycopg.errors.CheckViolation)


def test_a_job_dead_letters_refused_rows_as_permanent_with_the_server_message(
    schema: str, tmp_path: Path
) -> None:
    sink = PostgresSink(POSTGRES_URL, "t", schema=schema)
    items = [{"id": i, "amount": -1 if i == 4 else i} for i in range(10)]
    report = Job("pg-refused", items, sink, store=SqliteStore(tmp_path / "s.db")).run()
    sink.close()
    assert report.summary["succeeded"] == 9
    [error] = report["errors"]
    assert (error["item"], error["error_type"], error["category"]) == (
        "item 4",
        "PermanentError",
        "permanent",
    )
    assert error["message"].startswith("CheckViolation: new row for relation")


def outage_on_partial_writes(schema: str, rows: int) -> None:
    """A trigger that refuses a write of ``rows`` rows as bad data and any smaller write
    as a lock timeout (55P03, an OperationalError): an outage met in the middle of
    isolating a bad row. It counts the writes in a sequence (never rolled back)."""
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SEQUENCE {}").format(sql.Identifier(schema, "writes")))
        conn.execute(
            sql.SQL(
                "CREATE FUNCTION {}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                "PERFORM nextval({}); "
                "IF (SELECT count(*) FROM written) >= {} THEN "
                "RAISE EXCEPTION 'bad value' USING ERRCODE = '22023'; END IF; "
                "RAISE EXCEPTION 'lock timeout' USING ERRCODE = '55P03'; END $$"
            ).format(
                sql.Identifier(schema, "refuse"),
                sql.Literal(f'"{schema}".writes'),
                sql.Literal(rows),
            )
        )
        conn.execute(
            sql.SQL(
                "CREATE TRIGGER refuse AFTER INSERT ON {} REFERENCING NEW TABLE AS written "
                "FOR EACH STATEMENT EXECUTE FUNCTION {}()"
            ).format(sql.Identifier(schema, "t"), sql.Identifier(schema, "refuse"))
        )


def writes(schema: str) -> int:
    with psycopg.connect(POSTGRES_URL) as conn:
        query = sql.SQL("SELECT last_value FROM {}").format(sql.Identifier(schema, "writes"))
        row = conn.execute(query).fetchone()
    assert row is not None
    return int(row[0])


def test_an_outage_while_isolating_stops_the_bisection_after_the_two_halves(schema: str) -> None:
    outage_on_partial_writes(schema, rows=64)
    sink = PostgresSink(POSTGRES_URL, "t", schema=schema)
    outcomes = sink.write([{"id": i, "amount": i} for i in range(64)])
    sink.close()
    assert outcomes is not None
    assert all(isinstance(o, TransientError) for o in outcomes)  # the job retries them all
    assert all(isinstance(o.__cause__, psycopg.errors.LockNotAvailable) for o in outcomes)
    # The whole write (refused as data, no line named: bisected), then one call per
    # half: both halves meet the outage, so no half is split (not 2 * 64). The whole
    # is not written a second time: its failure is known.
    assert writes(schema) == 3
    assert stored_ids(schema) == []


def test_a_server_that_refuses_every_write_transiently_fails_the_whole_write(
    schema: str,
) -> None:
    outage_on_partial_writes(schema, rows=64)
    sink = PostgresSink(POSTGRES_URL, "t", schema=schema)
    with pytest.raises(TransientError, match="PostgreSQL unavailable: lock timeout") as caught:
        sink.write([{"id": 1, "amount": 1}])
    sink.close()
    assert isinstance(caught.value.__cause__, psycopg.errors.LockNotAvailable)


def test_a_statement_the_schema_does_not_fit_is_a_target_error_with_the_server_error(
    schema: str,
) -> None:
    sink = PostgresSink(POSTGRES_URL, "t", schema=schema)
    outcomes = sink.write([{"id": 1, "nope": 1}, {"id": 2, "nope": 2}])
    sink.close()
    assert outcomes is not None
    assert all(isinstance(o, TargetError) for o in outcomes)
    assert isinstance(outcomes[0].__cause__, psycopg.errors.UndefinedColumn)
    assert 'column "nope" of relation "t" does not exist' in str(outcomes[0])


UNREACHABLE = "postgresql://nobody:s3cret@127.0.0.1:1/nowhere"


def test_a_server_that_does_not_answer_is_transient_and_named_without_its_password() -> None:
    with pytest.raises(TransientError, match=r"cannot reach PostgreSQL at 127\.0\.0\.1:1/nowhere"):
        table_types(UNREACHABLE, "t")
    with pytest.raises(TransientError) as caught:
        create_table(UNREACHABLE, "t", {"id": "bigint"})
    assert "s3cret" not in str(caught.value)
    assert isinstance(caught.value.__cause__, psycopg.OperationalError)
    source = PostgresSource(UNREACHABLE, "t", key="id")
    with pytest.raises(TransientError, match="cannot reach PostgreSQL"):
        source.size()
    with pytest.raises(TransientError, match="cannot reach PostgreSQL"):
        list(source.read())


def test_a_connection_string_psycopg_cannot_read_is_a_config_error() -> None:
    expected = 'bad PostgreSQL connection string: missing "="'
    with pytest.raises(ConfigError, match=expected) as caught:
        table_types("not a url", "t")
    assert isinstance(caught.value.__cause__, psycopg.ProgrammingError)


def test_a_database_that_does_not_exist_is_named(schema: str) -> None:
    missing = POSTGRES_URL.rsplit("/", 1)[0] + f"/{schema}_none"
    with pytest.raises(TransientError, match=rf'database "{schema}_none" does not exist'):
        table_types(missing, "t")


@pytest.mark.parametrize(
    ("mode", "form"), [("copy", "rows"), ("insert", "rows"), ("upsert", "rows"),
                       ("copy", "csv"), ("upsert", "csv")],
)  # fmt: skip
def test_a_text_with_a_lone_surrogate_fails_its_row_alone(
    schema: str, mode: str, form: str
) -> None:
    """A text UTF-8 cannot encode (a lone surrogate) is refused by psycopg before the
    server sees it: that row alone fails, saying so; the rows around it are written."""
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        conn.execute(sql.SQL("ALTER TABLE {} ADD COLUMN note text").format(
            sql.Identifier(schema, "t")))  # fmt: skip
    notes = ["ok", "bad \ud800", "fine"]
    items: list[Any] = (
        [f"{i},{i},{note}\n" for i, note in enumerate(notes)]
        if form == "csv"
        else [{"id": i, "amount": i, "note": note} for i, note in enumerate(notes)]
    )
    sink = PostgresSink(POSTGRES_URL, "t", schema=schema, mode=mode,  # type: ignore[arg-type]
                        key="id" if mode == "upsert" else None,
                        columns=["id", "amount", "note"], format=form)  # type: ignore[arg-type]  # fmt: skip
    try:
        outcomes = sink.write(items)
    finally:
        sink.close()
    assert outcomes is not None
    assert [o is None for o in outcomes] == [True, False, True]
    assert isinstance(outcomes[1], PermanentError)
    assert "cannot be sent" in str(outcomes[1])
    assert stored_ids(schema) == [0, 2]
