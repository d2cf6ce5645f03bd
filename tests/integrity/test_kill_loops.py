"""Kill loops: ``freight load`` and ``freight retry-failed`` killed with SIGKILL at random
points, run again until done, on SQLite, PostgreSQL and MariaDB, with and without a
key; and two ``freight load`` processes started at the same instant.

Each loop kills a process right after it committed some progress (seen in the store),
so every kill lands mid-run, then runs the command again until it ends, and checks the
table and the report:

- with a key (an upsert) on SQLite, PostgreSQL and MariaDB, and without a key on
  PostgreSQL with the store in the target database (rows and checkpoints in one
  transaction): no row is lost or written twice, and the report's counts are the table's;
- without a key on SQLite and MariaDB (the store is another file) the documented
  guarantee is at least once: no row is lost, and only chunks in flight at a kill were
  written twice.

Real processes in real time: marked ``slow``.
"""

from __future__ import annotations

import json
import random
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from freight.store import Store, open_store
from tests.services import POSTGRES_URL, require

pytestmark = pytest.mark.slow

LOAD_KILLS = 4
REPLAY_KILLS = 3  # each costs a process start: the replay itself takes a fraction of it
RNG = random.Random(20261130)


@dataclass
class Target:
    """Where a load goes and how the test looks at it."""

    kind: str  # "sqlite", "postgres" or "mysql"
    into: str
    store: str
    key: bool
    execute: Callable[[str], None]  # a statement on the target (setup, fixing a cause)
    rows: Callable[[], tuple[int, int]]  # (rows, distinct ids) of the table
    ids: Callable[[], set[int]]

    @property
    def exactly_once(self) -> bool:
        """Whether the target's guarantee is exactly once (see the module docstring)."""
        return self.key or self.kind == "postgres"


def sqlite_target(tmp_path: Path, *, key: bool) -> Target:
    db = tmp_path / "app.db"

    def execute(statement: str) -> None:
        with sqlite3.connect(db) as conn:
            conn.executescript(statement)

    def query(sql: str) -> list[tuple[Any, ...]]:
        with sqlite3.connect(db) as conn:
            return conn.execute(sql).fetchall()

    return Target(
        kind="sqlite",
        into=f"sqlite:///{db}",
        store=str(tmp_path / "freight.db"),
        key=key,
        execute=execute,
        rows=lambda: query("SELECT count(*), count(DISTINCT id) FROM payments")[0],
        ids=lambda: {int(row[0]) for row in query("SELECT id FROM payments")},
    )


@pytest.fixture
def postgres_url() -> Iterator[str]:
    require("127.0.0.1", 5432, "PostgreSQL")
    import psycopg
    from psycopg import sql

    schema = f"freight_kill_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    yield f"{POSTGRES_URL}?options=-csearch_path%3D{schema}"
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


def postgres_target(url: str, tmp_path: Path, *, key: bool) -> Target:
    import psycopg

    def execute(statement: str) -> None:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(statement)

    def query(sql: str) -> list[tuple[Any, ...]]:
        with psycopg.connect(url) as conn:
            return conn.execute(sql).fetchall()

    return Target(
        kind="postgres",
        into=url,
        # Without a key, the store lives in the target database: rows and checkpoints
        # share a transaction. With one, a SQLite store (the upsert makes it harmless).
        store=str(tmp_path / "freight.db") if key else url,
        key=key,
        execute=execute,
        rows=lambda: query("SELECT count(*), count(DISTINCT id) FROM payments")[0],
        ids=lambda: {int(row[0]) for row in query("SELECT id FROM payments")},
    )


