"""Job: chunks, checkpoints, resume, dead letters, thresholds, control and the report."""

from __future__ import annotations

import logging
import os
import threading
from collections import Counter
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from freight import ConfigError, Job, Retry, TargetError, TransientError
from freight._process import host as this_host
from freight.jobs import CsvSource, IterableSource, JobAlreadyRunning, Progress, WriteContext
from freight.jobs._run import PAUSE_POLL
from freight.store import SqliteStore
from freight.store._records import utcnow
from freight.testing import FakeClock


class Crash(BaseException):
    """Stands for the process dying mid-run (not an Exception: nothing catches it)."""


class Table:
    """An idempotent sink: upsert by key, counting every write."""

    def __init__(self, crash_on_chunk: int | None = None) -> None:
        self.rows: dict[Any, Any] = {}
        self.writes: Counter[Any] = Counter()
        self.crash_on_chunk = crash_on_chunk
        self.contexts: list[WriteContext] = []

    def write(self, items: list[Any], context: WriteContext) -> None:
        if context.chunk_index == self.crash_on_chunk:
            raise Crash
        self.contexts.append(context)
        for item in items:
            self.rows[item["id"]] = item
            self.writes[item["id"]] += 1


@pytest.fixture
def store(tmp_path: Path) -> SqliteStore:
    return SqliteStore(tmp_path / "freight.db")


def items(n: int) -> list[dict[str, int]]:
    return [{"id": i, "amount": i * 10} for i in range(n)]


def test_run_processes_every_item_in_chunks_and_reports(store: SqliteStore) -> None:
    table = Table()
    seen: list[Progress] = []
    job = Job("load", items(25), table, chunk_size=10, store=store, on_progress=seen.append)
    report = job.run()
    assert report.status == "completed"
    assert len(table.rows) == 25
    assert [c.chunk_index for c in table.contexts] == [0, 1, 2]
    summary = report.summary
    assert (summary["total_items"], summary["processed"], summary["succeeded"]) == (25, 25, 25)
    assert summary["failed"] == summary["skipped"] == 0
    data = report.to_dict()
    assert set(data) >= {
        "job_id",
        "job_type",
        "started_at",
        "completed_at",
        "status",
        "summary",
        "errors",
        "error_categories",
        "last_checkpoint",
        "metadata",
        "remediation",
    }
    assert data["metadata"] == {
        "chunk_size": 10,
        "num_chunks": 3,
        "workers": 1,
        "retry_attempts": 1,
    }
    assert data["last_checkpoint"]["chunk_index"] == 2
    assert data["remediation"]["can_retry"] is False
    assert [p.chunks_done for p in seen] == [1, 2, 3]
    assert seen[-1].fraction == 1.0


def test_a_crashed_run_resumes_without_redoing_done_chunks(store: SqliteStore) -> None:
    table = Table(crash_on_chunk=2)
    job = Job("resume", items(45), table, chunk_size=10, store=store)
    with pytest.raises(Crash):
        job.run()
    assert set(range(20)) <= set(table.rows)  # chunks 0-1, maybe chunk 3 (in flight)
    assert not set(range(20, 30)) & set(table.rows)
    table.crash_on_chunk = None
    report = job.run()
    assert report.status == "completed"
    assert sorted(table.rows) == list(range(45))
    assert max(table.writes.values()) == 1  # chunks 0 and 1 were not written again
    assert report.summary["processed"] == 45


