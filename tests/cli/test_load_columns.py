"""`freight load` into an existing table with other columns than the file: only the
file's columns are written, on SQLite and PostgreSQL alike.

An upsert (--key) of a file that lacks some of the table's columns keeps them on the
rows it updates, and a new row gets their defaults: never a silent NULL. A record with
a field the table lacks is dead-lettered with its line on both targets.
"""

from __future__ import annotations

import json
import sqlite3
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql
from typer.testing import CliRunner

from freight.cli import app
from tests.services import POSTGRES_URL, require

TABLE = "CREATE TABLE {} (id bigint PRIMARY KEY, name text, email text, tier text DEFAULT 'free')"
EXISTING = "INSERT INTO {} VALUES (1, 'ann', 'ann@x', 'gold'), (2, 'bob', 'bob@x', 'gold')"

Target = tuple[list[str], Callable[[], list[tuple[Any, ...]]]]


@pytest.fixture
def sqlite_target(tmp_path: Path) -> Target:
    path = tmp_path / "t.db"
    with sqlite3.connect(path) as db:
        db.execute(TABLE.format("people"))
        db.execute(EXISTING.format("people"))

    def rows() -> list[tuple[Any, ...]]:
        with sqlite3.connect(path) as db:
            return db.execute("SELECT * FROM people ORDER BY id").fetchall()

    return ["--into", f"sqlite:///{path}", "--table", "people"], rows


@pytest.fixture
def postgres_target() -> Iterator[Target]:
    require("127.0.0.1", 5432, "PostgreSQL")
    schema = f"freight_cols_{uuid.uuid4().hex[:10]}"
    table = sql.Identifier(schema, "people")
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
        conn.execute(sql.SQL(TABLE).format(table))
        conn.execute(sql.SQL(EXISTING).format(table))

    def rows() -> list[tuple[Any, ...]]:
        with psycopg.connect(POSTGRES_URL) as conn:
            query = sql.SQL("SELECT * FROM {} ORDER BY id").format(table)
            return conn.execute(query).fetchall()

    yield ["--into", POSTGRES_URL, "--table", "people", "--schema", schema], rows
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


@pytest.fixture(params=["sqlite", "postgres"])
def target(request: pytest.FixtureRequest) -> Target:
    return request.getfixturevalue(f"{request.param}_target")  # type: ignore[no-any-return]


def load(tmp_path: Path, file: Path, target: Target, *extra: str) -> tuple[int, dict[str, Any]]:
    result = CliRunner().invoke(
        app,
        ["load", str(file), *target[0], "--store", str(tmp_path / "s.db"), "--json", *extra],
    )
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    return result.exit_code, json.loads(result.stdout)


def test_a_jsonl_upsert_with_fewer_columns_keeps_the_others_on_every_target(
    tmp_path: Path, target: Target
) -> None:
    data = tmp_path / "names.jsonl"
    data.write_text('{"id": 1, "name": "Ann"}\n{"id": 7, "name": "gus"}\n')
    code, report = load(tmp_path, data, target, "--key", "id")
    assert (code, report["summary"]["succeeded"]) == (0, 2)
    assert target[1]() == [
        (1, "Ann", "ann@x", "gold"),  # email and tier kept
        (2, "bob", "bob@x", "gold"),
        (7, "gus", None, "free"),  # a new row: the table's defaults
    ]


def test_a_jsonl_insert_with_fewer_columns_gives_new_rows_the_defaults(
    tmp_path: Path, target: Target
) -> None:
    data = tmp_path / "emails.jsonl"
    data.write_text('{"id": 8, "email": "h@x"}\n')
    code, _ = load(tmp_path, data, target)
    assert code == 0
    assert target[1]()[-1] == (8, None, "h@x", "free")


def test_jsonl_records_of_other_shapes_set_their_own_columns_on_every_target(
    tmp_path: Path, target: Target
) -> None:
    """Each record sets the fields it carries, whichever the first record carried: a
    later record lacking some keeps them on its row (nothing is set to NULL), and one
    carrying a column the first lacked sets it (nothing is dropped)."""
    data = tmp_path / "shapes.jsonl"
    data.write_text(
        '{"id": 1, "name": "Ann", "email": "a@y"}\n'
        '{"id": 2, "name": "Bo"}\n'
        '{"id": 7, "email": "g@y"}\n'
        '{"tier": "silver", "id": 8, "name": "h"}\n'
        '{"id": 1, "tier": "free"}\n'
    )
    code, report = load(tmp_path, data, target, "--key", "id", "--chunk-size", "3")
    assert (code, report["summary"]["succeeded"], report["summary"]["failed"]) == (0, 5, 0)
    assert target[1]() == [
        (1, "Ann", "a@y", "free"),
        (2, "Bo", "bob@x", "gold"),  # email and tier kept
        (7, None, "g@y", "free"),  # a new row: the defaults of what it does not carry
        (8, "h", None, "silver"),
    ]


def test_jsonl_records_of_other_shapes_are_typed_and_inserted_on_every_target(
    tmp_path: Path, target: Target
) -> None:
    data = tmp_path / "mixed.jsonl"
    data.write_text('{"id": 8, "email": "h@x"}\n{"id": "9", "name": "i"}\n{"id": "x"}\n')
    code, report = load(tmp_path, data, target)
    assert (code, report["summary"]["succeeded"], report["summary"]["failed"]) == (3, 2, 1)
    [error] = report["errors"]
    assert error["item"] == "line 3"
    assert "column 'id': invalid literal for int() with base 10: 'x'" in error["message"]
    assert target[1]()[-2:] == [(8, None, "h@x", "free"), (9, "i", None, "free")]


def test_a_record_with_a_field_the_table_lacks_is_dead_lettered_on_every_target(
    tmp_path: Path, target: Target
) -> None:
    data = tmp_path / "stray.jsonl"
    data.write_text(
        '{"id": 1, "name": "A"}\n{"id": 3, "name": "c", "phone": "555"}\n{"id": 4, "name": "d"}\n'
    )
    code, report = load(tmp_path, data, target, "--key", "id")
    assert (code, report["summary"]["succeeded"], report["summary"]["failed"]) == (3, 2, 1)
    [error] = report["errors"]
    assert error["item"] == "line 2"
    assert "['phone'] are not columns of 'people'" in error["message"]
    assert [row[:2] for row in target[1]()] == [(1, "A"), (2, "bob"), (4, "d")]
