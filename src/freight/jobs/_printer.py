"""Progress on a terminal (a rich bar) or in logs (milestones and periodic lines).

The bar shows what the run measured (:class:`Progress`, on the job's clock): the share
done (bytes of the file read, compressed bytes for a compressed file, or items when the
source counts them), the rate and the ETA, from the first chunk on. It does not let rich
estimate the speed itself: that needs several samples on the wall clock, so the ETA
stayed blank for a long while, and a resumed run's rate counted what was done before.
"""
# rich (extra freight[cli]) is imported only when a terminal shows a bar.
# ruff: noqa: PLC0415

from __future__ import annotations

import sys
from types import TracebackType
from typing import Any, TextIO

from freight.jobs._progress import Progress

__all__ = ["ProgressPrinter"]

MILESTONES = (0.25, 0.5, 0.75, 1.0)
_SCALE = 10_000  # the bar's total when the share done is known (steps of 0.01 %)


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
    """An ``on_progress`` callback: a rich progress bar on ``stream`` when it is a
    terminal (share done, items, rate and ETA, redrawn after every chunk), else one log
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
            from rich.console import Console
            from rich.progress import BarColumn, TaskProgressColumn, TextColumn
            from rich.progress import Progress as Bar

            self._bar = Bar(
                TextColumn("{task.description}"),
                BarColumn(),
                TaskProgressColumn(),
                TextColumn("{task.fields[processed]:,} items"),
                TextColumn("{task.fields[rate]:,.0f} items/s"),
                TextColumn("{task.fields[eta]}"),
                console=Console(file=self.stream),
                transient=False,
            )

    def __enter__(self) -> ProgressPrinter:
        if self._bar is not None:
            self._bar.start()
            self._task = self._bar.add_task(
                "processing", total=None, processed=0, rate=0.0, eta=_eta(None)
            )
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
            known = progress.fraction is not None
            self._bar.update(
                self._task,
                completed=_SCALE * (progress.fraction or 0.0),
                total=_SCALE if known else None,
                processed=progress.processed,
                rate=progress.items_per_second,
                eta=_eta(progress.eta_seconds),
            )
            self._bar.refresh()  # drawn now, not at rich's next tick on the wall clock
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