def test_resume_seeks_in_a_csv_file(store: SqliteStore, tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text("id,amount\n" + "".join(f"{i},{i * 2}\n" for i in range(30)))
    table = Table(crash_on_chunk=1)
    job = Job(
        "csv",
        CsvSource(path, convert=lambda r: {"id": int(r["id"])}),
        table,
        chunk_size=7,
        store=store,
    )
    with pytest.raises(Crash):
        job.run()
    table.crash_on_chunk = None
    assert job.run().summary["processed"] == 30
    assert sorted(table.rows) == list(range(30))
    assert max(table.writes.values()) == 1


def test_bad_records_are_dead_lettered_with_line_numbers(
    store: SqliteStore, tmp_path: Path
) -> None:
    path = tmp_path / "bad.csv"
    path.write_bytes(b"id,amount\n1,10\n2,x\n3,30,9\n\n4,\xff\n5,50\n")

    def convert(row: dict[str, str]) -> dict[str, int]:
        return {"id": int(row["id"]), "amount": int(row["amount"])}

    table = Table()
    report = Job("bad", CsvSource(path, convert=convert), table, chunk_size=3, store=store).run()
    assert report.status == "completed_with_errors"
    assert sorted(table.rows) == [1, 5]
    errors = {e["item"]: e for e in report["errors"]}
    assert set(errors) == {"line 3", "line 4", "line 6"}
    assert errors["line 4"]["message"] == "expected 2 columns, got 3"
    assert all(e["category"] == "validation" for e in errors.values())
    assert report["error_categories"] == {"validation": 3}
    assert report.summary["skipped"] == 1
    assert report["remediation"]["can_retry"] is True


def test_item_failures_never_stop_the_job(store: SqliteStore) -> None:
    calls: Counter[int] = Counter()

    def sink(batch: list[dict[str, int]]) -> list[object]:
        out: list[object] = []
        for item in batch:
            calls[item["id"]] += 1
            if item["id"] == 3 and calls[3] == 1:
                out.append(TransientError("busy"))
            elif item["id"] == 7:
                out.append(ValueError("rejected"))
            else:
                out.append(None)
        return out

    retry = Retry(attempts=3, backoff=0, jitter=0)
    report = Job("items", items(10), sink, chunk_size=5, retry=retry, store=store).run()
    assert report.status == "completed_with_errors"
    assert calls[3] == 2  # retried once, then fine
    [error] = report["errors"]
    assert (error["item"], error["category"], error["error_type"]) == (
        "item 7",
        "permanent",
        "ValueError",
    )


def test_poison_item_in_a_raising_sink_is_isolated(store: SqliteStore) -> None:
    def sink(batch: list[dict[str, int]]) -> None:
        if any(item["id"] == 13 for item in batch):
            raise ValueError("constraint violated by 13")

    report = Job(
        "poison", items(20), sink, chunk_size=20, retry=Retry(attempts=1), store=store
    ).run()
    assert report.summary["succeeded"] == 19
    assert [e["item"] for e in report["errors"]] == ["item 13"]


def test_process_per_item_and_per_chunk(store: SqliteStore) -> None:
    table = Table()

    def double(item: dict[str, int]) -> dict[str, int]:
        if item["id"] == 2:
            raise ValueError("no twos")
        return {**item, "amount": item["amount"] * 2}

    report = Job("per-item", items(5), table, process=double, chunk_size=2, store=store).run()
    assert report.summary["failed"] == 1
    assert table.rows[4]["amount"] == 80

    chunk_table = Table()
    Job(
        "per-chunk",
        items(4),
        chunk_table,
        process_chunk=lambda batch: [{**i, "amount": -1} for i in batch],
        chunk_size=4,
        store=store,
    ).run()
    assert {r["amount"] for r in chunk_table.rows.values()} == {-1}


def test_failure_rate_threshold_fails_the_run_and_keeps_checkpoints(store: SqliteStore) -> None:
    def sink(batch: list[dict[str, int]]) -> list[object]:
        return [ValueError("bad") if item["id"] % 10 == 0 else None for item in batch]

    job = Job("rate", items(100), sink, chunk_size=10, max_failure_rate=0.05, store=store)
    report = job.run()
    assert report.status == "failed"
    assert "max_failure_rate=5.0%" in report["reason"]
    assert report["remediation"]["can_retry"] is True
    assert store.chunks(report.job_id)[0].status == "done"

    fixed = Job("rate", items(100), lambda batch: None, chunk_size=10, store=store).run()
    assert fixed.job_id == report.job_id  # the fixed run resumed from the checkpoints
    assert (fixed.status, fixed.summary["processed"]) == ("completed_with_errors", 100)

    capped = Job("cap", items(100), sink, chunk_size=10, max_failures=2, store=store).run()
    assert capped.status == "failed"
    assert "max_failures=2" in capped["reason"]


def test_a_target_that_refuses_every_row_stops_the_run_with_one_reason(
    store: SqliteStore,
) -> None:
    calls: list[int] = []

    def sink(batch: list[dict[str, int]]) -> list[object]:
        calls.append(len(batch))
        return [TargetError("no such table: people") for _ in batch]

    job = Job("target", items(100), sink, chunk_size=10, store=store)
    with pytest.raises(TargetError, match="no such table"):
        job.run()
    run = store.latest_job("target")
    assert run is not None
    assert run.status == "failed"
    assert "no such table" in (run.reason or "")
    assert store.dead_letters(run.id) == []  # never one dead letter per row
    assert calls == [10]  # the first chunk's one call: no retry, no bisection, no next chunk


def test_a_changed_source_is_refused_unless_fresh(store: SqliteStore, tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_text("id\n1\n")
    Job("data", CsvSource(path), lambda batch: None, store=store).run()
    path.write_text("id\n1\n2\n")
    with pytest.raises(ConfigError, match="different data"):
        Job("data", CsvSource(path), lambda batch: None, store=store).run()
    report = Job("data", CsvSource(path), lambda batch: None, store=store).run(fresh=True)
    assert report.summary["processed"] == 2


def test_a_finished_run_is_reported_not_redone(store: SqliteStore) -> None:
    table = Table()
    job = Job("once", items(5), table, store=store)
    first = job.run()
    second = job.run()
    assert second.job_id == first.job_id
    assert max(table.writes.values()) == 1


def test_a_live_owner_is_never_run_twice_and_a_dead_one_is_taken_over(store: SqliteStore) -> None:
    job = Job("owned", items(5), Table(), store=store)
    record = store.create_job(
        name="owned", job_type="bulk", fingerprint=job.source.fingerprint(), config={}
    )
    now = utcnow()
    host = this_host()
    store.claim(record.id, host=host, pid=os.getppid(), now=now, stale_before=now)  # alive
    with pytest.raises(JobAlreadyRunning, match="is running in process"):
        job.run()
    dead_pid = 2**22 + 12345  # its process died: the claim stays, the pid is gone
    later = now + timedelta(seconds=1)
    store.claim(record.id, host=host, pid=dead_pid, now=now, stale_before=later)
    report = job.run()
    assert report.job_id == record.id
    assert report.status == "completed"
    assert "taken_over" in [e.kind for e in store.events(record.id)]


def test_cancel_from_another_process_stops_between_chunks(store: SqliteStore) -> None:
    table = Table()

    def cancel_after_first(progress: Progress) -> None:
        SqliteStore(store.path).request(progress.job_id, "cancel")  # a second connection

    job = Job(
        "cancel", items(50), table, chunk_size=10, store=store, on_progress=cancel_after_first
    )
    report = job.run()
    assert report.status == "cancelled"
    assert report.summary["processed"] < 50
    resumed = Job("cancel", items(50), table, chunk_size=10, store=store).run()
    assert resumed.status == "completed"
    assert sorted(table.rows) == list(range(50))


class _Paused(logging.Handler):
    """Sets an event when the run says it is paused (what the CLI prints)."""

    def __init__(self) -> None:
        super().__init__()
        self.event = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if "paused" in record.getMessage():
            self.event.set()


def test_pause_then_resume_from_another_process(store: SqliteStore) -> None:
    """The paused run looks at the store every PAUSE_POLL seconds of its clock: the test
    moves the clock instead of sleeping."""
    table = Table()
    clock = FakeClock()
    listener = _Paused()
    jobs_log = logging.getLogger("freight.jobs")
    jobs_log.addHandler(listener)
    jobs_log.setLevel(logging.INFO)

    def pause_once(progress: Progress) -> None:
        if progress.chunks_done == 1:
            SqliteStore(store.path).request(progress.job_id, "pause")

    def resume_once_paused() -> None:
        assert listener.event.wait(10)
        other = SqliteStore(store.path)
        job_id = other.latest_job("pause").id  # type: ignore[union-attr]
        assert other.get_job(job_id).status == "paused"  # type: ignore[union-attr]
        other.request(job_id, "resume")
        assert PAUSE_POLL in clock.wait_for_timers(2)  # the pause poll and the heartbeat
        clock.advance_sync(PAUSE_POLL)

    helper = threading.Thread(target=resume_once_paused)
    helper.start()
    try:
        report = Job(
            "pause", items(30), table, chunk_size=10, store=store, on_progress=pause_once,
            clock=clock,
        ).run()  # fmt: skip
    finally:
        helper.join()
        jobs_log.removeHandler(listener)
    assert report.status == "completed"
    assert len(table.rows) == 30
    kinds = [e.kind for e in store.events(report.job_id)]
    assert kinds.count("paused") == 1
    assert kinds.count("resumed") == 1


def test_parallel_workers_and_keys(store: SqliteStore) -> None:
    table = Table()
    report = Job(
        "parallel", items(200), table, chunk_size=10, workers=4, key=lambda i: i["id"], store=store
    ).run()
    assert report.summary["succeeded"] == 200
    assert all(c.keys is not None and len(c.keys) == 10 for c in table.contexts)


async def test_arun_runs_the_same_job_from_asyncio(store: SqliteStore) -> None:
    report = await Job("async", items(3), Table(), store=store).arun()
    assert report.status == "completed"


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"name": ""}, "name"),
        ({"chunk_size": 0}, "chunk_size"),
        ({"chunk_size": "big"}, "chunk_size"),
        ({"chunk_size": "auto", "min_chunk_size": 10, "max_chunk_size": 5}, "max_chunk_size"),
        ({"workers": 0}, "workers"),
        ({"executor": "fibers"}, "executor"),
        ({"max_failure_rate": 2}, "max_failure_rate"),
        ({"max_failures": -1}, "max_failures"),
        ({"retry": 3}, "retry"),
        ({"sink": 3}, "sink"),
        ({"source": 3}, "source"),
        ({"process": 3}, "process"),
        ({"process": abs, "process_chunk": abs}, "either"),
    ],
)
def test_bad_configuration_fails_before_any_work(kwargs: dict[str, Any], fragment: str) -> None:
    args: dict[str, Any] = {"name": "x", "source": [1], "sink": lambda batch: None, **kwargs}
    with pytest.raises(ConfigError, match=fragment):
        Job(**args)


