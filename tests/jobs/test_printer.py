"""ProgressPrinter without a terminal: a line per milestone, else one every ``every``
seconds of the run's elapsed time (the job's clock, so no sleeping here)."""

from __future__ import annotations

import gzip
import io
from pathlib import Path
from typing import Any

import pytest

from freight import Job
from freight.jobs import CsvSource, Progress, ProgressPrinter
from freight.store import SqliteStore
from freight.testing import FakeClock


def progress(processed: int, elapsed: float, fraction: float | None) -> Progress:
    return Progress(
        job_id="j", processed=processed, succeeded=processed, failed=0, skipped=0,
        chunks_done=1, elapsed_seconds=elapsed, items_per_second=processed / max(elapsed, 1),
        fraction=fraction, eta_seconds=None if fraction is None else 60.0,
    )  # fmt: skip


def test_milestones_and_periodic_lines_follow_the_elapsed_time() -> None:
    out = io.StringIO()
    with ProgressPrinter(stream=out, every=10) as printer:
        printer(progress(10, 1, None))  # 1 s in: too soon for a line
        printer(progress(100, 11, None))  # 10 s after the start: a line
        printer(progress(300, 12, 0.3))  # past 25 %: a milestone
        printer(progress(310, 15, 0.31))  # 3 s after the last line, no new milestone
        printer(progress(1000, 16, 1.0))  # 50, 75 and 100 % at once: one line, the last
    assert out.getvalue().splitlines() == [
        "processed 100 (succeeded 100, failed 0, skipped 0), 9 items/s",
        "25%: processed 300 (succeeded 300, failed 0, skipped 0), 25 items/s, ETA 1m00s",
        "100%: processed 1,000 (succeeded 1,000, failed 0, skipped 0), 62 items/s, ETA 1m00s",
    ]


class Terminal(io.StringIO):
    """A stream that says it is a terminal: the printer draws its bar there."""

    def isatty(self) -> bool:
        return True


def test_the_bar_shows_the_share_rate_and_eta_from_the_first_chunk_on() -> None:
    out = Terminal()
    with ProgressPrinter(stream=out) as printer:
        first_chunk = Progress(
            job_id="j", processed=1_000, succeeded=1_000, failed=0, skipped=0,
            chunks_done=1, elapsed_seconds=10.0, items_per_second=100.0, fraction=0.1,
            eta_seconds=90.0,
        )  # fmt: skip
        printer(first_chunk)
        first = out.getvalue()  # drawn at once, not at rich's next tick
        assert "10%" in first
        assert "1,000 items" in first
        assert "100 items/s" in first
        assert "ETA 1m30s" in first
        printer(progress(2_000, 20.0, 0.5))
    assert "ETA 1m00s" in out.getvalue()
    assert "50%" in out.getvalue()


def test_the_bar_of_a_source_of_unknown_size_says_its_eta_is_unknown() -> None:
    out = Terminal()
    with ProgressPrinter(stream=out) as printer:
        printer(progress(500, 5.0, None))
    assert "500 items" in out.getvalue()
    assert "ETA unknown" in out.getvalue()


def test_a_gzip_files_progress_is_its_compressed_bytes_with_an_eta_from_the_first_chunk(
    tmp_path: Path,
) -> None:
    rows = b"".join(b"%d,%d\n" % (i, (i * 7919) % 100_003) for i in range(4_000))
    path = tmp_path / "rows.csv.gz"
    path.write_bytes(gzip.compress(b"id,v\n" + rows))
    clock = FakeClock()
    seen: list[Progress] = []

    def one_second_a_chunk(batch: list[Any]) -> None:
        clock.advance_sync(1)

    Job(
        "gz progress", CsvSource(path), one_second_a_chunk, chunk_size=500,
        on_progress=seen.append, store=SqliteStore(tmp_path / "f.db"), clock=clock,
    ).run()  # fmt: skip
    fractions = [p.fraction for p in seen]
    assert len(seen) == 8
    assert all(f is not None for f in fractions)
    known = [f for f in fractions if f is not None]
    assert known == sorted(known)
    assert known[-1] == 1.0
    # measured in compressed bytes, so proportional to the rows read, never past 100 %
    assert [round(f, 1) for f in known] == pytest.approx([i / 8 for i in range(1, 9)], abs=0.1)
    first = seen[0]  # (the next chunk may be written before it is reported)
    assert first.elapsed_seconds >= 1
    assert first.items_per_second == 500 / first.elapsed_seconds
    assert first.fraction is not None
    assert first.eta_seconds == pytest.approx(
        first.elapsed_seconds * (1 - first.fraction) / first.fraction
    )
    assert first.eta_seconds is not None
    assert first.eta_seconds > 0


def test_a_resumed_gzip_runs_eta_counts_from_where_it_resumed(tmp_path: Path) -> None:
    rows = b"".join(b"%d,%d\n" % (i, (i * 7919) % 100_003) for i in range(4_000))
    path = tmp_path / "rows.csv.gz"
    path.write_bytes(gzip.compress(b"id,v\n" + rows))
    store, clock = SqliteStore(tmp_path / "f.db"), FakeClock()

    def cancel_at_half(progress: Progress) -> None:
        if progress.processed >= 2_000:
            SqliteStore(store.path).request(progress.job_id, "cancel")

    def one_second_a_chunk(batch: list[Any]) -> None:
        clock.advance_sync(1)

    first = Job(
        "gz resume", CsvSource(path), one_second_a_chunk, chunk_size=500,
        on_progress=cancel_at_half, store=store, clock=clock,
    ).run()  # fmt: skip
    assert first.status == "cancelled"
    done = first.summary["processed"]
    seen: list[Progress] = []
    resumed = Job(
        "gz resume", CsvSource(path), one_second_a_chunk, chunk_size=500,
        on_progress=seen.append, store=store, clock=clock,
    ).run()  # fmt: skip
    assert resumed.status == "completed"
    p = seen[0]
    start = done / 4_000  # the share done before (rows, as bytes here are proportional)
    assert p.fraction is not None
    assert p.eta_seconds is not None
    assert p.fraction == pytest.approx(start + 500 / 4_000, abs=0.05)
    # the rate of this run alone: what it did in its elapsed time, not what was done before
    assert p.eta_seconds == pytest.approx(
        p.elapsed_seconds * (1 - p.fraction) / (p.fraction - start), rel=0.3
    )
