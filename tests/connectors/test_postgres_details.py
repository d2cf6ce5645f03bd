"""PostgresSink details: names checked at construction, a readable repr, pickling for
process workers, items that are not rows, and the async twin's text COPY."""

from __future__ import annotations

import pickle
import uuid
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql

from freight import ConfigError, PermanentError
from freight.connectors.postgres import AsyncPostgresSink, PostgresSink
from tests.services import POSTGRES_URL, require


@pytest.fixture
def schema() -> Iterator[str]:
    require("127.0.0.1", 5432, "PostgreSQL")
    name = f"freight_details_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(name)))
        conn.execute(
            sql.SQL("CREATE TABLE {} (id bigint PRIMARY KEY, n int)").format(
                sql.Identifier(name, "t")
            )
        )
    yield name
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(name)))


def rows(schema: str) -> list[tuple[int, int | None]]:
    with psycopg.connect(POSTGRES_URL) as conn:
        query = sql.SQL("SELECT id, n FROM {} ORDER BY id").format(sql.Identifier(schema, "t"))
        return conn.execute(query).fetchall()


def test_an_empty_table_name_is_refused_at_construction() -> None:
    with pytest.raises(ConfigError, match="table must be a non-empty name"):
        PostgresSink(POSTGRES_URL, "")


def test_the_repr_names_table_schema_and_mode() -> None:
    assert repr(PostgresSink(POSTGRES_URL, "t", schema="s", key="id")) == (
        "PostgresSink('t', schema='s', mode='upsert')"
    )
    assert repr(AsyncPostgresSink(POSTGRES_URL, "t")) == "AsyncPostgresSink('t', mode='copy')"


def test_a_pickled_sink_writes_through_its_own_pool(schema: str) -> None:
    sink = PostgresSink(POSTGRES_URL, "t", schema=schema, key="id", columns=["id", "n"])
    sink.write([(1, 1)])  # the pool is open: it stays out of the pickle
    copy = pickle.loads(pickle.dumps(sink))  # what a process worker receives
    assert (copy.table, copy.schema, copy.mode, copy.key) == ("t", schema, "upsert", ["id"])
    copy.write([(1, 10), (2, 2)])
    copy.close()
    sink.close()
    assert rows(schema) == [(1, 10), (2, 2)]


def test_items_that_are_not_rows_fail_the_write_permanently(schema: str) -> None:
    sink = PostgresSink(POSTGRES_URL, "t", schema=schema)
    with pytest.raises(PermanentError, match=r"PostgresSink needs mappings .* got tuple"):
        sink.write([(1, 2)])  # sequences need columns=
    sink.close()


async def test_the_async_sink_copies_values_without_a_binary_form_as_text(schema: str) -> None:
    sink = AsyncPostgresSink(POSTGRES_URL, "t", schema=schema, columns=["id", "n"])
    assert await sink.write([(1, "7"), (2, None)]) is None  # "7" is text: the server parses it
    await sink.aclose()
    assert rows(schema) == [(1, 7), (2, None)]
