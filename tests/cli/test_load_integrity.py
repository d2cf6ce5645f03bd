"""`freight load` (issue 11): exit codes a script can trust, a header the target cannot take
refused before anything is created, one line (never a traceback) for a store or a target
that cannot be used, and `freight resume` of a run whose process was killed while paused.

Every command runs in-process through typer's CliRunner, except the one run killed with
SIGKILL, which needs a process of its own.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from typer.testing import CliRunner

from freight._process import host
from freight.cli import app
from freight.jobs import CsvSource
from freight.store import SqliteStore
from freight.store._records import utcnow
from tests.services import POSTGRES_URL, require

runner = CliRunner()


def invoke(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    assert "Traceback" not in result.output
    return result.exit_code, result.stdout, result.stderr


def one_line_error(*args: str) -> str:
    """Run ``freight ARGS``: exit 2, one line on stderr, no traceback; return the line."""
    result = runner.invoke(app, list(args))
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("freight: error: ")
    assert "Traceback" not in result.output
    return lines[0]


def csv_file(path: Path, header: str, rows: list[str]) -> Path:
    path.write_text(header + "\n" + "".join(row + "\n" for row in rows))
    return path


# -- targets: every test of a load runs on SQLite and on PostgreSQL -------------------------


class Target:
    """Where a test loads: the --into URL (and --schema), and how to look at a table."""

    def __init__(self, kind: str, tmp_path: Path, schema: str | None) -> None:
        self.kind, self.schema = kind, schema
        self.db = tmp_path / "app.db"
        self.into = f"sqlite:///{self.db}" if kind == "sqlite" else POSTGRES_URL

    def args(self, table: str) -> list[str]:
        schema = ["--schema", self.schema] if self.schema else []
        return ["--into", self.into, "--table", table, *schema]

    def rows(self, table: str) -> list[tuple[str, ...]] | None:
        """The table's rows as text, sorted; ``None`` when the table does not exist."""
        if self.kind == "sqlite":
            if not self.db.exists():
                return None
            with sqlite3.connect(self.db) as conn:
                found = conn.execute(
                    "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)
                ).fetchone()
                if found is None:
                    return None
                rows = conn.execute(f'SELECT * FROM "{table}"').fetchall()
            return sorted(tuple(str(v) for v in row) for row in rows)
        with psycopg.connect(POSTGRES_URL) as conn:
            name = sql.Identifier(self.schema or "public", table)
            exists = conn.execute("SELECT to_regclass(%s)", (name.as_string(conn),)).fetchone()
            if exists is None or exists[0] is None:
                return None
            rows = conn.execute(sql.SQL("SELECT * FROM {}").format(name)).fetchall()
        return sorted(tuple(str(v) for v in row) for row in rows)


@pytest.fixture(params=["sqlite", "postgres"])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Target]:
    if request.param == "sqlite":
        yield Target("sqlite", tmp_path, None)
        return
    require("127.0.0.1", 5432, "PostgreSQL")
    schema = f"freight_integrity_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    yield Target("postgres", tmp_path, schema)
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


# -- item 6: exit codes ---------------------------------------------------------------------


def test_a_load_where_every_row_lands_exits_0(target: Target, tmp_path: Path) -> None:
    data = csv_file(tmp_path / "ok.csv", "id,name", [f"{i},user{i}" for i in range(5)])
    store = str(tmp_path / "f.db")
    code, out, _ = invoke("load", str(data), *target.args("ok"), "--store", store, "--json")
    assert code == 0, out
    assert json.loads(out)["status"] == "completed"
    assert target.rows("ok") == sorted((str(i), f"user{i}") for i in range(5))


