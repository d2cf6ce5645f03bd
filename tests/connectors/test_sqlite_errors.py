"""SQLite errors mapped to freight's classes, on real SQLite files.

A row the database refuses, or one that is not the table's shape, is a PermanentError of
that row alone; a database another connection holds is a TransientError (retried).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from freight import Job, PermanentError, TransientError
from freight.connectors.sqlite import SqliteSink, classify
from freight.store import SqliteStore


def test_a_row_the_database_refuses_is_a_permanent_error_of_that_row(tmp_path: Path) -> None:
    sink = SqliteSink(tmp_path / "d.db", "t", key="id", mode="insert")
    sink.write([{"id": 1, "v": "a"}])
    outcomes = sink.write([{"id": 2, "v": "b"}, {"id": 1, "v": "again"}, {"id": 3, "v": "c"}])
    sink.close()
    assert outcomes is not None
    assert [o is None for o in outcomes] == [True, False, True]
    error = outcomes[1]
    assert isinstance(error, PermanentError)
    assert isinstance(error.__cause__, sqlite3.IntegrityError)
    assert str(error) == "IntegrityError: UNIQUE constraint failed: t.id"


def test_a_row_with_fields_the_table_lacks_names_them_and_the_fix(tmp_path: Path) -> None:
    sink = SqliteSink(tmp_path / "d.db", "t")
    outcomes = sink.write([{"id": 1}, {"id": 2, "extra": "x"}])
    sink.close()
    assert outcomes is not None
    assert outcomes[0] is None
    assert isinstance(outcomes[1], PermanentError)
    assert str(outcomes[1]) == (
        "fields ['extra'] are not columns of 't' (its columns: ['id']); "
        "drop them from the item or add the columns"
    )


def test_a_job_dead_letters_a_refused_row_as_permanent(tmp_path: Path) -> None:
    sink = SqliteSink(tmp_path / "d.db", "t", key="id", mode="insert")
    items = [{"id": i % 4} for i in range(5)]  # the fifth repeats the first key
    report = Job("dup", items, sink, store=SqliteStore(tmp_path / "s.db")).run()
    sink.close()
    [error] = report["errors"]
    assert (error["item"], error["error_type"], error["category"]) == (
        "item 4",
        "PermanentError",
        "permanent",
    )
    assert error["message"] == "IntegrityError: UNIQUE constraint failed: t.id"


def test_a_database_another_connection_holds_is_transient(tmp_path: Path) -> None:
    path = tmp_path / "d.db"
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # holds the write lock
    waiter = sqlite3.connect(path, isolation_level=None, timeout=0)
    with pytest.raises(sqlite3.OperationalError) as caught:
        waiter.execute("BEGIN IMMEDIATE")
    holder.execute("ROLLBACK")
    holder.close()
    waiter.close()
    busy = classify(caught.value)
    assert isinstance(busy, TransientError)
    assert busy.__cause__ is caught.value
    assert str(busy) == "SQLite database busy: database is locked"


def test_other_errors_are_returned_as_they_are() -> None:
    db = sqlite3.connect(":memory:")
    with pytest.raises(sqlite3.OperationalError) as caught:
        db.execute("SELEC 1")
    db.close()
    assert classify(caught.value) is caught.value  # a broken statement: nobody's row
    by_hand = sqlite3.OperationalError("database is locked")  # no error code: not the server's
    assert classify(by_hand) is by_hand
    mine = PermanentError("already mapped")
    assert classify(mine) is mine
