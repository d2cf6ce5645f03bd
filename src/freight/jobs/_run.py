"""One execution of a job run: claim to final status (see :mod:`freight.jobs._job`).

Every status change is a transition the store checks against the lifecycle table
(``freight.store.TRANSITIONS``); every wait (the heartbeat, the pause poll) and every
duration (progress, ETA) is on the job's clock.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import multiprocessing
import operator
import os
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable, Iterator
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from freight.jobs._chunk import ChunkHandler, WriteOrder, handle_installed, install, packed
from freight.jobs._chunking import Chunk, ChunkSizer, Feed, fixed_boundaries, started_chunks
from freight.jobs._progress import Progress
from freight.jobs._replay import Replay
from freight.jobs._report import JobReport
from freight.jobs._sources import Position, SourceProgress
from freight.store import (
    ChunkCheckpoint,
    DeadLetter,
    IllegalTransition,
    JobRecord,
    JobStatus,
    SharedTransactionStore,
    TransactionalSink,
)

if TYPE_CHECKING:
    from freight.jobs._job import Job

__all__ = ["Run"]

_log = logging.getLogger("freight.jobs")

_RAW = operator.itemgetter(4)  # Record.raw, read in C over a chunk

PAUSE_POLL = 0.2  # seconds between looks at the store while paused (on the job's clock)


@runtime_checkable
class AsyncClosing(Protocol):
    """A sink holding asyncio resources (``AsyncPostgresSink``): closed on the job's loop."""

    async def aclose(self) -> None:
        """Free the resources bound to the running event loop."""
        ...


def _bytes_read(source: Any, position: Position) -> int | None:
    """How far ``position`` is into the source's file, in bytes as on disk (``None``:
    not known yet); a plain file's offset is that already."""
    if isinstance(source, SourceProgress):
        return source.bytes_read(position)
    return position[0]


