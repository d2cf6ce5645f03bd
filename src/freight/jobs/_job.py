"""``Job``: a dataset processed in checkpointed chunks that resume after a crash.

How a run goes (the guarantees are in ``docs/jobs.md``):

1. The run is found or created in the store: the same ``name`` and source
   fingerprint resume the latest unfinished run; a finished run is reported, not
   redone; a changed source is refused unless ``fresh=True``.
2. The run is claimed: a live owner elsewhere makes this runner refuse; an owner
   whose heartbeat is stale, or whose pid is gone (or a zombie) on this host, is taken
   over. A new run is created already claimed, in one step of the store, so two
   processes starting the same new job at once never both run it.
3. Reading restarts at the first chunk not done (its recorded start position);
   later chunks already done are read past, not processed again.
4. Each chunk: bad records and failing items become dead letters; the rest go
   through ``process`` and the sink under the ``retry`` policy; then the chunk's
   checkpoint, its dead letters and the run's counters commit in one transaction.
   Items are delivered at least once; an idempotent sink makes that exactly once.
5. The run ends in a status of the lifecycle table (``freight.store.TRANSITIONS``):
   every status change is a checked transition in the store.

All waiting and timing (heartbeats, the stale-owner check, the pause poll, progress,
retry backoff, rate limits) runs on the job's :class:`~freight.Clock`, so tests drive
it with a :class:`~freight.testing.FakeClock` instead of sleeping.
"""

from __future__ import annotations

import asyncio
import functools
import os
import pickle
from collections.abc import Callable, Hashable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from freight._core._clock import Clock
from freight._core._retry import Retry
from freight._core._time import to_positive_int, to_seconds
from freight._drivers._asyncio import is_async_callable
from freight._drivers._clocks import ThreadClock
from freight._drivers._options import check_rate_limit, check_retry
from freight._errors import ConfigError, JobAlreadyRunning
from freight._process import alive
from freight._process import host as this_host
from freight._ratelimit import RateLimiter
from freight.jobs._progress import Progress
from freight.jobs._report import JobReport, load_report
from freight.jobs._run import Run
from freight.jobs._sink import Sink, as_sink
from freight.jobs._sources import as_source
from freight.store import DONE, JobRecord, SqliteStore, Store, open_store
from freight.store._records import utcnow