def test_a_load_that_dead_letters_rows_exits_3_and_says_so_again_when_rerun(
    target: Target, tmp_path: Path
) -> None:
    rows = [f"{i},user{i}" for i in range(8)]
    rows[3] = "3,user3,extra"  # one column too many: dead-lettered with its line
    data = csv_file(tmp_path / "bad.csv", "id,name", rows)
    argv = ["load", str(data), *target.args("bad"), "--key", "id", "--name", "bad",
            "--store", str(tmp_path / "f.db"), "--json"]  # fmt: skip
    code, out, _ = invoke(*argv)
    assert code == 3
    report = json.loads(out)
    assert report["status"] == "completed_with_errors"
    assert [e["item"] for e in report["errors"]] == ["line 5"]
    assert target.rows("bad") is not None
    assert len(target.rows("bad") or []) == 7
    code, out, _ = invoke(*argv)  # the same load again: the run is reported, not redone
    assert code == 3
    assert json.loads(out)["job_id"] == report["job_id"]


def test_a_load_over_max_failures_stops_early_and_exits_1(tmp_path: Path) -> None:
    rows = [f"{i},user{i}" if i % 3 else f"{i},x,y" for i in range(30)]  # 10 bad rows
    data = csv_file(tmp_path / "bad.csv", "id,name", rows)
    code, out, _ = invoke(
        "load", str(data), "--into", f"sqlite:///{tmp_path / 'app.db'}", "--table", "t",
        "--chunk-size", "5", "--max-failures", "2", "--store", str(tmp_path / "f.db"), "--json",
    )  # fmt: skip
    assert code == 1
    report = json.loads(out)
    assert report["status"] == "failed"
    assert "max_failures=2" in report["reason"]
    assert report["summary"]["processed"] < 30  # stopped before the end


def test_a_load_over_max_failure_rate_stops_early_and_exits_1(tmp_path: Path) -> None:
    rows = [f"{i},user{i}" if i % 2 else f"{i},x,y" for i in range(40)]  # half of them bad
    data = csv_file(tmp_path / "bad.csv", "id,name", rows)
    code, out, _ = invoke(
        "load", str(data), "--into", f"sqlite:///{tmp_path / 'app.db'}", "--table", "t",
        "--chunk-size", "10", "--max-failure-rate", "0.1", "--store", str(tmp_path / "f.db"),
        "--json",
    )  # fmt: skip
    assert code == 1
    report = json.loads(out)
    assert report["status"] == "failed"
    assert report["summary"]["processed"] < 40


def test_a_threshold_outside_its_range_is_a_usage_error(tmp_path: Path) -> None:
    data = csv_file(tmp_path / "ok.csv", "id", ["1"])
    line = one_line_error(
        "load", str(data), "--into", f"sqlite:///{tmp_path / 'app.db'}", "--table", "t",
        "--max-failure-rate", "1.5", "--store", str(tmp_path / "f.db"),
    )  # fmt: skip
    assert "--max-failure-rate" in line
    assert not (tmp_path / "f.db").exists()


def test_resume_keeps_the_thresholds_of_the_load(tmp_path: Path) -> None:
    rows = [f"{i},user{i}" if i % 3 else f"{i},x,y" for i in range(30)]
    data = csv_file(tmp_path / "bad.csv", "id,name", rows)
    store = str(tmp_path / "f.db")
    code, _, _ = invoke(
        "load", str(data), "--into", f"sqlite:///{tmp_path / 'app.db'}", "--table", "t",
        "--chunk-size", "5", "--max-failures", "2", "--name", "capped", "--store", store,
    )  # fmt: skip
    assert code == 1
    code, out, _ = invoke("resume", "capped", "--store", store, "--json")
    assert code == 1  # rebuilt with --max-failures 2: it stops again
    assert json.loads(out)["status"] == "failed"


