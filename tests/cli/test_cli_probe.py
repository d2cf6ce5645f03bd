"""Findings of the hostile probe of ``freight load`` (issue 11): replay never puts an
older line over a newer one, advice that cannot duplicate rows, a file loaded into a
second target is not taken for done, read commands never create a store."""

from __future__ import annotations

import json
import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from typer.testing import CliRunner

from freight._process import host
from freight.cli import app
from freight.store import SqliteStore
from freight.store._records import utcnow
from tests.services import POSTGRES_URL, require

runner = CliRunner()


def invoke(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def dup_keys(tmp_path: Path) -> Path:
    path = tmp_path / "dup.csv"
    path.write_text("k,v\n1,x\n1,y\n2,a\n")
    return path


def test_replay_of_a_key_a_later_line_wrote_resolves_it_as_superseded_on_sqlite(
    dup_keys: Path, tmp_path: Path
) -> None:
    db, store = tmp_path / "t.db", str(tmp_path / "s.db")
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE t (k TEXT PRIMARY KEY, v TEXT)")
        conn.execute(
            "CREATE TRIGGER no_x BEFORE INSERT ON t WHEN NEW.v='x' "
            "BEGIN SELECT RAISE(ABORT,'no x'); END"
        )
    load = ("load", str(dup_keys), "--into", f"sqlite:///{db}", "--table", "t", "--key", "k",
            "--store", store, "--name", "dup")  # fmt: skip
    code, out, _ = invoke(*load)
    assert code == 3, out
    with sqlite3.connect(db) as conn:
        conn.execute("DROP TRIGGER no_x")
    code, out, _ = invoke("retry-failed", "dup", "--store", store, "--json")
    assert code == 0, out
    report = json.loads(out)
    with sqlite3.connect(db) as conn:
        assert dict(conn.execute("SELECT k, v FROM t").fetchall()) == {"1": "y", "2": "a"}
    assert report["summary"]["failed"] == 0
    assert [r["reason"] for r in report["resolved"]] == ["superseded by line 3"]
    code, out, _ = invoke("report", "dup", "--store", store)
    assert "line 2: resolved, superseded by line 3" in out


@pytest.fixture
def schema() -> Iterator[str]:
    require("127.0.0.1", 5432, "PostgreSQL")
    name = f"freight_probe_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(name)))
    yield name
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name)))


def test_replay_of_a_key_a_later_line_wrote_resolves_it_as_superseded_on_postgres(
    dup_keys: Path, tmp_path: Path, schema: str
) -> None:
    table = sql.Identifier(schema, "t")
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        conn.execute(
            sql.SQL("CREATE TABLE {} (k text PRIMARY KEY, v text CONSTRAINT no_x CHECK (v <> 'x'))")
            .format(table)
        )  # fmt: skip
    store = str(tmp_path / "s.db")
    code, out, _ = invoke(
        "load", str(dup_keys), "--into", POSTGRES_URL, "--schema", schema, "--table", "t",
        "--key", "k", "--store", store, "--name", "dup", "--chunk-size", "1",
    )  # fmt: skip
    assert code == 3, out
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        conn.execute(sql.SQL("ALTER TABLE {} DROP CONSTRAINT no_x").format(table))
    code, out, _ = invoke("retry-failed", "dup", "--store", store, "--json")
    assert code == 0, out
    with psycopg.connect(POSTGRES_URL) as conn:
        rows = conn.execute(sql.SQL("SELECT k, v FROM {}").format(table)).fetchall()
    assert dict(rows) == {"1": "y", "2": "a"}
    assert json.loads(out)["resolved"][0]["reason"] == "superseded by line 3"


def test_replay_without_a_later_line_of_its_key_writes_the_row(tmp_path: Path) -> None:
    path, db, store = tmp_path / "d.csv", tmp_path / "t.db", str(tmp_path / "s.db")
    path.write_text("k,v\n1,y\n1,x\n2,a\n")  # the refused line is the key's last
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE t (k TEXT PRIMARY KEY, v TEXT)")
        conn.execute(
            "CREATE TRIGGER no_x BEFORE UPDATE ON t WHEN NEW.v='x' "
            "BEGIN SELECT RAISE(ABORT,'no x'); END"
        )
    code, _, _ = invoke("load", str(path), "--into", f"sqlite:///{db}", "--table", "t",
                        "--key", "k", "--store", store, "--name", "d")  # fmt: skip
    assert code == 3
    with sqlite3.connect(db) as conn:
        conn.execute("DROP TRIGGER no_x")
    code, out, _ = invoke("retry-failed", "d", "--store", store)
    assert code == 0, out
    with sqlite3.connect(db) as conn:
        assert dict(conn.execute("SELECT k, v FROM t").fetchall()) == {"1": "x", "2": "a"}


# -- 2. advice that cannot duplicate rows ----------------------------------------------