__all__ = ["Job", "JobAlreadyRunning"]


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
        executor: ``"threads"``; ``"async"`` for ``async def`` sinks and process
            functions, awaited on one event loop (``workers`` chunks at once); or
            ``"processes"`` for CPU-bound ``process`` functions: chunks are handled in
            ``workers`` processes, so sink, process and key must be picklable
            (module-level functions and objects), and ``rate_limit`` is refused (it
            would be per process).
        retry: the :class:`~freight.Retry` policy for process and sink calls.
        rate_limit: a :class:`~freight.RateLimiter` pacing sink writes.
        max_failures: stop the run (status ``failed``) once more items failed.
        max_failure_rate: stop the run once the failed fraction exceeds this,
            measured after at least one chunk.
        key: ``item -> hashable`` idempotency key, handed to the sink.
        store: where runs are kept: a :class:`~freight.store.Store`, a path or a
            ``sqlite:///`` URL (default: ``.freight/freight.db``).
        on_progress: called with a :class:`Progress` after every chunk.
        stale_after: seconds without a heartbeat after which a run's owner is dead.
        metadata: JSON-compatible values kept with each run (the CLI records how to
            rebuild the job, for ``freight resume`` and ``freight retry-failed``).
        ordered_writes: write the chunks into the sink in source order, even with
            several ``workers``: a chunk's writes start once the chunk before it is
            committed and checkpointed, so with an upsert on a key the source's last
            value of a key is the one that stays (``freight load --key`` sets it).
            Processing still runs in parallel. A sink with ``conflict_keys(items)``
            (the keys a write touches, or ``None``) keeps that order only among the
            chunks that may share a key: chunks of disjoint keys write at once. Not
            with ``executor="processes"``.
        clock: the :class:`~freight.Clock` every timer of the job runs on (heartbeats,
            the pause poll, progress and ETA, retry backoff, rate limits); default the
            real monotonic clock. With a clock given (a
            :class:`~freight.testing.FakeClock` in tests), the UTC times the job records
            (claims, heartbeats, start and end) are measured on it too, from the real
            time when the job was made, so staleness moves with it.
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
        executor: Literal["threads", "async", "processes"] = "threads",
        retry: Retry | None = None,
        rate_limit: RateLimiter | float | None = None,
        max_failures: int | None = None,
        max_failure_rate: float | None = None,
        key: Callable[[Any], Hashable] | None = None,
        store: Store | str | Path | None = None,
        on_progress: Callable[[Progress], None] | None = None,
        stale_after: float | timedelta = 30.0,
        metadata: dict[str, Any] | None = None,
        chunk_seconds: float | timedelta = 1.0,
        min_chunk_size: int = 100,
        max_chunk_size: int = 100_000,
        ordered_writes: bool = False,
        clock: Clock | None = None,
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
        if ordered_writes and self.executor == "processes":
            raise ConfigError(
                "ordered_writes=True needs executor='threads' or 'async': worker "
                "processes write their chunks on their own"
            )
        self.ordered_writes = bool(ordered_writes)
        if self.executor == "processes":
            _check_picklable(rate_limit=self.rate_limit, sink=self.sink, process=process,
                             process_chunk=process_chunk, key=key)  # fmt: skip
        self._store = _open_store(store)
        self.on_progress = on_progress
        self.stale_after = to_seconds(stale_after, "stale_after", allow_zero=False)
        self.metadata = dict(metadata or {})
        if clock is not None and not isinstance(clock, Clock):
            raise ConfigError(
                f"clock must be a freight Clock (now, call_at, sleep, sleep_sync), got {clock!r}"
            )
        self.clock: Clock = clock if clock is not None else _REAL_CLOCK
        self.utcnow: Callable[[], datetime] = utcnow if clock is None else _utc_on(clock)

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
        if job.status in DONE:
            return self.report(job.id)
        return Run(self, job).execute()

    async def arun(self, *, fresh: bool = False) -> JobReport:
        """:meth:`run` from asyncio (the chunks run on worker threads)."""
        return await asyncio.to_thread(self.run, fresh=fresh)

    def retry_failed(
        self, job_id: str | None = None, *, key: Callable[[Any], Hashable] | None = None
    ) -> JobReport:
        """Replay only the dead letters of a run (default: the latest run of this job).

        Each dead record is read again at its position, goes through ``process`` and
        the sink, and either succeeds (its dead letter is marked replayed) or becomes
        a new dead letter. Refused when the source changed since the run.

        Args:
            job_id: the run (default: the latest run of this job).
            key: ``item -> hashable`` of the source's items (before ``process``), for a
                job whose last value of a key wins: a dead record whose key a later
                record of the source carries is resolved as superseded (the report says
                by which line), never written over the newer value. Default: the job's
                ``key`` when it has ``ordered_writes`` and no ``process`` function.
        """
        if (
            key is None
            and self.ordered_writes
            and self.process is None
            and (self.process_chunk is None)
        ):
            key = self.key
        if key is not None and not callable(key):
            raise ConfigError(f"key must be callable (item -> hashable), got {key!r}")
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
        return Run(self, record).replay(key=key)

    def report(self, job_id: str) -> JobReport:
        """The report of a run of this job, from the store."""
        return load_report(self.store, job_id)

    # -- finding and claiming the run ----------------------------------------------

    def _prepare(self, fresh: bool) -> JobRecord:
        """The run to execute, claimed: the latest unfinished run of this job, or a new one.

        A new run is created already owned, in one step of the store
        (:meth:`~freight.store.Store.claim_new`): of two processes starting the same new
        job at the same instant, one gets the run and the other joins it like any later
        runner (refused while it runs, given its report once it is done).
        """
        store = self.store
        fingerprint = self.source.fingerprint()
        for _ in range(3):  # a lost race is settled on the next look
            latest = store.latest_job(self.name)
            if latest is not None and not fresh:
                if latest.fingerprint != fingerprint:
                    raise ConfigError(
                        f"job {self.name!r} was run on different data (source fingerprint "
                        f"{latest.fingerprint[:12]}…, now {fingerprint[:12]}…); run it with "
                        "fresh=True (CLI: --fresh) to start over, or give the job another name"
                    )
                if latest.status in DONE:
                    return latest
                claimed = self._claim(latest)
                if claimed.status in DONE:  # it ended between our look and our claim
                    store.release(claimed.id)
                return claimed
            created = self._claim_new(latest, fingerprint)
            if created is not None:
                return created
            current = store.latest_job(self.name)
            if current is not None and latest is not None and current.id == latest.id:
                raise _already_running(self.name, current)  # a live owner holds it
            fresh = False  # another runner created a run of this job first: join it
        raise JobAlreadyRunning(
            f"job {self.name!r} is being started by other processes; try again"
        )  # pragma: no cover - three lost races in a row

    def _claim_new(self, latest: JobRecord | None, fingerprint: str) -> JobRecord | None:
        """A new run of this job owned by this process, or ``None`` if another was first."""
        size = self.source.size()
        host, pid, now = this_host(), os.getpid(), self.utcnow()
        new = functools.partial(
            self.store.claim_new,
            name=self.name,
            job_type="bulk",
            fingerprint=fingerprint,
            config=self.config(),
            total_items=size.items,
            total_bytes=size.bytes,
            replacing=None if latest is None else latest.id,
            host=host,
            pid=pid,
            now=now,
        )
        created = new(stale_before=now - timedelta(seconds=self.stale_after))
        if created is None and latest is not None:
            current = self.store.get_job(latest.id)
            if current is not None and current.owner_host == host and not alive(current.owner_pid):
                created = new(stale_before=now)  # its owner died on this host: not live
        return created

    def _claim(self, job: JobRecord) -> JobRecord:
        store, host, pid = self.store, this_host(), os.getpid()
        now = self.utcnow()
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
            if current.owner_host == host and not alive(current.owner_pid):
                claimed = store.claim(job.id, host=host, pid=pid, now=now, stale_before=now)
            if claimed is None:
                raise _already_running(self.name, current)
            store.add_event(job.id, "taken_over", {"from_pid": current.owner_pid})
        assert claimed is not None
        return claimed


