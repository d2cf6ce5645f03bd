"""AsyncPostgresSink: the asyncio twin, with the same outcomes, in an async Job."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from freight import Job, PermanentError
from freight.connectors.postgres import AsyncPostgresSink, Mode
from freight.store import SqliteStore
from tests.services import POSTGRES_URL, require


@pytest.fixture
def schema() -> Iterator[str]:
    require("127.0.0.1", 5432, "PostgreSQL")
    name = f"freight_async_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(name)))
        conn.execute(
            sql.SQL("CREATE TABLE {} (id bigint PRIMARY KEY, amount bigint NOT NULL)").format(
                sql.Identifier(name, "t")
            )
        )
    yield name
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(name)))


def ids(schema: str) -> list[int]:
    with psycopg.connect(POSTGRES_URL) as conn:
        query = sql.SQL("SELECT id FROM {} ORDER BY id").format(sql.Identifier(schema, "t"))
        return [row[0] for row in conn.execute(query)]


@pytest.mark.parametrize("mode", ["copy", "insert", "upsert"])
async def test_every_mode_isolates_bad_rows(schema: str, mode: Mode) -> None:
    sink = AsyncPostgresSink(
        POSTGRES_URL, "t", schema=schema, mode=mode, key="id" if mode == "upsert" else None
    )
    assert await sink.write([]) is None
    outcomes = await sink.write([{"id": i, "amount": None if i == 4 else i} for i in range(8)])
    await sink.aclose()
    assert outcomes is not None
    assert [i for i, o in enumerate(outcomes) if o is not None] == [4]
    assert isinstance(outcomes[4], PermanentError)
    assert isinstance(outcomes[4].__cause__, psycopg.errors.NotNullViolation)
    assert ids(schema) == [0, 1, 2, 3, 5, 6, 7]


def test_an_async_job_writes_through_it(schema: str, tmp_path: Path) -> None:
    sink = AsyncPostgresSink(POSTGRES_URL, "t", schema=schema, key="id")
    report = Job(
        "async-pg", [{"id": i, "amount": i} for i in range(50)], sink, executor="async",
        chunk_size=10, workers=2, store=SqliteStore(tmp_path / "s.db"),
    ).run()  # fmt: skip
    assert report.summary["succeeded"] == 50
    assert ids(schema) == list(range(50))
