"""`freight load` into PostgreSQL: inferred types, literal names, bad values dead-lettered,
and SIGKILL at random points followed by a resume: every valid row exactly once."""

from __future__ import annotations

import json
import random
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from typer.testing import CliRunner

from freight.cli import app
from freight.cli._load import Load
from freight.store import SqliteStore
from tests.services import POSTGRES_URL, require


@pytest.fixture
def schema() -> Iterator[str]:
    require("127.0.0.1", 5432, "PostgreSQL")
    name = f"freight_load_{uuid.uuid4().hex[:10]}"
    yield name
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name)))


def make_schema(name: str) -> None:
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(name)))


def write_csv(path: Path, rows: int, bad: dict[int, str]) -> None:
    with path.open("w") as f:
        f.write("id,amount,paid,booked_at,note\n")
        for i in range(rows):
            paid = "true" if i % 2 else "false"
            good = f"{i},{i % 1000}.25,{paid},2026-03-{i % 28 + 1:02d}T08:00:00+00:00,note {i}"
            f.write(bad.get(i, good) + "\n")


def test_load_infers_types_and_dead_letters_values_that_do_not_fit(
    schema: str, tmp_path: Path
) -> None:
    make_schema(schema)
    data = tmp_path / "p.csv"
    bad = {5: "5,not-a-number,true,2026-03-01T08:00:00+00:00,x",
           9: "9,1.0,maybe,2026-03-01T08:00:00+00:00,x",
           11: "11,1.0,true,not-a-date,x"}  # fmt: skip
    write_csv(data, 300, bad)
    table = 'Pay"ments; DROP TABLE x'
    result = CliRunner().invoke(
        app,
        ["load", str(data), "--into", POSTGRES_URL, "--table", table, "--schema", schema,
         "--key", "id", "--store", str(tmp_path / "f.db"), "--json"],
    )  # fmt: skip
    assert result.exit_code == 3, result.output  # finished with dead letters
    report = json.loads(result.stdout)
    assert report["summary"]["succeeded"] == 297
    assert {e["item"] for e in report["errors"]} == {"line 7", "line 11", "line 13"}
    message = next(e["message"] for e in report["errors"] if e["item"] == "line 7")
    assert message == "column 'amount': 'not-a-number' is not a number"  # as on SQLite
    with psycopg.connect(POSTGRES_URL) as conn:
        types: dict[str, str] = dict(
            conn.execute(
                "SELECT column_name, data_type FROM information_schema.columns "
                "WHERE table_schema = %s AND table_name = %s",
                (schema, table),
            ).fetchall()
        )
        count = conn.execute(
            sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(schema, table))
        ).fetchone()
    assert types == {
        "id": "bigint", "amount": "numeric", "paid": "boolean",
        "booked_at": "timestamp with time zone", "note": "text",
    }  # fmt: skip
    assert count == (297,)


def test_type_overrides_and_errors(schema: str, tmp_path: Path) -> None:
    make_schema(schema)
    data = tmp_path / "p.csv"
    write_csv(data, 5, {})
    runner = CliRunner()
    base = ["load", str(data), "--into", POSTGRES_URL, "--table", "t", "--schema", schema,
            "--store", str(tmp_path / "f.db")]  # fmt: skip
    bad = runner.invoke(app, [*base, "--types", "nope=numeric"])
    assert bad.exit_code == 2
    assert "unknown column(s) ['nope']" in bad.stderr
    ok = runner.invoke(app, [*base, "--types", "amount=text", "--name", "typed"])
    assert ok.exit_code == 0, ok.output
    with psycopg.connect(POSTGRES_URL) as conn:
        kind = conn.execute(
            "SELECT data_type FROM information_schema.columns "
            "WHERE table_schema = %s AND table_name = 't' AND column_name = 'amount'",
            (schema,),
        ).fetchone()
    assert kind == ("text",)
    down = runner.invoke(app, [*base[:3], "postgresql://nobody@127.0.0.1:1/x", *base[4:]])
    assert down.exit_code == 2
    assert "cannot reach PostgreSQL at 127.0.0.1:1/x" in down.stderr
    assert len(down.stderr.strip().splitlines()) == 1