def _already_running(name: str, current: JobRecord) -> JobAlreadyRunning:
    return JobAlreadyRunning(
        f"job {name!r} (run {current.id}) is running in process {current.owner_pid} "
        f"on {current.owner_host} (heartbeat {current.heartbeat_at}); wait for it, "
        "or cancel it with `freight cancel`"
    )


Executor = Literal["threads", "async", "processes"]

# The real monotonic clock jobs share: one timer thread per process, started on first use.
_REAL_CLOCK = ThreadClock("freight-job-timer")


def _utc_on(clock: Clock) -> Callable[[], datetime]:
    """UTC now, measured on ``clock`` from the real UTC time of this call."""
    start, started = utcnow(), clock.now()
    return lambda: start + timedelta(seconds=clock.now() - started)


def _check_executor(executor: str, sink: Sink, *functions: Any) -> Executor:
    if executor not in ("threads", "async", "processes"):
        raise ConfigError(f"executor must be 'threads', 'async' or 'processes', got {executor!r}")
    asynchronous = [
        name
        for name, fn in (
            ("sink.write", sink.write),
            *zip(("process", "process_chunk"), functions, strict=True),
        )
        if fn is not None and is_async_callable(fn)
    ]
    if asynchronous and executor != "async":
        raise ConfigError(f"{', '.join(asynchronous)} is async: use executor='async'")
    return executor  # type: ignore[return-value]


def _check_picklable(*, rate_limit: Any, **parts: Any) -> None:
    if rate_limit is not None:
        raise ConfigError(
            "rate_limit cannot be shared by worker processes (each would have its own); "
            "use executor='threads' with a rate limit"
        )
    for name, part in parts.items():
        try:
            pickle.dumps(part)  # our own job definition, never untrusted data
        except Exception as exc:
            raise ConfigError(
                f"with executor='processes', {name} must be picklable (a module-level "
                f"function or object, not a lambda or closure): {exc}"
            ) from exc


def _open_store(store: Store | str | Path | None) -> Store | None:
    if store is None or isinstance(store, str | Path):
        return None if store is None else open_store(str(store))
    if not isinstance(store, Store):
        raise ConfigError(
            f"store must be a freight Store, a path or a sqlite:/// URL, got {store!r}"
        )
    return store


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
