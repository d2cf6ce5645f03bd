"""``Job``: a dataset processed in checkpointed chunks that resume after a crash.

How a run goes (the guarantees are in ``docs/jobs.md``):

1. The run is found or created in the store: the same ``name`` and source
   fingerprint resume the latest unfinished run; a finished run is reported, not
   redone; a changed source is refused unless ``fresh=True``.
2. The run is claimed: a live owner elsewhere makes this runner refuse; an owner
   whose heartbeat is stale, or whose pid is gone on this host, is taken over.
3. Reading restarts at the first chunk not done (its recorded start position);
   later chunks already done are read past, not processed again.
4. Each chunk: bad records and failing items become dead letters; the rest go
   through ``process`` and the sink under the ``retry`` policy; then the chunk's
   checkpoint, its dead letters and the run's counters commit in one transaction.
   Items are delivered at least once; an idempotent sink makes that exactly once.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import inspect
import os
import random
import signal
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Generator, Hashable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Literal

from freight._core._retry import Retry
from freight._core._time import to_positive_int, to_seconds
from freight._drivers._asyncio import is_async_callable
from freight._drivers._engine import check_rate_limit, check_retry
from freight._drivers._sync import call_handler, run_plan
from freight._errors import ConfigError, FreightError, HandlerContractError
from freight._ratelimit import RateLimiter
from freight.jobs._progress import Progress
from freight.jobs._report import JobReport, load_report
from freight.jobs._sink import WriteContext, as_sink
from freight.jobs._sources import BLANK, Position, Record, RecordError, as_source
from freight.store import ChunkCheckpoint, DeadLetter, JobRecord, SqliteStore, Store
from freight.store._records import utcnow

__all__ = ["Job", "JobAlreadyRunning", "JobStopped"]

_EXCERPT = 200
_DONE = frozenset({"completed", "completed_with_errors"})  # a run of these is not redone


class JobAlreadyRunning(FreightError):
    """Another live process is running this job; it is never run twice at once."""


class JobStopped(FreightError):
    """Raised inside a run to stop it (threshold exceeded, cancelled)."""


@dataclass(slots=True)
class _Chunk:
    index: int
    records: list[Record]
    end: Position | None = None


@dataclass(slots=True)
class _Outcome:
    checkpoint: ChunkCheckpoint
    dead: list[DeadLetter] = field(default_factory=list)


def _category(error: BaseException, retry: Retry | None) -> str:
    if isinstance(error, RecordError) or type(error).__name__ == "ValidationError":
        return "validation"
    if isinstance(error, HandlerContractError):
        return "contract"
    if retry is not None and retry.is_transient(error):
        return "retries_exhausted"
    return "permanent"


def _letter(
    record: Record, error: BaseException, category: str, attempts: int, index: int
) -> DeadLetter:
    payload = record.raw or repr(record.item)
    return DeadLetter(
        record_id=record.id,
        position=record.position,
        payload=payload[:_EXCERPT],
        error_type=type(error).__name__,
        message=str(error)[:1000],
        category=category,
        attempts=attempts,
        chunk_index=index,
    )


class Job:
    """A bulk job: ``source`` → optional ``process`` → ``sink``, in checkpointed chunks.

    ::

        job = Job("import-users", CsvSource("users.csv"), sink=upsert_users, chunk_size=5000)
        report = job.run()          # resumes if a previous run of "import-users" stopped
        print(report.to_json())

    Args:
        name: the job's name; runs of the same name and source resume each other.
        source: a :class:`~freight.jobs.Source`, a ``.csv``/``.jsonl`` path, or an iterable.
        sink: a :class:`~freight.jobs.Sink` or a callable ``(items[, context]) -> outcomes``.
        process: ``item -> item`` applied to each item before the sink; raising
            dead-letters that item.
        process_chunk: ``list -> list`` applied per chunk (the handler contract).
        chunk_size: items per chunk (one checkpoint per chunk), or ``"auto"``: sized
            from measured throughput to take about ``chunk_seconds`` each, between
            ``min_chunk_size`` and ``max_chunk_size``.
        workers: chunks processed at once (threads).
        executor: ``"threads"``; or ``"async"`` for ``async def`` sinks and
            process functions, awaited on one event loop (``workers`` chunks at once).
        retry: the :class:`~freight.Retry` policy for process and sink calls.
        rate_limit: a :class:`~freight.RateLimiter` pacing sink writes.
        max_failures: stop the run (status ``failed``) once more items failed.
        max_failure_rate: stop the run once the failed fraction exceeds this,
            measured after at least one chunk.
        key: ``item -> hashable`` idempotency key, handed to the sink.
        store: where runs are kept (default: ``SqliteStore()`` at ``.freight/freight.db``).
        on_progress: called with a :class:`Progress` after every chunk.
        stale_after: seconds without a heartbeat after which a run's owner is dead.
        metadata: JSON-compatible values kept with each run (the CLI records how to
            rebuild the job, for ``freight resume`` and ``freight retry-failed``).
    """

    def __init__(
        self,
        name: str,
        source: Any,
        sink: Any,
        *,
        process: Callable[[Any], Any] | None = None,
        process_chunk: Callable[[list[Any]], Any] | None = None,
        chunk_size: int | Literal["auto"] = 1000,
        workers: int = 1,
        executor: Literal["threads", "async"] = "threads",
        retry: Retry | None = None,
        rate_limit: RateLimiter | float | None = None,
        max_failures: int | None = None,
        max_failure_rate: float | None = None,
        key: Callable[[Any], Hashable] | None = None,
        store: Store | None = None,
        on_progress: Callable[[Progress], None] | None = None,
        stale_after: float | timedelta = 30.0,
        metadata: dict[str, Any] | None = None,
        chunk_seconds: float | timedelta = 1.0,
        min_chunk_size: int = 100,
        max_chunk_size: int = 100_000,
    ) -> None:
        if not isinstance(name, str) or not name.strip():
            raise ConfigError(f"Job name must be a non-empty string, got {name!r}")
        self.name = name
        self.source = as_source(source)
        self.sink = as_sink(sink)
        if process is not None and process_chunk is not None:
            raise ConfigError("give either process= (per item) or process_chunk=, not both")
        for label, fn in (("process", process), ("process_chunk", process_chunk)):
            if fn is not None and not callable(fn):
                raise ConfigError(f"{label} must be callable, got {fn!r}")
        self.process = process
        self.process_chunk = process_chunk
        self.chunk_size: int | Literal["auto"] = (
            "auto" if chunk_size == "auto" else to_positive_int(chunk_size, "chunk_size")
        )
        self.chunk_seconds = to_seconds(chunk_seconds, "chunk_seconds", allow_zero=False)
        self.min_chunk_size = to_positive_int(min_chunk_size, "min_chunk_size")
        self.max_chunk_size = to_positive_int(max_chunk_size, "max_chunk_size")
        if self.max_chunk_size < self.min_chunk_size:
            raise ConfigError(
                f"max_chunk_size ({max_chunk_size}) must be >= min_chunk_size ({min_chunk_size})"
            )
        self.workers = to_positive_int(workers, "workers")
        self.executor = _check_executor(executor, self.sink, process, process_chunk)
        self.retry = check_retry(retry)
        self.rate_limit = check_rate_limit(rate_limit)
        self.max_failures, self.max_failure_rate = _check_thresholds(max_failures, max_failure_rate)
        if key is not None and not callable(key):
            raise ConfigError(f"key must be callable (item -> hashable), got {key!r}")
        self.key = key
        self._store = store
        self.on_progress = on_progress
        self.stale_after = to_seconds(stale_after, "stale_after", allow_zero=False)
        self.metadata = dict(metadata or {})

    def __repr__(self) -> str:
        return f"Job({self.name!r}, chunk_size={self.chunk_size}, workers={self.workers})"

    @property
    def store(self) -> Store:
        """The store of this job's runs (opened on first use)."""
        if self._store is None:
            self._store = SqliteStore()
        return self._store

    def config(self) -> dict[str, Any]:
        """What the store records about this job's configuration."""
        return {
            "chunk_size": self.chunk_size,
            "workers": self.workers,
            "executor": self.executor,
            "retry_attempts": self.retry.attempts if self.retry else 1,
            "max_failures": self.max_failures,
            "max_failure_rate": self.max_failure_rate,
            "metadata": self.metadata,
        }

    def run(self, *, fresh: bool = False) -> JobReport:
        """Run (or resume) the job to its end and return its report."""
        job = self._prepare(fresh)
        if job.status in _DONE:
            return self.report(job.id)
        return _Run(self, job).execute()

    async def arun(self, *, fresh: bool = False) -> JobReport:
        """:meth:`run` from asyncio (the chunks run on worker threads)."""
        return await asyncio.to_thread(self.run, fresh=fresh)

    def retry_failed(self, job_id: str | None = None) -> JobReport:
        """Replay only the dead letters of a run (default: the latest run of this job).

        Each dead record is read again at its position, goes through ``process`` and
        the sink, and either succeeds (its dead letter is marked replayed) or becomes
        a new dead letter. Refused when the source changed since the run.
        """
        store = self.store
        record = store.get_job(job_id) if job_id else store.latest_job(self.name)
        if record is None:
            raise ConfigError(f"no run of job {self.name!r} to retry")
        if record.fingerprint != self.source.fingerprint():
            raise ConfigError(
                f"the source of job {self.name!r} changed since run {record.id}; the dead "
                "letters' positions no longer hold: run the job with fresh=True instead"
            )
        self._claim(record)
        return _Run(self, record).replay()

    def report(self, job_id: str) -> JobReport:
        """The report of a run of this job, from the store."""
        return load_report(self.store, job_id)

    # -- finding and claiming the run ----------------------------------------------

    def _prepare(self, fresh: bool) -> JobRecord:
        store = self.store
        fingerprint = self.source.fingerprint()
        latest = store.latest_job(self.name)
        if latest is not None and not fresh:
            if latest.fingerprint != fingerprint:
                raise ConfigError(
                    f"job {self.name!r} was run on different data (source fingerprint "
                    f"{latest.fingerprint[:12]}…, now {fingerprint[:12]}…); run it with "
                    "fresh=True (CLI: --fresh) to start over, or give the job another name"
                )
            if latest.status in _DONE:
                return latest
            job = latest
        else:
            size = self.source.size()
            job = store.create_job(
                name=self.name,
                job_type="bulk",
                fingerprint=fingerprint,
                config=self.config(),
                total_items=size.items,
                total_bytes=size.bytes,
            )
        return self._claim(job)

    def _claim(self, job: JobRecord) -> JobRecord:
        store, host, pid = self.store, socket.gethostname(), os.getpid()
        now = utcnow()
        claimed = store.claim(
            job.id,
            host=host,
            pid=pid,
            now=now,
            stale_before=now - timedelta(seconds=self.stale_after),
        )
        if claimed is None:
            current = store.get_job(job.id)
            assert current is not None
            if current.owner_host == host and not _alive(current.owner_pid):
                claimed = store.claim(job.id, host=host, pid=pid, now=now, stale_before=now)
            if claimed is None:
                raise JobAlreadyRunning(
                    f"job {self.name!r} (run {job.id}) is running in process {current.owner_pid} "
                    f"on {current.owner_host} (heartbeat {current.heartbeat_at}); wait for it, "
                    "or cancel it with `freight cancel`"
                )
            store.add_event(job.id, "taken_over", {"from_pid": current.owner_pid})
        assert claimed is not None
        return claimed


