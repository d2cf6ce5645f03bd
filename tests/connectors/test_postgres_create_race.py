"""Loads that create the same PostgreSQL table at the same instant all succeed."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql

from freight.connectors.postgres import create_table, table_types
from tests.services import POSTGRES_URL, require


@pytest.fixture
def schema() -> Iterator[str]:
    require("127.0.0.1", 5432, "PostgreSQL")
    name = f"freight_create_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(name)))
    yield name
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name)))


def _create(
    table: str, schema: str, barrier: threading.Barrier, errors: list[BaseException]
) -> None:
    barrier.wait(10)
    try:
        create_table(POSTGRES_URL, table, TYPES, schema=schema, key=["id"])
    except BaseException as exc:  # collected and asserted by the test
        errors.append(exc)


TYPES = {"id": "bigint", "name": "text"}


def test_four_threads_creating_one_table_at_once_all_succeed(schema: str) -> None:
    for round_ in range(5):  # the catalog race lost about 3 times in 8 before the lock
        table = f"t{round_}"
        barrier = threading.Barrier(4)
        errors: list[BaseException] = []
        threads = [
            threading.Thread(target=_create, args=(table, schema, barrier, errors))
            for _ in range(4)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert errors == []
        assert table_types(POSTGRES_URL, table, schema) == TYPES
