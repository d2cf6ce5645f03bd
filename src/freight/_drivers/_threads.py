"""``ThreadBatcher``: the same batching semantics for synchronous, threaded code.

Many threads call :meth:`ThreadBatcher.submit`; batches run on a pool of
``max_concurrent_batches`` worker threads; timeouts fire from the clock's timer
thread. The decisions are the core's, exactly as in the asyncio
:class:`~freight.Batcher`.

Why submit does not simply take a lock: with many producer threads, a lock that
every item must take makes them queue behind each other (a thread that loses the
GIL while holding it stalls all others), which measured 2.5x slower than the bare
cost of a future. So submitting uses *flat combining*: a caller claims a ticket
(an atomic counter, which enforces ``max_pending`` exactly), appends its item to
an inbox (an atomic deque append) and then *tries* to take the lock without
waiting; whoever holds the lock moves every inboxed item into the buffer, and
every release of the lock re-checks the inbox, so no item is left behind.
"""

from __future__ import annotations

import contextlib
import itertools
import threading
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from types import TracebackType
from typing import Any, Generic, TypeVar, Unpack

from freight._core._buffer import Flush
from freight._core._clock import Clock, TimerHandle
from freight._core._plan import Reply
from freight._core._spec import BatchSpec
from freight._core._stats import BatcherStats
from freight._drivers._asyncio import SyncHandler, is_async_callable, is_stream_callable
from freight._drivers._clocks import ThreadClock
from freight._drivers._engine import EngineBase
from freight._drivers._options import BatcherKwargs, options_from
from freight._drivers._runner import call_handler, run_sync, stopped_by
from freight._errors import BatcherClosed, ConfigError

__all__ = ["ThreadBatcher"]

T = TypeVar("T")
R = TypeVar("R")


class _Ticket(Future[R]):
    """A caller's future that also carries its item through the inbox.

    One object per item instead of an ``(item, future)`` pair: fewer allocations,
    so less garbage-collector work on the hot path.
    """

    freight_item: Any