def test_retry_failed_exits_0_once_every_dead_letter_landed(tmp_path: Path) -> None:
    db, store = tmp_path / "app.db", str(tmp_path / "f.db")
    with sqlite3.connect(db) as conn:  # a constraint that refuses one row
        conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT CHECK (name <> 'bad'))")
    data = csv_file(tmp_path / "u.csv", "id,name", ["1,ann", "2,bad", "3,cy"])
    argv = ["--store", store, "--json"]
    code, out, _ = invoke(
        "load", str(data), "--into", f"sqlite:///{db}", "--table", "t", "--key", "id",
        "--name", "u", *argv,
    )  # fmt: skip
    assert code == 3
    assert json.loads(out)["summary"]["failed"] == 1
    code, _, _ = invoke("retry-failed", "u", *argv)
    assert code == 3  # the constraint still refuses it
    with sqlite3.connect(db) as conn:  # the cause fixed: the constraint dropped
        conn.executescript(
            "CREATE TABLE t2 (id INTEGER PRIMARY KEY, name TEXT);"
            "INSERT INTO t2 SELECT * FROM t; DROP TABLE t; ALTER TABLE t2 RENAME TO t;"
        )
    code, out, _ = invoke("retry-failed", "u", *argv)
    assert code == 0, out
    assert json.loads(out)["status"] == "completed"
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT id, name FROM t ORDER BY id").fetchall() == [
            (1, "ann"), (2, "bad"), (3, "cy"),
        ]  # fmt: skip


def test_run_of_a_python_job_with_dead_letters_exits_3(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "halfbad.py").write_text(
        "from freight import Job\n"
        "from freight.store import SqliteStore\n"
        "def sink(batch):\n"
        "    return [ValueError('odd') if i % 2 else None for i in batch]\n"
        f"job = Job('halfbad', range(6), sink, store=SqliteStore({str(tmp_path / 's.db')!r}))\n"
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    code, out, _ = invoke("run", "halfbad:job", "--json")
    assert code == 3
    assert json.loads(out)["summary"]["failed"] == 3


@pytest.mark.parametrize("command", [[], ["load"], ["run"], ["resume"], ["retry-failed"]])
def test_the_help_documents_the_exit_codes(command: list[str]) -> None:
    code, out, _ = invoke(*command, "--help")
    assert code == 0
    text = " ".join(out.split())
    assert "Exit codes" in text
    for line in (
        "0 every item landed",
        "1 the run failed",
        "2 a user error",
        "3 finished, but some rows were dead-lettered",
        "130 stopped at once",
    ):
        assert line in text


def test_the_guide_documents_the_exit_codes() -> None:
    guide = (Path(__file__).parents[2] / "docs" / "guide.md").read_text()
    section = guide.split("## Exit codes", 1)[1].split("\n## ", 1)[0]
    for code in ("`0`", "`1`", "`2`", "`3`", "`130`"):
        assert code in section


# -- item 5: the same file gives the same rows and dead letters on both targets --------------


def typed_file(path: Path) -> Path:
    rows = [f"{i},{i}.25,{'true' if i % 2 else 'false'},2026-03-01T08:00:00+00:00,n{i}"
            for i in range(200)]  # fmt: skip
    rows[50] = "50,not-a-number,true,2026-03-01T08:00:00+00:00,n50"  # line 52
    rows[90] = "90,1.5,maybe,2026-03-01T08:00:00+00:00,n90"  # line 92
    rows[120] = "120,1.5,true"  # line 122: too few columns
    return csv_file(path, "id,amount,paid,seen,note", rows)


def declared_types(target: Target, table: str) -> dict[str, str]:
    if target.kind == "sqlite":
        with sqlite3.connect(target.db) as conn:
            rows = conn.execute(f'PRAGMA table_info("{table}")').fetchall()
        return {row[1]: row[2] for row in rows}
    with psycopg.connect(POSTGRES_URL) as conn:
        found = conn.execute(
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = %s AND table_name = %s ORDER BY ordinal_position",
            (target.schema, table),
        ).fetchall()
    return dict(found)


def test_both_targets_get_the_inferred_types_and_dead_letter_the_same_lines(
    target: Target, tmp_path: Path
) -> None:
    data = typed_file(tmp_path / "typed.csv")
    code, out, _ = invoke(
        "load", str(data), *target.args("typed"), "--key", "id", "--store",
        str(tmp_path / "f.db"), "--json",
    )  # fmt: skip
    assert code == 3
    report = json.loads(out)
    assert sorted(e["item"] for e in report["errors"]) == ["line 122", "line 52", "line 92"]
    assert report["summary"]["succeeded"] == 197
    expected = (
        {"id": "BIGINT", "amount": "NUMERIC", "paid": "BOOLEAN", "seen": "TIMESTAMPTZ",
         "note": "TEXT"}
        if target.kind == "sqlite"
        else {"id": "bigint", "amount": "numeric", "paid": "boolean",
              "seen": "timestamp with time zone", "note": "text"}
    )  # fmt: skip
    assert declared_types(target, "typed") == expected
    assert len(target.rows("typed") or []) == 197


def test_types_override_the_inferred_ones_on_sqlite_too(tmp_path: Path) -> None:
    target = Target("sqlite", tmp_path, None)
    data = typed_file(tmp_path / "typed.csv")
    code, _, _ = invoke(
        "load", str(data), *target.args("typed"), "--types", "amount=text,paid=text",
        "--store", str(tmp_path / "f.db"),
    )  # fmt: skip
    assert code == 3  # line 122 has too few columns; the others land as text
    types = declared_types(target, "typed")
    assert (types["amount"], types["paid"]) == ("TEXT", "TEXT")
    assert len(target.rows("typed") or []) == 199


def test_a_header_only_file_makes_an_empty_table_on_both_targets(
    target: Target, tmp_path: Path
) -> None:
    data = csv_file(tmp_path / "empty.csv", "id,name", [])
    code, out, _ = invoke(
        "load", str(data), *target.args("empty"), "--store", str(tmp_path / "f.db"), "--json"
    )
    assert code == 0, out
    assert json.loads(out)["summary"]["processed"] == 0
    assert target.rows("empty") == []


def test_a_file_column_an_existing_table_lacks_is_refused_once(tmp_path: Path) -> None:
    db = tmp_path / "app.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE t (id BIGINT PRIMARY KEY, name TEXT)")
    conn.close()
    data = csv_file(tmp_path / "u.csv", "id,name,email", ["1,ann,a@x", "2,bob,b@x"])
    line = one_line_error(
        "load", str(data), "--into", f"sqlite:///{db}", "--table", "t",
        "--store", str(tmp_path / "f.db"),
    )  # fmt: skip
    assert "column(s) ['email'] of u.csv are not columns of the table 't'" in line
    assert not (tmp_path / "f.db").exists()  # not one dead letter per row: no run at all


