"""One contract for every table sink: the in-memory twin, SQLite, PostgreSQL (every
mode, sync and async) and MariaDB (insert and upsert)."""

from __future__ import annotations

import asyncio
import sqlite3
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pytest

from freight import TransientError
from freight.connectors.sqlite import AsyncSqliteSink, SqliteSink
from freight.jobs import WriteContext
from freight.testing import MemorySink
from tests.services import POSTGRES_URL, require

Mode = Literal["copy", "insert", "upsert"]


CTX = WriteContext("contract", 0)


Write = Callable[[list[Any]], "list[Any] | None"]


@dataclass
class Target:
    write: Write  # the sink's write, awaited on one event loop for async sinks
    read: Callable[[], list[tuple[Any, ...]]]  # rows ordered by id: (id, amount, note)
    close: Callable[[], None]
    drop: Callable[[], None] | None = None  # the server drops the sink's connection


def memory(tmp_path: Path, key: bool, use_async: bool) -> Target:
    sink = MemorySink(key="id" if key else None, required=("amount",))
    return Target(
        lambda items: sink.write(items, CTX),
        lambda: sorted((r["id"], r["amount"], r["note"]) for r in sink.rows),
        lambda: None,
    )


def on_loop(sink: Any) -> tuple[Write, Callable[[], None]]:
    """``sink.write`` and its closing, for sync and async sinks alike."""
    if not asyncio.iscoroutinefunction(sink.write):
        return (lambda items: sink.write(items, CTX)), sink.close
    runner = asyncio.Runner()

    def close() -> None:
        runner.run(sink.aclose())
        runner.close()

    return (lambda items: runner.run(sink.write(items, CTX))), close


def sqlite(tmp_path: Path, key: bool, use_async: bool) -> Target:
    path = tmp_path / "c.db"
    with sqlite3.connect(path) as db:
        db.execute('CREATE TABLE "t" (id INTEGER PRIMARY KEY, amount INTEGER NOT NULL, note TEXT)')
    kind = AsyncSqliteSink if use_async else SqliteSink
    write, close = on_loop(kind(path, "t", key="id" if key else None))

    def read() -> list[tuple[Any, ...]]:
        with sqlite3.connect(path) as db:
            return db.execute('SELECT id, amount, note FROM "t" ORDER BY id').fetchall()

    return Target(write, read, close)


def postgres(mode: Mode) -> Callable[[Path, bool, bool], Target]:
    def make(tmp_path: Path, key: bool, use_async: bool) -> Target:
        require("127.0.0.1", 5432, "PostgreSQL")
        import psycopg
        from psycopg import sql

        from freight.connectors.postgres import AsyncPostgresSink, PostgresSink

        schema = f"freight_contract_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
            conn.execute(
                sql.SQL(
                    "CREATE TABLE {} (id bigint PRIMARY KEY, amount bigint NOT NULL, note text)"
                ).format(sql.Identifier(schema, "t"))
            )
        url = f"{POSTGRES_URL}?application_name={schema}"
        kind = AsyncPostgresSink if use_async else PostgresSink
        sink = kind(url, "t", schema=schema, mode=mode, key="id" if mode == "upsert" else None)
        write, close_sink = on_loop(sink)

        def read() -> list[tuple[Any, ...]]:
            with psycopg.connect(POSTGRES_URL) as conn:
                query = sql.SQL("SELECT id, amount, note FROM {} ORDER BY id")
                return conn.execute(query.format(sql.Identifier(schema, "t"))).fetchall()

        def close() -> None:
            close_sink()
            with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
                conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))

        def drop() -> None:
            with psycopg.connect(POSTGRES_URL, autocommit=True) as admin:
                killed = admin.execute(
                    "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid))"
                    " FROM pg_stat_activity WHERE application_name = %s",
                    (schema,),
                ).fetchone()
            assert killed is not None
            assert killed[0] >= 1  # the sink's connections are gone

        return Target(write, read, close, drop)

    return make


MYSQL_URL = "mysql://root@127.0.0.1:3306"


