"""A SQLite target keeps its own journal mode, and a lock held on it is waited for.

The sink used to switch every target to WAL (``PRAGMA journal_mode=WAL``) when it
connected: a change of the user's database nobody asked for, and one the busy timeout
does not cover, so a target another connection held failed at once ("database is
locked", exit 2 at the CLI). No real time is slept: the holder lets go once the sink's
write has demonstrably begun waiting.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

from typer.testing import CliRunner

from freight.cli import app
from freight.connectors.sqlite import SqliteSink


def journal_mode(path: Path) -> str:
    with sqlite3.connect(path) as db:
        [(mode,)] = db.execute("PRAGMA journal_mode").fetchall()
    db.close()
    return str(mode)


def rollback_journal_db(path: Path) -> None:
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
    db.close()
    assert journal_mode(path) == "delete"


def test_the_sink_leaves_the_targets_journal_mode_as_it_is(tmp_path: Path) -> None:
    path = tmp_path / "d.db"
    rollback_journal_db(path)
    sink = SqliteSink(path, "t", key="id")
    assert sink.write([{"id": 1, "v": "a"}]) is None
    sink.close()
    assert journal_mode(path) == "delete"


def test_a_target_locked_in_rollback_journal_mode_is_waited_for(tmp_path: Path) -> None:
    path = tmp_path / "d.db"
    rollback_journal_db(path)
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN IMMEDIATE")
    holder.execute("INSERT INTO t VALUES (100, 'the holder''s row')")
    sink = SqliteSink(path, "t", key="id")  # connects while the lock is held
    began = threading.Event()
    sink._db.set_trace_callback(
        lambda statement: began.set() if statement == "BEGIN IMMEDIATE" else None
    )

    def release_once_the_write_began() -> None:
        assert began.wait(10)
        holder.execute("COMMIT")

    releaser = threading.Thread(target=release_once_the_write_began)
    releaser.start()
    try:
        outcomes = sink.write([{"id": i, "v": "x"} for i in range(1, 11)])
    finally:
        releaser.join()
        holder.close()
    sink.close()
    assert outcomes is None
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT count(*) FROM t").fetchone()[0] == 11
    db.close()
    assert journal_mode(path) == "delete"


def test_load_into_a_rollback_journal_target_keeps_its_mode(tmp_path: Path) -> None:
    path, data = tmp_path / "d.db", tmp_path / "d.csv"
    rollback_journal_db(path)
    data.write_text("id,v\n1,a\n2,b\n")
    result = CliRunner().invoke(app, [
        "load", str(data), "--into", f"sqlite:///{path}", "--table", "t",
        "--store", str(tmp_path / "s.db"),
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert journal_mode(path) == "delete"