# -- item 3 (the CLI's part): with --key, the file's last value of a key wins ------------------


def test_with_a_key_the_last_value_in_the_file_wins_with_several_workers(
    target: Target, tmp_path: Path
) -> None:
    rows = [f"{i % 10},v{i}" for i in range(400)]  # each key 40 times, across 100 chunks
    data = csv_file(tmp_path / "dups.csv", "id,value", rows)
    code, out, _ = invoke(
        "load", str(data), *target.args("dups"), "--key", "id", "--chunk-size", "4",
        "--workers", "6", "--store", str(tmp_path / "f.db"), "--json",
    )  # fmt: skip
    assert code == 0, out
    assert target.rows("dups") == sorted((str(k), f"v{390 + k}") for k in range(10))


# -- item 4: a header the target cannot take is refused before anything is created -----------


def assert_nothing_created(target: Target, table: str, tmp_path: Path) -> None:
    assert target.rows(table) is None  # no table
    assert not (tmp_path / "f.db").exists()  # no store, so no run


@pytest.mark.parametrize(
    ("header", "named"),
    [
        ("id,name,id", "'id'"),
        ("id,,name", "column 2"),
        ("id, ,name", "column 2"),
    ],
)
def test_a_duplicate_or_empty_column_name_is_refused_before_anything_is_created(
    target: Target, tmp_path: Path, header: str, named: str
) -> None:
    data = csv_file(tmp_path / "h.csv", header, ["1,a,2"])
    line = one_line_error("load", str(data), *target.args("h"), "--store", str(tmp_path / "f.db"))
    assert named in line
    assert_nothing_created(target, "h", tmp_path)


