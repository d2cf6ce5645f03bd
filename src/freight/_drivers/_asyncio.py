"""``Batcher``: the asyncio driver of the batch engine.

It owns the event loop's timers and tasks and decides nothing itself: the
:class:`~freight.BatchBuffer` says when a batch is due, the dispatch queue says
when it may start, and the batch plan says how it runs (retries, isolation).

A streaming batcher (its handler an async generator: one step per ``yield``) takes
items with :meth:`Batcher.stream`, which returns the caller's outputs as an async
iterator; the runner (:mod:`freight._drivers._runner`) drives the steps.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from types import TracebackType
from typing import Any, Generic, TypeVar, Unpack

from freight._core._buffer import Flush
from freight._core._clock import Clock, TimerHandle
from freight._core._plan import Reply
from freight._core._spec import BatchSpec
from freight._drivers._clocks import LoopClock
from freight._drivers._engine import EngineBase
from freight._drivers._options import BatcherKwargs, options_from
from freight._drivers._runner import (
    EXITS,
    Started,
    StreamCaller,
    _End,
    call_handler,
    drive_streams,
    handler_raised,
    run_async,
    start_streams,
    stopped_by,
)
from freight._drivers._streams import (
    BatchStream,
    hold_until_done,
    is_async_callable,
    is_stream_callable,
    refuse_auto_stream,
)
from freight._errors import BatcherClosed, ConfigError

__all__ = [
    "AsyncHandler",
    "BatchStream",
    "Batcher",
    "StreamHandler",
    "SyncHandler",
    "hold_until_done",
    "is_async_callable",
    "is_stream_callable",
    "refuse_auto_stream",
]

T = TypeVar("T")
R = TypeVar("R")

AsyncHandler = Callable[[list[T]], Awaitable[Sequence[R | BaseException] | None]]
SyncHandler = Callable[[list[T]], Sequence[R | BaseException] | None]
StreamHandler = Callable[[list[T]], AsyncIterator[Sequence[R | BaseException | _End] | None]]

_is_done = asyncio.Future.done


def _unbound_clock() -> float:
    raise RuntimeError("the batcher's clock is bound on first use inside an event loop")


class Batcher(EngineBase[T, R], Generic[T, R]):
    """Group single items from many asyncio callers into batches; each caller gets its own outcome.

    ::

        async def embed(texts: list[str]) -> list[list[float]]: ...

        async with Batcher(embed, BatchSpec(size=64, timeout=0.01)) as batcher:
            vector = await batcher.submit("hello")

    A handler that is an async generator makes a *streaming* batcher: callers use
    :meth:`stream` instead of :meth:`submit` and read their outputs one step at a time.
    Its size is fixed: ``size="auto"`` is refused (see :func:`refuse_auto_stream`).

    Args:
        handler: ``list[T] -> list[R]`` (``async def`` or plain ``def``, which runs in
            a worker thread). Element *i* of the result is item *i*'s result, or an
            ``Exception`` instance that fails item *i* alone; raising fails the batch;
            returning ``None`` gives every item the result ``None``. A ``BaseException``
            other than ``KeyboardInterrupt``, ``SystemExit`` and cancellation fails the
            batch as a :class:`~freight.HandlerContractError` naming it. Or an async
            generator over the list, each ``yield`` one step (see :meth:`stream`).
        spec: when a batch is due (:class:`BatchSpec`).
        key: ``item -> hashable``; each key is batched separately with its own timer.
        where: ``item -> bool``; rejected items raise :class:`~freight.Skipped`.
        max_concurrent_batches: handler calls running at once.
        max_pending: items accepted and not yet settled; beyond it ``submit`` waits
            (``overflow="block"``) or raises :class:`~freight.QueueFull` (``"reject"``).
            Once ``max_pending`` items are pending, the open batches flush at once
            (reason ``"pending"``), even below ``size``: nothing more can join them.
        ordered: a key's next batch starts only after its previous batch finished.
        retry: a :class:`Retry` policy (attempts, backoff, poison isolation); ``None``
            delivers a raising handler's error to every item of the batch.
        rate_limit: a :class:`RateLimiter` (or batches per second) pacing handler calls.
        clock: a :class:`~freight.testing.FakeClock` in tests; the loop's clock otherwise.
        name: the batcher's name in events and metrics (default: the handler's name).
        subscribers: callables receiving a :class:`BatchEvent` after every batch.
    """

    def __init__(
        self,
        handler: AsyncHandler[T, R] | SyncHandler[T, R] | StreamHandler[T, R],
        spec: BatchSpec,
        **options: Unpack[BatcherKwargs[T]],
    ) -> None:
        self._is_stream = is_stream_callable(handler)  # read by _check_spec
        super().__init__(handler, spec, options_from("Batcher", dict(options)))
        self._clock: Clock | None = self.options.clock
        self._now: Callable[[], float] = _unbound_clock
        self._is_async = is_async_callable(handler)
        self._timeout = self._buffer.timeout  # spec.timeout, or the tuner's wait
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: TimerHandle | None = None
        self._timer_at = 0.0
        self._closed = False
        self._room: deque[asyncio.Future[None]] = deque()
        self._idle: list[asyncio.Future[None]] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._unfinished: set[int] = set()
        self._barriers: list[tuple[set[int], asyncio.Future[None]]] = []
        self._retry_waiting: dict[asyncio.Future[Any], tuple[TimerHandle, T]] = {}

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<Batcher {self.name!r} {self.spec!r} pending={self._pending} {state}>"

    def _check_spec(self, spec: BatchSpec, name: str) -> None:
        if self._is_stream:
            refuse_auto_stream(spec, name)

    # -- submitting ------------------------------------------------------------

    @property
    def closed(self) -> bool:
        """True once :meth:`close` has started; no new items are accepted."""
        return self._closed

    def submit_nowait(self, item: T) -> asyncio.Future[R]:
        """Accept ``item`` without waiting; return the future of its outcome.

        Raises:
            QueueFull: ``max_pending`` items are pending.
            Skipped: the ``where=`` predicate rejected the item.
            BatcherClosed: the batcher is closed.
        """
        if self._closed or self._is_stream:
            self._refuse()
        if self._pending >= self.max_pending:
            raise self._queue_full()
        if self._where is not None and not self._where(item):
            raise self._skip(item)
        # No per-item loop check: get_running_loop() costs ~0.2 µs. A future of this
        # loop awaited from another loop fails in asyncio itself ("different loop").
        loop = self._loop or self._bind()
        future: asyncio.Future[R] = loop.create_future()
        self._accept(item, future)
        return future

    def stream(self, item: T) -> BatchStream[R]:
        """Accept ``item`` in a streaming batch; return an async iterator of its outputs.

        The item is queued now (call this inside the running event loop). The handler
        is an async generator over the batch; each ``yield`` is one step: a list with
        one entry per item, a value (this caller's next output), an ``Exception``
        instance (ends this caller's stream with that error) or :data:`freight.END`
        (ends it early). The others go on. When the handler returns, every stream
        ends; when it raises, every stream still open ends with that error. How a
        caller leaves the batch and when steps are taken: see :class:`BatchStream`.

        Raises:
            ConfigError: the handler is not an async generator (use :meth:`submit`).
            QueueFull: ``max_pending`` items are pending and ``overflow="reject"``
                (with ``"block"`` the first read waits for room instead).
            Skipped: the ``where=`` predicate rejected the item.
            BatcherClosed: the batcher is closed.
        """
        if self._closed or not self._is_stream:
            self._refuse(stream=True)
        if self._where is not None and not self._where(item):
            raise self._skip(item)
        caller = StreamCaller(self._loop or self._bind())
        queued = self._pending < self.max_pending
        if queued:
            self._accept(item, caller)
        else:
            if self._priced:  # refused now, not when its first read finds room
                self._buffer.check(item)
            if self.overflow == "reject":
                raise self._queue_full()
        return BatchStream(self, item, caller, queued)

    async def submit(self, item: T) -> R:
        """Submit ``item`` and wait for its own result (or raise its own error).

        With ``overflow="block"`` this first waits for room when ``max_pending``
        items are pending. Cancelling the caller before the item is dispatched
        removes the item; after dispatch, only this caller's result is dropped.
        """
        while self._pending >= self.max_pending and not self._closed:
            if self._priced:  # an item no batch can take is refused before waiting
                self._buffer.check(item)
            if self.overflow == "reject":
                raise self._queue_full()
            await self._wait_for_room()
        future = self.submit_nowait(item)
        try:
            return await future
        except asyncio.CancelledError:
            self._withdraw(item, future)
            raise

    def _refuse(self, *, stream: bool = False) -> None:
        if self._closed:
            raise BatcherClosed(f"batcher {self.name!r} is closed; it accepts no new items")
        if stream:
            raise ConfigError(
                f"batcher {self.name!r} has a handler that returns its results (not an async "
                "generator): use submit(item), or make the handler an async generator to stream"
            )
        raise ConfigError(
            f"batcher {self.name!r} streams (its handler is an async generator): use "
            "stream(item) and iterate over its outputs, not submit(item)"
        )

    def _accept(self, item: T, ticket: asyncio.Future[Any]) -> None:
        """Put ``item`` in the buffer; start what is due, or arm the timer."""
        flushes = self._buffer.put(item, self._now(), ticket)
        self._pending += 1
        if self._pending >= self.max_pending:
            flushes = [*flushes, *self._full_flushes()]
        if flushes:
            self._start(flushes)
        elif self._timer is None and self._timeout is not None:
            self._arm()

    def _withdraw(self, item: T, ticket: asyncio.Future[Any]) -> None:
        """Remove a still-buffered item whose caller gave up (nothing if it left the buffer)."""
        if self._buffer.discard(item, ticket):
            self._tried.pop(ticket, None)
            self._pending -= 1
            self._stats.cancelled += 1
            self._after_settle()

    async def flush(self) -> None:
        """Hand every open batch to the handler now, and wait until those are handled.

        Items a handler sends back for a per-item retry are handled later.
        """
        if self._loop is None:
            return
        self._start(self._buffer.flush())
        if self._unfinished:
            barrier = asyncio.get_running_loop().create_future()
            self._barriers.append((set(self._unfinished), barrier))
            await barrier

    async def close(self, drain: bool = True) -> None:
        """Stop accepting items and settle every accepted one.

        ``drain=True`` handles everything pending (partial batches flush with reason
        ``"close"``) and waits for it. ``drain=False`` fails what has not started
        and cancels running batches; their callers get :class:`BatcherClosed`.
        """
        self._closed = True
        for waiter in self._room:
            if not waiter.done():
                waiter.set_result(None)
        self._room.clear()
        if self._loop is None:
            self._buffer.close()
            return
        if drain:
            self._start(self._buffer.close())
            while self._pending > 0 or self._dispatch.running > 0:
                idle = asyncio.get_running_loop().create_future()
                self._idle.append(idle)
                await idle
        else:
            await self._abort()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    async def __aenter__(self) -> Batcher[T, R]:
        self._bind()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close(drain=True)

    # -- internals: binding, timers --------------------------------------------

    def _bind(self) -> asyncio.AbstractEventLoop:
        loop = asyncio.get_running_loop()
        if self._loop is None:
            self._loop = loop
            if self._clock is None:
                self._clock = LoopClock(loop)
            self._now = self._clock.now
        elif self._loop is not loop:
            raise RuntimeError(
                f"batcher {self.name!r} is bound to another event loop; create one Batcher "
                "per event loop"
            )
        return loop

    def _arm(self) -> None:
        deadline = self._buffer.next_deadline()
        if deadline is not None:
            assert self._clock is not None
            self._timer_at = deadline
            self._timer = self._clock.call_at(deadline, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        assert self._clock is not None
        self._start(self._buffer.tick(max(self._clock.now(), self._timer_at)))
        self._arm()

    # -- internals: running batches ---------------------------------------------

    def _start(self, flushes: Sequence[Flush[T]]) -> None:
        for flush in flushes:
            self._unfinished.add(id(flush))
            for ready in self._dispatch.push(flush):
                self._spawn(ready)

    def _spawn(self, flush: Flush[T]) -> None:
        assert self._loop is not None
        task = self._loop.create_task(self._run(flush))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, flush: Flush[T]) -> None:
        items, futures = flush.items, flush.tickets
        try:
            if any(map(_is_done, futures)):
                items, futures = self._drop_cancelled(items, futures)
            if items:
                if self._is_stream:
                    await self._execute_stream(flush, items, futures)
                else:
                    await self._execute(flush, items, futures)
        except BaseException as exc:  # close(drain=False), KeyboardInterrupt/SystemExit, a bug
            if isinstance(exc, Exception):
                error: BaseException = exc
            elif isinstance(exc, asyncio.CancelledError):
                error = BatcherClosed(
                    f"batcher {self.name!r} was closed without draining while this batch ran"
                )
            else:
                error = stopped_by(self.name, exc)
            if self._retry_waiting:  # items sent back for another try are not this batch's
                futures = [f for f in futures if f not in self._retry_waiting]
            self._fail(futures, error)
            if not isinstance(exc, asyncio.CancelledError | Exception):
                raise
        finally:
            self._finish(flush)

    def _drop_cancelled(
        self, items: list[T], futures: list[asyncio.Future[Any]]
    ) -> tuple[list[T], list[asyncio.Future[Any]]]:
        kept = [(i, f) for i, f in zip(items, futures, strict=True) if not f.done()]
        dropped = len(items) - len(kept)
        self._pending -= dropped
        self._stats.cancelled += dropped
        for f in futures:
            if f.done():
                self._tried.pop(f, None)
        return [i for i, _ in kept], [f for _, f in kept]

    async def _execute(
        self, flush: Flush[T], items: list[T], futures: list[asyncio.Future[Any]]
    ) -> None:
        clock = self._clock
        assert clock is not None
        started = clock.now()
        outcome, calls = await run_async(
            items,
            self._call,
            self._retry,
            random=self._random,
            sleep=clock.sleep,
            now=clock.now,
            rate_limit=self._limiter,
            tried=self._tried_of(futures),
        )
        succeeded, failed, retry_items = self._settle(items, futures, outcome)
        self._pending -= succeeded + failed
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
        if self._subscribers:
            self._publish(event)

    async def _execute_stream(
        self, flush: Flush[T], items: list[T], callers: list[StreamCaller]
    ) -> None:
        """Start a streaming batch through the plan, bind its callers, drive its steps."""
        clock = self._clock
        assert clock is not None
        started = clock.now()
        outcome, calls, runs = await start_streams(
            items,
            self._handler,
            self._retry,
            random=self._random,
            sleep=clock.sleep,
            now=clock.now,
            rate_limit=self._limiter,
            tried=self._tried_of(callers),
        )
        _, _, retry_items = self._sort_out(items, callers, outcome)
        again = set(outcome.again)
        for i, (caller, result) in enumerate(zip(callers, outcome.outcomes, strict=True)):
            if type(result) is Started:
                result.run.bind(result.index, caller, result.entry)
            elif i not in again:  # its error, or END: the handler yielded nothing
                caller.end(result if isinstance(result, BaseException) else None)
        if retry_items:
            self._schedule_retry(retry_items, outcome.again_after)
        try:
            await drive_streams(runs)
        finally:
            # The callers whose stream is over are settled here; a batch stopped by
            # close(drain=False) or an exit fails the others in _run.
            settled = [c for i, c in enumerate(callers) if i not in again and c.done()]
            left = sum(c.cancelled() for c in settled)
            failed = sum(not c.cancelled() and c.exception() is not None for c in settled)
            self._pending -= len(settled)
            self._stats.cancelled += left
            event = self._record(
                flush,
                size=len(items),
                wait=started - flush.opened_at,
                duration=clock.now() - started,
                succeeded=len(settled) - left - failed,
                failed=failed,
                retried=len(retry_items),
                calls=calls,
            )
            if self._subscribers:
                self._publish(event)

    async def _call(self, items: list[T]) -> Reply:
        if not self._is_async:
            assert self._loop is not None
            return await self._loop.run_in_executor(None, call_handler, self._handler, items)
        try:
            value = await self._handler(list(items))
        except Exception as exc:
            return Reply(error=exc)
        except EXITS:
            raise
        except BaseException as exc:  # not a request to stop: the batch fails, we go on
            return Reply(error=handler_raised(exc))
        return Reply(value=value)

    def _fail(self, futures: list[asyncio.Future[Any]], error: BaseException) -> None:
        failed = 0
        for future in futures:
            if not future.done():
                future.set_exception(error)
                failed += 1
        self._pending -= failed
        self._stats.failed += failed

    def _finish(self, flush: Flush[T]) -> None:
        self._unfinished.discard(id(flush))
        if self._barriers:
            kept = []
            for targets, barrier in self._barriers:
                targets.discard(id(flush))
                if targets:
                    kept.append((targets, barrier))
                elif not barrier.done():
                    barrier.set_result(None)
            self._barriers = kept
        for ready in self._dispatch.done(flush):
            self._spawn(ready)
        self._after_settle()

    def _after_settle(self) -> None:
        if self._room:
            free = self.max_pending - self._pending
            while free > 0 and self._room:
                waiter = self._room.popleft()
                if not waiter.done():
                    waiter.set_result(None)
                    free -= 1
        if self._idle and self._pending == 0 and self._dispatch.running == 0:
            for idle in self._idle:
                if not idle.done():
                    idle.set_result(None)
            self._idle.clear()

    async def _wait_for_room(self) -> None:
        loop = self._loop or self._bind()
        waiter: asyncio.Future[None] = loop.create_future()
        self._room.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self._after_settle()  # pass the wake-up on to the next waiter
            raise

    # -- internals: per-item retries ----------------------------------------------

    def _schedule_retry(
        self, retry_items: list[tuple[T, asyncio.Future[Any]]], delay: float
    ) -> None:
        """Put the items the plan sent back into the buffer after ``delay``, together."""
        clock = self._clock
        assert clock is not None
        handle = clock.call_at(clock.now() + delay, lambda: self._requeue(retry_items))
        for item, future in retry_items:
            self._retry_waiting[future] = (handle, item)

    def _requeue(self, retry_items: list[tuple[T, asyncio.Future[Any]]]) -> None:
        assert self._clock is not None
        now = self._clock.now()
        for item, future in retry_items:
            self._retry_waiting.pop(future, None)
            if future.done():  # its caller gave up while it waited
                self._tried.pop(future, None)
                self._pending -= 1
                self._stats.cancelled += 1
                continue
            try:
                flushes = self._buffer.put(item, now, future)
            except Exception as exc:  # a reconfigure made it ItemTooLarge meanwhile
                self._tried.pop(future, None)
                self._pending -= 1
                self._stats.failed += 1
                future.set_exception(exc)
                continue
            self._start(flushes)
        self._start(self._full_flushes())
        self._after_settle()
        if self._closed:
            self._start(self._buffer.close())
        if self._timer is None and self._timeout is not None:
            self._arm()

    async def _abort(self) -> None:
        error = BatcherClosed(
            f"batcher {self.name!r} was closed with drain=False before this item was handled"
        )
        doomed: list[asyncio.Future[Any]] = []
        for flush in self._buffer.close() + self._dispatch.take_all():
            doomed.extend(flush.tickets)
            self._unfinished.discard(id(flush))
        for future, (handle, _item) in list(self._retry_waiting.items()):
            handle.cancel()
            doomed.append(future)
        gone = [f for f in doomed if f.done()]  # their callers gave up: only uncount them
        self._pending -= len(gone)
        self._stats.cancelled += len(gone)
        for future in doomed:
            self._tried.pop(future, None)
        self._fail([f for f in doomed if not f.done()], error)
        self._retry_waiting.clear()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._after_settle()
