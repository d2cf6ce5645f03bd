"""`freight load` of the files users have: the same rows from .csv, .csv.gz, .csv.zst,
.jsonl.gz and .parquet make the same table (SQLite and PostgreSQL); --format names a
format the suffix does not; a compressed load killed with SIGKILL resumes exactly."""

from __future__ import annotations

import contextlib
import gzip
import json
import random
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard
from psycopg import sql
from typer.testing import CliRunner

from freight import ConfigError
from freight.cli import app
from freight.cli._load import Load, load_job
from freight.store import SqliteStore
from tests.services import POSTGRES_URL, require

COLUMNS = ("id", "name", "amount", "paid", "note")


def rows(n: int) -> list[dict[str, Any]]:
    return [
        {
            "id": i,
            "name": f'name {i}, "quoted"' if i % 7 == 0 else f"name {i}",
            "amount": i % 1000 + 0.25,
            "paid": i % 2 == 1,
            "note": None if i % 5 == 0 else f"note {i}",
        }
        for i in range(n)
    ]


def csv_bytes(data: list[dict[str, Any]]) -> bytes:
    def cell(value: Any) -> str:
        if value is None:
            return ""
        if isinstance(value, bool):
            return "true" if value else "false"
        text = str(value)
        if any(c in text for c in ',"\n'):
            return '"' + text.replace('"', '""') + '"'
        return text

    lines = [",".join(COLUMNS)] + [",".join(cell(r[c]) for c in COLUMNS) for r in data]
    return ("\n".join(lines) + "\n").encode()


def jsonl_bytes(data: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in data).encode()


def write_csv(path: Path, data: list[dict[str, Any]]) -> Path:
    target = path / "rows.csv"
    target.write_bytes(csv_bytes(data))
    return target


def write_csv_gz(path: Path, data: list[dict[str, Any]]) -> Path:
    target = path / "rows.csv.gz"
    target.write_bytes(gzip.compress(csv_bytes(data)))
    return target


def write_csv_zst(path: Path, data: list[dict[str, Any]]) -> Path:
    target = path / "rows.csv.zst"
    target.write_bytes(zstandard.ZstdCompressor().compress(csv_bytes(data)))
    return target


def write_jsonl_gz(path: Path, data: list[dict[str, Any]]) -> Path:
    target = path / "rows.jsonl.gz"
    target.write_bytes(gzip.compress(jsonl_bytes(data)))
    return target


def write_parquet(path: Path, data: list[dict[str, Any]]) -> Path:
    target = path / "rows.parquet"
    pq.write_table(pa.Table.from_pylist(data), target, row_group_size=100)
    return target


WRITERS: list[Callable[[Path, list[dict[str, Any]]], Path]] = [
    write_csv,
    write_csv_gz,
    write_csv_zst,
    write_jsonl_gz,
    write_parquet,
]


def invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def load_each(into: str, tmp_path: Path, extra: tuple[str, ...] = ()) -> list[str]:
    """Load the same 1,000 rows from each kind of file, each into its own table."""
    data = rows(1_000)
    tables = []
    for number, write in enumerate(WRITERS):
        folder = tmp_path / str(number)
        folder.mkdir()
        file = write(folder, data)
        table = f"rows_{number}"
        code, out, err = invoke(
            "load", str(file), "--into", into, "--table", table, "--key", "id",
            "--chunk-size", "300", "--store", str(tmp_path / "f.db"), "--json", *extra,
        )  # fmt: skip
        assert code == 0, (file.name, out, err)
        assert json.loads(out)["summary"]["succeeded"] == 1_000, file.name
        tables.append(table)
    return tables


def test_the_same_rows_from_csv_gz_zst_jsonl_gz_and_parquet_make_the_same_sqlite_table(
    tmp_path: Path,
) -> None:
    db = tmp_path / "app.db"
    tables = load_each(f"sqlite:///{db}", tmp_path)
    with sqlite3.connect(db) as conn:
        contents = [
            sorted(conn.execute(f'SELECT {", ".join(COLUMNS)} FROM "{table}"').fetchall())
            for table in tables
        ]
        types = [
            [(c[1], c[2]) for c in conn.execute(f'PRAGMA table_info("{table}")')]
            for table in tables
        ]
    assert len(contents[0]) == 1_000
    assert contents[0][7] == (7, 'name 7, "quoted"', 7.25, 1, "note 7")
    assert contents[0][5][4] is None
    assert all(c == contents[0] for c in contents[1:])
    assert all(t == types[0] for t in types[1:])


