"""PostgresSource: server-side cursor in key order, keyset resume, row estimate, in a Job."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from freight import ConfigError, Job
from freight.connectors.postgres import PostgresSource
from freight.store import SqliteStore
from tests.services import POSTGRES_URL, require


@pytest.fixture
def schema() -> Iterator[str]:
    require("127.0.0.1", 5432, "PostgreSQL")
    name = f"freight_source_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(name)))
        conn.execute(
            sql.SQL("CREATE TABLE {} (id bigint PRIMARY KEY, name text)").format(
                sql.Identifier(name, "Users")
            )
        )
        with conn.cursor().copy(
            sql.SQL("COPY {} (id, name) FROM STDIN").format(sql.Identifier(name, "Users"))
        ) as copy:
            for i in range(1, 2_501):
                copy.write_row((i * 2, f"u{i}"))
        conn.execute(sql.SQL("ANALYZE {}").format(sql.Identifier(name, "Users")))
    yield name
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(name)))


def test_streams_in_key_order_and_resumes_by_key(schema: str) -> None:
    source = PostgresSource(POSTGRES_URL, "Users", key="id", schema=schema, batch_size=100)
    records = list(source.read())
    assert [r.item["id"] for r in records] == [i * 2 for i in range(1, 2_501)]
    assert records[0].id == "id 2"
    tail = list(source.read(records[2_000].position))
    assert [r.item["id"] for r in tail] == [i * 2 for i in range(2_001, 2_501)]
    assert source.size().items == 2_500
    assert source.fingerprint() == f"postgres:{schema}.Users:id"
    names = PostgresSource(POSTGRES_URL, "Users", key="id", schema=schema, columns=["id"])
    assert next(iter(names.read())).item == {"id": 2}


def test_a_job_reads_a_table_and_resumes(schema: str, tmp_path: Path) -> None:
    seen: list[int] = []

    class Crash(BaseException):
        pass

    def sink(batch: list[dict[str, object]]) -> None:
        if len(seen) >= 1_000 and not crashed:
            raise Crash
        seen.extend(int(r["id"]) for r in batch)  # type: ignore[call-overload]

    crashed = False
    source = PostgresSource(POSTGRES_URL, "Users", key="id", schema=schema)
    job = Job("pg-source", source, sink, chunk_size=250, store=SqliteStore(tmp_path / "s.db"))
    with pytest.raises(Crash):
        job.run()
    crashed = True
    report = job.run()
    assert report.summary["processed"] == 2_500
    assert sorted(set(seen)) == [i * 2 for i in range(1, 2_501)]
    assert len(seen) - len(set(seen)) <= 250  # at most the chunk in flight was redone


def test_bad_configuration() -> None:
    with pytest.raises(ConfigError, match="needs a key column"):
        PostgresSource(POSTGRES_URL, "t", key="")
    with pytest.raises(ConfigError, match="a table or a query"):
        PostgresSource(POSTGRES_URL, "t", key="id", query="SELECT 1 AS id")
    with pytest.raises(ConfigError, match="a table or a query"):
        PostgresSource(POSTGRES_URL, key="id")


def test_a_query_source_streams_and_resumes_by_its_key(schema: str) -> None:
    users = sql.Identifier(schema, "Users").as_string()
    query = f"SELECT id, upper(name) AS name FROM {users} WHERE id % 4 = 0;"
    source = PostgresSource(POSTGRES_URL, key="id", query=query, batch_size=50)
    records = list(source.read())
    assert [r.item["id"] for r in records] == list(range(4, 5_001, 4))
    assert records[0].item == {"id": 4, "name": "U2"}
    tail = list(source.read(records[-3].position))
    assert [r.item["id"] for r in tail] == [4_992, 4_996, 5_000]
    estimate = source.size().items
    assert estimate is not None
    assert 1 <= estimate <= 2_500  # the planner's guess from the query plan (a rough one)
    assert source.fingerprint().startswith("postgres-query:")
    assert (
        source.fingerprint()
        != PostgresSource(POSTGRES_URL, key="id", query="SELECT 1 AS id").fingerprint()
    )
    dotted = PostgresSource(POSTGRES_URL, "we.ird", key="id", schema=schema)
    assert dotted.size().items is None  # a missing table has no estimate (no crash on the dot)
