"""The store's other ports: the flow board's transactions, the exactly-once capability,
and PostgresStore's lazy export."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from freight.store import (
    BoardStore,
    SharedTransactionStore,
    SqliteStore,
    Store,
    TransactionalSink,
)
from freight.store._dialect import POSTGRES, SQLITE
from freight.store._statements import Statements, statements
from tests.store.test_store_contract import postgres_store


@pytest.fixture(params=["sqlite", "postgres"])
def board_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[BoardStore]:
    if request.param == "postgres":
        yield from postgres_store()  # type: ignore[misc]
        return
    store = SqliteStore(tmp_path / "board.db")
    yield store
    store.close()


def flow_dead_letters(store: BoardStore, flow: str) -> list[str]:
    p = store.dialect.placeholder
    rows = store.query(f"SELECT reason FROM flow_dead_letters WHERE flow = {p}", (flow,))
    return [row["reason"] for row in rows]


def test_a_board_transaction_commits_when_its_block_ends(board_store: BoardStore) -> None:
    insert = board_store.dialect.render(
        "INSERT INTO flow_dead_letters (flow, consumer, reason, artifact_ids, created_at)"
        " VALUES ({p}, {p}, {p}, {p}, {p})"
    )
    with board_store.transaction() as tx:
        tx.executemany(insert, [("f", "c", f"r{i}", "[]", "now") for i in range(3)])
        tx.executemany(insert, [])  # nothing to run is not an error
        changed = tx.execute(
            board_store.dialect.render("UPDATE flow_dead_letters SET error = {p} WHERE flow = {p}"),
            ("e", "f"),
        )
        assert changed == 3
    assert flow_dead_letters(board_store, "f") == ["r0", "r1", "r2"]


def test_a_board_transaction_rolls_back_when_its_block_raises(board_store: BoardStore) -> None:
    insert = board_store.dialect.render(
        "INSERT INTO flow_dead_letters (flow, consumer, reason, artifact_ids, created_at)"
        " VALUES ({p}, {p}, {p}, {p}, {p})"
    )

    def write_then_fail() -> None:
        with board_store.transaction() as tx:
            tx.execute(insert, ("g", "c", "lost", "[]", "now"))
            raise RuntimeError

    with pytest.raises(RuntimeError):
        write_then_fail()
    assert flow_dead_letters(board_store, "g") == []


def test_both_stores_implement_the_ports(board_store: BoardStore) -> None:
    assert isinstance(board_store, Store)
    assert isinstance(board_store, BoardStore)
    postgres = board_store.dialect is POSTGRES
    assert isinstance(board_store, SharedTransactionStore) is postgres  # SQLite cannot share


def test_statements_are_written_once_and_rendered_per_dialect() -> None:
    sqlite, postgres = statements(SQLITE), statements(POSTGRES)
    assert sqlite.get_job == "SELECT * FROM jobs WHERE id = ?"
    assert postgres.get_job == "SELECT * FROM jobs WHERE id = %s"
    assert postgres.owner.endswith("WHERE id = %s FOR UPDATE SKIP LOCKED")
    assert sqlite.owner.endswith("WHERE id = ?")
    for template, a, b in zip(Statements(), sqlite, postgres, strict=True):
        assert "{" not in a + b
        assert a.count("?") == b.count("%s") == template.count("{p}")


def test_a_postgres_sink_is_a_transactional_sink() -> None:
    from freight.connectors.postgres import PostgresSink

    sink_type: type[TransactionalSink] = PostgresSink  # checked by mypy
    sink = PostgresSink("postgresql://nobody@127.0.0.1:1/none", "t", columns=["id"])
    assert isinstance(sink, sink_type)
    assert not isinstance(object(), TransactionalSink)
    sink.close()


def test_the_store_package_imports_without_psycopg_and_says_how_to_get_postgres() -> None:
    code = """
import sys
sys.modules["psycopg"] = None  # as if the extra were not installed
import freight.store
from freight.store import SqliteStore
for use in ("from freight.store import PostgresStore",
            "freight.store.open_store('postgresql://u@h/db')"):
    try:
        exec(use)
    except ImportError as exc:
        print(exc)
"""
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=60
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines == ["PostgresStore needs psycopg 3: pip install 'freight[postgres]'"] * 2


def test_postgres_store_is_exported_from_the_store_package() -> None:
    import freight.store
    from freight.store import PostgresStore
    from freight.store._postgres import PostgresStore as Defined

    assert PostgresStore is Defined
    assert "PostgresStore" in freight.store.__all__
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        freight.store.Nope  # noqa: B018
