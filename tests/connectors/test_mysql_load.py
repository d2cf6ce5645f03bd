"""``freight load --into mysql://…``: typed tables, upserts, dead letters with their line,
one-line refusals."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from freight.cli import app
from tests.services import require

pymysql = pytest.importorskip("pymysql")


@pytest.fixture
def database() -> Iterator[str]:
    require("127.0.0.1", 3306, "MariaDB")
    name = f"freight_load_{uuid.uuid4().hex[:10]}"
    with pymysql.connect(host="127.0.0.1", user="root", autocommit=True) as conn:
        conn.cursor().execute(f"CREATE DATABASE `{name}`")
    yield name
    with pymysql.connect(host="127.0.0.1", user="root", autocommit=True) as conn:
        conn.cursor().execute(f"DROP DATABASE `{name}`")


def query(database: str, statement: str) -> list[tuple[Any, ...]]:
    with pymysql.connect(host="127.0.0.1", user="root", database=database) as conn:
        cur = conn.cursor()
        cur.execute(statement)
        return list(cur.fetchall())


def load(tmp_path: Path, database: str, file: Path, *args: str) -> tuple[int, Any]:
    url = f"mysql://root@127.0.0.1:3306/{database}"
    argv = ["load", str(file), "--into", url, "--store", str(tmp_path / "s.db"), "--json"]
    result = CliRunner().invoke(app, [*argv, *args])
    assert "Traceback" not in result.output + result.stderr
    if result.exit_code == 2:
        return 2, result.stderr.strip()
    return result.exit_code, json.loads(result.stdout)


def test_a_csv_upsert_types_the_table_keeps_the_last_value_and_dead_letters_by_line(
    tmp_path: Path, database: str
) -> None:
    data = tmp_path / "pay.csv"
    data.write_text("id,amount,seen\n1,1.5,2024-01-01T00:00:00+02:00\n2,abc,\n1,2.5,\n")
    code, report = load(tmp_path, database, data, "--table", "pay", "--key", "id",
                        "--types", "amount=numeric")  # fmt: skip
    assert code == 3
    assert [(e["item"], e["message"]) for e in report["errors"]] == [
        ("line 3", "column 'amount': 'abc' is not a number")
    ]
    assert query(database, "SELECT id, amount, seen FROM pay") == [
        (1, Decimal("2.5"), None)  # the file's last value of the key, every column it has
    ]
    kinds = query(database, "SELECT column_name, column_type FROM information_schema.columns"
                  " WHERE table_schema = DATABASE() AND table_name = 'pay'"
                  " ORDER BY ordinal_position")  # fmt: skip
    assert kinds == [("id", "bigint(20)"), ("amount", "decimal(65,30)"), ("seen", "datetime(6)")]


def test_jsonl_records_set_only_their_fields(tmp_path: Path, database: str) -> None:
    data = tmp_path / "p.jsonl"
    data.write_text('{"id": 1, "name": "a", "n": 1}\n{"id": 1, "n": 2}\n{"id": 2, "x": 1}\n')
    code, report = load(tmp_path, database, data, "--table", "p", "--key", "id")
    assert code == 3
    assert [e["item"] for e in report["errors"]] == ["line 3"]
    assert query(database, "SELECT id, name, n FROM p") == [(1, "a", 2)]


@pytest.mark.parametrize(
    ("args", "header", "words"),
    [
        (("--table", "t", "--schema", "s"), "a\n", "--schema applies to PostgreSQL"),
        (("--table", "t" * 65), "a\n", "at most 64 characters"),
        (("--table", "t"), "a,A\n", "duplicate column name 'A'"),
        (("--table", "t"), ",".join(f"c{i}" for i in range(4097)) + "\n", "at most 4096"),
    ],
)
def test_a_header_or_table_mariadb_cannot_take_is_refused_in_one_line(
    tmp_path: Path, database: str, args: tuple[str, ...], header: str, words: str
) -> None:
    data = tmp_path / "f.csv"
    data.write_text(header)
    code, message = load(tmp_path, database, data, *args)
    assert code == 2
    assert words in message
    assert len(message.splitlines()) == 1
    assert query(database, "SHOW TABLES") == []