def test_sqlite_refuses_column_names_that_differ_only_in_case(tmp_path: Path) -> None:
    target = Target("sqlite", tmp_path, None)
    data = csv_file(tmp_path / "h.csv", "id,Name,NAME", ["1,a,b"])
    line = one_line_error("load", str(data), *target.args("h"), "--store", str(tmp_path / "f.db"))
    assert "'NAME'" in line
    assert_nothing_created(target, "h", tmp_path)


def test_a_jsonl_field_with_an_empty_name_is_refused(tmp_path: Path) -> None:
    data = tmp_path / "e.jsonl"
    data.write_text('{"id": 1, "": 2}\n')
    target = Target("sqlite", tmp_path, None)
    line = one_line_error("load", str(data), *target.args("e"), "--store", str(tmp_path / "f.db"))
    assert "column 2" in line
    assert_nothing_created(target, "e", tmp_path)


def test_more_columns_than_the_target_allows_are_refused_naming_the_limit(
    target: Target, tmp_path: Path
) -> None:
    columns = 5_000
    data = csv_file(
        tmp_path / "wide.csv",
        ",".join(f"c{i}" for i in range(columns)),
        [",".join(str(i) for i in range(columns))],
    )
    line = one_line_error(
        "load", str(data), *target.args("wide"), "--store", str(tmp_path / "f.db")
    )
    limit = 1600 if target.kind == "postgres" else _sqlite_column_limit()
    assert "5000 columns" in line
    assert f"at most {limit} columns" in line
    assert_nothing_created(target, "wide", tmp_path)


def _sqlite_column_limit() -> int:
    conn = sqlite3.connect(":memory:")
    try:
        return conn.getlimit(sqlite3.SQLITE_LIMIT_COLUMN)
    finally:
        conn.close()


def test_a_column_name_postgresql_would_cut_is_refused(tmp_path: Path) -> None:
    require("127.0.0.1", 5432, "PostgreSQL")
    long = "c" * 64
    data = csv_file(tmp_path / "h.csv", f"id,{long}", ["1,2"])
    line = one_line_error(
        "load", str(data), "--into", POSTGRES_URL, "--table", "h",
        "--store", str(tmp_path / "f.db"),
    )  # fmt: skip
    assert f"column '{long}'" in line
    assert "at most 63" in line


# -- item 12: one line, exit 2, naming the file or the object ---------------------------------


def test_an_empty_table_name_is_refused(target: Target, tmp_path: Path) -> None:
    data = csv_file(tmp_path / "u.csv", "id", ["1"])
    for table in ("", "  "):
        line = one_line_error(
            "load", str(data), *target.args(table), "--store", str(tmp_path / "f.db")
        )
        assert "--table is empty" in line
    assert not (tmp_path / "f.db").exists()


@pytest.mark.parametrize("table", ["sqlite_master", "sqlite_users", "SQLITE_x"])
def test_a_table_name_sqlite_reserves_is_refused(tmp_path: Path, table: str) -> None:
    data = csv_file(tmp_path / "u.csv", "id", ["1", "2"])
    line = one_line_error(
        "load", str(data), "--into", f"sqlite:///{tmp_path / 'app.db'}", "--table", table,
        "--store", str(tmp_path / "f.db"),
    )  # fmt: skip
    assert repr(table) in line
    assert "reserved" in line
    assert not (tmp_path / "app.db").exists()  # not one dead letter per row: nothing ran