@pytest.fixture
def mysql_url() -> Iterator[str]:
    """A MariaDB database of the test's own, dropped after it."""
    require("127.0.0.1", 3306, "MariaDB")
    import pymysql  # type: ignore[import-untyped]

    database = f"freight_kill_{uuid.uuid4().hex[:10]}"
    with pymysql.connect(host="127.0.0.1", user="root", autocommit=True) as conn:
        conn.cursor().execute(f"CREATE DATABASE `{database}`")
    yield f"mysql://root@127.0.0.1:3306/{database}"
    with pymysql.connect(host="127.0.0.1", user="root", autocommit=True) as conn:
        conn.cursor().execute(f"DROP DATABASE IF EXISTS `{database}`")


def mysql_target(url: str, tmp_path: Path, *, key: bool) -> Target:
    import pymysql

    database = url.rsplit("/", 1)[1]

    def query(statement: str) -> list[tuple[Any, ...]]:
        with pymysql.connect(
            host="127.0.0.1", user="root", database=database, autocommit=True
        ) as conn:
            cur = conn.cursor()
            cur.execute(statement)
            return list(cur.fetchall())

    def execute(statement: str) -> None:
        query(statement)

    return Target(
        kind="mysql",
        into=url,
        store=str(tmp_path / "freight.db"),  # another file: exactly once only with a key
        key=key,
        execute=execute,
        rows=lambda: query("SELECT count(*), count(DISTINCT id) FROM payments")[0],
        ids=lambda: {int(row[0]) for row in query("SELECT id FROM payments")},
    )


@pytest.fixture(
    params=[
        "sqlite-key", "sqlite-no-key", "postgres-key", "postgres-no-key", "mysql-key",
        "mysql-no-key",
    ]
)  # fmt: skip
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Target:
    kind, _, mode = str(request.param).partition("-")
    key = mode == "key"
    if kind == "sqlite":
        return sqlite_target(tmp_path, key=key)
    if kind == "mysql":
        return mysql_target(request.getfixturevalue("mysql_url"), tmp_path, key=key)
    url = request.getfixturevalue("postgres_url")
    return postgres_target(url, tmp_path, key=key)


# -- running and killing the command ----------------------------------------------------


