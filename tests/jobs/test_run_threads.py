"""Where a job's chunks run, and what a run leaves of the process's GC settings."""

from __future__ import annotations

import gc
import threading
from pathlib import Path

from freight import Job
from freight.store import SqliteStore


def _threads_of_writes(tmp_path: Path, workers: int) -> set[str]:
    names: set[str] = set()

    def sink(items: list[int]) -> None:
        names.add(threading.current_thread().name)

    store = SqliteStore(tmp_path / f"s{workers}.db")
    report = Job(f"where-{workers}", range(100), sink, chunk_size=10, workers=workers,
                 store=store).run()  # fmt: skip
    store.close()
    assert report.summary["succeeded"] == 100
    return names


def test_with_one_worker_each_chunk_is_written_on_the_thread_that_runs_the_job(
    tmp_path: Path,
) -> None:
    """No handoff to a pool thread per chunk when nothing would run beside it."""
    assert _threads_of_writes(tmp_path, 1) == {threading.current_thread().name}


def test_with_several_workers_chunks_are_written_on_pool_threads(tmp_path: Path) -> None:
    names = _threads_of_writes(tmp_path, 2)
    assert threading.current_thread().name not in names
    assert all(name.startswith("freight-job-where-2") for name in names)


def test_a_run_leaves_the_host_s_gc_thresholds_alone(tmp_path: Path) -> None:
    """The library never retunes its host's collector (the freight command, whose
    process it is, does)."""
    before = gc.get_threshold()
    seen: list[tuple[int, int, int]] = []

    def sink(items: list[int]) -> None:
        seen.append(gc.get_threshold())

    store = SqliteStore(tmp_path / "gc.db")
    Job("gc", range(30), sink, chunk_size=10, store=store).run()
    store.close()
    assert seen
    assert set(seen) == {before}
    assert gc.get_threshold() == before