def test_a_schema_that_does_not_exist_is_named(tmp_path: Path) -> None:
    require("127.0.0.1", 5432, "PostgreSQL")
    missing = f"freight_missing_{uuid.uuid4().hex[:10]}"
    data = csv_file(tmp_path / "u.csv", "id", ["1"])
    line = one_line_error(
        "load", str(data), "--into", POSTGRES_URL, "--table", "t", "--schema", missing,
        "--store", str(tmp_path / "f.db"),
    )  # fmt: skip
    assert f"--schema {missing!r} does not exist" in line


def test_an_empty_schema_is_refused(tmp_path: Path) -> None:
    data = csv_file(tmp_path / "u.csv", "id", ["1"])
    line = one_line_error(
        "load", str(data), "--into", POSTGRES_URL, "--table", "t", "--schema", "",
        "--store", str(tmp_path / "f.db"),
    )  # fmt: skip
    assert "--schema is empty" in line


@pytest.mark.parametrize(("name", "text"), [("u.csv", "id,name\n1,a\n"),
                                            ("u.jsonl", '{"id": 1, "name": "a"}\n')])  # fmt: skip
def test_a_key_missing_from_the_file_is_refused(tmp_path: Path, name: str, text: str) -> None:
    data = tmp_path / name
    data.write_text(text)
    line = one_line_error(
        "load", str(data), "--into", f"sqlite:///{tmp_path / 'app.db'}", "--table", "t",
        "--key", "nope", "--store", str(tmp_path / "f.db"),
    )  # fmt: skip
    assert f"--key 'nope' is not a column of {name}" in line
    assert not (tmp_path / "app.db").exists()


def a_finished_store(tmp_path: Path) -> Path:
    """A store holding one finished load called "u" (its WAL folded into the file)."""
    store = tmp_path / "f.db"
    data = csv_file(tmp_path / "u.csv", "id,name", [f"{i},user{i}" for i in range(50)])
    code, _, _ = invoke(
        "load", str(data), "--into", f"sqlite:///{tmp_path / 'app.db'}", "--table", "t",
        "--name", "u", "--chunk-size", "5", "--store", str(store),
    )  # fmt: skip
    assert code == 0
    with sqlite3.connect(store) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    return store


EVERY_COMMAND = [
    ["list"], ["status", "u"], ["report", "u"], ["report", "u", "--json"], ["pause", "u"],
    ["resume", "u"], ["cancel", "u"], ["retry-failed", "u"],
]  # fmt: skip


