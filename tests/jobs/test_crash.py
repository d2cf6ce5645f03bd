"""Crash safety: `freight load` killed with SIGKILL at random points, then resumed.

These run real processes in real time (marked ``slow``; CI runs them all).
"""

from __future__ import annotations

import contextlib
import json
import random
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROWS = 600_000
BAD = {777, 123_456, 599_999}  # rows with a wrong column count
KILLS = 20


def write_csv(path: Path) -> None:
    with path.open("w") as f:
        f.write("id,amount,note\n")
        for i in range(ROWS):
            f.write(f"{i},{i % 97}\n" if i in BAD else f"{i},{i % 97},n{i}\n")


def load(data: Path, tmp: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable, "-m", "freight.cli", "load", str(data),
            "--into", f"sqlite:///{tmp / 'app.db'}", "--table", "payments", "--key", "id",
            "--name", "crash", "--chunk-size", "2000", "--store", str(tmp / "freight.db"), "--json",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip


def processed(store: Path) -> int:
    """The rows the store says the run has processed (-1 before it has its tables)."""
    if not store.exists():
        return -1
    try:
        with contextlib.closing(sqlite3.connect(store, timeout=5)) as db:
            row = db.execute("SELECT max(processed) FROM jobs").fetchone()
    except sqlite3.OperationalError:  # no tables yet
        return -1
    return int(row[0] or 0)


def test_sigkill_at_20_random_points_then_resume_loads_every_valid_row_once(tmp_path: Path) -> None:
    data = tmp_path / "payments.csv"
    write_csv(data)
    rng = random.Random(20261125)
    killed = 0
    for attempt in range(2 * KILLS):
        if killed == KILLS:
            break
        before = processed(tmp_path / "freight.db")
        process = load(data, tmp_path)
        if attempt % 4 == 0:  # now and then at start-up: the store or the table being made
            time.sleep(rng.uniform(0.0, 0.3))
        else:  # else at a random point after the next commit (a machine under load is slow)
            while process.poll() is None and processed(tmp_path / "freight.db") <= before:
                time.sleep(0.002)  # watching for a commit, not waiting out a timeout
            time.sleep(rng.uniform(0.0, 0.1))
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
            killed += 1
        process.communicate()
    final = load(data, tmp_path)
    out, err = final.communicate(timeout=120)
    assert final.returncode == 3, err  # finished, some rows dead-lettered
    report = json.loads(out)
    assert killed == KILLS, "every kill must land while the load runs"
    with sqlite3.connect(tmp_path / "app.db") as db:
        count, distinct = db.execute(
            'SELECT count(*), count(DISTINCT id) FROM "payments"'
        ).fetchone()
        ids = {row[0] for row in db.execute('SELECT id FROM "payments"')}
    assert count == distinct == ROWS - len(BAD)
    assert ids == {i for i in range(ROWS) if i not in BAD}  # typed: id is a bigint column
    summary = report["summary"]
    assert summary["processed"] == ROWS
    assert summary["succeeded"] == ROWS - len(BAD)
    assert summary["failed"] == len(BAD)
    assert report["status"] == "completed_with_errors"
    assert {e["item"] for e in report["errors"]} == {f"line {i + 2}" for i in BAD}


def test_first_sigint_stops_gracefully_with_a_checkpoint_and_the_rerun_finishes(
    tmp_path: Path,
) -> None:
    data = tmp_path / "payments.csv"
    write_csv(data)
    process = load(data, tmp_path)
    wait_for_line(process, "25%:")  # it is working
    process.send_signal(signal.SIGINT)
    out, _ = process.communicate(timeout=60)
    assert process.returncode == 1
    stopped = json.loads(out)
    assert stopped["status"] == "cancelled"
    assert "SIGINT" in stopped["reason"]
    assert 0 < stopped["summary"]["processed"] < ROWS
    final = subprocess.Popen(
        [
            sys.executable, "-m", "freight.cli", "resume", "crash", "--json",
            "--store", str(tmp_path / "freight.db"),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    out, _ = final.communicate(timeout=120)
    report = json.loads(out)  # `freight resume` rebuilt the load from the store and finished it
    assert report["job_id"] == stopped["job_id"]
    assert report["summary"]["processed"] == ROWS
    with sqlite3.connect(tmp_path / "app.db") as db:
        assert db.execute('SELECT count(*) FROM "payments"').fetchone()[0] == ROWS - len(BAD)


def cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "freight.cli", *args, "--store", str(tmp_path / "freight.db")],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def wait_for_line(process: subprocess.Popen[str], text: str) -> str:
    """Read the process's stderr until a line holds ``text`` (its progress and state)."""
    assert process.stderr is not None
    for line in process.stderr:
        if text in line:
            return line
    raise AssertionError(f"{text!r} was never printed")


def processed_of(status: str) -> int:
    match = re.search(r"processed ([\d,]+)", status)
    assert match, status
    return int(match.group(1).replace(",", ""))


def test_pause_resume_and_cancel_from_other_processes_while_the_job_runs(tmp_path: Path) -> None:
    data = tmp_path / "payments.csv"
    write_csv(data)
    process = load(data, tmp_path)
    wait_for_line(process, "25%:")
    assert cli(tmp_path, "pause", "crash").returncode == 0
    wait_for_line(process, "paused")
    paused = cli(tmp_path, "status", "crash").stdout
    assert ": paused;" in paused
    processed = processed_of(paused)
    # Another process's whole round trip later, nothing more was processed: it waits.
    assert processed_of(cli(tmp_path, "status", "crash").stdout) == processed
    assert cli(tmp_path, "resume", "crash").returncode == 0
    wait_for_line(process, "resumed")
    assert cli(tmp_path, "cancel", "crash").returncode == 0
    out, _ = process.communicate(timeout=60)
    report = json.loads(out)
    assert report["status"] == "cancelled"
    assert processed <= report["summary"]["processed"] < ROWS