def mysql(tmp_path: Path, key: bool, use_async: bool) -> Target:
    """A MariaDB table in a database of its own: its connections are the sink's."""
    require("127.0.0.1", 3306, "MariaDB")
    import pymysql  # type: ignore[import-untyped]

    from freight.connectors.mysql import MysqlSink

    database = f"freight_contract_{uuid.uuid4().hex[:10]}"

    def admin() -> Any:
        return pymysql.connect(host="127.0.0.1", port=3306, user="root", autocommit=True)

    with admin() as conn, conn.cursor() as cur:
        cur.execute(f"CREATE DATABASE `{database}`")
        cur.execute(
            f"CREATE TABLE `{database}`.`t` (id BIGINT PRIMARY KEY, amount BIGINT NOT NULL,"
            " note LONGTEXT)"
        )
    sink = MysqlSink(f"{MYSQL_URL}/{database}", "t", key="id" if key else None)

    def read() -> list[tuple[Any, ...]]:
        with admin() as conn, conn.cursor() as cur:
            cur.execute(f"SELECT id, amount, note FROM `{database}`.`t` ORDER BY id")
            return list(cur.fetchall())

    def close() -> None:
        sink.close()
        with admin() as conn, conn.cursor() as cur:
            cur.execute(f"DROP DATABASE `{database}`")

    def drop() -> None:
        with admin() as conn, conn.cursor() as cur:
            cur.execute("SELECT id FROM information_schema.processlist WHERE db = %s", (database,))
            ids = [row[0] for row in cur.fetchall()]
            for ident in ids:
                cur.execute(f"KILL {int(ident)}")
        assert ids  # the sink's connection is gone

    return Target(lambda items: sink.write(items, CTX), read, close, drop)


TARGETS = {
    "memory-insert": (memory, False, False),
    "memory-upsert": (memory, True, False),
    "sqlite-insert": (sqlite, False, False),
    "sqlite-upsert": (sqlite, True, False),
    "sqlite-async-insert": (sqlite, False, True),
    "sqlite-async-upsert": (sqlite, True, True),
    "postgres-copy": (postgres("copy"), False, False),
    "postgres-insert": (postgres("insert"), False, False),
    "postgres-upsert": (postgres("upsert"), True, False),
    "postgres-async-copy": (postgres("copy"), False, True),
    "postgres-async-insert": (postgres("insert"), False, True),
    "postgres-async-upsert": (postgres("upsert"), True, True),
    "mysql-insert": (mysql, False, False),
    "mysql-upsert": (mysql, True, False),
}


def made(name: str, tmp_path: Path) -> Iterator[Target]:
    make, key, use_async = TARGETS[name]
    target = make(tmp_path, key, use_async)
    yield target
    target.close()


@pytest.fixture(params=sorted(TARGETS))
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Target]:
    yield from made(request.param, tmp_path)


def test_round_trip(target: Target) -> None:
    items = [{"id": 1, "amount": 10, "note": "a"}, {"id": 2, "amount": 20, "note": None}]
    assert target.write(items) is None
    assert target.read() == [(1, 10, "a"), (2, 20, None)]


def test_per_row_outcome_on_partial_failure(target: Target) -> None:
    items = [{"id": i, "amount": None if i in (3, 7) else i, "note": "n"} for i in range(10)]
    outcomes = target.write(items)
    assert outcomes is not None
    assert [i for i, o in enumerate(outcomes) if isinstance(o, Exception)] == [3, 7]
    assert [row[0] for row in target.read()] == [i for i in range(10) if i not in (3, 7)]


def test_empty_chunk(target: Target) -> None:
    assert target.write([]) is None
    assert target.read() == []


def test_huge_field(target: Target) -> None:
    huge = "é" * 2_000_000
    assert target.write([{"id": 1, "amount": 1, "note": huge}]) is None
    assert target.read() == [(1, 1, huge)]


@pytest.fixture(params=sorted(t for t in TARGETS if t.startswith(("postgres", "mysql"))))
def server_target(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Target]:
    """The targets that hold a connection to a server (the others have none to drop)."""
    yield from made(request.param, tmp_path)


def test_reconnect_after_the_server_drops_the_connection(server_target: Target) -> None:
    target = server_target
    assert target.drop is not None
    assert target.write([{"id": 1, "amount": 1, "note": "before"}]) is None
    target.drop()
    items = [{"id": 2, "amount": 2, "note": "after"}]
    try:  # the first write may see the dead connection: a transient error, never a lost row
        outcome = target.write(items)
    except TransientError:
        outcome = target.write(items)
    assert outcome is None
    assert target.read() == [(1, 1, "before"), (2, 2, "after")]