def done_chunks(store: Path) -> int:
    """The chunks of the load's runs that are done (0 before the store exists)."""
    if not store.exists():
        return 0
    with closing(sqlite3.connect(store, timeout=5)) as db:
        try:
            row = db.execute("SELECT count(*) FROM chunks WHERE status = 'done'").fetchone()
        except sqlite3.OperationalError:  # not created yet
            return 0
    return int(row[0])


def wait_for_chunks(store: Path, count: int, process: subprocess.Popen[str]) -> bool:
    """Whether ``count`` chunks are done while ``process`` runs (watching a real child:
    polled every 5 ms, not a timeout under test)."""
    deadline = time.monotonic() + 120
    while process.poll() is None and time.monotonic() < deadline:
        if done_chunks(store) >= count:
            return True
        time.sleep(0.005)
    return False


@pytest.mark.slow
def test_sigkill_at_10_random_points_then_resume_loads_every_valid_row_once(
    schema: str, tmp_path: Path
) -> None:
    make_schema(schema)
    rows, kills = 500_000, 10
    bad = {1_000: "1000,x,true,2026-03-01T08:00:00+00:00,n", 250_000: "250000,1"}
    data = tmp_path / "p.csv"
    write_csv(data, rows, bad)
    argv = [sys.executable, "-m", "freight.cli", "load", str(data), "--into", POSTGRES_URL,
            "--table", "payments", "--schema", schema, "--key", "id", "--name", "pgcrash",
            "--chunk-size", "5000", "--store", str(tmp_path / "f.db"), "--json"]  # fmt: skip
    rng = random.Random(6)
    killed = 0
    for _ in range(3 * kills):
        if killed == kills:
            break
        process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        # A random kill point: after 1 to 8 more chunks are done, then 0-40 ms into the
        # next ones. Driven by progress, not time (a fast machine finished the load in
        # fewer kills than asked).
        if wait_for_chunks(tmp_path / "f.db", done_chunks(tmp_path / "f.db") + rng.randint(1, 8),
                           process):  # fmt: skip
            time.sleep(rng.uniform(0, 0.04))
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
            killed += 1
        process.communicate()
    final = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=300)
    assert final.returncode == 3, final.stderr  # the two bad rows are dead letters
    assert killed == kills
    report = json.loads(final.stdout)
    with psycopg.connect(POSTGRES_URL) as conn:
        count, distinct = conn.execute(
            sql.SQL("SELECT count(*), count(DISTINCT id) FROM {}").format(
                sql.Identifier(schema, "payments")
            )
        ).fetchone()  # type: ignore[misc]
    assert count == distinct == rows - len(bad)
    assert report["summary"]["succeeded"] == rows - len(bad)
    assert report["summary"]["failed"] == len(bad)


@pytest.mark.parametrize(
    ("target", "given", "expected"),
    [("postgres", None, (50_000, 2)), ("sqlite", None, (10_000, 1)), ("postgres", "7", (7, 3))],
)
def test_chunks_are_larger_and_written_two_at_once_into_postgresql_unless_given(
    schema: str, tmp_path: Path, target: str, given: str | None, expected: tuple[int, int]
) -> None:
    """``expected``: the chunk size and the workers a load runs with."""
    make_schema(schema)
    data = tmp_path / "p.csv"
    write_csv(data, 20, {})
    into = POSTGRES_URL if target == "postgres" else f"sqlite:///{tmp_path / 't.db'}"
    where = ["--schema", schema] if target == "postgres" else []
    size = ["--chunk-size", given, "--workers", "3"] if given else []
    result = CliRunner().invoke(
        app,
        ["load", str(data), "--into", into, "--table", "t", *where, *size,
         "--store", str(tmp_path / "f.db"), "--json"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert (report["metadata"]["chunk_size"], report["metadata"]["workers"]) == expected
    assert report["metadata"]["num_chunks"] == (3 if given else 1)
    assert report["summary"]["succeeded"] == 20
    # what resume and retry-failed rebuild the load from keeps both
    store = SqliteStore(tmp_path / "f.db")
    record = store.latest_job(f"load {data.name} into t")
    assert record is not None
    spec = Load.from_metadata(record.config["metadata"])
    store.close()
    assert (spec.chunk_size, spec.workers) == expected