def test_retry_failed_replays_only_the_dead_letters(store: SqliteStore) -> None:
    broken = {3, 8, 11}
    written: Counter[int] = Counter()

    def sink(batch: list[dict[str, int]]) -> list[object]:
        out: list[object] = []
        for item in batch:
            if item["id"] in broken:
                out.append(ValueError(f"db rejected {item['id']}"))
            else:
                written[item["id"]] += 1
                out.append(None)
        return out

    job = Job("replay", items(15), sink, chunk_size=5, store=store)
    first = job.run()
    assert (first.status, first.summary["failed"]) == ("completed_with_errors", 3)
    broken.discard(3)
    broken.discard(8)  # the cause is fixed for two of them
    again = job.retry_failed()
    assert again.status == "completed_with_errors"
    assert (again.summary["succeeded"], again.summary["failed"]) == (14, 1)
    assert [d.record_id for d in store.dead_letters(first.job_id)] == ["item 11"]
    assert store.dead_letters(first.job_id)[0].attempts == 2
    broken.clear()
    final = job.retry_failed(first.job_id)
    assert (final.status, final.summary["failed"]) == ("completed", 0)
    assert written == Counter(dict.fromkeys(range(15), 1))  # nothing written twice
    assert "retried_failed" in [e.kind for e in store.events(first.job_id)]