_OPEN = -1  # the end of the last started chunk: not recorded, so free to choose


def _fixed_boundaries(started: list[ChunkCheckpoint]) -> list[tuple[int, int | None, bool]]:
    """``(index, end ordinal, done)`` of chunks an earlier execution started.

    A done chunk ends where it recorded (``None``: the end of the source); a chunk
    that was not done ends where the next started one begins; the last one is open.
    """
    out: list[tuple[int, int | None, bool]] = []
    for n, chunk in enumerate(started):
        end: int | None
        if chunk.status == "done":
            end = chunk.end[1] if chunk.end else None
        elif n + 1 < len(started):
            end = started[n + 1].start[1]
        else:
            end = _OPEN
        out.append((chunk.index, end, chunk.status == "done"))
    return out


def _started_chunks(
    fixed: list[tuple[int, int | None, bool]], records: Iterator[Record], next_index: int
) -> Generator[_Chunk, None, tuple[list[Record], int] | None]:
    """Phase 1 of chunking: chunks an earlier execution started keep their boundaries.

    Yields those not done; returns the records read past them and the next chunk
    index, or ``None`` when the source ended.
    """
    current: list[Record] = []
    for slot, (index, end, done) in enumerate(fixed):
        if end == _OPEN:  # the last one started: refill it to the current size
            return current, index
        for record in records:
            if end is not None and record.ordinal >= end:
                if current and not done:
                    yield _Chunk(index, current, record.position)
                current = [record]
                break
            current.append(record)
        else:  # the source ended inside this chunk
            if current and not done:
                yield _Chunk(index, current, None)
            return None
        if slot == len(fixed) - 1:
            break
    return current, next_index


