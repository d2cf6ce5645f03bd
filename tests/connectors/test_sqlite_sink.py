"""SqliteSink: insert and upsert, literal identifiers, inert injection attempts."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from freight import ConfigError, Job, Retry
from freight.connectors.sqlite import SqliteSink, quote_identifier, sqlite_path
from freight.jobs import Sink
from freight.store import SqliteStore


def rows(path: Path, table: str) -> list[tuple[object, ...]]:
    with sqlite3.connect(path) as db:
        return db.execute(f"SELECT * FROM {quote_identifier(table)} ORDER BY 1").fetchall()


def test_insert_creates_the_table_from_the_first_item(tmp_path: Path) -> None:
    sink = SqliteSink(tmp_path / "d.db", "events")
    assert isinstance(sink, Sink)
    sink.write([{"id": 1, "score": 1.5, "name": "a"}, {"id": 2, "score": 2.0, "name": "b"}])
    assert rows(tmp_path / "d.db", "events") == [(1, 1.5, "a"), (2, 2.0, "b")]
    sink.write([])
    sink.close()


def test_upsert_on_key_makes_replays_harmless(tmp_path: Path) -> None:
    sink = SqliteSink(f"sqlite:///{tmp_path}/d.db", "t", key="id")
    assert sink.mode == "upsert"
    sink.write([{"id": 1, "v": "old"}, {"id": 2, "v": "x"}])
    sink.write([{"id": 1, "v": "new"}])
    assert rows(tmp_path / "d.db", "t") == [(1, "new"), (2, "x")]
    only_key = SqliteSink(tmp_path / "k.db", "k", key="id")
    only_key.write([{"id": 1}, {"id": 1}])
    assert rows(tmp_path / "k.db", "k") == [(1,)]


@pytest.mark.parametrize(
    "table",
    ['we"ird', "with space", "Select", "UPPER", 'x"; DROP TABLE victims; --'],
)
def test_identifiers_are_taken_literally(tmp_path: Path, table: str) -> None:
    path = tmp_path / "d.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE victims (id INTEGER)")
    sink = SqliteSink(path, table, key='k"ey')
    sink.write([{'k"ey': 1, "order": "first", "a b": 2}])
    assert rows(path, table) == [(1, "first", 2)]
    with sqlite3.connect(path) as db:
        names = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert names == {"victims", table}


def test_a_failing_write_rolls_back_and_the_job_isolates_the_bad_row(tmp_path: Path) -> None:
    path = tmp_path / "d.db"
    sink = SqliteSink(path, "t", key="id")
    items: list[dict[str, object]] = [{"id": i, "v": i} for i in range(10)]
    items[6] = {"id": 6, "v": 6, "extra": "boom"}  # not a column: that row fails
    report = Job(
        "sqlite",
        items,
        sink,
        chunk_size=10,
        retry=Retry(attempts=1),
        store=SqliteStore(tmp_path / "s.db"),
    ).run()
    assert report.summary["succeeded"] == 9
    assert [e["item"] for e in report["errors"]] == ["item 6"]
    assert len(rows(path, "t")) == 9


def test_bad_configuration(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="needs key"):
        SqliteSink(tmp_path / "d.db", "t", mode="upsert")
    with pytest.raises(ConfigError, match="table name must not be empty"):
        SqliteSink(tmp_path / "d.db", "")
    with pytest.raises(ConfigError, match="mode"):
        SqliteSink(tmp_path / "d.db", "t", mode="merge")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="sqlite:///"):
        sqlite_path("postgresql://x/y")
    sink = SqliteSink(tmp_path / "d.db", "t", key="missing")
    [refused] = sink.write([{"id": 1}]) or [None]
    assert "key column(s) ['missing'] are not among" in str(refused)