def test_retry_failed_refuses_a_changed_source(store: SqliteStore, tmp_path: Path) -> None:
    path = tmp_path / "r.csv"
    path.write_text("id\n1\n")
    Job("r", CsvSource(path), lambda batch: [ValueError("no")], store=store).run()
    path.write_text("id\n2\n")
    with pytest.raises(ConfigError, match="changed since run"):
        Job("r", CsvSource(path), lambda batch: None, store=store).retry_failed()
    with pytest.raises(ConfigError, match="no run of job"):
        Job("never", [1], lambda batch: None, store=store).retry_failed()


def test_resume_keeps_the_boundaries_of_chunks_started_before(store: SqliteStore) -> None:
    from freight.store import ChunkCheckpoint

    seen: list[int] = []
    job = Job("bounds", list(range(60)), seen.extend, chunk_size=7, store=store)
    record = store.create_job(
        name="bounds", job_type="bulk", fingerprint=job.source.fingerprint(), config={}
    )
    # An earlier execution (chunk size 10, 15, ...): chunk 0 done, 1 in flight, 2 done, 3 in flight.
    store.commit_chunk(
        record.id,
        ChunkCheckpoint(index=0, start=(0, 0), end=(10, 10), status="done", items=10, succeeded=10),
    )
    store.start_chunk(record.id, ChunkCheckpoint(index=1, start=(10, 10)))
    store.commit_chunk(
        record.id,
        ChunkCheckpoint(
            index=2, start=(25, 25), end=(40, 40), status="done", items=15, succeeded=15
        ),
    )
    store.start_chunk(record.id, ChunkCheckpoint(index=3, start=(40, 40)))
    report = job.run()
    assert sorted(seen) == list(range(10, 25)) + list(range(40, 60))
    assert len(seen) == len(set(seen))
    assert report.summary["processed"] == 60
    indexes = [c.index for c in store.chunks(record.id)]
    assert indexes == [0, 1, 2, 3, 4, 5]  # chunk 3 reopened with size 7, then new chunks 4, 5