def freight(target: Target, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "freight.cli", *args, "--store", target.store, "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def load(target: Target, data: Path, chunk_size: int) -> subprocess.Popen[str]:
    key = ["--key", "id"] if target.key else []
    return freight(
        target, "load", str(data), "--into", target.into, "--table", "payments", *key,
        "--name", "kill-loop", "--chunk-size", str(chunk_size),
    )  # fmt: skip


def progress_of(store: Store, measure: Callable[[Store, str], int]) -> Callable[[], int]:
    """How far the run of the loop got, as the store has it now (0 before it exists)."""

    def progress() -> int:
        run = store.latest_job("kill-loop")
        return 0 if run is None else measure(store, run.id)

    return progress


def kill_after_progress(
    start: Callable[[], subprocess.Popen[str]],
    progress: Callable[[], int],
    *,
    kills: int,
    jitter: float,
) -> int:
    """Start the command until it was killed ``kills`` times, each time SIGKILLing it
    right after it committed more progress (plus a random delay up to ``jitter``
    seconds); return the kills made."""
    killed = 0
    for _ in range(3 * kills):
        if killed == kills:
            break
        before = progress()
        process = start()
        while process.poll() is None and progress() <= before:
            time.sleep(0.002)  # watching for a commit, not waiting out a timeout
        time.sleep(RNG.uniform(0, jitter))  # a random point after that commit
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
            killed += 1
        process.communicate(timeout=60)
    return killed


def finish(start: Callable[[], subprocess.Popen[str]], expected: int) -> dict[str, Any]:
    """Run the command once more to its end; it must exit ``expected``; its report."""
    process = start()
    out, err = process.communicate(timeout=120)
    assert process.returncode == expected, err
    report: dict[str, Any] = json.loads(out)
    return report


# -- the loops --------------------------------------------------------------------------

ROWS = 4_000
BAD = {777, 2_345, 3_999}  # rows with a wrong column count: dead letters of the load


def write_csv(path: Path, rows: int, bad: frozenset[int] | set[int] = frozenset()) -> None:
    with path.open("w") as f:
        f.write("id,amount,note\n")
        for i in range(rows):
            f.write(f"{i},{i % 97}\n" if i in bad else f"{i},{i % 97},n{i}\n")


def test_load_killed_at_random_points_then_rerun_loads_every_row_once(
    target: Target, tmp_path: Path
) -> None:
    data = tmp_path / "payments.csv"
    write_csv(data, ROWS, BAD)
    chunk_size = 40
    store = open_store(target.store)
    progress = progress_of(store, lambda s, run: s.get_job(run).processed)  # type: ignore[union-attr]
    killed = kill_after_progress(
        lambda: load(target, data, chunk_size), progress, kills=LOAD_KILLS, jitter=0.02
    )
    assert killed == LOAD_KILLS, "every kill must land while the load runs"
    report = finish(lambda: load(target, data, chunk_size), expected=3)  # dead letters: 3
    good = {i for i in range(ROWS) if i not in BAD}
    assert target.ids() == good  # no row lost
    count, distinct = target.rows()
    assert distinct == len(good)
    if target.exactly_once:
        assert count == len(good)  # no row written twice
    else:  # at least once: only chunks in flight at a kill were written again
        assert count - distinct <= killed * chunk_size
    summary = report["summary"]
    assert (summary["processed"], summary["succeeded"], summary["failed"]) == (
        ROWS, len(good), len(BAD),
    )  # fmt: skip
    assert report["status"] == "completed_with_errors"
    assert {e["item"] for e in report["errors"]} == {f"line {i + 2}" for i in BAD}
    store.close()


REFUSED = range(200, 320)  # rows the target refuses at first: 12 whole chunks of 10


def refusing_table(target: Target) -> None:
    """The table exists, and refuses the rows of REFUSED (a cause fixed before the
    replay); they are together, so isolating them costs the load few writes."""
    key = ", PRIMARY KEY (id)" if target.key else ""
    first, last = REFUSED[0], REFUSED[-1]
    if target.kind == "sqlite":
        target.execute(
            f"CREATE TABLE payments (id INTEGER, amount INTEGER, note TEXT{key});"
            f" CREATE TRIGGER refuse BEFORE INSERT ON payments WHEN NEW.id BETWEEN {first}"
            f" AND {last} BEGIN SELECT RAISE(ABORT, 'refused by trigger'); END;"
        )
    else:  # PostgreSQL and MariaDB alike
        target.execute(
            f"CREATE TABLE payments (id bigint, amount bigint, note text{key},"
            f" CONSTRAINT refuse CHECK (id NOT BETWEEN {first} AND {last}))"
        )


def fix_the_cause(target: Target) -> None:
    if target.kind == "sqlite":
        target.execute("DROP TRIGGER refuse")
    else:
        target.execute("ALTER TABLE payments DROP CONSTRAINT refuse")


def test_retry_failed_killed_at_random_points_then_rerun_writes_every_row_once(
    target: Target, tmp_path: Path
) -> None:
    rows, chunk_size = 400, 10  # the refused rows are replayed in 12 batches of 10
    data = tmp_path / "payments.csv"
    write_csv(data, rows)
    refusing_table(target)
    first = finish(lambda: load(target, data, chunk_size), expected=3)
    refused = len(REFUSED)
    assert first["summary"]["failed"] == refused
    assert target.rows() == (rows - refused, rows - refused)
    fix_the_cause(target)
    store = open_store(target.store)
    progress = progress_of(store, lambda s, run: s.error_summary(run, sample=0).resolved_count)

    def retry() -> subprocess.Popen[str]:
        return freight(target, "retry-failed", "kill-loop")

    killed = kill_after_progress(retry, progress, kills=REPLAY_KILLS, jitter=0.0)
    assert killed == REPLAY_KILLS, "every kill must land while the replay runs"
    report = finish(retry, expected=0)
    assert target.ids() == set(range(rows))  # no row lost
    count, distinct = target.rows()
    assert distinct == rows
    if target.exactly_once:
        assert count == rows  # no row written twice, even without a key on PostgreSQL
    else:  # at least once: only the batches in flight at a kill were written again
        assert count - distinct <= killed * chunk_size
    summary = report["summary"]
    assert (summary["processed"], summary["succeeded"], summary["failed"]) == (rows, rows, 0)
    assert (summary["resolved"], report["errors"], report["status"]) == (
        refused, [], "completed",
    )  # fmt: skip
    store.close()


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_two_loads_started_at_the_same_instant_load_the_file_once(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    rows, tries = 2_000, 3
    for attempt in range(tries):
        folder = tmp_path / str(attempt)
        folder.mkdir()
        if kind == "sqlite":
            target = sqlite_target(folder, key=False)
        else:  # a schema per try: the fixture's, then new ones
            url = request.getfixturevalue("postgres_url") if attempt == 0 else new_schema()
            target = postgres_target(url, folder, key=False)
        data = folder / "payments.csv"
        write_csv(data, rows)
        open_store(target.store).close()  # the store exists (its tables made) beforehand
        both = [load(target, data, 200), load(target, data, 200)]
        outcomes = [(p.wait(timeout=120), *p.communicate()) for p in both]
        codes = sorted(code for code, _, _ in outcomes)
        ran = [json.loads(out) for code, out, _ in outcomes if code == 0]
        refused = [err for code, _, err in outcomes if code == 2]
        # One ran; the other was refused in one line, or came after and got the report.
        assert codes in ([0, 2], [0, 0]), outcomes
        assert len({report["job_id"] for report in ran}) == 1
        for err in refused:
            assert "is running in process" in err
            assert len(err.strip().splitlines()) == 1
        assert target.rows() == (rows, rows), f"try {attempt}"
        store = open_store(target.store)
        assert [job.name for job in store.list_jobs()].count("kill-loop") == 1
        store.close()


def new_schema() -> str:
    import psycopg
    from psycopg import sql

    schema = f"freight_kill_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    return f"{POSTGRES_URL}?options=-csearch_path%3D{schema}"


def test_a_keyed_load_with_two_workers_killed_at_random_points_keeps_each_keys_last_value(
    postgres_url: str, tmp_path: Path
) -> None:
    """``--key --workers 2`` into PostgreSQL: chunks of disjoint keys write at once, each
    key comes back every 500 lines in another spelling. However the kills fall, a
    resume redoes only chunks no later chunk sharing a key had overtaken: the table
    ends with each key's last value in the file."""
    target = postgres_target(postgres_url, tmp_path, key=True)
    data = tmp_path / "payments.csv"
    expected: dict[int, int] = {}
    with data.open("w") as f:
        f.write("id,amount,note\n")
        for seq in range(ROWS):
            key = seq % 500
            spelled = [f"{key}", f"+{key}", f" 0{key} "][seq // 500 % 3]
            f.write(f"{spelled},{seq},n{seq}\n")
            expected[key] = seq
    store = open_store(target.store)
    progress = progress_of(store, lambda s, run: s.get_job(run).processed)  # type: ignore[union-attr]

    def start() -> subprocess.Popen[str]:
        return freight(
            target, "load", str(data), "--into", target.into, "--table", "payments",
            "--key", "id", "--types", "id=bigint,amount=bigint,note=text",
            "--name", "kill-loop", "--chunk-size", "40", "--workers", "2",
        )  # fmt: skip

    killed = kill_after_progress(start, progress, kills=LOAD_KILLS, jitter=0.02)
    assert killed == LOAD_KILLS, "every kill must land while the load runs"
    report = finish(start, expected=0)
    assert report["summary"]["succeeded"] == ROWS
    import psycopg

    with psycopg.connect(target.into) as conn:
        found: dict[int, int] = dict(conn.execute("SELECT id, amount FROM payments").fetchall())
    assert found == expected
    store.close()
