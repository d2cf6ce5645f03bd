"""A job's time runs on its clock: heartbeats, stale owners, progress, backoff.

Every test drives a FakeClock by hand; none sleeps.
"""

from __future__ import annotations

import threading
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from freight import ConfigError, Job, RateLimiter, Retry, TransientError
from freight.jobs import JobAlreadyRunning, Progress
from freight.store import SqliteStore
from freight.store._records import utcnow
from freight.testing import FakeClock


class BeatingStore(SqliteStore):
    """A store that tells when the job's heartbeat reached it, and with what time."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.beats: list[datetime] = []
        self.beat = threading.Event()

    def heartbeat(self, job_id: str, *, now: datetime) -> None:
        super().heartbeat(job_id, now=now)
        self.beats.append(now)
        self.beat.set()


def test_heartbeats_come_every_third_of_stale_after_on_the_jobs_clock(tmp_path: Path) -> None:
    store, clock = BeatingStore(tmp_path / "f.db"), FakeClock()

    def sink(batch: list[int]) -> None:
        assert clock.wait_for_timers(1) == [clock.now() + 10]  # the next beat is armed
        clock.advance_sync(10)
        assert store.beat.wait(5)
        store.beat.clear()

    job = Job("beats", range(3), sink, chunk_size=1, stale_after=30, store=store, clock=clock)
    assert job.run().status == "completed"
    assert len(store.beats) == 3
    assert [b - store.beats[0] for b in store.beats] == [timedelta(seconds=s) for s in (0, 10, 20)]
    assert clock.pending_timers() == []  # the run's end stopped the heartbeat


def test_a_stale_owner_elsewhere_is_taken_over_once_stale_after_passed_on_the_clock(
    tmp_path: Path,
) -> None:
    store, clock = SqliteStore(tmp_path / "f.db"), FakeClock()
    job = Job("stale", range(5), lambda batch: None, stale_after=30, store=store, clock=clock)
    record = store.create_job(
        name="stale", job_type="bulk", fingerprint=job.source.fingerprint(), config={}
    )
    now = utcnow()
    store.claim(record.id, host="elsewhere", pid=1, now=now, stale_before=now)  # a live owner
    clock.advance_sync(29)
    with pytest.raises(JobAlreadyRunning, match="on elsewhere"):
        job.run()
    clock.advance_sync(2)  # 31 s without a heartbeat from elsewhere
    report = job.run()
    assert (report.job_id, report.status) == (record.id, "completed")


def test_progress_elapsed_rate_and_eta_are_measured_on_the_clock(tmp_path: Path) -> None:
    clock = FakeClock()
    seen: list[Progress] = []

    def two_seconds_between_chunks(progress: Progress) -> None:
        seen.append(progress)
        clock.advance_sync(2)

    Job(
        "progress", list(range(40)), lambda batch: None, chunk_size=10,
        on_progress=two_seconds_between_chunks, store=SqliteStore(tmp_path / "f.db"),
        clock=clock,
    ).run()  # fmt: skip
    assert [p.elapsed_seconds for p in seen] == [0, 2, 4, 6]
    assert [p.items_per_second for p in seen[1:]] == [20 / 2, 30 / 4, 40 / 6]
    assert [p.eta_seconds for p in seen[1:]] == pytest.approx([2, 4 / 3, 0])


def test_start_and_end_times_are_recorded_on_the_clock(tmp_path: Path) -> None:
    clock = FakeClock()
    report = Job(
        "timed", list(range(30)), lambda batch: clock.advance_sync(5), chunk_size=10,
        store=SqliteStore(tmp_path / "f.db"), clock=clock,
    ).run()  # fmt: skip
    assert report.summary["duration_seconds"] == 15
    assert report.summary["items_per_second"] == 2


def test_retry_backoff_waits_on_the_jobs_clock(tmp_path: Path) -> None:
    clock = FakeClock()
    calls: list[float] = []

    def sink(batch: list[int]) -> None:
        calls.append(clock.now())
        if len(calls) == 1:
            raise TransientError("busy")

    def advance_through_the_backoff() -> None:
        deadlines = clock.wait_for_timers(2)  # the backoff and the heartbeat
        assert 7.0 in deadlines
        clock.advance_sync(7)

    helper = threading.Thread(target=advance_through_the_backoff)
    helper.start()
    try:
        report = Job(
            "backoff", [1, 2], sink, retry=Retry(attempts=2, backoff=7, jitter=0),
            store=SqliteStore(tmp_path / "f.db"), clock=clock,
        ).run()  # fmt: skip
    finally:
        helper.join()
    assert report.status == "completed"
    assert calls == [0, 7]


def test_a_rate_limit_paces_the_sink_on_the_jobs_clock(tmp_path: Path) -> None:
    clock = FakeClock()
    calls: list[float] = []

    def one_second_at_a_time() -> None:
        for _ in range(2):
            assert clock.now() + 1 in clock.wait_for_timers(2)  # the pacing and the heartbeat
            clock.advance_sync(1)

    helper = threading.Thread(target=one_second_at_a_time)
    helper.start()
    try:
        report = Job(
            "paced", list(range(3)), lambda batch: calls.append(clock.now()), chunk_size=1,
            rate_limit=RateLimiter(1, burst=1), store=SqliteStore(tmp_path / "f.db"),
            clock=clock,
        ).run()  # fmt: skip
    finally:
        helper.join()
    assert report.status == "completed"
    assert calls == [0, 1, 2]


def test_a_clock_must_be_a_clock() -> None:
    bad: Any = 3.0
    with pytest.raises(ConfigError, match="clock must be a freight Clock"):
        Job("x", [1], lambda batch: None, clock=bad)