def test_auto_chunk_size_adapts_within_its_bounds(store: SqliteStore) -> None:
    from freight.jobs._chunking import ChunkSizer as _ChunkSizer

    sizer = _ChunkSizer(None, target=1.0, low=100, high=5000)
    assert sizer.size == 1000
    sizer.observe(1000, 0.1)  # 10,000 items/s: halfway to 10,000, capped at 5,000
    assert sizer.size == 5000
    sizer.observe(3000, 3.0)  # 1,000 items/s: halfway to 1,000
    assert sizer.size == 3000
    sizer.observe(0, 1.0)
    assert sizer.size == 3000
    fixed = _ChunkSizer(50, target=1.0, low=1, high=10)
    fixed.observe(1, 100.0)
    assert fixed.size == 50

    seen: list[int] = []
    report = Job(
        "auto", list(range(5000)), seen.extend, chunk_size="auto", min_chunk_size=100,
        max_chunk_size=2000, store=store,
    ).run()  # fmt: skip
    assert sorted(seen) == list(range(5000))
    sizes = [c.items for c in store.chunks(report.job_id)]
    assert all(100 <= size <= 2000 for size in sizes[:-1])
    assert report["metadata"]["chunk_size"] == "auto"


def test_async_sinks_and_processes_run_on_the_async_executor(store: SqliteStore) -> None:
    import asyncio

    written: list[int] = []

    class AsyncTable:
        async def write(self, batch: list[int], context: WriteContext) -> list[object]:
            await asyncio.sleep(0)
            written.extend(batch)
            return [None] * len(batch)

    async def check(item: int) -> int:
        await asyncio.sleep(0)
        if item == 4:
            raise ValueError("no fours")
        return item * 10

    report = Job(
        "async-exec", list(range(10)), AsyncTable(), process=check, executor="async",
        chunk_size=3, workers=2, store=store,
    ).run()  # fmt: skip
    assert sorted(written) == [i * 10 for i in range(10) if i != 4]
    assert [e["item"] for e in report["errors"]] == ["item 4"]

    with pytest.raises(ConfigError, match=r"sink.write is async: use executor='async'"):
        Job("wrong", [1], AsyncTable(), store=store)
    with pytest.raises(ConfigError, match="process is async"):
        Job("wrong", [1], lambda batch: None, process=check, store=store)


def test_processes_executor_handles_chunks_in_worker_processes(
    store: SqliteStore, tmp_path: Path
) -> None:
    import sqlite3

    from freight.connectors.sqlite import SqliteSink
    from tests.jobs import process_helpers

    db = tmp_path / "out.db"
    report = Job(
        "procs", items(40), SqliteSink(db, "squares", key="id"), process=process_helpers.square,
        executor="processes", workers=2, chunk_size=10, store=store,
    ).run()  # fmt: skip
    assert [e["item"] for e in report["errors"]] == ["item 13"]
    with sqlite3.connect(db) as conn:
        rows = conn.execute('SELECT id, square, pid FROM "squares" ORDER BY id').fetchall()
    assert [(i, s) for i, s, _ in rows] == [(i, i * i) for i in range(40) if i != 13]
    assert os.getpid() not in {pid for _, _, pid in rows}  # handled in other processes

    with pytest.raises(ConfigError, match="process must be picklable"):
        Job("p", [1], process_helpers.square, process=lambda x: x, executor="processes")
    with pytest.raises(ConfigError, match="rate_limit cannot be shared"):
        Job("p", [1], process_helpers.square, rate_limit=5, executor="processes")