def broken_copy(store: Path, how: str) -> Path:
    broken = store.with_name(f"{how}.db")
    data = store.read_bytes()
    if how == "truncated":
        broken.write_bytes(data[: len(data) // 2])
    elif how == "corrupt":
        broken.write_bytes(data[:100] + b"\xff" * (len(data) - 100))
    else:
        broken.write_bytes(b"not a database, just some text\n" * 64)
    return broken


@pytest.mark.parametrize("how", ["truncated", "corrupt", "garbage"])
def test_a_store_that_cannot_be_read_is_one_line_naming_it_for_every_command(
    tmp_path: Path, how: str
) -> None:
    broken = broken_copy(a_finished_store(tmp_path), how)
    for command in EVERY_COMMAND:
        line = one_line_error(*command, "--store", str(broken))
        assert str(broken) in line, command
    data = tmp_path / "u.csv"
    line = one_line_error(
        "load", str(data), "--into", f"sqlite:///{tmp_path / 'other.db'}", "--table", "t",
        "--store", str(broken),
    )  # fmt: skip
    assert str(broken) in line
    assert not (tmp_path / "other.db").exists()  # refused before the target was touched


def make_read_only(path: Path) -> None:
    """Make ``path`` unwritable, even for root (an immutable file or folder); skip the
    test where the machine does not allow it."""
    if os.geteuid() != 0:
        path.chmod(0o555 if path.is_dir() else 0o444)
        return
    chattr = shutil.which("chattr")
    if chattr is None or subprocess.run([chattr, "+i", str(path)], check=False).returncode:
        pytest.skip("cannot make a file read-only for root here (chattr +i refused)")


def make_writable(path: Path) -> None:
    if os.geteuid() != 0:
        path.chmod(0o755 if path.is_dir() else 0o644)
    else:
        subprocess.run(["chattr", "-i", str(path)], check=True)


def test_a_read_only_store_is_read_and_a_write_to_it_is_one_line_naming_it(
    tmp_path: Path,
) -> None:
    store_path = a_finished_store(tmp_path)
    store = SqliteStore(store_path)
    live = store.create_job(name="live", job_type="bulk", fingerprint="f", config={})
    now = utcnow()  # running elsewhere: pause and cancel write a request for it
    store.claim(live.id, host="elsewhere", pid=1, now=now, stale_before=now)
    store.transition(live.id, "running")
    store.close()
    with sqlite3.connect(store_path) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    for leftover in (store_path.with_name("f.db-wal"), store_path.with_name("f.db-shm")):
        leftover.unlink(missing_ok=True)
    data = csv_file(tmp_path / "v.csv", "id", ["1"])
    make_read_only(store_path)
    try:
        for command in (["list"], ["status", "u"], ["report", "u"]):
            result = runner.invoke(app, [*command, "--store", str(store_path)])
            assert "Traceback" not in result.output
            if result.exit_code:  # a store that refuses to open read-only: one line naming it
                assert result.exit_code == 2
                assert str(store_path) in result.stderr
                assert len(result.stderr.strip().splitlines()) == 1
            else:
                assert "u" in result.stdout
        into = f"sqlite:///{tmp_path / 'v.db'}"
        writes = [["pause", "live"], ["cancel", "live"], ["retry-failed", "u"],
                  ["load", str(data), "--into", into, "--table", "v"]]  # fmt: skip
        for command in writes:
            line = one_line_error(*command, "--store", str(store_path))
            assert str(store_path) in line, command
    finally:
        make_writable(store_path)


def test_a_store_in_a_read_only_folder_is_one_line_naming_it(tmp_path: Path) -> None:
    folder = tmp_path / "locked"
    folder.mkdir()
    data = csv_file(tmp_path / "u.csv", "id", ["1"])
    store = folder / "f.db"
    make_read_only(folder)
    try:
        for command in (["list"], ["status", "u"], ["report", "u"]):
            assert str(store) in one_line_error(*command, "--store", str(store))
        line = one_line_error(
            "load", str(data), "--into", f"sqlite:///{tmp_path / 'app.db'}", "--table", "t",
            "--store", str(store),
        )  # fmt: skip
        assert str(store) in line
    finally:
        make_writable(folder)
    assert not (tmp_path / "app.db").exists()


# -- item 10: resume of a paused run whose process was killed ---------------------------------


def dead_pid() -> int:
    """The pid of a process that has ended (and was reaped)."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_resume_continues_a_paused_run_whose_owner_is_gone(tmp_path: Path) -> None:
    # A run left paused, its pause still requested, by a process that is gone though
    # its heartbeat is fresh (it was killed a moment ago): made with the store's API.
    rows = 40
    data = csv_file(tmp_path / "u.csv", "id,name", [f"{i},user{i}" for i in range(rows)])
    db, store_path = tmp_path / "app.db", tmp_path / "f.db"
    store = SqliteStore(store_path)
    metadata = {"command": "load", "file": str(data), "into": f"sqlite:///{db}",
                "table": "users", "key": "id", "chunk_size": 10}  # fmt: skip
    record = store.create_job(
        name="users", job_type="bulk", fingerprint=CsvSource(data).fingerprint(),
        config={"metadata": metadata, "retry_attempts": 3},
    )  # fmt: skip
    now = utcnow()
    store.claim(record.id, host=host(), pid=dead_pid(), now=now, stale_before=now)
    store.transition(record.id, "running")
    store.request(record.id, "pause")
    store.transition(record.id, "paused")

    code, out, err = invoke("resume", "users", "--store", str(store_path), "--json")
    assert code == 0, err
    report = json.loads(out)
    assert (report["job_id"], report["status"]) == (record.id, "completed")
    assert report["summary"]["succeeded"] == rows
    final = store.get_job(record.id)
    assert final is not None
    assert final.control is None
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT count(*), count(DISTINCT id) FROM users").fetchone() == (
            rows,
            rows,
        )
    store.close()


def test_resume_of_a_paused_run_it_cannot_rebuild_says_what_to_do(tmp_path: Path) -> None:
    store_path = tmp_path / "f.db"
    store = SqliteStore(store_path)
    record = store.create_job(name="py", job_type="bulk", fingerprint="f", config={})
    now = utcnow()
    store.claim(record.id, host=host(), pid=dead_pid(), now=now, stale_before=now)
    store.transition(record.id, "running")
    store.transition(record.id, "paused")
    line = one_line_error("resume", "py", "--store", str(store_path))  # never "asked … to resume"
    assert "was started from Python" in line
    assert "to resume it" in line
    store.close()


def test_resume_of_a_run_that_a_live_owner_runs_changes_nothing(tmp_path: Path) -> None:
    store_path = tmp_path / "f.db"
    store = SqliteStore(store_path)
    record = store.create_job(name="busy", job_type="bulk", fingerprint="f", config={})
    now = utcnow()
    store.claim(record.id, host="elsewhere", pid=1, now=now, stale_before=now)
    store.transition(record.id, "running")
    code, out, _ = invoke("resume", "busy", "--store", str(store_path))
    assert code == 0
    assert "is running in process 1 on elsewhere: nothing to resume" in out
    assert store.get_job(record.id).control is None  # type: ignore[union-attr]
    store.close()


def wait_for(condition: str, check: object, deadline: float) -> None:
    """Poll ``check()`` (a look at the store, not a timeout under test) until true."""
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting until {condition}"
        time.sleep(0.005)


@pytest.mark.slow
def test_resume_after_sigkill_of_a_paused_load_loads_every_row_once(tmp_path: Path) -> None:
    rows = 60_000
    data = tmp_path / "big.csv"
    data.write_text("id,name\n" + "".join(f"{i},user{i}\n" for i in range(rows)))
    db, store_path = tmp_path / "app.db", tmp_path / "f.db"
    argv = [sys.executable, "-m", "freight.cli", "load", str(data), "--into", f"sqlite:///{db}",
            "--table", "users", "--key", "id", "--name", "big", "--chunk-size", "500",
            "--store", str(store_path)]  # fmt: skip
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        wait_for("the store exists", store_path.exists, deadline)
        store = SqliteStore(store_path)

        def started() -> bool:
            record = store.latest_job("big")
            return record is not None and record.processed > 0

        wait_for("the load has started", started, deadline)
        record = store.latest_job("big")
        assert record is not None
        store.request(record.id, "pause")

        def paused() -> bool:
            current = store.get_job(record.id)
            assert current is not None
            assert current.status in ("running", "paused"), "the load ended before it paused"
            return current.status == "paused"

        wait_for("the load has paused", paused, deadline)
        process.send_signal(signal.SIGKILL)
        process.wait()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    before = store.get_job(record.id)
    assert before is not None
    assert 0 < before.processed < rows  # stopped part way, paused, its process gone

    code, out, err = invoke("resume", "big", "--store", str(store_path), "--json")
    assert code == 0, err
    report = json.loads(out)
    assert (report["job_id"], report["status"]) == (record.id, "completed")
    assert report["summary"]["succeeded"] == rows
    with sqlite3.connect(db) as conn:
        counted = conn.execute("SELECT count(*), count(DISTINCT id) FROM users").fetchone()
    assert counted == (rows, rows)
    store.close()