@pytest.fixture
def schema() -> Iterator[str]:
    require("127.0.0.1", 5432, "PostgreSQL")
    name = f"freight_formats_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(name)))
    yield name
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name)))


@pytest.mark.service
def test_the_same_rows_from_each_kind_of_file_make_the_same_postgres_table(
    tmp_path: Path, schema: str
) -> None:
    tables = load_each(POSTGRES_URL, tmp_path, ("--schema", schema))
    with psycopg.connect(POSTGRES_URL) as conn:
        contents = []
        types = []
        for table in tables:
            query = sql.SQL("SELECT {} FROM {} ORDER BY id").format(
                sql.SQL(", ").join(map(sql.Identifier, COLUMNS)), sql.Identifier(schema, table)
            )
            contents.append(conn.execute(query).fetchall())
            types.append(
                conn.execute(
                    "SELECT column_name, data_type FROM information_schema.columns "
                    "WHERE table_schema = %s AND table_name = %s ORDER BY ordinal_position",
                    (schema, table),
                ).fetchall()
            )
    assert len(contents[0]) == 1_000
    assert contents[0][7][:2] == (7, 'name 7, "quoted"')
    assert contents[0][5][4] is None
    assert all(c == contents[0] for c in contents[1:])
    assert all(t == types[0] for t in types[1:])
    assert ("paid", "boolean") in types[0]


def test_format_names_the_format_of_a_file_whose_suffix_does_not(tmp_path: Path) -> None:
    file = tmp_path / "export.dat"
    file.write_bytes(gzip.compress(csv_bytes(rows(50))))  # gzip, found from its header
    db = tmp_path / "app.db"
    spec = Load(file=file, into=f"sqlite:///{db}", table="t", format="csv")
    job = load_job(spec, None, lambda: SqliteStore(tmp_path / "f.db"))
    assert job.run().summary["succeeded"] == 50
    assert Load.from_metadata(spec.metadata()).format == "csv"  # resume reads it alike
    with sqlite3.connect(db) as conn:
        assert conn.execute('SELECT count(*) FROM "t"').fetchone() == (50,)
    with pytest.raises(ConfigError, match="format must be 'csv', 'jsonl' or 'parquet'"):
        load_job(Load(file=file, into=f"sqlite:///{db}", table="t", format="xml"), None, None)  # type: ignore[arg-type]


def test_a_file_of_no_known_suffix_is_refused_in_one_line_naming_format(tmp_path: Path) -> None:
    file = tmp_path / "export.dat"
    file.write_bytes(csv_bytes(rows(3)))
    code, _, err = invoke(
        "load", str(file), "--into", f"sqlite:///{tmp_path / 'a.db'}", "--table", "t",
        "--store", str(tmp_path / "f.db"),
    )  # fmt: skip
    assert (code, err.count("\n")) == (2, 1)
    assert "cannot load export.dat: give a .csv or .jsonl file" in err
    assert "--format csv|jsonl|parquet" in err


def test_a_damaged_gzip_file_is_refused_in_one_line(tmp_path: Path) -> None:
    file = tmp_path / "rows.csv.gz"
    file.write_bytes(csv_bytes(rows(3)))  # named .gz, but plain text
    code, _, err = invoke(
        "load", str(file), "--into", f"sqlite:///{tmp_path / 'a.db'}", "--table", "t",
        "--store", str(tmp_path / "f.db"),
    )  # fmt: skip
    assert (code, err.count("\n")) == (2, 1)
    assert "is not gzip-compressed" in err


# -- a compressed load killed mid-way ------------------------------------------------------


