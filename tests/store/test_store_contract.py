"""The Store contract, run against every store implementation."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from freight.store import (
    ChunkCheckpoint,
    DeadLetter,
    IllegalTransition,
    SqliteStore,
    Store,
    StoreError,
)
from freight.store._migrations import MIGRATIONS
from freight.store._records import utcnow
from tests.services import POSTGRES_URL, require


@pytest.fixture(params=["file", "memory", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "postgres":
        yield from postgres_store()
        return
    path = tmp_path / "nested" / "freight.db" if request.param == "file" else ":memory:"
    s = SqliteStore(path)
    yield s
    s.close()


def postgres_store() -> Iterator[Store]:
    require("127.0.0.1", 5432, "PostgreSQL")
    import uuid

    import psycopg
    from psycopg import sql

    from freight.store._postgres import PostgresStore

    schema = f"freight_store_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    s = PostgresStore(f"{POSTGRES_URL}?options=-csearch_path%3D{schema}")
    yield s
    s.close()
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


def new_job(store: Store, name: str = "import") -> str:
    return store.create_job(
        name=name, job_type="bulk", fingerprint="fp1", config={"chunk_size": 10}, total_items=25
    ).id


def test_jobs_round_trip(store: Store) -> None:
    job_id = new_job(store)
    job = store.get_job(job_id)
    assert job is not None
    assert (job.name, job.status, job.config, job.total_items) == (
        "import",
        "pending",
        {"chunk_size": 10},
        25,
    )
    assert job.created_at.tzinfo is not None
    assert store.get_job("missing") is None
    started = utcnow()
    job = store.transition(job_id, "running", now=started)
    assert (job.status, job.started_at, job.completed_at) == ("running", started, None)
    assert not job.finished
    ended = started + timedelta(seconds=5)
    job = store.transition(job_id, "failed", reason="too many failures", now=ended)
    assert (job.reason, job.completed_at, job.finished) == ("too many failures", ended, True)


def test_transitions_follow_the_lifecycle_and_write_what_each_move_writes(
    store: Store,
) -> None:
    job_id = new_job(store)
    t0 = utcnow()
    store.request(job_id, "resume")
    store.transition(job_id, "running", now=t0)
    store.transition(job_id, "paused")
    again = store.transition(job_id, "running", now=t0 + timedelta(seconds=9))
    assert (again.started_at, again.control) == (t0, None)  # first start kept, ask consumed
    done = store.transition(job_id, "completed_with_errors", now=t0 + timedelta(seconds=10))
    assert done.completed_at == t0 + timedelta(seconds=10)
    revised = store.transition(job_id, "completed", now=t0 + timedelta(seconds=99))
    assert (revised.status, revised.completed_at) == ("completed", t0 + timedelta(seconds=10))
    with pytest.raises(IllegalTransition, match="from completed to running: a done run never"):
        store.transition(job_id, "running")
    assert store.get_job(job_id).status == "completed"  # type: ignore[union-attr]


def test_an_illegal_transition_changes_nothing_and_says_what_is_legal(store: Store) -> None:
    job_id = new_job(store)
    with pytest.raises(IllegalTransition, match=r"from pending to paused: .* running"):
        store.transition(job_id, "paused")
    with pytest.raises(IllegalTransition, match="'exploded' is not a job status"):
        store.transition(job_id, "exploded")  # type: ignore[arg-type]
    assert store.get_job(job_id).status == "pending"  # type: ignore[union-attr]
    with pytest.raises(KeyError, match="no job"):
        store.transition("missing", "running")


def test_release_frees_a_run_for_any_claimer(store: Store) -> None:
    job_id = new_job(store)
    now = utcnow()
    store.claim(job_id, host="a", pid=1, now=now, stale_before=now - timedelta(seconds=30))
    store.release(job_id)
    released = store.get_job(job_id)
    assert released is not None
    assert (released.owner_host, released.owner_pid) == (None, None)
    assert store.claim(job_id, host="b", pid=2, now=now, stale_before=now) is not None


def test_latest_job_is_the_newest_run_of_a_name(store: Store) -> None:
    first = new_job(store)
    second = new_job(store)
    new_job(store, name="other")
    assert store.latest_job("import").id == second  # type: ignore[union-attr]
    assert store.latest_job("nope") is None
    assert [j.id for j in store.list_jobs()][1:] == [second, first]


def test_requests_to_an_unknown_run_are_refused(store: Store) -> None:
    with pytest.raises(KeyError, match="no job"):
        store.request("missing", "pause")


def test_commit_chunk_stores_checkpoint_dead_letters_and_counts_together(store: Store) -> None:
    job_id = new_job(store)
    store.start_chunk(job_id, ChunkCheckpoint(index=0, start=(0, 1)))
    [running] = store.chunks(job_id)
    assert (running.status, running.attempts) == ("running", 1)
    dead = DeadLetter(
        record_id="line 7",
        payload="7,x",
        error_type="ValueError",
        message="bad amount",
        category="validation",
    )
    job = store.commit_chunk(
        job_id,
        ChunkCheckpoint(
            index=0,
            start=(0, 1),
            end=(120, 11),
            status="done",
            items=10,
            succeeded=9,
            failed=1,
            checksum="abc",
        ),
        [dead],
    )
    assert (job.processed, job.succeeded, job.failed) == (10, 9, 1)
    [chunk] = store.chunks(job_id)
    assert (chunk.status, chunk.end, chunk.checksum, chunk.attempts) == (
        "done",
        (120, 11),
        "abc",
        1,
    )
    [letter] = store.dead_letters(job_id)
    assert (letter.record_id, letter.category, letter.chunk_index) == ("line 7", "validation", 0)
    with pytest.raises(ValueError, match="already done"):
        store.commit_chunk(job_id, ChunkCheckpoint(index=0, start=(0, 1), status="done"))
    assert store.get_job(job_id).processed == 10  # type: ignore[union-attr]


def test_restarted_chunk_counts_its_attempts(store: Store) -> None:
    job_id = new_job(store)
    store.start_chunk(job_id, ChunkCheckpoint(index=3, start=(30, 31)))
    store.start_chunk(job_id, ChunkCheckpoint(index=3, start=(30, 31)))
    assert store.chunks(job_id)[0].attempts == 2


def test_claim_refuses_a_live_owner_and_takes_over_a_stale_one(store: Store) -> None:
    job_id = new_job(store)
    now = utcnow()
    stale_before = now - timedelta(seconds=30)
    assert store.claim(job_id, host="a", pid=1, now=now, stale_before=stale_before) is not None
    assert store.claim(job_id, host="b", pid=2, now=now, stale_before=stale_before) is None
    assert store.claim(job_id, host="a", pid=1, now=now, stale_before=stale_before) is not None
    later = now + timedelta(minutes=5)
    taken = store.claim(
        job_id, host="b", pid=2, now=later, stale_before=later - timedelta(seconds=30)
    )
    assert taken is not None
    assert (taken.owner_host, taken.owner_pid) == ("b", 2)
    store.heartbeat(job_id, now=later + timedelta(seconds=1))
    assert store.get_job(job_id).heartbeat_at == later + timedelta(seconds=1)  # type: ignore[union-attr]


def test_control_requests_and_events(store: Store) -> None:
    job_id = new_job(store)
    store.request(job_id, "pause")
    assert store.get_job(job_id).control == "pause"  # type: ignore[union-attr]
    store.request(job_id, None)
    assert store.get_job(job_id).control is None  # type: ignore[union-attr]
    with pytest.raises(ValueError, match="control must be"):
        store.request(job_id, "explode")  # type: ignore[arg-type]
    store.add_event(job_id, "started", {"pid": 5})
    store.add_event(job_id, "paused")
    assert [(e.kind, e.data) for e in store.events(job_id)] == [
        ("started", {"pid": 5}),
        ("paused", {}),
    ]


def test_a_dead_letter_holding_a_nul_is_stored_on_every_store(store: Store) -> None:
    """Found by review: a CSV line with a NUL byte (a bad record, its excerpt the line)
    stopped a run whose store is PostgreSQL (its text cannot hold a NUL), and the run
    could never finish. Every store keeps the NUL shown as ``\\x00``."""
    job_id = new_job(store)
    store.start_chunk(job_id, ChunkCheckpoint(index=0, start=(0, 1)))
    dead = DeadLetter(
        record_id="line 3", payload="2,b\x00c", error_type="RecordError",
        message="NUL byte in field 2 ('name')\x00", category="validation",
    )  # fmt: skip
    done = ChunkCheckpoint(index=0, start=(0, 1), end=(9, 4), status="done", items=1, failed=1)
    store.commit_chunk(job_id, done, [dead])
    [letter] = store.dead_letters(job_id)
    assert (letter.payload, letter.message) == ("2,b\\x00c", "NUL byte in field 2 ('name')\\x00")


def test_dead_letters_can_be_marked_replayed(store: Store) -> None:
    job_id = new_job(store)
    letters = [
        DeadLetter(
            record_id=f"r{i}", payload="{}", error_type="E", message="m", category="permanent"
        )
        for i in range(3)
    ]
    store.commit_chunk(job_id, ChunkCheckpoint(index=0, start=(0, 0), status="done"), letters)
    ids = [d.id for d in store.dead_letters(job_id)]
    store.mark_replayed(job_id, [i for i in ids[:2] if i is not None])
    assert [d.record_id for d in store.dead_letters(job_id)] == ["r2"]
    every = store.dead_letters(job_id, include_replayed=True)
    assert [d.replayed_at is not None for d in every] == [True, True, False]
    assert every[0].replayed_at is not None
    assert every[0].replayed_at.tzinfo is not None


def test_the_error_summary_counts_current_errors_and_records_a_replay_resolved(
    store: Store,
) -> None:
    job_id = new_job(store)
    letters = [
        DeadLetter(
            record_id=f"line {i}", position=(i * 10, i), payload="x", error_type="E",
            message=f"m{i}", category="permanent" if i % 2 else "validation",
        )
        for i in range(6)
    ]  # fmt: skip
    store.commit_chunk(job_id, ChunkCheckpoint(index=0, start=(0, 0), status="done"), letters)
    ids = [d.id for d in store.dead_letters(job_id) if d.id is not None]
    again = DeadLetter(
        record_id="line 3", position=(30, 3), payload="x", error_type="E",
        message="m3 again", category="permanent", attempts=2,
    )  # fmt: skip
    store.commit_replay(job_id, ids[:4], [again], succeeded=3)  # lines 0-3; 3 failed again
    summary = store.error_summary(job_id, sample=2)
    assert [d.record_id for d in summary.current] == ["line 4", "line 5"]  # oldest first
    assert summary.categories == {"validation": 1, "permanent": 2}
    assert [d.record_id for d in summary.resolved] == ["line 0", "line 1"]
    assert summary.resolved_count == 3  # line 3 is not resolved: it failed again
    assert all(d.replayed_at is not None for d in summary.resolved)
    targets = store.replay_targets(job_id)
    assert [t.position for t in targets] == [(30, 3), (40, 4), (50, 5)]
    assert [t.attempts for t in targets] == [2, 1, 1]
    empty = store.error_summary(new_job(store, "clean"))
    assert (empty.current, empty.categories, empty.resolved, empty.resolved_count) == (
        [], {}, [], 0,
    )  # fmt: skip


def test_schema_is_versioned_and_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "f.db"
    store = SqliteStore(path)
    assert store.schema_version == len(MIGRATIONS)
    store.close()
    SqliteStore(path).close()  # reopening migrates nothing
    with sqlite3.connect(path) as db:
        db.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    with pytest.raises(StoreError, match="upgrade freight"):
        SqliteStore(path)


def test_wal_mode_and_urls(tmp_path: Path) -> None:
    store = SqliteStore.from_url(f"sqlite:///{tmp_path}/x.db")
    assert store.path == tmp_path / "x.db"
    with sqlite3.connect(tmp_path / "x.db") as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    store.close()
    with pytest.raises(StoreError, match="unsupported store URL"):
        SqliteStore.from_url("mysql://x")


def test_two_connections_see_each_other(tmp_path: Path) -> None:
    a, b = SqliteStore(tmp_path / "s.db"), SqliteStore(tmp_path / "s.db")
    job_id = new_job(a)
    b.request(job_id, "cancel")
    assert a.get_job(job_id).control == "cancel"  # type: ignore[union-attr]
    a.close()
    b.close()


def test_a_job_runs_and_resumes_on_a_postgres_store() -> None:
    stores = postgres_store()
    store = next(stores)
    try:
        run_and_resume(store)
    finally:
        next(stores, None)  # drop the schema


def run_and_resume(store: Store) -> None:
    from freight import Job

    seen: list[int] = []

    class Crash(BaseException):
        pass

    def sink(batch: list[int]) -> None:
        if 50 in batch and -1 not in seen:
            seen.append(-1)
            raise Crash
        seen.extend(batch)

    job = Job("pg-store", list(range(100)), sink, chunk_size=10, store=store)
    with pytest.raises(Crash):
        job.run()
    report = job.run()
    assert report.status == "completed"
    assert sorted(i for i in seen if i >= 0) == list(range(100))
    assert store.chunks(report.job_id)[-1].status == "done"


def test_a_postgres_claim_skips_a_row_locked_by_another_claimer() -> None:
    """Two runners claiming at once: the second is told "owned" at once (SKIP LOCKED),
    never queued behind the first one's transaction."""
    import psycopg

    stores = postgres_store()
    store = next(stores)
    try:
        job_id = new_job(store)
        now = utcnow()
        with psycopg.connect(store.path) as other:  # type: ignore[attr-defined]
            # lock_timeout makes a blocking claim fail loudly instead of hanging the test
            other.execute("SELECT id FROM jobs WHERE id = %s FOR UPDATE", (job_id,))
            store._pg.execute("SET lock_timeout = '2s'")  # type: ignore[attr-defined]
            claimed = store.claim(
                job_id, host="b", pid=2, now=now, stale_before=now - timedelta(seconds=30)
            )
            assert claimed is None
        with pytest.raises(KeyError, match="no job"):
            store.claim("nope", host="b", pid=2, now=now, stale_before=now)
        assert store.claim(job_id, host="b", pid=2, now=now, stale_before=now) is not None
    finally:
        next(stores, None)