class Run:
    """One execution of a job run, from claim to final status."""

    def __init__(self, job: Job, record: JobRecord) -> None:
        self.job = job
        self.store = job.store
        self.id = record.id
        self._handler = ChunkHandler(
            job_id=record.id,
            sink=job.sink,
            process=job.process,
            process_chunk=job.process_chunk,
            retry=job.retry,
            key=job.key,
            rate_limit=job.rate_limit,
            clock=job.clock,
        )
        self._clock = job.clock
        self._stop_reason: str | None = None
        self._status_on_stop: JobStatus = "failed"
        self._started = self._clock.now()
        self._chunks_done = 0
        self._heartbeat_stop = False
        self._heartbeat_wake = threading.Event()
        self._signals = 0
        self._sizer = ChunkSizer(
            None if job.chunk_size == "auto" else job.chunk_size,
            job.chunk_seconds,
            job.min_chunk_size,
            job.max_chunk_size,
        )
        self._fraction: float | None = None
        self._initial = (0, 0.0)  # processed and fraction when this execution started
        self._resumed_at: Position | None = None  # where it started, until that is measured
        self._shared = _shared_transaction(job)
        # Chunks written in order only matters when several are written at once.
        self._order = WriteOrder() if job.ordered_writes and job.workers > 1 else None
        # One worker thread: each chunk is handled on the driving thread, between two
        # reads. Handed to a pool thread it overlapped the next read only in theory: the
        # two threads took turns on the GIL (SQLite releases it around each row's step),
        # and 1M rows into SQLite took 6.1 s of CPU instead of 5.6 s.
        self._inline = job.executor == "threads" and job.workers == 1

    # -- the main loop ---------------------------------------------------------------

    def execute(self) -> JobReport:
        store, job = self.store, self.job
        record = store.transition(self.id, "running", now=job.utcnow())
        store.add_event(self.id, "resumed" if record.processed else "started", {"pid": os.getpid()})
        self._initial = (record.processed, 0.0)
        beat = threading.Thread(
            target=self._heartbeat, name=f"freight-heartbeat-{job.name}", daemon=True
        )
        beat.start()
        previous = self._install_signal_handlers()
        loop = self._handler.loop = asyncio.new_event_loop() if job.executor == "async" else None
        if loop is not None:
            loop_thread = threading.Thread(
                target=loop.run_forever, name=f"freight-loop-{job.name}", daemon=True
            )
            loop_thread.start()
        ended = False
        try:
            with self._pool() as pool:
                self._drive(pool)
            ended = True
        except BaseException as exc:
            self._fail(exc)
            raise
        finally:
            if loop is not None:
                if isinstance(job.sink, AsyncClosing):  # its resources belong to this loop
                    asyncio.run_coroutine_threadsafe(job.sink.aclose(), loop).result()
                loop.call_soon_threadsafe(loop.stop)
                loop_thread.join()
                loop.close()
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            self._heartbeat_stop = True
            self._heartbeat_wake.set()
            beat.join()
            if not ended:
                store.release(self.id)  # free to claim again
        try:
            return self._end()
        finally:  # released only once its end is stored: a runner that claims it next
            store.release(self.id)  # sees it done, never a run it could start again

    def _end(self) -> JobReport:
        """Store the run's final status (completed, with errors, or how it stopped)."""
        store, job = self.store, self.job
        final = store.get_job(self.id)
        assert final is not None
        status: JobStatus
        if self._stop_reason is not None:
            status = self._status_on_stop
        elif final.failed:
            status = "completed_with_errors"
        else:
            status = "completed"
        store.transition(self.id, status, reason=self._stop_reason, now=job.utcnow())
        store.add_event(self.id, status, {"reason": self._stop_reason})
        return job.report(self.id)

    def _fail(self, exc: BaseException) -> None:
        """End the run ``failed`` because ``exc`` escaped (the caller re-raises it)."""
        try:
            self.store.transition(
                self.id, "failed", reason=f"{type(exc).__name__}: {exc}", now=self.job.utcnow()
            )
        except IllegalTransition as illegal:  # another owner ended it meanwhile: keep its end
            _log.warning("%s: %s (while failing on %r)", self.job.name, illegal, exc)

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

    def _pool(self) -> Executor:
        job = self.job
        if job.executor == "processes":
            # spawn, not fork: this process has threads (heartbeat, pool) and connections
            return ProcessPoolExecutor(
                job.workers,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=install,
                initargs=(self._handler,),
            )
        return ThreadPoolExecutor(job.workers, thread_name_prefix=f"freight-job-{job.name}")

    def _submit(self, pool: Executor, chunk: Chunk) -> Future[Any]:
        if self.job.executor == "processes":  # handled there, committed here
            return pool.submit(handle_installed, chunk.index, packed(chunk.records))
        if self._inline:
            done: Future[Any] = Future()
            try:
                done.set_result(self._handle_and_commit(chunk))
            except Exception as exc:  # raised where the pool's future would raise it
                done.set_exception(exc)
            return done
        ticket = None if self._order is None else self._order.ticket()
        return pool.submit(self._handle_and_commit, chunk, ticket)  # committed by the worker

    def _handle_and_commit(self, chunk: Chunk, ticket: int | None = None) -> JobRecord:
        handler, order = self._handler, self._order
        try:
            prepared = handler.prepare(chunk.index, chunk.records)
            if order is not None and ticket is not None:
                order.declare(ticket, handler.conflict_keys(prepared))
                order.wait(ticket)  # in source order: after the chunks before that may clash
            if self._shared is None:
                # done (finally) once checkpointed: a chunk after it that shares a key
                # never commits first, so a resume never redoes this one over it
                return self._commit(chunk, *handler.write(prepared))
            # The sink writes into the store's own database: rows and checkpoint in one
            # transaction, so a crash leaves both or neither (exactly once, no key needed).
            # It opens after the turn came: a chunk waiting holds no connection.
            sink, store = self._shared
            with sink.transaction() as conn:
                skipped, written, dead = handler.write(prepared)
                checkpoint = self._checkpoint(chunk, skipped, written, dead)
                store.commit_chunk_on(conn, self.id, checkpoint, dead)
        except BaseException:
            if order is not None and ticket is not None:
                order.abandon(ticket)  # the chunks after it sharing a key must not write
            raise
        finally:
            if order is not None and ticket is not None:
                order.done(ticket)  # committed, or given up: never keeps the next waiting
        record = self.store.get_job(self.id)
        assert record is not None
        return record

    def _drive(self, pool: Executor) -> None:
        in_flight: deque[tuple[Chunk, Future[Any], float]] = deque()
        for chunk in self._pending_chunks():
            if not self._may_continue():
                break
            self.store.start_chunk(
                self.id, ChunkCheckpoint(index=chunk.index, start=chunk.records[0].position)
            )
            in_flight.append((chunk, self._submit(pool, chunk), time.perf_counter()))
            while len(in_flight) >= 2 * self.job.workers or (in_flight and in_flight[0][1].done()):
                self._finish(*in_flight.popleft())
            if self._stop_reason is not None:
                break
        while in_flight:
            self._finish(*in_flight.popleft())

    def _finish(self, chunk: Chunk, future: Future[Any], submitted: float) -> None:
        result = future.result()
        record = result if isinstance(result, JobRecord) else self._commit(chunk, *result)
        self._completed(record, chunk.end, len(chunk.records), time.perf_counter() - submitted)

    def _commit(
        self, chunk: Chunk, skipped: int, written: int, dead: list[DeadLetter]
    ) -> JobRecord:
        """Record a handled chunk: checkpoint, dead letters and counters, in one transaction."""
        checkpoint = self._checkpoint(chunk, skipped, written, dead)
        return self.store.commit_chunk(self.id, checkpoint, dead)

    def _checkpoint(
        self, chunk: Chunk, skipped: int, written: int, dead: list[DeadLetter]
    ) -> ChunkCheckpoint:
        first, last = chunk.records[0], chunk.records[-1]
        digest = hashlib.sha256(f"{first.position}{last.position}{len(chunk.records)}".encode())
        if first.raw:
            digest.update("\n".join(map(_RAW, chunk.records)).encode())
        return ChunkCheckpoint(
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

    def _pending_chunks(self) -> Iterator[Chunk]:
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
        fixed = fixed_boundaries(known[first:])
        next_index = known[-1].index + 1 if known else 0
        source = self.job.source
        # CsvSource: plain lines as Lines (looked up on the class: a wrapper forwarding
        # attributes to a CsvSource is read through its own read)
        grouped = getattr(type(source), "_read_grouped", None)
        feed = Feed(grouped(source, start) if grouped is not None else (source.read(start),))
        state = yield from started_chunks(fixed, feed, next_index)
        if state is None:
            return
        current, next_index = state
        # Phase 2 (the hot loop): new chunks, sized by the sizer, taken in slices (islice
        # in C, or a slice of Lines), the next record's position peeked at for each end.
        yield from feed.chunks(current, next_index, lambda: self._sizer.size)

    def _note_start(self, start: Position | None) -> None:
        self._resumed_at = start
        self._measure_start()

    def _measure_start(self) -> None:
        """The fraction done when this execution started, once the source can tell how
        far its start is into the file (a compressed file: once read to there)."""
        total_bytes = self.job.source.size().bytes
        start = self._resumed_at
        done = _bytes_read(self.job.source, start) if start is not None and total_bytes else 0
        if done is not None:
            self._resumed_at = None
            if done and total_bytes:
                self._initial = (self._initial[0], done / total_bytes)
                self._fraction = max(self._fraction or 0.0, self._initial[1])

    def _may_continue(self) -> bool:
        """Honour pause / resume / cancel requests made through the store (between chunks)."""
        store = self.store
        while True:
            record = store.get_job(self.id)
            assert record is not None
            if record.control == "cancel":
                self._stop("cancelled", "cancel requested")
                return False
            if record.control == "resume":
                if record.status == "paused":
                    store.transition(self.id, "running", now=self.job.utcnow())  # clears it
                    store.add_event(self.id, "resumed")
                    _log.info("%s: resumed", self.job.name)
                else:
                    store.request(self.id, None)  # not paused: nothing to resume
                continue
            if record.control != "pause":
                return self._stop_reason is None
            if record.status != "paused":
                store.transition(self.id, "paused")
                store.add_event(self.id, "paused")
                _log.info("%s: paused; `freight resume` or `freight cancel` goes on", self.job.name)
            if self._stop_reason is not None:  # a signal while paused: stop there
                return False
            self._clock.sleep_sync(PAUSE_POLL)  # waiting for a person or another process

    def _stop(self, status: JobStatus, reason: str) -> None:
        if self._stop_reason is None:
            self._stop_reason, self._status_on_stop = reason, status

    def _completed(
        self, record: JobRecord, end: Position | None, items: int, seconds: float
    ) -> None:
        self._chunks_done += 1
        self._sizer.observe(items, seconds)
        if record.total_bytes:
            if self._resumed_at is not None:
                self._measure_start()
            done = record.total_bytes if end is None else _bytes_read(self.job.source, end)
            if done is not None:  # bytes of the file as on disk (compressed, if it is)
                self._fraction = max(self._fraction or 0.0, min(1.0, done / record.total_bytes))
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
        elapsed = self._clock.now() - self._started
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
        """Beat every ``stale_after / 3`` on the job's clock until the run ends.

        The clock's timer only sets an event (timers must be short); the store write
        happens here, on this thread.
        """
        clock, wake = self._clock, self._heartbeat_wake
        interval = max(0.05, self.job.stale_after / 3)
        while True:
            timer = clock.call_at(clock.now() + interval, wake.set)
            wake.wait()
            timer.cancel()
            wake.clear()  # before looking at the flag: a stop after this wakes the next wait
            if self._heartbeat_stop:
                return
            self.store.heartbeat(self.id, now=self.job.utcnow())

    # -- replaying dead letters -------------------------------------------------------

    def replay(self, *, key: Callable[[Any], Hashable] | None = None) -> JobReport:
        """Run the dead letters of this run again (see :meth:`Job.retry_failed` and
        :mod:`freight.jobs._replay` for the guarantees; ``key``: a letter a later record
        of its key supersedes is resolved, not written); the run is released at the end."""
        store, job = self.store, self.job
        try:
            outcome = Replay(
                job_id=self.id,
                store=store,
                source=job.source,
                handler=self._handler,
                shared=self._shared,
                batch_size=self._sizer.size,
                heartbeat=lambda: store.heartbeat(self.id, now=job.utcnow()),
                key=key,
            ).run()
            final = store.get_job(self.id)
            assert final is not None
            # A done run is re-judged; an unfinished one stays resumable as it was.
            if final.status == "completed_with_errors" and not final.failed:
                store.transition(self.id, "completed")
            store.add_event(
                self.id,
                "retried_failed",
                {
                    "replayed": outcome.replayed,
                    "succeeded": outcome.succeeded,
                    "failed": outcome.failed,
                    "unread": outcome.unread,
                    "superseded": outcome.superseded,
                },
            )
        finally:
            store.release(self.id)
        return job.report(self.id)


def _shared_transaction(job: Job) -> tuple[TransactionalSink, SharedTransactionStore] | None:
    """The sink and store, when a chunk's rows and checkpoint can share a transaction:
    the sink writes in transactions it opens on a database, and the store lives in that
    same database (not with worker processes: the rows are written there)."""
    sink, store = job.sink, job.store
    if (
        job.executor != "processes"
        and isinstance(sink, TransactionalSink)
        and isinstance(store, SharedTransactionStore)
        and store.same_database(sink.conninfo)
    ):
        return sink, store
    return None