class _ChunkSizer:
    """Chunk size: fixed, or ``"auto"``: aiming at ``target`` seconds per chunk."""

    def __init__(self, chunk_size: int | None, target: float, low: int, high: int) -> None:
        self.auto = chunk_size is None
        self.size = chunk_size if chunk_size is not None else min(max(1000, low), high)
        self.target, self.low, self.high = target, low, high

    def observe(self, items: int, seconds: float) -> None:
        """Adjust from a finished chunk's measured throughput (halfway to the ideal)."""
        if not self.auto or items == 0 or seconds <= 0:
            return
        ideal = items / seconds * self.target
        self.size = int(min(self.high, max(self.low, (self.size + ideal) / 2)))


def _check_executor(executor: str, sink: Any, *functions: Any) -> Literal["threads", "async"]:
    if executor not in ("threads", "async"):
        raise ConfigError(f"executor must be 'threads' or 'async', got {executor!r}")
    asynchronous = [
        name
        for name, fn in (
            ("sink.write", getattr(sink, "write", None)),
            *zip(("process", "process_chunk"), functions, strict=True),
        )
        if fn is not None and is_async_callable(fn)
    ]
    if asynchronous and executor != "async":
        raise ConfigError(f"{', '.join(asynchronous)} is async: use executor='async'")
    return executor  # type: ignore[return-value]