def test_malformed_csv_corpus_is_dead_lettered_line_by_line(
    store: SqliteStore, tmp_path: Path
) -> None:
    path = tmp_path / "corpus.csv"
    with path.open("wb") as f:
        f.write(b"id,amount\n1,10\n2,10,extra\n3,ten\n4,\xff\xfe\n\n")
        f.write(b'5,"' + b"x" * (10 * 1024 * 1024) + b'"\n6,20\n7,"30')

    def convert(row: dict[str, str]) -> dict[str, int]:
        return {"id": int(row["id"]), "amount": int(row["amount"])}

    table = Table()
    report = Job("corpus", CsvSource(path, convert=convert), table, chunk_size=2, store=store).run()
    assert report.status == "completed_with_errors"
    assert sorted(table.rows) == [1, 6]
    reasons = {e["item"]: e["message"] for e in report["errors"]}
    assert set(reasons) == {"line 3", "line 4", "line 5", "line 7", "line 9"}
    assert "expected 2 columns" in reasons["line 3"]
    assert "invalid literal" in reasons["line 4"]
    assert "invalid utf-8" in reasons["line 5"]
    assert "invalid literal for int()" in reasons["line 7"]  # a 10 MB field is read
    assert "malformed CSV" in reasons["line 9"]
    assert report.summary["skipped"] == 1  # the blank line 6


def test_the_report_is_a_json_ready_dict(store: SqliteStore) -> None:
    import json

    report = Job("dict", items(3), Table(), store=store).run()
    assert isinstance(report, dict)
    assert json.loads(json.dumps(report))["summary"]["processed"] == 3
    assert report.to_dict() == json.loads(report.to_json())


def test_a_finished_run_is_released_for_other_processes(store: SqliteStore) -> None:
    report = Job("released", items(3), Table(), store=store).run()
    record = store.get_job(report.job_id)
    assert record is not None
    assert (record.owner_host, record.owner_pid) == (None, None)
    now = utcnow()
    assert store.claim(report.job_id, host="other", pid=99, now=now, stale_before=now) is not None


def test_store_may_be_given_as_a_path_or_url(tmp_path: Path) -> None:
    import freight

    by_path = Job("p", [1, 2], lambda batch: None, store=tmp_path / "a.db").run()
    assert by_path.summary["processed"] == 2
    by_url = Job("u", [1], lambda batch: None, store=f"sqlite:///{tmp_path}/b.db").run()
    assert SqliteStore(tmp_path / "b.db").get_job(by_url.job_id) is not None
    with pytest.raises(ConfigError, match="store must be"):
        Job("x", [1], lambda batch: None, store=42)  # type: ignore[arg-type]
    assert freight.CsvSource is CsvSource


def test_a_run_whose_owner_was_killed_and_not_yet_reaped_is_taken_over(
    store: SqliteStore,
) -> None:
    """A process killed with SIGKILL stays a zombie (state Z) until its parent reaps it;
    ``kill(pid, 0)`` still succeeds on it, yet it will never beat again: it is dead."""
    import signal
    import subprocess
    import sys

    from freight._process import alive as _alive

    child = subprocess.Popen([sys.executable, "-c", "import signal; signal.pause()"])
    try:
        os.kill(child.pid, signal.SIGKILL)
        os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)  # exited, left unreaped
        assert not _alive(child.pid)
        job = Job("zombie", items(5), Table(), store=store)
        record = store.create_job(
            name="zombie", job_type="bulk", fingerprint=job.source.fingerprint(), config={}
        )
        now = utcnow()
        store.claim(record.id, host=this_host(), pid=child.pid, now=now, stale_before=now)
        report = job.run()  # the heartbeat is fresh, but its process is a zombie
        assert (report.job_id, report.status) == (record.id, "completed")
        assert "taken_over" in [e.kind for e in store.events(record.id)]
    finally:
        child.wait()
    assert _alive(os.getpid())
    assert not _alive(None)


