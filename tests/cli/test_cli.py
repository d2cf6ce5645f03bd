"""The freight command: load, list, status, report, control, run; one-line user errors."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from freight.cli import app
from freight.store import SqliteStore
from freight.store._records import utcnow

runner = CliRunner()


@pytest.fixture
def data(tmp_path: Path) -> Path:
    path = tmp_path / "users.csv"
    path.write_text("id,name\n" + "".join(f"{i},user{i}\n" for i in range(25)) + "x,y,z\n")
    return path


def invoke(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_load_then_report_list_and_status(data: Path, tmp_path: Path) -> None:
    db, store = tmp_path / "app.db", str(tmp_path / "freight.db")
    code, out, _ = invoke(
        "load", str(data), "--into", f"sqlite:///{db}", "--table", "users", "--key", "id",
        "--name", "users", "--chunk-size", "10", "--store", store,
    )  # fmt: skip
    assert code == 3, out  # finished, but a row was dead-lettered
    assert "completed_with_errors" in out
    assert "line 27: RecordError (validation): expected 2 columns, got 3" in out
    with sqlite3.connect(db) as conn:
        assert conn.execute('SELECT count(*) FROM "users"').fetchone()[0] == 25

    code, out, _ = invoke("report", "users", "--json", "--store", store)
    assert code == 0
    report = json.loads(out)  # the JSON report alone on stdout
    assert report["summary"]["succeeded"] == 25
    assert report["error_categories"] == {"validation": 1}

    code, out, _ = invoke("list", "--store", store)
    assert "completed_with_errors" in out
    assert "users" in out
    code, out, _ = invoke("status", report["job_id"], "--store", store)
    assert "processed 26" in out

    code, out, _ = invoke(
        "load", str(data), "--into", f"sqlite:///{db}", "--table", "users", "--key", "id",
        "--name", "users", "--store", store, "--json",
    )  # fmt: skip
    assert json.loads(out)["job_id"] == report["job_id"]  # the same run: nothing redone


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["load", "missing.csv", "--into", "sqlite:///x.db", "--table", "t"], "no such file"),
        (["load", "{data}", "--into", "oracle://x", "--table", "t"], "sqlite:///"),
        (["load", "{data}", "--into", "mysql://x", "--table", "t"], "bad MariaDB/MySQL URL"),
        (
            ["load", "{data}", "--into", "sqlite:///x.db", "--table", "t", "--key", "nope"],
            "not a column",
        ),
        (["report", "nobody"], "no store at"),  # read commands never create a store
        (["run", "nocolon"], "expected MODULE:JOB"),
        (["run", "no_such_module_xyz:job"], "cannot import"),
    ],
)
def test_user_errors_print_one_line_and_exit_2(
    args: list[str], message: str, data: Path, tmp_path: Path
) -> None:
    argv = [a.replace("{data}", str(data)) for a in args] + ["--store", str(tmp_path / "f.db")]
    if args[0] == "run":
        argv = argv[:2]
    code, out, err = invoke(*argv)
    assert code == 2
    assert message in err
    assert len(err.strip().splitlines()) == 1
    assert "Traceback" not in out + err


def test_control_commands_reach_the_store(tmp_path: Path) -> None:
    store_path = tmp_path / "f.db"
    store = SqliteStore(store_path)
    job = store.create_job(name="nightly", job_type="bulk", fingerprint="f", config={})
    now = utcnow()  # a live run elsewhere: a fresh heartbeat
    store.claim(job.id, host="elsewhere", pid=1, now=now, stale_before=now)
    store.transition(job.id, "running")
    for action in ("pause", "resume", "cancel"):
        code, _, _ = invoke(action, "nightly", "--store", str(store_path))
        assert code == 0
        assert store.get_job(job.id).control == action  # type: ignore[union-attr]
    store.transition(job.id, "completed")
    code, _, err = invoke("cancel", job.id, "--store", str(store_path))
    assert code == 2
    assert "already completed" in err


def test_run_module_job(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "myjobs.py").write_text(
        "from freight import Job\n"
        "from freight.store import SqliteStore\n"
        "seen = []\n"
        f"store = SqliteStore({str(tmp_path / 's.db')!r})\n"
        "job = Job('squares', range(7), seen.extend, store=store)\n"
        "not_a_job = 3\n"
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    code, out, _ = invoke("run", "myjobs:job", "--json")
    assert code == 0
    assert json.loads(out)["summary"]["succeeded"] == 7
    code, _, err = invoke("run", "myjobs:not_a_job")
    assert code == 2
    assert "not a freight.Job" in err


def test_help_has_an_example_for_every_command() -> None:
    for command in ("load", "run", "list", "status", "report", "pause", "resume", "cancel"):
        code, out, _ = invoke(command, "--help")
        assert code == 0
        assert "Example: freight" in out


def test_the_console_entry_point_runs() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "freight.cli", "--help"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0
    assert "load" in result.stdout


def test_retry_failed_and_resume_rebuild_a_load_from_the_store(data: Path, tmp_path: Path) -> None:
    db, store = tmp_path / "app.db", str(tmp_path / "freight.db")
    invoke(
        "load", str(data), "--into", f"sqlite:///{db}", "--table", "users", "--key", "id",
        "--name", "users", "--store", store,
    )  # fmt: skip
    code, out, _ = invoke("retry-failed", "users", "--json", "--store", store)
    assert code == 3  # the row still fails: still dead-lettered
    report = json.loads(out)
    assert report["summary"]["failed"] == 1  # a malformed line fails again: its file is unchanged
    assert report["errors"][-1]["retry_attempts"] == 0
    code, _, err = invoke("resume", "users", "--store", store)
    assert code == 2
    assert "already completed_with_errors" in err


def test_a_run_started_from_python_cannot_be_rebuilt_by_the_cli(tmp_path: Path) -> None:
    store_path = tmp_path / "f.db"
    store = SqliteStore(store_path)
    job = store.create_job(name="py", job_type="bulk", fingerprint="f", config={})
    store.transition(job.id, "failed")
    code, _, err = invoke("resume", "py", "--store", str(store_path))
    assert code == 2
    assert "was started from Python" in err


@pytest.mark.parametrize(
    ("args", "message"),
    [(["load", "x.csv", "--bogus"], "No such option: --bogus"), (["explode"], "No such command")],
)
def test_usage_errors_are_one_line_from_the_real_command(args: list[str], message: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "freight.cli", *args], capture_output=True, text=True, check=False
    )
    assert result.returncode == 2
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr
