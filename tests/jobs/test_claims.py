"""Two processes starting the same new job at the same instant: exactly one runs it.

The claim of a new run is one atomic step in the store (the latest run of the name is
read and the new, owned run inserted in one write transaction; SQLite serialises it with
``BEGIN IMMEDIATE``, PostgreSQL with a transaction-scoped advisory lock on the name).
Real processes, released together by a barrier, race for it on both stores.
"""

from __future__ import annotations

import multiprocessing
import sqlite3
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from freight._process import host
from freight.connectors.sqlite import SqliteSink
from freight.jobs import Job, JobAlreadyRunning
from freight.store import Store, open_store
from freight.store._records import utcnow
from tests.services import POSTGRES_URL, require

TRIES = 10
ROWS = 2_000


def _race(store_url: str, target: str, barrier: Any, tasks: Any, results: Any) -> None:
    """A worker process: for each job name it is given, start the job with the other one."""
    store = open_store(store_url)
    while (name := tasks.get()) is not None:
        sink = SqliteSink(target, name)  # no key: a second execution would write every row again
        job = Job(name, [{"id": i} for i in range(ROWS)], sink, chunk_size=200, store=store)
        barrier.wait()
        try:
            results.put((name, "reported", job.run().job_id))
        except JobAlreadyRunning as exc:
            results.put((name, "refused", str(exc)))
        sink.close()
    store.close()


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield str(tmp_path / "freight.db")
        return
    require("127.0.0.1", 5432, "PostgreSQL")
    import psycopg
    from psycopg import sql

    schema = f"freight_claims_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    yield f"{POSTGRES_URL}?options=-csearch_path%3D{schema}"
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


def runs_named(store: Store, name: str) -> list[str]:
    return [job.id for job in store.list_jobs(limit=1000) if job.name == name]


def test_two_processes_starting_the_same_new_job_at_once_run_it_once(
    store_url: str, tmp_path: Path
) -> None:
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(2)
    tasks: Any = [ctx.Queue(), ctx.Queue()]
    results: Any = ctx.Queue()
    target = str(tmp_path / "target.db")
    workers = [
        ctx.Process(target=_race, args=(store_url, target, barrier, queue, results))
        for queue in tasks
    ]
    for worker in workers:
        worker.start()
    store = open_store(store_url)
    try:
        for attempt in range(TRIES):
            name = f"race-{attempt}"
            for queue in tasks:
                queue.put(name)
            outcomes = sorted(results.get(timeout=60)[1:] for _ in workers)
            [run_id] = runs_named(store, name)  # one run of the name, never two
            started = [e.kind for e in store.events(run_id)].count("started")
            assert started == 1, f"try {attempt}: the run was executed {started} times"
            kinds = [kind for kind, _ in outcomes]
            # The other process was refused, or came after the end and got the report.
            assert kinds in (["refused", "reported"], ["reported", "reported"]), outcomes
            assert outcomes[-1][1] == run_id
            if kinds[0] == "refused":
                assert f"(run {run_id}) is running in process" in outcomes[0][1]
            with sqlite3.connect(target) as db:
                count = db.execute(f'SELECT count(*), count(DISTINCT id) FROM "{name}"').fetchone()
            assert count == (ROWS, ROWS), f"try {attempt}: rows written {count}"
    finally:
        for queue in tasks:
            queue.put(None)
        for worker in workers:
            worker.join(timeout=30)
        store.close()
    assert [worker.exitcode for worker in workers] == [0, 0]


def test_claim_new_refuses_when_another_runner_created_or_holds_the_latest_run(
    store_url: str,
) -> None:
    store = open_store(store_url)
    now = utcnow()
    stale_before = now - timedelta(seconds=30)
    args: dict[str, Any] = {
        "name": "nightly", "job_type": "bulk", "fingerprint": "f", "config": {},
        "now": now, "stale_before": stale_before,
    }  # fmt: skip
    first = store.claim_new(**args, host="a", pid=1, replacing=None)
    assert first is not None
    assert (first.status, first.owner_host, first.owner_pid) == ("pending", "a", 1)
    assert first.heartbeat_at == now
    # b looked before a created it: the latest run is no longer the one b saw
    assert store.claim_new(**args, host="b", pid=2, replacing=None) is None
    # b saw a's run, which a holds (a fresh start is refused while it lives)
    assert store.claim_new(**args, host="b", pid=2, replacing=first.id) is None
    assert runs_named(store, "nightly") == [first.id]
    # once a's heartbeat is stale (or a released it), b may start a new run of the name
    later = {**args, "stale_before": now + timedelta(seconds=1)}
    second = store.claim_new(**later, host="b", pid=2, replacing=first.id)
    assert second is not None
    assert runs_named(store, "nightly") == [second.id, first.id]
    store.release(second.id)
    third = store.claim_new(**args, host="c", pid=3, replacing=second.id)
    assert third is not None
    assert store.latest_job("nightly") == third
    store.close()


def test_a_fresh_start_is_refused_while_a_live_owner_runs_the_job(tmp_path: Path) -> None:
    import os

    store = open_store(str(tmp_path / "freight.db"))
    job = Job("busy", [1, 2, 3], lambda batch: None, store=store)
    now = utcnow()
    running = store.claim_new(
        name="busy", job_type="bulk", fingerprint=job.source.fingerprint(), config={},
        replacing=None, host=host(), pid=os.getppid(), now=now,
        stale_before=now,
    )  # fmt: skip
    assert running is not None
    with pytest.raises(JobAlreadyRunning, match=f"run {running.id}"):
        job.run(fresh=True)
    assert runs_named(store, "busy") == [running.id]
    store.release(running.id)  # its owner let it go: a fresh start makes a new run
    assert job.run(fresh=True).job_id != running.id
    store.close()


class _StaleLook:
    """A store whose ``latest_job`` answers with what it held a moment ago: the run still
    running, although its owner completed and released it since (the race of two loads)."""

    def __init__(self, store: Store, stale: Any) -> None:
        self._store, self._stale = store, stale

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    def latest_job(self, name: str) -> Any:
        return self._stale


def test_a_run_that_completes_between_look_and_claim_is_reported_not_restarted(
    tmp_path: Path,
) -> None:
    """Reproduces CI's `cannot go from completed to running` (stop 18): the second runner saw
    the run running, the first completed it and released it, the second then claimed it."""
    from dataclasses import replace

    store = open_store(str(tmp_path / "freight.db"))
    items = [{"id": i} for i in range(50)]
    first = Job("raced", items, lambda batch: None, chunk_size=10, store=store).run()
    done = store.get_job(first.job_id)
    assert done is not None
    running = replace(done, status="running", owner_host="elsewhere", owner_pid=1)
    stale = _StaleLook(store, running)
    again = Job("raced", items, lambda batch: None, chunk_size=10, store=stale)
    report = again.run()  # the finished run's report, not an IllegalTransition
    assert report.job_id == first.job_id
    assert report.status == "completed"
    after = store.get_job(first.job_id)
    assert after is not None
    assert after.owner_host is None  # not left claimed by the late runner
    store.close()
