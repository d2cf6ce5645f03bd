"""A managed-batch worker on a SQLite store, killed with SIGKILL at random points.

One batch of requests is submitted; a worker process (``BatchManager.run_sync(burst=True)``)
is started, killed with SIGKILL at a random instant after the store shows it made some
random amount of progress (most often holding a claimed chunk), started again, … ten
times, then left to finish. After the restarts every request has exactly one result
(its own), the batch's counts are the requests' states, and no claim is left behind.
The lease is long (60 s): a restarted worker takes back the dead one's claims because
its process is gone, not by waiting for the lease.

Real processes in real time: marked ``slow``.
"""

from __future__ import annotations

import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from freight import BatchManager, BatchRequest, BatchStatus

pytestmark = pytest.mark.slow

KILLS = 10
REQUESTS = 3_000
RNG = random.Random(20261130)

WORKER = """
import sys, time
from freight import BatchManager, BatchSpec

manager = BatchManager(store=sys.argv[1], lease=60)


def double(bodies):
    time.sleep(0.002)
    return [b * 2 for b in bodies]


manager.register("/double", double, spec=BatchSpec(size=10))
manager.run_sync(burst=True)
"""


def open_claims(db: Path) -> int:
    with sqlite3.connect(db, timeout=30) as conn:
        [(n,)] = conn.execute("SELECT count(*) FROM manager_claims").fetchall()
    return int(n)


def progress(db: Path, batch_id: str) -> int:
    with sqlite3.connect(db, timeout=30) as conn:
        [(done,)] = conn.execute(
            "SELECT completed FROM manager_batches WHERE id = ?", (batch_id,)
        ).fetchall()
    return int(done)


def run_until(db: Path, script: Path, batch_id: str, target: int | None) -> int:
    """Run a worker until the store shows ``target`` results, then SIGKILL it (``None``:
    let it finish). Returns the results seen at the kill."""
    proc = subprocess.Popen([sys.executable, str(script), str(db)])
    try:
        deadline = time.monotonic() + 40
        while target is not None and time.monotonic() < deadline:
            if proc.poll() is not None:
                return progress(db, batch_id)  # it finished first
            seen = progress(db, batch_id)
            if seen >= target:
                # Progress shows right after a write, when the worker is between chunks
                # (under load, often for longer than a 2 ms handler call): wait until it
                # holds its next claim, then land at a random instant inside that call.
                for _ in range(100):
                    if open_claims(db):
                        break
                    time.sleep(0.001)
                time.sleep(RNG.uniform(0, 0.001))
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                return seen
            time.sleep(0.003)
        assert proc.wait(timeout=40) == 0
        return progress(db, batch_id)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_sigkill_at_10_random_points_then_every_request_has_exactly_one_result(
    tmp_path: Path,
) -> None:
    db = tmp_path / "freight.db"
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    manager = BatchManager(store=db)
    manager.register("/double", lambda bodies: bodies)  # this process only submits
    batch = manager.submit_sync(
        [BatchRequest(id=f"r{i}", body=i) for i in range(REQUESTS)], endpoint="/double"
    )
    manager.close()
    step = REQUESTS // (KILLS + 2)
    kills, orphans = [], []
    for k in range(KILLS):
        target = (k + 1) * step + RNG.randrange(-step // 3, step // 3)
        kills.append(run_until(db, script, batch.id, target))
        orphans.append(open_claims(db))  # a chunk in flight at the kill: the next run redoes it
    run_until(db, script, batch.id, None)

    assert len(kills) == KILLS
    assert sum(1 for seen in kills if 0 < seen < REQUESTS) >= KILLS  # each kill mid-batch
    assert sum(1 for n in orphans if n) >= KILLS // 2, orphans  # most killed mid-chunk
    with sqlite3.connect(db) as conn:
        rows = conn.execute(
            "SELECT custom_id, state, response FROM manager_requests WHERE batch_id = ?"
            " ORDER BY idx",
            (batch.id,),
        ).fetchall()
        [(claims,)] = conn.execute("SELECT count(*) FROM manager_claims").fetchall()
    assert [r[0] for r in rows] == [f"r{i}" for i in range(REQUESTS)]
    assert {r[1] for r in rows} == {"completed"}
    assert [int(r[2]) for r in rows] == [2 * i for i in range(REQUESTS)]
    assert claims == 0
    again = BatchManager(store=db)
    final = again.get_sync(batch.id)
    again.close()
    assert final.status is BatchStatus.COMPLETED
    counts = final.request_counts
    assert (counts.total, counts.completed, counts.failed, counts.finished) == (
        REQUESTS,
        REQUESTS,
        0,
        REQUESTS,
    )


DRAINED = """
import pathlib, sys, time
from freight import BatchManager, BatchSpec

manager = BatchManager(store=sys.argv[1], lease=60)
started = pathlib.Path(sys.argv[2])


def slow(bodies):
    started.write_text("started")
    time.sleep(0.5)
    return bodies


manager.register("/slow", slow, spec=BatchSpec(size=5))
manager.run_sync()
"""


def test_sigterm_drains_the_chunk_in_flight_and_claims_nothing_more(tmp_path: Path) -> None:
    db, script, started = tmp_path / "freight.db", tmp_path / "worker.py", tmp_path / "started"
    script.write_text(DRAINED)
    manager = BatchManager(store=db)
    manager.register("/slow", lambda bodies: bodies)
    batch = manager.submit_sync(
        [BatchRequest(id=f"r{i}", body=i) for i in range(20)], endpoint="/slow"
    )
    proc = subprocess.Popen([sys.executable, str(script), str(db), str(started)])
    try:
        deadline = time.monotonic() + 30
        while not started.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    counts = manager.get_sync(batch.id).request_counts
    assert counts.completed == 5  # the chunk in flight finished and was written
    assert open_claims(db) == 0
    with sqlite3.connect(db) as conn:
        [(queued,)] = conn.execute(
            "SELECT count(*) FROM manager_requests WHERE state = 'queued'"
        ).fetchall()
    assert queued == 15  # nothing more was claimed
    manager.close()