def test_dead_letters_advise_retry_failed_never_fresh(tmp_path: Path) -> None:
    path, db, store = tmp_path / "bad.csv", tmp_path / "t.db", str(tmp_path / "s.db")
    path.write_text("id,v\n" + "".join(f"{i},{i}\n" for i in range(60)) + "".join(
        f"{i},a,b\n" for i in range(60, 120)))  # fmt: skip
    code, out, _ = invoke("load", str(path), "--into", f"sqlite:///{db}", "--table", "t",
                          "--store", store, "--name", "bad")  # fmt: skip
    assert code == 3
    assert "--fresh" not in out
    assert "fresh=True" not in out
    assert "freight retry-failed" in out
    code, out, _ = invoke("report", "bad", "--json", "--store", store)
    report = json.loads(out)
    assert "fresh" not in report["remediation"]["strategy"]
    assert "retry_failed()" in report["remediation"]["strategy"]
    assert len(report["errors"]) == 50
    assert report["errors_omitted"] == 10
    code, out, _ = invoke("report", "bad", "--json", "--all", "--store", store)
    everything = json.loads(out)
    assert len(everything["errors"]) == 60
    assert everything["errors_omitted"] == 0


# -- 3. the same file into another target ----------------------------------------------


def test_the_same_file_into_another_target_is_refused_not_taken_for_done(
    tmp_path: Path,
) -> None:
    path = tmp_path / "nm.csv"
    path.write_text("id,v\n1,a\n2,b\n")
    a, b, store = tmp_path / "a.db", tmp_path / "b.db", str(tmp_path / "s.db")
    code, _, _ = invoke("load", str(path), "--into", f"sqlite:///{a}", "--table", "t",
                        "--store", store)  # fmt: skip
    assert code == 0
    code, out, err = invoke("load", str(path), "--into", f"sqlite:///{b}", "--table", "t",
                            "--store", store)  # fmt: skip
    assert code == 2, out
    assert len(err.strip().splitlines()) == 1
    assert f"run 'load nm.csv into t' loaded nm.csv into sqlite:///{a}" in err
    assert "give another --name" in err
    assert not b.exists()
    code, _, _ = invoke("load", str(path), "--into", f"sqlite:///{b}", "--table", "t",
                        "--store", store, "--name", "into b")  # fmt: skip
    assert code == 0
    with sqlite3.connect(b) as conn:
        assert conn.execute("SELECT count(*) FROM t").fetchone()[0] == 2
    # the same target again: done, as before
    code, _, _ = invoke("load", str(path), "--into", f"sqlite:///{a}", "--table", "t",
                        "--store", store)  # fmt: skip
    assert code == 0


# -- 4. read commands ---------------------------------------------------------------------


@pytest.mark.parametrize("command", ["list", "status", "report"])
def test_read_commands_never_create_a_store(command: str, tmp_path: Path) -> None:
    typo = tmp_path / "typo.db"
    args = [command] if command == "list" else [command, "x"]
    code, _, err = invoke(*args, "--store", str(typo))
    assert code == 2
    assert err.strip() == f"freight: error: no store at {typo}"
    assert not typo.exists()


def test_status_of_a_run_whose_owner_is_gone_says_so(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    store = SqliteStore(path)
    dead = 2**22 + 12345  # above the default pid_max: no such process
    job = store.claim_new(
        name="gone", job_type="bulk", fingerprint="f", config={}, total_items=None,
        total_bytes=None, replacing=None, host=host(), pid=dead,
        now=utcnow(), stale_before=utcnow(),
    )  # fmt: skip
    assert job is not None
    store.transition(job.id, "running")
    store.close()
    code, out, _ = invoke("status", "gone", "--store", str(path))
    assert code == 0
    assert f"running (owner process {dead} is gone; `freight resume` continues it)" in out


def test_status_and_report_read_a_read_only_store(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    data = tmp_path / "d.csv"
    data.write_text("id\n1\n")
    code, _, _ = invoke("load", str(data), "--into", f"sqlite:///{tmp_path / 't.db'}",
                        "--table", "t", "--store", str(path), "--name", "ro")  # fmt: skip
    assert code == 0
    path.chmod(0o444)
    tmp_path.chmod(0o555)
    try:
        for command in ("status", "report"):
            code, out, err = invoke(command, "ro", "--store", str(path))
            assert code == 0, err
            assert "completed" in out
    finally:
        tmp_path.chmod(0o755)
        path.chmod(0o644)


# -- 6. at-least-once without a key, said where a user looks --------------------------


def test_load_help_says_a_load_without_a_key_is_at_least_once() -> None:
    result = CliRunner().invoke(app, ["load", "--help"], terminal_width=400)
    text = " ".join(result.stdout.split()).lower()
    assert "without --key a load is at least once" in text
    assert "for exactly-once without a key, keep the store in the target postgresql" in text
    guide = (Path(__file__).parents[2] / "docs" / "guide.md").read_text()
    assert "for exactly-once without a key, keep the store in the target postgresql" in (
        " ".join(guide.split()).lower()
    )


def test_a_load_whose_store_was_left_without_tables_by_a_kill_runs(tmp_path: Path) -> None:
    """Reproduces `freight: error: no such table: jobs` (a kill loop under load): a load
    killed after SQLite made the store's file but before its tables were committed left
    an empty store; the next load read it, to compare targets, and failed."""
    store = tmp_path / "s.db"
    with sqlite3.connect(store) as conn:  # what the killed load left: a file, no tables
        conn.execute("PRAGMA journal_mode=WAL")
    data = tmp_path / "d.csv"
    data.write_text("id\n1\n2\n")
    code, out, err = invoke("load", str(data), "--into", f"sqlite:///{tmp_path / 't.db'}",
                            "--table", "t", "--store", str(store), "--name", "empty")  # fmt: skip
    assert code == 0, err
    code, out, _ = invoke("list", "--store", str(store))
    assert code == 0
    assert "empty" in out
