"""Stores for the managed-batch tests: a SQLite file, and PostgreSQL in a fresh schema."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from freight.store import BoardStore, SqliteStore
from tests.services import POSTGRES_URL, require


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[BoardStore]:
    """A fresh store: a SQLite file, or a PostgreSQL schema of its own (dropped after)."""
    if request.param == "sqlite":
        s = SqliteStore(tmp_path / "freight.db")
        yield s
        s.close()
        return
    yield from postgres_store()


def postgres_store() -> Iterator[BoardStore]:
    """A PostgresStore in a schema made for one test, dropped after it."""
    require("127.0.0.1", 5432, "PostgreSQL")
    import psycopg
    from psycopg import sql

    from freight.store._postgres import PostgresStore

    schema = f"freight_manager_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    s = PostgresStore(f"{POSTGRES_URL}?options=-csearch_path%3D{schema}")
    try:
        yield s
    finally:
        s.close()
        with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


@pytest.fixture
def pg_store() -> Iterator[BoardStore]:
    """PostgreSQL only (a fresh schema)."""
    yield from postgres_store()
