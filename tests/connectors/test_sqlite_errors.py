"""SQLite errors mapped to freight's classes, on real SQLite files.

A row the database refuses, or one that is not the table's shape, is a PermanentError of
that row alone; a database another connection holds is a TransientError (retried).
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
from pathlib import Path

import pytest

from freight import Job, PermanentError, TargetError, TransientError
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


def test_a_statement_the_database_refuses_is_a_target_error() -> None:
    db = sqlite3.connect(":memory:")
    with pytest.raises(sqlite3.OperationalError) as caught:
        db.execute("SELEC 1")
    db.close()
    refused = classify(caught.value)
    assert isinstance(refused, TargetError)
    assert str(refused) == 'the target refuses the write: near "SELEC": syntax error'


def test_other_errors_are_returned_as_they_are() -> None:
    db = sqlite3.connect(":memory:")
    db.close()
    with pytest.raises(sqlite3.ProgrammingError) as caught:
        db.execute("SELECT 1")
    assert classify(caught.value) is caught.value  # a closed connection: nobody's row
    by_hand = sqlite3.OperationalError("database is locked")  # no error code: not the server's
    assert classify(by_hand) is by_hand
    mine = PermanentError("already mapped")
    assert classify(mine) is mine


def test_a_value_sqlite3_cannot_bind_fails_its_row_alone(tmp_path: Path) -> None:
    sink = SqliteSink(tmp_path / "d.db", "t")
    outcomes = sink.write([{"v": 1}, {"v": object()}, {"v": 3}])
    sink.close()
    assert outcomes is not None
    assert [o is None for o in outcomes] == [True, False, True]
    assert isinstance(outcomes[1], PermanentError)
    assert str(outcomes[1]) == "Error binding parameter 1: type 'object' is not supported"


def test_a_table_dropped_under_the_sink_refuses_every_row_without_bisecting(
    tmp_path: Path,
) -> None:
    path = tmp_path / "d.db"
    sink = SqliteSink(path, "t", key="id")
    sink.write([{"id": 1}])
    with sqlite3.connect(path) as db:
        db.execute('DROP TABLE "t"')
    db.close()
    statements: list[str] = []
    sink._db.set_trace_callback(statements.append)
    outcomes = sink.write([{"id": i} for i in range(2, 10)])
    sink.close()
    assert outcomes is not None
    assert all(isinstance(o, TargetError) for o in outcomes)
    assert str(outcomes[0]) == "the target refuses the write: no such table: t"
    assert statements.count("BEGIN IMMEDIATE") == 1  # one try, no bisection


def test_an_upsert_key_the_table_has_no_index_for_is_a_target_error(tmp_path: Path) -> None:
    path = tmp_path / "d.db"
    with sqlite3.connect(path) as db:
        db.execute('CREATE TABLE "t" (id INTEGER, v TEXT)')  # no primary key
    db.close()
    sink = SqliteSink(path, "t", key="id")
    outcomes = sink.write([{"id": 1, "v": "a"}, {"id": 2, "v": "b"}])
    sink.close()
    assert outcomes is not None
    assert [str(o) for o in outcomes] == [
        "the target refuses the write: ON CONFLICT clause does not match any PRIMARY KEY "
        "or UNIQUE constraint"
    ] * 2


def test_a_first_item_the_table_cannot_be_made_from_refuses_every_row(tmp_path: Path) -> None:
    sink = SqliteSink(tmp_path / "d.db", "t", key="id")
    outcomes = sink.write([{"name": "a"}, {"name": "b"}])
    sink.close()
    assert outcomes is not None
    assert all(isinstance(o, TargetError) for o in outcomes)
    assert str(outcomes[0]) == ("key column(s) ['id'] are not among the item's fields ['name']")


def test_a_read_only_target_refuses_every_row_naming_why(tmp_path: Path) -> None:
    path = tmp_path / "d.db"
    sink = SqliteSink(path, "t", key="id")
    sink.write([{"id": 1}])
    sink.close()
    if os.geteuid() != 0:
        path.chmod(0o444)
    elif subprocess.run(["chattr", "+i", str(path)], check=False).returncode:
        pytest.skip("cannot make a file read-only for root here (chattr +i refused)")
    try:
        sink = SqliteSink(path, "t", key="id")
        outcomes = sink.write([{"id": 2}, {"id": 3}])
        sink.close()
    finally:
        if os.geteuid() != 0:
            path.chmod(0o644)
        else:
            subprocess.run(["chattr", "-i", str(path)], check=True)
    assert outcomes is not None
    assert [str(o) for o in outcomes] == [
        "the target refuses the write: attempt to write a readonly database"
    ] * 2
    assert all(isinstance(o, TargetError) for o in outcomes)


@pytest.mark.parametrize("mode", ["insert", "upsert"])
def test_a_text_with_a_lone_surrogate_fails_its_row_alone(tmp_path: Path, mode: str) -> None:
    """A text UTF-8 cannot encode (a lone surrogate, as ``surrogateescape`` decoding
    leaves) is refused by the driver before SQLite sees it: that row alone fails,
    saying so, and the rows around it are written."""
    sink = SqliteSink(tmp_path / "d.db", "t", key="id", mode=mode)  # type: ignore[arg-type]
    items = [{"id": 1, "v": "ok"}, {"id": 2, "v": "bad \ud800"}, {"id": 3, "v": "fine"}]
    outcomes = sink.write(items)
    sink.close()
    assert outcomes is not None
    assert [o is None for o in outcomes] == [True, False, True]
    assert isinstance(outcomes[1], PermanentError)
    assert "cannot be sent" in str(outcomes[1])
    with sqlite3.connect(tmp_path / "d.db") as db:
        assert db.execute("SELECT id, v FROM t ORDER BY id").fetchall() == [(1, "ok"), (3, "fine")]
