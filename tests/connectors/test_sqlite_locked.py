"""A SQLite target locked by another writer is waited for and retried, never a dead letter.

Another connection holds ``BEGIN IMMEDIATE`` (the write lock). Time is never slept in
real seconds: the holder lets go once the write has demonstrably begun (the sink's own
connection reports its statements), or the job's retry waits on a FakeClock.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from freight import Job, Retry, TransientError
from freight.connectors.sqlite import SqliteSink
from freight.store import SqliteStore
from freight.testing import FakeClock


def holding(path: Path) -> sqlite3.Connection:
    """Another connection holding the database's write lock."""
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN IMMEDIATE")
    return holder


def count(path: Path, table: str) -> int:
    with sqlite3.connect(path) as db:
        [(n,)] = db.execute(f'SELECT count(*) FROM "{table}"').fetchall()
    db.close()
    return int(n)


def test_a_write_past_the_busy_timeout_fails_whole_and_transient(tmp_path: Path) -> None:
    path = tmp_path / "d.db"
    sink = SqliteSink(path, "t", key="id", busy_timeout=0)
    sink.write([{"id": 0, "v": "before"}])
    holder = holding(path)
    try:
        with pytest.raises(TransientError, match="SQLite database busy: database is locked"):
            sink.write([{"id": i, "v": "x"} for i in range(1, 5)])  # no per-row outcomes
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert sink.write([{"id": i, "v": "x"} for i in range(1, 5)]) is None
    sink.close()
    assert count(path, "t") == 5


def test_a_write_waits_for_the_lock_and_then_lands(tmp_path: Path) -> None:
    path = tmp_path / "d.db"
    sink = SqliteSink(path, "t", key="id")  # the default busy timeout: 30 s
    sink.write([{"id": 0, "v": "before"}])
    began = threading.Event()
    sink._db.set_trace_callback(  # the sink's connection reports each statement it runs
        lambda statement: began.set() if statement == "BEGIN IMMEDIATE" else None
    )
    holder = holding(path)
    holder.execute("INSERT INTO t VALUES (100, 'the holder''s row')")

    def release_once_the_write_began() -> None:
        assert began.wait(10)
        holder.execute("COMMIT")

    releaser = threading.Thread(target=release_once_the_write_began)
    releaser.start()
    try:
        outcomes = sink.write([{"id": i, "v": "x"} for i in range(1, 11)])
    finally:
        releaser.join()
        holder.close()
    sink.close()
    assert outcomes is None
    assert count(path, "t") == 12  # ours and the holder's: nothing lost on either side


def test_a_job_retries_a_locked_target_and_dead_letters_nothing(tmp_path: Path) -> None:
    path = tmp_path / "d.db"
    clock = FakeClock()
    sink = SqliteSink(path, "t", key="id", busy_timeout=0)  # locked: fail at once, retry
    holder = holding(path)  # locked before the table even exists
    seen: list[float] = []

    def release_after_the_first_retry_wait() -> None:
        seen.extend(clock.wait_for_timers(2))  # the heartbeat and the retry's backoff
        holder.execute("ROLLBACK")
        holder.close()
        clock.advance_sync(1.0)

    helper = threading.Thread(target=release_after_the_first_retry_wait)
    helper.start()
    try:
        report = Job(
            "locked", [{"id": i, "v": f"row {i}"} for i in range(30)], sink, chunk_size=10,
            retry=Retry(attempts=3, backoff=1.0, jitter=0), clock=clock,
            store=SqliteStore(tmp_path / "s.db"),
        ).run()  # fmt: skip
    finally:
        helper.join()
        sink.close()
    assert 1.0 in seen  # the first write met the lock and waited to retry
    assert report["errors"] == []
    assert report.summary["succeeded"] == 30
    assert report.summary["failed"] == 0
    assert count(path, "t") == 30