def kill_and_resume(
    argv: list[str], kills: int, seed: int, store: Path
) -> tuple[int, subprocess.CompletedProcess[str]]:
    """Start the load and SIGKILL it ``kills`` times, each at a random point after it
    committed more chunks (read from its store), then let it finish."""
    rng = random.Random(seed)

    def progress() -> int:
        if not store.exists():
            return -1
        with contextlib.closing(sqlite3.connect(store, timeout=5)) as conn:
            try:
                row = conn.execute("SELECT max(processed) FROM jobs").fetchone()
            except sqlite3.OperationalError:  # its tables are not made yet
                return -1
        return int(row[0] or 0)

    killed = 0
    for _ in range(3 * kills):
        if killed == kills:
            break
        before = progress()
        process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        while process.poll() is None and progress() <= max(before, 0):
            time.sleep(0.002)  # watching for a commit, not waiting out a timeout
        time.sleep(rng.uniform(0, 0.05))  # a random point after that commit
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
            killed += 1
        process.communicate()
    final = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=120)
    return killed, final


@pytest.mark.slow
def test_sigkill_of_a_gzip_load_into_sqlite_at_5_random_points_then_resume_loads_each_row_once(
    tmp_path: Path,
) -> None:
    n = 200_000
    file = write_csv_gz(tmp_path, rows(n))
    db = tmp_path / "app.db"
    argv = [sys.executable, "-m", "freight.cli", "load", str(file), "--into", f"sqlite:///{db}",
            "--table", "rows", "--key", "id", "--name", "gzcrash", "--chunk-size", "2000",
            "--store", str(tmp_path / "f.db"), "--json"]  # fmt: skip
    killed, final = kill_and_resume(argv, 5, seed=16, store=tmp_path / "f.db")
    assert final.returncode == 0, final.stderr
    assert killed == 5
    report = json.loads(final.stdout)
    assert report["summary"]["failed"] == 0
    with sqlite3.connect(db) as conn:
        count, distinct, total = conn.execute(
            'SELECT count(*), count(DISTINCT id), sum(id) FROM "rows"'
        ).fetchone()
    assert count == distinct == n
    assert total == n * (n - 1) // 2


@pytest.mark.slow
@pytest.mark.service
def test_sigkill_of_a_zstd_load_into_postgres_at_5_random_points_then_resume_loads_each_row_once(
    tmp_path: Path, schema: str
) -> None:
    n = 300_000
    file = write_csv_zst(tmp_path, rows(n))
    argv = [sys.executable, "-m", "freight.cli", "load", str(file), "--into", POSTGRES_URL,
            "--table", "rows", "--schema", schema, "--key", "id", "--name", "zstcrash",
            "--chunk-size", "5000", "--store", str(tmp_path / "f.db"), "--json"]  # fmt: skip
    killed, final = kill_and_resume(argv, 5, seed=17, store=tmp_path / "f.db")
    assert final.returncode == 0, final.stderr
    assert killed == 5
    with psycopg.connect(POSTGRES_URL) as conn:
        count, distinct, total = conn.execute(
            sql.SQL("SELECT count(*), count(DISTINCT id), sum(id) FROM {}").format(
                sql.Identifier(schema, "rows")
            )
        ).fetchone()  # type: ignore[misc]
    assert count == distinct == n
    assert total == n * (n - 1) // 2


def test_the_format_option_reads_a_gzip_file_whose_suffix_says_nothing(tmp_path: Path) -> None:
    file = tmp_path / "export.dat"
    file.write_bytes(gzip.compress(csv_bytes(rows(40))))
    db = tmp_path / "app.db"
    base = ("load", str(file), "--into", f"sqlite:///{db}", "--table", "t",
            "--store", str(tmp_path / "f.db"))  # fmt: skip
    code, out, err = invoke(*base, "--format", "csv", "--json")
    assert code == 0, err
    assert json.loads(out)["summary"]["succeeded"] == 40
    with sqlite3.connect(db) as conn:
        assert conn.execute('SELECT count(*) FROM "t"').fetchone() == (40,)
    code, _, err = invoke(*base, "--format", "xml", "--name", "other")
    assert (code, err.count("\n")) == (2, 1)
    assert "format must be 'csv', 'jsonl' or 'parquet'" in err
