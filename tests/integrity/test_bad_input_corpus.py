"""The bad-input corpus: each file loaded by `freight load` into SQLite, PostgreSQL and
MariaDB.

For every file the targets must agree: the same good rows land once, each bad row is
dead-lettered with its file line and a readable reason, and the exit code says which
happened (0 all landed, 3 some rows dead-lettered, 2 refused before anything was made).
"""

from __future__ import annotations

import json
import sqlite3
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from typer.testing import CliRunner

from freight.cli import app
from tests.services import POSTGRES_URL, require

HEADER = b"id,name,amount\n"


def _rows(n: int, start: int = 1) -> bytes:
    return b"".join(b"%d,name %d,%d.5\n" % (i, i, i) for i in range(start, start + n))


@dataclass
class Case:
    """One corpus file and what loading it must give on every target."""

    content: bytes
    exit_code: int
    landed: set[int] = field(default_factory=set)  # ids in the table afterwards
    dead: set[int] = field(default_factory=set)  # file lines dead-lettered
    reason: str = ""  # a word every dead letter's (or the refusal's) message holds
    key: str | None = None
    names: dict[int, str] = field(default_factory=dict)  # id -> expected name


def _corpus() -> dict[str, Case]:
    ten = _rows(10)
    return {
        "clean": Case(HEADER + ten, 0, set(range(1, 11))),
        "wrong_column_count": Case(
            HEADER + _rows(3) + b"4,short\n" + b"5,too,many,columns\n" + _rows(2, 6),
            3, {1, 2, 3, 6, 7}, {5, 6}, "column",
        ),
        "invalid_utf8": Case(
            HEADER + _rows(2) + b"3,caf\xe9,3.5\n" + _rows(2, 4), 3, {1, 2, 4, 5}, {4}, "utf-8"
        ),
        # The first rows make `amount` numeric; a later word cannot be one.
        "unparsable_number": Case(
            HEADER + _rows(1200) + b"1201,late,abc\n" + _rows(5, 1202),
            3, set(range(1, 1201)) | set(range(1202, 1207)), {1202}, "",
        ),
        "ten_megabyte_field": Case(
            HEADER + _rows(2) + b"3," + b"x" * (10 << 20) + b",3.5\n" + _rows(2, 4),
            0, {1, 2, 3, 4, 5},
        ),
        "truncated_last_line": Case(HEADER + _rows(4) + b"5,na", 3, {1, 2, 3, 4}, {6}, "column"),
        "stray_quote": Case(
            HEADER + _rows(1) + b'2,car"ol,2.5\n' + _rows(8, 3),
            0, set(range(1, 11)), names={2: 'car"ol'},
        ),
        "unterminated_quote": Case(
            HEADER + _rows(2) + b'3,"bob,3.5\n' + _rows(7, 4), 3, {1, 2, *range(4, 11)}, {4}
        ),
        "bom": Case(b"\xef\xbb\xbf" + HEADER + ten, 0, set(range(1, 11))),
        "crlf": Case(
            (HEADER + ten).replace(b"\n", b"\r\n"), 0, set(range(1, 11)), names={3: "name 3"}
        ),
        "header_only": Case(HEADER, 0, set()),
        "duplicate_keys": Case(
            HEADER + b"1,first,1\n2,two,2\n1,second,1\n3,three,3\n1,last,1\n",
            0, {1, 2, 3}, key="id", names={1: "last"},
        ),
        "nul_byte": Case(
            HEADER + _rows(2) + b"3,nu\x00l,3.5\n" + _rows(2, 4), 3, {1, 2, 4, 5}, {4}, "NUL"
        ),
        "duplicate_column_names": Case(b"id,name,id\n1,a,2\n", 2, reason="'id'"),
        "empty_column_name": Case(b"id,,amount\n1,a,2\n", 2, reason="empty"),
        "five_thousand_columns": Case(
            ",".join(f"c{i}" for i in range(5000)).encode() + b"\n"
            + ",".join("1" for _ in range(5000)).encode() + b"\n",
            2, reason="columns",
        ),
    }  # fmt: skip


CORPUS = _corpus()


MYSQL_SERVER = "mysql://root@127.0.0.1:3306"


@pytest.fixture(scope="module")
def mysql_database() -> Iterator[str]:
    """A MariaDB database of the module's own, dropped after it."""
    require("127.0.0.1", 3306, "MariaDB")
    import pymysql  # type: ignore[import-untyped]

    name = f"freight_corpus_{uuid.uuid4().hex[:10]}"
    with pymysql.connect(host="127.0.0.1", user="root", autocommit=True) as conn:
        conn.cursor().execute(f"CREATE DATABASE `{name}`")
    yield name
    with pymysql.connect(host="127.0.0.1", user="root", autocommit=True) as conn:
        conn.cursor().execute(f"DROP DATABASE IF EXISTS `{name}`")


