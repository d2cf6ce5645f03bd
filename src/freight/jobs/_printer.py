"""Progress on a terminal (a rich bar) or in logs (milestones and periodic lines)."""
# rich (extra freight[cli]) is imported only when a terminal shows a bar.
# ruff: noqa: PLC0415

from __future__ import annotations

import sys
from types import TracebackType
from typing import Any, TextIO

from freight.jobs._progress import Progress

__all__ = ["ProgressPrinter"]

MILESTONES = (0.25, 0.5, 0.75, 1.0)


def _eta(seconds: float | None) -> str:
    if seconds is None:
        return "ETA unknown"
    minutes, secs = divmod(int(seconds), 60)
    return f"ETA {minutes}m{secs:02d}s"


def _has_rich() -> bool:
    try:
        import rich  # noqa: F401
    except ImportError:
        return False
    return True


class ProgressPrinter:
    """An ``on_progress`` callback: a rich progress bar on a terminal, else one log
    line per milestone (25/50/75/100 %) and one every ``every`` seconds (of the run's
    elapsed time, so on the job's clock).

    Use it as a context manager around ``job.run()`` so the bar is drawn and closed::

        with ProgressPrinter() as printer:
            job.on_progress = printer
            report = job.run()

    Without rich installed (``pip install 'freight[cli]'``) it prints lines.
    """

    def __init__(self, *, stream: TextIO | None = None, every: float = 10.0) -> None:
        self.stream = stream or sys.stderr
        self.every = every
        self._bar: Any = None
        self._task: Any = None
        self._next_milestone = 0
        self._last_line = 0.0  # the elapsed seconds of the last line printed
        if self.stream.isatty() and _has_rich():
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                TextColumn,
                TimeRemainingColumn,
            )
            from rich.progress import (
                Progress as Bar,
            )

            self._bar = Bar(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[rate]:.0f} items/s"),
                TimeRemainingColumn(),
                transient=False,
            )

    def __enter__(self) -> ProgressPrinter:
        if self._bar is not None:
            self._bar.start()
            self._task = self._bar.add_task("processing", total=None, rate=0.0)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._bar is not None:
            self._bar.stop()

    def __call__(self, progress: Progress) -> None:
        if self._bar is not None:
            total = None
            if progress.fraction:
                total = round(progress.processed / progress.fraction)
            self._bar.update(
                self._task,
                completed=progress.processed,
                total=total,
                rate=progress.items_per_second,
            )
            return
        line = (
            f"processed {progress.processed:,} (succeeded {progress.succeeded:,}, failed "
            f"{progress.failed:,}, skipped {progress.skipped:,}), "
            f"{progress.items_per_second:,.0f} items/s"
        )
        now = progress.elapsed_seconds
        milestone = None
        while (
            progress.fraction is not None
            and self._next_milestone < len(MILESTONES)
            and progress.fraction >= MILESTONES[self._next_milestone]
        ):
            milestone = MILESTONES[self._next_milestone]
            self._next_milestone += 1
        if milestone is not None:
            print(f"{milestone:.0%}: {line}, {_eta(progress.eta_seconds)}", file=self.stream)
            self._last_line = now
        elif abs(now - self._last_line) >= self.every:  # a new run starts again at 0
            print(line, file=self.stream)
            self._last_line = now