def _check_thresholds(
    max_failures: int | None, max_failure_rate: float | None
) -> tuple[int | None, float | None]:
    if max_failures is not None:
        max_failures = to_positive_int(max_failures, "max_failures", minimum=0)
    if max_failure_rate is not None and (
        not isinstance(max_failure_rate, int | float)
        or isinstance(max_failure_rate, bool)
        or not 0 <= max_failure_rate <= 1
    ):
        raise ConfigError(
            f"max_failure_rate must be a fraction in [0, 1], got {max_failure_rate!r}"
        )
    return max_failures, max_failure_rate


def _alive(pid: int | None) -> bool:
    if pid is None:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class _Run:
    """One execution of a job run, from claim to final status."""

    def __init__(self, job: Job, record: JobRecord) -> None:
        self.job = job
        self.store = job.store
        self.id = record.id
        self.retry = job.retry
        self._random = random.Random().random
        self._stop_reason: str | None = None
        self._status_on_stop = "failed"
        self._started = time.monotonic()
        self._chunks_done = 0
        self._heartbeat_stop = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._signals = 0
        self._sizer = _ChunkSizer(
            None if job.chunk_size == "auto" else job.chunk_size,
            job.chunk_seconds,
            job.min_chunk_size,
            job.max_chunk_size,
        )
        self._fraction: float | None = None
        self._initial = (0, 0.0)  # processed and fraction when this execution started

    # -- the main loop ---------------------------------------------------------------

    def execute(self) -> JobReport:
        store, job = self.store, self.job
        record = store.get_job(self.id)
        assert record is not None
        store.update_job(
            self.id,
            status="running",
            reason=None,
            control=None,
            started_at=record.started_at or utcnow(),
            completed_at=None,
        )
        store.add_event(self.id, "resumed" if record.processed else "started", {"pid": os.getpid()})
        self._initial = (record.processed, 0.0)
        beat = threading.Thread(
            target=self._heartbeat, name=f"freight-heartbeat-{job.name}", daemon=True
        )
        beat.start()
        previous = self._install_signal_handlers()
        if job.executor == "async":
            self._loop = asyncio.new_event_loop()
            loop_thread = threading.Thread(
                target=self._loop.run_forever, name=f"freight-loop-{job.name}", daemon=True
            )
            loop_thread.start()
        try:
            with ThreadPoolExecutor(
                job.workers, thread_name_prefix=f"freight-job-{job.name}"
            ) as pool:
                self._drive(pool)
        except BaseException as exc:
            store.update_job(
                self.id,
                status="failed",
                reason=f"{type(exc).__name__}: {exc}",
                completed_at=utcnow(),
            )
            raise
        finally:
            if self._loop is not None:
                self._loop.call_soon_threadsafe(self._loop.stop)
                loop_thread.join()
                self._loop.close()
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            self._heartbeat_stop.set()
            beat.join()
        final = store.get_job(self.id)
        assert final is not None
        if self._stop_reason is not None:
            status = self._status_on_stop
        elif final.failed:
            status = "completed_with_errors"
        else:
            status = "completed"
        store.update_job(self.id, status=status, reason=self._stop_reason, completed_at=utcnow())
        store.add_event(self.id, status, {"reason": self._stop_reason})
        return job.report(self.id)

    def _install_signal_handlers(self) -> dict[int, Any]:
        """First SIGINT/SIGTERM: stop after the chunks in flight; second: stop now."""
        if threading.current_thread() is not threading.main_thread():
            return {}
        previous: dict[int, Any] = {}

        def on_signal(signum: int, frame: object) -> None:
            name = signal.Signals(signum).name
            if self._stop_reason is not None and self._status_on_stop == "cancelled":
                raise KeyboardInterrupt(f"second {name}: stopped at once")
            self._stop(
                "cancelled", f"stopped by {name} after the chunks in flight; run again to resume"
            )

        for signum in (signal.SIGINT, signal.SIGTERM):
            previous[signum] = signal.signal(signum, on_signal)
        return previous

    def _drive(self, pool: ThreadPoolExecutor) -> None:
        in_flight: deque[Future[tuple[JobRecord, Position | None, int, float]]] = deque()
        for chunk in self._pending_chunks():
            if not self._may_continue():
                break
            self.store.start_chunk(
                self.id, ChunkCheckpoint(index=chunk.index, start=chunk.records[0].position)
            )
            in_flight.append(pool.submit(self._process, chunk))
            while len(in_flight) >= 2 * self.job.workers or (in_flight and in_flight[0].done()):
                self._completed(*in_flight.popleft().result())
            if self._stop_reason is not None:
                break
        while in_flight:
            self._completed(*in_flight.popleft().result())

    def _pending_chunks(self) -> Iterator[_Chunk]:
        """The chunks still to do, in order, each knowing where the next one starts.

        Chunks started by an earlier execution keep their boundaries (so a chunk
        done out of order is never redone, whatever chunk sizes were used); after
        the last of them, new chunks take their size from the chunk sizer.
        """
        known = sorted(self.store.chunks(self.id), key=lambda c: c.index)
        first = next((i for i, c in enumerate(known) if c.status != "done"), len(known))
        if first == len(known) and known and known[-1].end is None:
            return  # the last chunk was done: the source is exhausted
        start = known[first].start if first < len(known) else (known[-1].end if known else None)
        self._note_start(start)
        fixed = _fixed_boundaries(known[first:])
        next_index = known[-1].index + 1 if known else 0
        records = iter(self.job.source.read(start))
        state = yield from _started_chunks(fixed, records, next_index)
        if state is None:
            return
        current, next_index = state
        # Phase 2 (the hot loop): new chunks, sized by the sizer.
        size = self._sizer.size
        for record in records:
            if len(current) >= size:
                yield _Chunk(next_index, current, record.position)
                next_index += 1
                current = [record]
                size = self._sizer.size
            else:
                current.append(record)
        if current:
            yield _Chunk(next_index, current, None)

    def _note_start(self, start: Position | None) -> None:
        total_bytes = self.job.source.size().bytes
        if start is not None and total_bytes:
            self._initial = (self._initial[0], start[0] / total_bytes)
            self._fraction = self._initial[1]

    def _may_continue(self) -> bool:
        """Honour pause / cancel requests made through the store (between chunks)."""
        while True:
            record = self.store.get_job(self.id)
            assert record is not None
            if record.control == "cancel":
                self._stop("cancelled", "cancel requested")
                return False
            if record.control != "pause":
                return self._stop_reason is None
            if record.status != "paused":
                self.store.update_job(self.id, status="paused")
                self.store.add_event(self.id, "paused")
            time.sleep(0.2)  # real time: waiting for a person or another process
            again = self.store.get_job(self.id)
            if again is not None and again.control == "resume":
                self.store.update_job(self.id, status="running", control=None)
                self.store.add_event(self.id, "resumed")

    def _stop(self, status: str, reason: str) -> None:
        if self._stop_reason is None:
            self._stop_reason, self._status_on_stop = reason, status

    def _completed(
        self, record: JobRecord, end: Position | None, items: int, seconds: float
    ) -> None:
        self._chunks_done += 1
        self._sizer.observe(items, seconds)
        if record.total_bytes:
            offset = record.total_bytes if end is None else end[0]
            self._fraction = max(self._fraction or 0.0, min(1.0, offset / record.total_bytes))
        job = self.job
        if job.max_failures is not None and record.failed > job.max_failures:
            self._stop(
                "failed", f"{record.failed} items failed, more than max_failures={job.max_failures}"
            )
        if (
            job.max_failure_rate is not None
            and record.processed
            and record.failed / record.processed > job.max_failure_rate
        ):
            self._stop(
                "failed",
                f"{record.failed / record.processed:.1%} of items failed, more than "
                f"max_failure_rate={job.max_failure_rate:.1%}",
            )
        if job.on_progress is not None:
            job.on_progress(self._progress(record))

    def _progress(self, record: JobRecord) -> Progress:
        elapsed = time.monotonic() - self._started
        done_here = record.processed - self._initial[0]
        rate = done_here / elapsed if elapsed > 0 else 0.0
        fraction = self._fraction
        if record.total_items:
            fraction = min(1.0, record.processed / record.total_items)
        eta = None
        if fraction is not None:
            start = (
                self._initial[1]
                if not record.total_items
                else self._initial[0] / record.total_items
            )
            if fraction > start:
                eta = elapsed * (1.0 - fraction) / (fraction - start)
        return Progress(
            job_id=self.id,
            processed=record.processed,
            succeeded=record.succeeded,
            failed=record.failed,
            skipped=record.skipped,
            chunks_done=self._chunks_done,
            elapsed_seconds=elapsed,
            items_per_second=rate,
            fraction=fraction,
            eta_seconds=eta,
        )

    def _heartbeat(self) -> None:
        interval = max(0.05, self.job.stale_after / 3)
        while not self._heartbeat_stop.wait(interval):
            self.store.heartbeat(self.id, now=utcnow())

    # -- one chunk (on a worker thread) ---------------------------------------------

    def _process(self, chunk: _Chunk) -> tuple[JobRecord, Position | None, int, float]:
        started = time.perf_counter()
        dead: list[DeadLetter] = []
        skipped, written = self._handle(chunk.index, chunk.records, dead)
        first, last = chunk.records[0], chunk.records[-1]
        digest = hashlib.sha256(f"{first.position}{last.position}{len(chunk.records)}".encode())
        if first.raw:
            digest.update("\n".join(r.raw for r in chunk.records).encode())
        checkpoint = ChunkCheckpoint(
            index=chunk.index,
            start=first.position,
            end=chunk.end,
            status="done",
            items=len(chunk.records),
            succeeded=written,
            failed=len(dead),
            skipped=skipped,
            checksum=digest.hexdigest()[:16],
        )
        record = self.store.commit_chunk(self.id, checkpoint, dead)
        return record, chunk.end, len(chunk.records), time.perf_counter() - started

    def _handle(self, index: int, records: list[Record], dead: list[DeadLetter]) -> tuple[int, int]:
        """Process and write ``records``; add the failures to ``dead``.

        Returns (skipped, written).
        """
        skipped = 0
        if any(r.error is not None or r.item is BLANK for r in records):
            kept = []
            for record in records:
                if record.item is BLANK:
                    skipped += 1
                elif record.error is not None:
                    dead.append(_letter(record, record.error, "validation", 0, index))
                else:
                    kept.append(record)
            records = kept
        items = [r.item for r in records]
        if self.job.process is not None:
            process = self.job.process
            per_item: Callable[[list[Any]], Any] = (
                functools.partial(_gather_each, process)
                if is_async_callable(process)
                else lambda xs: [_apply(process, x) for x in xs]
            )
            records, items = self._stage(index, records, items, per_item, dead)
        elif self.job.process_chunk is not None:
            records, items = self._stage(index, records, items, self.job.process_chunk, dead)
        keys = [self.job.key(i) for i in items] if self.job.key else None
        context = WriteContext(self.id, index, keys)
        sink = self.job.sink
        written, _ = self._stage(
            index, records, items, lambda xs: self._write(sink, xs, context), dead
        )
        return skipped, len(written)

    def replay(self) -> JobReport:
        """Run the dead letters of this run again (see :meth:`Job.retry_failed`)."""
        store = self.store
        letters = [d for d in store.dead_letters(self.id) if d.position is not None]
        replayed: list[int] = []
        dead: list[DeadLetter] = []
        succeeded = 0
        for letter in letters:
            assert letter.position is not None
            assert letter.id is not None
            record = next(iter(self.job.source.read(letter.position)), None)
            if record is None or record.position != letter.position:
                continue
            before = len(dead)
            _, written = self._handle(letter.chunk_index or 0, [record], dead)
            succeeded += written
            replayed.append(letter.id)
            for i in range(before, len(dead)):
                d = dead[i]
                dead[i] = DeadLetter(
                    record_id=d.record_id, position=d.position, payload=d.payload,
                    error_type=d.error_type, message=d.message, category=d.category,
                    attempts=d.attempts + letter.attempts, chunk_index=letter.chunk_index,
                )  # fmt: skip
        final = store.commit_replay(self.id, replayed, dead, succeeded)
        if final.status in _DONE:  # an unfinished run stays resumable as it was
            store.update_job(
                self.id, status="completed_with_errors" if final.failed else "completed"
            )
        store.add_event(
            self.id, "retried_failed", {"replayed": len(replayed), "succeeded": succeeded}
        )
        return self.job.report(self.id)

    def _on_loop(self, handler: Callable[[list[Any]], Any]) -> Callable[[list[Any]], Any]:
        """With executor="async": awaitable results are awaited on the job's event loop."""
        loop = self._loop
        if loop is None:
            return handler

        def run(items: list[Any]) -> Any:
            result = handler(items)
            if inspect.isawaitable(result):
                return asyncio.run_coroutine_threadsafe(_awaited(result), loop).result()
            return result

        return run

    def _write(self, sink: Any, items: list[Any], context: WriteContext) -> Any:
        if self.job.rate_limit is not None:
            cost = len(items) if self.job.rate_limit.unit == "items" else 1
            self.job.rate_limit.acquire_sync(cost)
        return sink.write(items, context)

    def _stage(
        self,
        index: int,
        records: list[Record],
        items: list[Any],
        handler: Callable[[list[Any]], Any],
        dead: list[DeadLetter],
    ) -> tuple[list[Record], list[Any]]:
        """Run one stage over ``items``; failures become dead letters; return the survivors."""
        if not items:
            return [], []
        retry = self.retry
        attempts = retry.attempts if retry else 1
        tried = 0
        pending = list(range(len(items)))
        out: dict[int, Any] = {}
        while pending:
            result, _ = run_plan(
                [items[i] for i in pending],
                lambda xs: call_handler(self._on_loop(handler), xs),
                retry,
                random=self._random,
                sleep=time.sleep,
            )
            tried += result.tries
            again: list[int] = []
            for i, outcome in zip(pending, result.outcomes, strict=True):
                if not isinstance(outcome, BaseException):
                    out[i] = outcome
                elif retry is not None and retry.is_transient(outcome) and tried < attempts:
                    again.append(i)
                else:
                    dead.append(
                        _letter(records[i], outcome, _category(outcome, retry), tried, index)
                    )
            if again and retry is not None:
                time.sleep(retry.delay(tried, self._random()))
            pending = again
        kept = sorted(out)
        return [records[i] for i in kept], [out[i] for i in kept]


async def _awaited(awaitable: Any) -> Any:
    return await awaitable


async def _gather_each(fn: Callable[[Any], Any], items: list[Any]) -> list[Any]:
    """An async per-item ``process`` over a chunk, concurrently; errors stay per item."""
    return list(await asyncio.gather(*(fn(item) for item in items), return_exceptions=True))


def _apply(fn: Callable[[Any], Any], item: Any) -> Any:
    try:
        return fn(item)
    except Exception as exc:
        return exc