def _mysql_rows(database: str, table: str) -> dict[int, str] | None:
    import pymysql

    with pymysql.connect(host="127.0.0.1", user="root", database=database) as conn:
        cur = conn.cursor()
        cur.execute(
            "SELECT 1 FROM information_schema.tables WHERE table_schema = %s AND table_name = %s",
            (database, table),
        )
        if cur.fetchone() is None:
            return None
        cur.execute(f"SELECT `id`, `name` FROM `{table}`")
        rows = cur.fetchall()
    ids = [int(i) for i, _ in rows]
    assert len(ids) == len(set(ids)), "a row landed twice"
    return {int(i): str(n) for i, n in rows}


@pytest.fixture(scope="module")
def schema() -> Iterator[str]:
    require("127.0.0.1", 5432, "PostgreSQL")
    name = f"freight_corpus_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(name)))
    yield name
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name)))


def _load(path: Path, into: list[str], case: Case, store: Path) -> tuple[int, dict[str, object]]:
    argv = ["load", str(path), *into, "--store", str(store), "--json"]
    if case.key:
        argv += ["--key", case.key]
    result = CliRunner().invoke(app, argv)
    assert "Traceback" not in result.output + result.stderr
    if result.exit_code == 2:
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, result.stderr
        return 2, {"refusal": lines[0]}
    return result.exit_code, json.loads(result.stdout)


def _sqlite_rows(db: Path) -> dict[int, str] | None:
    if not db.exists():
        return None
    with sqlite3.connect(db) as conn:
        found = conn.execute("SELECT name FROM sqlite_master WHERE name = 't'").fetchone()
        if found is None:
            return None
        rows = conn.execute('SELECT "id", "name" FROM "t"').fetchall()
    ids = [int(i) for i, _ in rows]
    assert len(ids) == len(set(ids)), "a row landed twice"
    return {int(i): str(n) for i, n in rows}


def _postgres_rows(schema: str, table: str) -> dict[int, str] | None:
    with psycopg.connect(POSTGRES_URL) as conn:
        exists = conn.execute(
            "SELECT 1 FROM information_schema.tables WHERE table_schema = %s AND table_name = %s",
            (schema, table),
        ).fetchone()
        if exists is None:
            return None
        rows = conn.execute(
            sql.SQL('SELECT "id", "name" FROM {}').format(sql.Identifier(schema, table))
        ).fetchall()
    ids = [int(i) for i, _ in rows]
    assert len(ids) == len(set(ids)), "a row landed twice"
    return {int(i): str(n) for i, n in rows}


def _check(case: Case, code: int, report: dict[str, object], rows: dict[int, str] | None) -> None:
    assert code == case.exit_code, report
    if code == 2:
        assert case.reason in str(report["refusal"]), report
        assert rows is None, "a refused load created its table"
        return
    summary = report["summary"]
    assert isinstance(summary, dict)
    errors = report["errors"]
    assert isinstance(errors, list)
    assert {e["item"] for e in errors} == {f"line {n}" for n in case.dead}
    for error in errors:
        assert error["message"].strip(), error
        assert case.reason.lower() in error["message"].lower(), error
    assert summary["failed"] == len(case.dead)
    assert set(rows or {}) == case.landed
    for key, name in case.names.items():
        assert rows is not None
        assert rows[key] == name


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_each_file_gives_the_same_rows_and_dead_letters_on_sqlite_postgres_and_mariadb(
    name: str, schema: str, mysql_database: str, tmp_path: Path
) -> None:
    case = CORPUS[name]
    path = tmp_path / f"{name}.csv"
    path.write_bytes(case.content)
    db = tmp_path / "target.db"
    code, report = _load(
        path, ["--into", f"sqlite:///{db}", "--table", "t"], case, tmp_path / "s1.db"
    )
    _check(case, code, report, _sqlite_rows(db))
    sqlite_report = report
    table = f"t_{name}"
    code, report = _load(
        path,
        ["--into", POSTGRES_URL, "--table", table, "--schema", schema],
        case,
        tmp_path / "s2.db",
    )
    _check(case, code, report, _postgres_rows(schema, table))
    postgres_report = report
    code, report = _load(
        path,
        ["--into", f"{MYSQL_SERVER}/{mysql_database}", "--table", table],
        case,
        tmp_path / "s3.db",
    )
    _check(case, code, report, _mysql_rows(mysql_database, table))
    if code != 2:  # the same counts on every target
        for count in ("processed", "succeeded", "failed", "skipped"):
            assert report["summary"][count] == sqlite_report["summary"][count], count  # type: ignore[index]
            assert postgres_report["summary"][count] == sqlite_report["summary"][count], count  # type: ignore[index]
