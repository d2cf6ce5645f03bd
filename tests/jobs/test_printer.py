"""ProgressPrinter without a terminal: a line per milestone, else one every ``every``
seconds of the run's elapsed time (the job's clock, so no sleeping here)."""

from __future__ import annotations

import io

from freight.jobs import Progress, ProgressPrinter


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
