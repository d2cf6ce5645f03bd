"""SqliteSink writes only the columns an item carries.

A file with fewer columns than the table it is upserted into must not write NULL into
the other columns (a silent loss): an existing row keeps them, a new row gets their
defaults. Items of one write may carry different columns; they are written in order, so
the last value of a column wins.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from freight import PermanentError
from freight.cli import app
from freight.connectors.sqlite import SqliteSink

TABLE = (
    "CREATE TABLE people (id BIGINT PRIMARY KEY, name TEXT, email TEXT, tier TEXT DEFAULT 'free')"
)


def select(path: Path, sql: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(path) as db:
        return db.execute(sql).fetchall()


def people(path: Path) -> list[tuple[Any, ...]]:
    return select(path, "SELECT id, name, email, tier FROM people ORDER BY id")


def existing_table(path: Path) -> None:
    with sqlite3.connect(path) as db:
        db.execute(TABLE)
        db.execute(
            "INSERT INTO people VALUES (1, 'ann', 'ann@x', 'gold'), (2, 'bob', 'bob@x', 'gold')"
        )


def test_an_upsert_of_fewer_columns_keeps_the_others_and_a_new_row_gets_defaults(
    tmp_path: Path,
) -> None:
    path = tmp_path / "d.db"
    existing_table(path)
    sink = SqliteSink(path, "people", key="id")
    assert sink.write([{"id": 1, "name": "Ann"}, {"id": 3, "name": "cy"}]) is None
    sink.close()
    assert people(path) == [
        (1, "Ann", "ann@x", "gold"),  # email and tier kept, not NULL
        (2, "bob", "bob@x", "gold"),
        (3, "cy", None, "free"),  # a new row: the table's defaults
    ]


def test_a_typed_upsert_of_fewer_columns_keeps_the_others(tmp_path: Path) -> None:
    """As ``freight load --key`` does it: the sink types every column of the table, the
    rows carry the file's columns only."""
    path = tmp_path / "d.db"
    existing_table(path)
    types = {"id": "bigint", "name": "text", "email": "text", "tier": "text"}
    sink = SqliteSink(path, "people", key="id", types=types)
    assert sink.write([{"id": "2", "email": "b@y"}, {"id": "4", "email": "d@y"}]) is None
    sink.close()
    assert people(path) == [
        (1, "ann", "ann@x", "gold"),
        (2, "bob", "b@y", "gold"),
        (4, None, "d@y", "free"),
    ]


def test_items_of_one_write_with_different_columns_are_written_in_order(tmp_path: Path) -> None:
    path = tmp_path / "d.db"
    existing_table(path)
    sink = SqliteSink(path, "people", key="id")
    items: list[Mapping[str, Any]] = [
        {"id": 1, "name": "A1"},
        {"id": 1, "email": "a1@z"},
        {"id": 1, "name": "A2"},  # the last name of key 1 wins
        {"id": 2},  # the key alone: nothing to set
        {"id": 5, "tier": "silver", "name": "eve"},
    ]
    assert sink.write(items) is None
    sink.close()
    assert people(path) == [
        (1, "A2", "a1@z", "gold"),
        (2, "bob", "bob@x", "gold"),
        (5, "eve", None, "silver"),
    ]


def test_an_insert_of_fewer_columns_gives_the_others_their_defaults(tmp_path: Path) -> None:
    path = tmp_path / "d.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE t (id BIGINT, note TEXT NOT NULL DEFAULT 'none')")
    sink = SqliteSink(path, "t")
    assert sink.write([{"id": 1}, {"id": 2, "note": "n2"}, {}]) is None
    sink.close()
    assert select(path, "SELECT id, note FROM t ORDER BY rowid") == [
        (1, "none"),
        (2, "n2"),
        (None, "none"),
    ]


def test_a_bad_row_among_items_of_different_columns_fails_alone(tmp_path: Path) -> None:
    path = tmp_path / "d.db"
    existing_table(path)
    with sqlite3.connect(path) as db:
        db.execute("CREATE UNIQUE INDEX email_once ON people (email)")
    sink = SqliteSink(path, "people", key="id")
    outcomes = sink.write([
        {"id": 1, "name": "A"},
        {"id": 2, "email": "ann@x"},  # unique email taken by row 1: refused
        {"id": 6, "email": "f@x"},
        {"id": 7, "name": "g", "nope": 1},  # not a column: refused
        {"id": 1, "tier": "bronze"},
    ])  # fmt: skip
    sink.close()
    assert outcomes is not None
    assert [type(o) for o in outcomes] == [
        type(None), PermanentError, type(None), PermanentError, type(None)
    ]  # fmt: skip
    assert "UNIQUE constraint failed" in str(outcomes[1])
    assert people(path) == [
        (1, "A", "ann@x", "bronze"),
        (2, "bob", "bob@x", "gold"),
        (6, None, "f@x", "free"),
    ]


def test_freight_load_of_a_file_with_fewer_columns_keeps_the_tables_other_columns(
    tmp_path: Path,
) -> None:
    db = tmp_path / "d.db"
    existing_table(db)
    file = tmp_path / "names.csv"
    file.write_text("id,name\n1,Ann\n7,gus\n")
    result = CliRunner().invoke(
        app,
        ["load", str(file), "--into", f"sqlite:///{db}", "--table", "people", "--key", "id",
         "--store", str(tmp_path / "s.db")],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert people(db) == [
        (1, "Ann", "ann@x", "gold"),
        (2, "bob", "bob@x", "gold"),
        (7, "gus", None, "free"),
    ]


COLUMNS = ("name", "email", "tier")
DEFAULTS: dict[str, Any] = {"name": None, "email": None, "tier": "free"}
partial_rows = st.fixed_dictionaries(
    {"id": st.integers(1, 4)},
    optional={c: st.sampled_from(["a", "b", None]) for c in COLUMNS},
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(writes=st.lists(st.lists(partial_rows, max_size=6), max_size=4))
def test_an_upsert_sets_exactly_the_columns_each_item_carries(
    tmp_path: Path, writes: list[list[dict[str, Any]]]
) -> None:
    """The table equals a model where each item, in order, sets its own columns on its
    key's row, and a new row starts from the defaults."""
    path = tmp_path / "prop.db"
    path.unlink(missing_ok=True)
    with sqlite3.connect(path) as db:
        db.execute(TABLE)
    model: dict[int, dict[str, Any]] = {}
    sink = SqliteSink(path, "people", key="id")
    for items in writes:
        assert sink.write(list[Mapping[str, Any]](items)) is None
        for item in items:
            model.setdefault(item["id"], dict(DEFAULTS)).update(item)
    sink.close()
    assert people(path) == [
        (key, row["name"], row["email"], row["tier"]) for key, row in sorted(model.items())
    ]