class ThreadBatcher(EngineBase[T, R], Generic[T, R]):
    """Group single items from many threads into batches; each caller gets its own outcome.

    ::

        def insert(rows: list[Row]) -> list[int]: ...

        with ThreadBatcher(insert, BatchSpec(size=500, timeout=0.05)) as batcher:
            future = batcher.submit(row)      # concurrent.futures.Future
            row_id = batcher.call(row)        # or block for the result

    The arguments are those of :class:`~freight.Batcher`; the handler must be a
    plain function (use :class:`~freight.Batcher` for ``async def`` handlers, and
    :meth:`Batcher.stream <freight.Batcher.stream>` for async generators: a streaming
    handler is refused here with a :class:`~freight.ConfigError`).
    With ``overflow="block"``, :meth:`submit` blocks the calling thread while
    ``max_pending`` items are pending; :meth:`submit_nowait` never blocks.
    Cancelling a returned future before its batch starts removes the item.
    """

    def __init__(
        self,
        handler: SyncHandler[T, R],
        spec: BatchSpec,
        **options: Unpack[BatcherKwargs[T]],
    ) -> None:
        super().__init__(handler, spec, options_from("ThreadBatcher", dict(options)))
        clock = self.options.clock
        if is_stream_callable(handler):
            raise ConfigError(
                f"ThreadBatcher cannot drive handler {self.name!r}: it is an async generator "
                "(a streaming batch, one step per yield), which needs an event loop; stream "
                "it with freight.Batcher and Batcher.stream(item), or decorate it with "
                "@freight.batched (each call then returns an async iterator of its outputs)"
            )
        if is_async_callable(handler):
            raise ConfigError(
                "ThreadBatcher needs a plain (sync) handler; for an `async def` handler "
                "use freight.Batcher"
            )
        self._own_clock = clock is None
        self._clock: Clock = clock if clock is not None else ThreadClock(f"freight-{self.name}")
        self._timeout = self._buffer.timeout  # spec.timeout, or the tuner's wait
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._inbox: deque[_Ticket[Any]] = deque()
        # Errors of inboxed items the buffer refused, set once the lock is released.
        self._refused: deque[tuple[Future[Any], BaseException]] = deque()
        self._tickets = itertools.count()
        self._released = 0  # tickets given back: settled, refused or withdrawn items
        self._executor = ThreadPoolExecutor(
            max_workers=self.max_concurrent_batches, thread_name_prefix=f"freight-{self.name}"
        )
        self._timer: TimerHandle | None = None
        self._timer_at = 0.0
        self._closed = False
        self._aborted = False  # closed with drain=False: nothing is tried again
        self._unfinished: set[int] = set()
        self._retry_waiting: dict[Future[Any], tuple[TimerHandle, T]] = {}

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<ThreadBatcher {self.name!r} {self.spec!r} pending={self.pending} {state}>"

    @property
    def closed(self) -> bool:
        """True once :meth:`close` has started; no new items are accepted."""
        return self._closed

    @property
    def pending(self) -> int:
        """Items accepted and not yet settled."""
        return self._pending + len(self._inbox)

    def stats(self) -> BatcherStats:
        """Counters so far: flushes by reason, efficiency, latency percentiles."""
        with self._locked():
            return self._stats.snapshot(self.pending)

    # -- submitting ------------------------------------------------------------

    def submit(self, item: T) -> Future[R]:
        """Accept ``item`` and return the future of its outcome.

        With ``overflow="block"`` this blocks while ``max_pending`` items are pending.

        Raises:
            QueueFull: full and ``overflow="reject"``.
            Skipped: the ``where=`` predicate rejected the item.
            ItemTooLarge: the item alone costs over the spec's ``max_cost``.
            BatcherClosed: the batcher is closed.
        """
        return self._submit(item, self.overflow == "block")

    def submit_nowait(self, item: T) -> Future[R]:
        """Like :meth:`submit`, but raise :class:`~freight.QueueFull` instead of blocking."""
        return self._submit(item, False)

    def call(self, item: T, timeout: float | None = None) -> R:
        """Submit ``item`` and block until its own result (or raise its own error)."""
        return self.submit(item).result(timeout)

    __call__ = call

    def _submit(self, item: T, block: bool) -> Future[R]:
        # The hot path: no blocking lock (see the module docstring).
        if self._where is not None and not self._where(item):
            with self._locked():
                raise self._skip(item)
        if self._priced:  # an item over max_cost alone is refused in the caller's thread
            self._buffer.check(item)
        future: _Ticket[R] = _Ticket()
        future.freight_item = item
        if next(self._tickets) - self._released < self.max_pending:
            self._inbox.append(future)
        else:
            self._admit_slowly(future, block)
        if self._closed:  # checked after enqueueing, so close() cannot miss the item
            self._withdraw(future)
        if self._lock.acquire(False):
            self._drain_locked()
            self._lock.release()
            if self._inbox or self._refused:
                self._unlock_drained()
        return future

    def _admit_slowly(self, entry: _Ticket[Any], block: bool) -> None:
        """Full (or nearly): wait for room under the lock, or refuse."""
        self._lock.acquire()
        try:
            self._released += 1  # give back the ticket that found no room
            while True:
                if self._closed:
                    raise BatcherClosed(f"batcher {self.name!r} is closed; it accepts no new items")
                if next(self._tickets) - self._released < self.max_pending:
                    self._inbox.append(entry)
                    return
                self._released += 1
                if not block:
                    raise self._queue_full()
                self._wait_locked()
        finally:
            self._unlock()

    def _withdraw(self, entry: _Ticket[Any]) -> None:
        """The batcher is closed: take the item back, unless a drain already took it."""
        try:
            self._inbox.remove(entry)
        except ValueError:
            return  # already drained: it is handled like every accepted item
        with self._locked():
            self._released += 1
            self._changed.notify_all()
        raise BatcherClosed(f"batcher {self.name!r} is closed; it accepts no new items")

    # -- the lock and the inbox ----------------------------------------------------

    @contextlib.contextmanager
    def _guard(self) -> Iterator[None]:
        """A change of limits (``reconfigure``, the tuner) happens under the lock, after
        the inbox was drained: the items accepted before it are buffered under the old
        limits and judged again by the new ones."""
        with self._locked():
            self._drain_locked()
            yield

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self._lock.acquire()
        try:
            yield
        finally:
            self._unlock()

    def _unlock(self) -> None:
        """Release the lock; then drain whatever was inboxed while we held it."""
        self._lock.release()
        self._unlock_drained()

    def _unlock_drained(self) -> None:
        while self._inbox and self._lock.acquire(False):
            self._drain_locked()
            self._lock.release()
        refused = self._refused
        while refused:  # set outside the lock: a done-callback may submit
            try:
                future, error = refused.popleft()
            except IndexError:  # another thread took the last one
                return
            future.set_exception(error)

    def _wait_locked(self) -> None:
        """Wait for a change, draining the inbox first: the wait releases the lock, and
        an item inboxed while we held it (its submitter found the lock taken) may be
        the one that fills the batcher and must flush it; nobody else would drain it."""
        self._drain_locked()
        self._changed.wait()

    def _drain_locked(self) -> None:
        inbox = self._inbox
        if not inbox:
            return
        put = self._buffer.put
        now = self._clock.now()
        flushes: list[Flush[T]] = []
        while inbox:
            future = inbox.popleft()
            try:
                flushes += put(future.freight_item, now, future)
            except Exception as exc:  # the caller's key= or sizer raised: its own error
                self._released += 1
                self._stats.failed += 1
                if future.set_running_or_notify_cancel():
                    self._refused.append((future, exc))
                continue
            self._pending += 1
        flushes += self._full_flushes()
        if self._closed:
            flushes += self._buffer.close()
        if flushes:
            self._start(flushes)
        if self._timer is None and self._timeout is not None:
            self._arm()

    # -- flush and close -------------------------------------------------------------

    def flush(self) -> None:
        """Hand every open batch to the handler now, and block until those are handled."""
        self._lock.acquire()
        try:
            self._drain_locked()
            self._start(self._buffer.flush())
            targets = set(self._unfinished)
            while targets & self._unfinished:
                self._wait_locked()
        finally:
            self._unlock()

    def close(self, drain: bool = True, timeout: float | None = None) -> None:
        """Stop accepting items and settle every accepted one.

        ``drain=True`` handles everything pending (partial batches flush with reason
        ``"close"``) and blocks until done. ``drain=False`` fails what has not
        started with :class:`~freight.BatcherClosed`; batches already running in a
        thread finish (threads cannot be interrupted). ``timeout`` bounds the wait.
        """
        doomed: list[Future[Any]] = []
        with self._locked():
            self._closed = True
            self._drain_locked()
            if drain:
                self._start(self._buffer.close())
            else:
                doomed = self._abort_locked()
            self._changed.notify_all()
        if doomed:  # failed outside the lock: a done-callback may call submit (and be refused)
            error = BatcherClosed(
                f"batcher {self.name!r} was closed with drain=False before this item was handled"
            )
            for future in doomed:
                future.set_exception(error)
        self._lock.acquire()
        try:
            done = self._changed.wait_for(self._idle_locked, timeout)
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
        finally:
            self._unlock()
        if not done:
            raise TimeoutError(
                f"batcher {self.name!r} still had {self.pending} pending items after "
                f"{timeout} s of close(); they keep running"
            )
        self._executor.shutdown(wait=True)
        if self._own_clock and isinstance(self._clock, ThreadClock):
            self._clock.stop()

    def _idle_locked(self) -> bool:
        if self._inbox:
            self._drain_locked()
        return self._pending == 0 and self._dispatch.running == 0 and not self._inbox

    def __enter__(self) -> ThreadBatcher[T, R]:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close(drain=True)

    # -- internals (with the lock held where the name says so) ----------------------

    def _arm(self) -> None:
        deadline = self._buffer.next_deadline()
        if deadline is not None:
            self._timer_at = deadline
            self._timer = self._clock.call_at(deadline, self._on_timer)

    def _on_timer(self) -> None:
        self._lock.acquire()
        try:
            self._timer = None
            self._drain_locked()
            self._start(self._buffer.tick(max(self._clock.now(), self._timer_at)))
            if self._timer is None:
                self._arm()
        finally:
            self._unlock()

    def _start(self, flushes: Sequence[Flush[T]]) -> None:
        for flush in flushes:
            self._unfinished.add(id(flush))
            for ready in self._dispatch.push(flush):
                self._executor.submit(self._run, ready)

    def _run(self, flush: Flush[T]) -> None:
        items, futures = flush.items, flush.tickets
        tried = self._tried
        try:
            live = [f in tried or f.set_running_or_notify_cancel() for f in futures]
            if not all(live):
                kept = [(i, f) for i, f, ok in zip(items, futures, live, strict=True) if ok]
                dropped = len(items) - len(kept)
                items, futures = [i for i, _ in kept], [f for _, f in kept]
                with self._locked():
                    self._pending -= dropped
                    self._released += dropped
                    self._stats.cancelled += dropped
            if items:
                self._execute(flush, items, futures)
        except BaseException as exc:  # a bug, or KeyboardInterrupt / SystemExit from the handler
            self._fail(futures, exc if isinstance(exc, Exception) else stopped_by(self.name, exc))
            if not isinstance(exc, Exception):
                raise
        finally:
            self._lock.acquire()
            try:
                self._unfinished.discard(id(flush))
                for ready in self._dispatch.done(flush):
                    self._executor.submit(self._run, ready)
                self._changed.notify_all()
            finally:
                self._unlock()

    def _execute(self, flush: Flush[T], items: list[T], futures: list[Future[Any]]) -> None:
        clock = self._clock
        started = clock.now()
        outcome, calls = run_sync(
            items,
            self._call,
            self._retry,
            random=self._random,
            sleep=clock.sleep_sync,
            now=clock.now,
            rate_limit=self._limiter,
            tried=self._tried_of(futures),
        )
        succeeded, failed, retry_items = self._sort_out(items, futures, outcome)
        late: list[tuple[T, Future[Any]]] = []
        self._lock.acquire()
        try:
            if retry_items and self._aborted:  # close(drain=False) ran meanwhile
                late, retry_items = retry_items, []
                for _, future in late:
                    self._tried.pop(future, None)
                failed += len(late)
            self._pending -= succeeded + failed
            self._released += succeeded + failed
            self._changed.notify_all()  # room for the submitters waiting in _admit_slowly
            if retry_items:
                self._schedule_retry(retry_items, outcome.again_after)
            event = self._record(
                flush,
                size=len(items),
                wait=started - flush.opened_at,
                duration=clock.now() - started,
                succeeded=succeeded,
                failed=failed,
                retried=len(retry_items),
                calls=calls,
            )
        finally:
            self._unlock()
        # Callers' futures are settled outside the lock and after their room was given
        # back: a done-callback may submit, even at max_pending, without a deadlock.
        self._deliver(futures, outcome)
        for _, future in late:
            future.set_exception(
                BatcherClosed(f"batcher {self.name!r} was closed with drain=False before a retry")
            )
        if self._subscribers:
            self._publish(event)

    def _call(self, items: list[T]) -> Reply:
        return call_handler(self._handler, items)

    def _fail(self, futures: list[Future[Any]], error: BaseException) -> None:
        failing = [
            future
            for future in futures
            if not future.done() and (future.running() or future.set_running_or_notify_cancel())
        ]
        with self._locked():
            self._pending -= len(failing)
            self._released += len(failing)
            self._stats.failed += len(failing)
            self._changed.notify_all()
        for future in failing:  # outside the lock, after the room was given back
            future.set_exception(error)

    def _schedule_retry(self, retry_items: list[tuple[T, Future[Any]]], delay: float) -> None:
        """Put the items the plan sent back into the buffer after ``delay``, together."""
        clock = self._clock
        handle = clock.call_at(clock.now() + delay, lambda: self._requeue(retry_items))
        for item, future in retry_items:
            self._retry_waiting[future] = (handle, item)

    def _requeue(self, retry_items: list[tuple[T, Future[Any]]]) -> None:
        self._lock.acquire()
        try:
            now = self._clock.now()
            for item, future in retry_items:
                if self._retry_waiting.pop(future, None) is None:
                    continue  # failed by close(drain=False) meanwhile
                try:
                    self._start(self._buffer.put(item, now, future))
                except Exception as exc:  # a reconfigure made it ItemTooLarge meanwhile
                    self._tried.pop(future, None)
                    self._pending -= 1
                    self._released += 1
                    self._stats.failed += 1
                    self._refused.append((future, exc))  # set once the lock is released
            self._start(self._full_flushes())
            if self._closed:
                self._start(self._buffer.close())
            if self._timer is None and self._timeout is not None:
                self._arm()
        finally:
            self._unlock()

    def _abort_locked(self) -> list[Future[Any]]:
        """Uncount every item that has not started; return the futures to fail."""
        self._aborted = True
        doomed: list[Future[Any]] = []
        failing: list[Future[Any]] = []
        for flush in self._buffer.close() + self._dispatch.take_all():
            doomed.extend(flush.tickets)
            self._unfinished.discard(id(flush))
        for future, (handle, _item) in self._retry_waiting.items():
            handle.cancel()
            doomed.append(future)
        self._retry_waiting.clear()
        for future in doomed:
            self._tried.pop(future, None)
            if future.running() or future.set_running_or_notify_cancel():
                failing.append(future)
                self._stats.failed += 1
            else:
                self._stats.cancelled += 1
            self._pending -= 1
            self._released += 1
        return failing