def hold_back_even_chunks(chunks: int) -> Callable[[list[dict[str, int]]], Any]:
    """A ``process_chunk`` holding each even chunk of 10 until the next one is processed:
    the odd chunk reaches the sink first (with workers > 1)."""
    processed = {index: threading.Event() for index in range(chunks)}

    def hold_back(chunk: list[dict[str, int]]) -> list[dict[str, int]]:
        index = chunk[0]["seq"] // 10
        if index % 2 == 0 and index + 1 < chunks:
            processed[index + 1].wait()  # the odd chunk after it runs meanwhile
        processed[index].set()
        return chunk

    return hold_back


def test_with_ordered_writes_the_last_value_of_a_key_wins_across_concurrent_chunks(
    store: SqliteStore,
) -> None:
    """Each even chunk is held back until the next chunk is processed, so the odd chunk
    reaches the sink first; with ordered writes it waits for its turn all the same."""
    table = Table()
    # 200 items in chunks of 10; every key comes back in each chunk: the last value wins
    rows = [{"id": seq % 10, "seq": seq} for seq in range(200)]
    job = Job("last-wins", rows, table, chunk_size=10, workers=4, ordered_writes=True,
              process_chunk=hold_back_even_chunks(20), store=store)  # fmt: skip
    assert job.run().status == "completed"
    assert [c.chunk_index for c in table.contexts] == list(range(20))  # written in order
    assert {k: v["seq"] for k, v in table.rows.items()} == {k: 190 + k for k in range(10)}


def test_ordered_writes_are_refused_with_worker_processes() -> None:
    with pytest.raises(ConfigError, match="ordered_writes"):
        Job("x", [1], lambda batch: None, executor="processes", ordered_writes=True)


def test_ordered_writes_in_a_shared_postgres_transaction_keep_the_last_value(
    tmp_path: Path,
) -> None:
    """Upserts into the store's own database (rows and checkpoint in one transaction)
    with more workers than the sink's pool has connections: a chunk waiting for its
    turn holds no connection, so the one whose turn it is always gets one."""
    import uuid

    import psycopg
    from psycopg import sql

    from freight.connectors.postgres import PostgresSink
    from freight.store._postgres import PostgresStore
    from tests.services import POSTGRES_URL, require

    require("127.0.0.1", 5432, "PostgreSQL")
    schema = f"freight_order_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
        conn.execute(
            sql.SQL("CREATE TABLE {} (id bigint PRIMARY KEY, seq bigint)").format(
                sql.Identifier(schema, "t")
            )
        )
    conninfo = f"{POSTGRES_URL}?options=-csearch_path%3D{schema}"
    try:
        store = PostgresStore(conninfo)
        sink = PostgresSink(conninfo, "t", key="id", columns=["id", "seq"], pool_size=2)
        rows = [{"id": seq % 10, "seq": seq} for seq in range(400)]
        job = Job("pg-last-wins", rows, sink, chunk_size=10, workers=4, ordered_writes=True,
                  process_chunk=hold_back_even_chunks(40), store=store)  # fmt: skip
        assert job.run().status == "completed"
        with psycopg.connect(conninfo) as conn:
            kept: dict[int, int] = dict(conn.execute("SELECT id, seq FROM t").fetchall())
        assert kept == {k: 390 + k for k in range(10)}
        sink.close()
        store.close()
    finally:
        with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


def test_dead_lettered_errors_leave_no_cycles_for_the_collector(tmp_path: Path) -> None:
    """A refused row's error, once dead-lettered, keeps no frames alive: ``freight load``
    runs the cyclic collector rarely (a tuple per row), and every bad row's traceback,
    kept, pinned its stack's locals until a full collection (~10 KB a row: a load of
    40,000 duplicate keys into SQLite peaked at 460 MB)."""
    import gc
    import sqlite3

    from freight import PermanentError
    from freight.connectors.sqlite import SqliteSink

    target = tmp_path / "t.db"
    with sqlite3.connect(target) as db:
        db.execute("CREATE TABLE t (id BIGINT PRIMARY KEY)")
        db.executemany("INSERT INTO t VALUES (?)", [(i,) for i in range(500)])
    source = IterableSource([{"id": i} for i in range(500)])
    job = Job("dups", source, SqliteSink(target, "t"), store=SqliteStore(tmp_path / "s.db"))
    gc.collect()
    gc.disable()
    try:
        report = job.run()
        alive = sum(isinstance(o, PermanentError) for o in gc.get_objects())
    finally:
        gc.enable()
    assert report.summary["failed"] == 500
    assert alive < 10
