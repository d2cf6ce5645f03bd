"""With the store in the sink's own database, rows and checkpoints commit together:
exactly once after a crash, without an idempotency key."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from freight import Job
from freight.connectors.postgres import PostgresSink
from freight.store import SqliteStore, Store
from freight.store._postgres import PostgresStore
from tests.services import POSTGRES_URL, require


class Crash(BaseException):
    """The process dying between writing a chunk and recording its checkpoint."""


class CrashingSink(PostgresSink):
    crash_on: frozenset[int] = frozenset()

    def write(self, items: list[Any], context: Any = None) -> list[Any] | None:
        result = super().write(items, context)
        if context is not None and context.chunk_index in self.crash_on:
            self.crash_on = self.crash_on - {context.chunk_index}
            raise Crash  # after the rows went in, before the checkpoint
        return result


@pytest.fixture
def conninfo() -> Iterator[str]:
    require("127.0.0.1", 5432, "PostgreSQL")
    schema = f"freight_once_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
        conn.execute(sql.SQL("CREATE TABLE {} (id bigint)").format(sql.Identifier(schema, "t")))
    yield f"{POSTGRES_URL}?options=-csearch_path%3D{schema}"
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


def load_with_a_crash(conninfo: str, store: Store) -> tuple[int, int]:
    sink = CrashingSink(conninfo, "t", columns=["id"])  # plain COPY, no key, no unique index
    sink.crash_on = frozenset({3})
    job = Job("once", [{"id": i} for i in range(100)], sink, chunk_size=10, store=store)
    with pytest.raises(Crash):
        job.run()
    report = job.run()
    sink.close()
    assert report.summary["processed"] == 100
    with psycopg.connect(conninfo) as conn:
        row = conn.execute("SELECT count(*), count(DISTINCT id) FROM t").fetchone()
    assert row is not None
    return row[0], row[1]


def test_shared_transaction_makes_a_crash_harmless_without_a_key(conninfo: str) -> None:
    store = PostgresStore(conninfo)
    assert store.same_database(conninfo)
    assert load_with_a_crash(conninfo, store) == (100, 100)
    store.close()


def test_without_it_the_crashed_chunk_is_written_twice(conninfo: str, tmp_path: Path) -> None:
    count, distinct = load_with_a_crash(conninfo, SqliteStore(tmp_path / "s.db"))
    assert distinct == 100
    assert count == 110  # at-least-once: chunk 3 was written, not checkpointed, redone
