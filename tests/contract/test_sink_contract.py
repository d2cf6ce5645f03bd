"""One contract for every table sink: the in-memory twin, SQLite and PostgreSQL (every mode)."""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pytest

from freight.connectors.sqlite import SqliteSink
from freight.jobs import Sink, WriteContext
from freight.testing import MemorySink
from tests.services import POSTGRES_URL, require

Mode = Literal["copy", "insert", "upsert"]


CTX = WriteContext("contract", 0)


@dataclass
class Target:
    sink: Sink
    read: Callable[[], list[tuple[Any, ...]]]  # rows ordered by id: (id, amount, note)
    close: Callable[[], None]


def memory(tmp_path: Path, key: bool) -> Target:
    sink = MemorySink(key="id" if key else None, required=("amount",))
    return Target(
        sink, lambda: sorted((r["id"], r["amount"], r["note"]) for r in sink.rows), lambda: None
    )


def sqlite(tmp_path: Path, key: bool) -> Target:
    path = tmp_path / "c.db"
    with sqlite3.connect(path) as db:
        db.execute('CREATE TABLE "t" (id INTEGER PRIMARY KEY, amount INTEGER NOT NULL, note TEXT)')
    sink = SqliteSink(path, "t", key="id" if key else None)

    def read() -> list[tuple[Any, ...]]:
        with sqlite3.connect(path) as db:
            return db.execute('SELECT id, amount, note FROM "t" ORDER BY id').fetchall()

    return Target(sink, read, sink.close)


def postgres(mode: Mode) -> Callable[[Path, bool], Target]:
    def make(tmp_path: Path, key: bool) -> Target:
        require("127.0.0.1", 5432, "PostgreSQL")
        import psycopg
        from psycopg import sql

        from freight.connectors.postgres import PostgresSink

        schema = f"freight_contract_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
            conn.execute(
                sql.SQL(
                    "CREATE TABLE {} (id bigint PRIMARY KEY, amount bigint NOT NULL, note text)"
                ).format(sql.Identifier(schema, "t"))
            )
        sink = PostgresSink(
            POSTGRES_URL, "t", schema=schema, mode=mode, key="id" if mode == "upsert" else None
        )

        def read() -> list[tuple[Any, ...]]:
            with psycopg.connect(POSTGRES_URL) as conn:
                query = sql.SQL("SELECT id, amount, note FROM {} ORDER BY id")
                return conn.execute(query.format(sql.Identifier(schema, "t"))).fetchall()

        def close() -> None:
            sink.close()
            with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
                conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))

        return Target(sink, read, close)

    return make


TARGETS = {
    "memory-insert": (memory, False),
    "memory-upsert": (memory, True),
    "sqlite-insert": (sqlite, False),
    "sqlite-upsert": (sqlite, True),
    "postgres-copy": (postgres("copy"), False),
    "postgres-insert": (postgres("insert"), False),
    "postgres-upsert": (postgres("upsert"), True),
}


@pytest.fixture(params=sorted(TARGETS))
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Target]:
    make, key = TARGETS[request.param]
    made = make(tmp_path, key)
    yield made
    made.close()


def test_round_trip(target: Target) -> None:
    items = [{"id": 1, "amount": 10, "note": "a"}, {"id": 2, "amount": 20, "note": None}]
    assert target.sink.write(items, CTX) is None
    assert target.read() == [(1, 10, "a"), (2, 20, None)]


def test_per_row_outcome_on_partial_failure(target: Target) -> None:
    items = [{"id": i, "amount": None if i in (3, 7) else i, "note": "n"} for i in range(10)]
    outcomes = target.sink.write(items, CTX)
    assert outcomes is not None
    assert [i for i, o in enumerate(outcomes) if isinstance(o, Exception)] == [3, 7]
    assert [row[0] for row in target.read()] == [i for i in range(10) if i not in (3, 7)]


def test_empty_chunk(target: Target) -> None:
    assert target.sink.write([], CTX) is None
    assert target.read() == []


def test_huge_field(target: Target) -> None:
    huge = "é" * 2_000_000
    assert target.sink.write([{"id": 1, "amount": 1, "note": huge}], CTX) is None
    assert target.read() == [(1, 1, huge)]
