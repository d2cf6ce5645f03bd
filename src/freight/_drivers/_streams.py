"""The caller's side of a streaming batch, and what kind of handler a batcher has.

Rules: this module knows no driver. :class:`BatchStream` reaches its batcher only
through :class:`StreamSource` (the few members of :class:`~freight.Batcher` a stream
reads), so it imports neither :mod:`freight._drivers._asyncio` nor any other driver;
they import it. Everything a stream does to its batcher runs on the loop's thread
(a dropped stream's leaving is sent there). Nothing here changes what a batch does.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
from collections.abc import AsyncIterator
from types import TracebackType
from typing import Any, Protocol, TypeVar

from freight._core._spec import BatchSpec
from freight._drivers._runner import StreamCaller
from freight._errors import BatcherClosed, ConfigError

__all__ = [
    "BatchStream",
    "StreamSource",
    "hold_until_done",
    "is_async_callable",
    "is_stream_callable",
    "refuse_auto_stream",
]

R = TypeVar("R")

_log = logging.getLogger("freight")


class StreamSource(Protocol):
    """What a :class:`BatchStream` uses of its batcher (a :class:`~freight.Batcher`)."""

    @property
    def name(self) -> str: ...
    @property
    def pending(self) -> int: ...
    @property
    def max_pending(self) -> int: ...
    @property
    def closed(self) -> bool: ...
    async def _wait_for_room(self) -> None: ...
    def _accept(self, item: Any, ticket: asyncio.Future[Any]) -> None: ...
    def _withdraw(self, item: Any, ticket: asyncio.Future[Any]) -> None: ...


def is_async_callable(fn: object) -> bool:
    """True for ``async def`` functions, partials of them and objects with ``async __call__``."""
    if inspect.iscoroutinefunction(fn):
        return True
    call = getattr(fn, "__call__", None)  # noqa: B004  (we want the method, not callable())
    return call is not None and inspect.iscoroutinefunction(call)


def is_stream_callable(fn: object) -> bool:
    """True for async generator functions (``async def`` with ``yield``), partials of them
    and objects whose ``__call__`` is one: the handlers of streaming batches."""
    if inspect.isasyncgenfunction(fn):
        return True
    call = getattr(fn, "__call__", None)  # noqa: B004  (we want the method, not callable())
    return call is not None and inspect.isasyncgenfunction(call)


def refuse_auto_stream(spec: BatchSpec, name: str) -> None:
    """Raise :class:`~freight.ConfigError` if ``spec`` asks for ``size="auto"``: the
    handler named ``name`` streams, and streaming batches have a fixed size.

    Why: the tuner models a batch by one handler time, which both delays its callers
    and holds a batch slot (its rules 3 and 4). A streaming batch has two such times:
    its callers get their first output after the first step, but it holds its slot
    until its longest stream ends, which the handler decides, not the batch size. Fed
    the first step, the tuner would plan for a throughput the handler does not have
    (queues without bound); fed the whole stream, it would size batches by stream
    lengths. Either way the latency target would not be kept, so it is refused.
    """
    if spec.auto:
        raise ConfigError(
            f"size='auto' cannot tune a streaming batch: {name!r} streams (its handler is "
            "an async generator), and the tuner's model of one handler time per batch "
            "does not hold for it (the first output comes after one step, the batch holds "
            "its slot until its longest stream ends); give it a fixed size and timeout "
            "(e.g. size=16, timeout=0.005) and change them at runtime with reconfigure()"
        )


class BatchStream(AsyncIterator[R]):
    """One caller's outputs in a streaming batch (what :meth:`Batcher.stream` returns).

    Iterate with ``async for``; ``aclose()``, leaving an ``async with`` block, dropping
    the iterator or cancelling the task that waits in it leaves the batch without
    stopping the others. ``break`` alone does not leave while the iterator is still
    referenced (held in a variable): the caller stays in the batch's later steps until
    it is dropped or closed, so write ``async with f(x) as stream: async for v in
    stream: ...`` to leave at the block's end. An error that ends this stream is raised
    once; the next read stops.

    A caller that stops reading (``break``, ``aclose()``, cancelled while waiting,
    its iterator dropped) leaves the batch: its item is removed from the handler's
    list before the next step (the list shrinks between steps, never during one),
    so no later step is computed for it. A caller the handler ended keeps its
    place. A step may also have one entry per item of the original batch, as Ray's
    ``@serve.batch`` handlers yield; those of callers that left are ignored.

    The steps are taken back to back from the moment the batch starts, with one
    turn of the event loop between two of them, in which the callers the last step
    woke read their output (or leave). An output not read yet waits for its caller.
    """

    __slots__ = ("_batcher", "_caller", "_finished", "_item", "_queued")

    def __init__(self, batcher: StreamSource, item: Any, caller: StreamCaller, queued: bool):
        self._batcher = batcher
        self._item = item
        self._caller = caller
        self._queued = queued
        self._finished = False

    def __aiter__(self) -> BatchStream[R]:
        return self

    async def __anext__(self) -> R:
        caller = self._caller
        outputs = caller.outputs
        if outputs:
            return outputs.popleft()  # type: ignore[no-any-return]
        if not self._queued and not self._finished:
            await self._enter()
        while not caller.done():
            try:
                await caller.wait()
            except asyncio.CancelledError:
                self._leave()
                raise
            if outputs:
                return outputs.popleft()  # type: ignore[no-any-return]
        if self._finished or caller.cancelled():
            self._finished = True
            raise StopAsyncIteration
        self._finished = True
        error = caller.exception()
        if error is not None:
            raise error
        raise StopAsyncIteration

    async def aclose(self) -> None:
        """Stop reading: leave the batch (a step already running still finishes)."""
        self._leave()
        self._finished = True

    async def __aenter__(self) -> BatchStream[R]:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Leave the batch (as :meth:`aclose`): a ``break`` inside the block leaves at its end."""
        await self.aclose()

    async def _enter(self) -> None:
        """Queue the item once the batcher has room (it was full when stream() was called)."""
        batcher = self._batcher
        try:
            while batcher.pending >= batcher.max_pending and not batcher.closed:
                await batcher._wait_for_room()
        except asyncio.CancelledError:
            self._caller.leave()
            raise
        if batcher.closed:
            self._caller.leave()
            self._finished = True
            raise BatcherClosed(f"batcher {batcher.name!r} is closed; it accepts no new items")
        try:
            batcher._accept(self._item, self._caller)
        except Exception:  # its key= or sizer raised, or it now costs over max_cost
            self._caller.leave()
            self._finished = True  # raised once; the next read stops
            raise
        self._queued = True

    def _leave(self) -> None:
        _leave(self._batcher, self._item, self._caller, self._queued, self._finished)

    def __del__(self) -> None:
        caller = self._caller
        if caller.done() and (self._finished or caller.cancelled()):
            return
        loop = caller.get_loop()
        if loop.is_closed():
            return
        # The garbage collector may run this on any thread; the batcher's buffer and
        # futures belong to the loop's. Leave there (with what it needs, not self).
        leave = functools.partial(
            _leave, self._batcher, self._item, caller, self._queued, self._finished
        )
        try:
            if _running_loop() is loop:
                leave()
            else:
                loop.call_soon_threadsafe(leave)
        except RuntimeError:  # the loop closed meanwhile: nothing is left to withdraw from
            pass
        except Exception:  # pragma: no cover - never raise from a finalizer
            _log.exception("freight: dropping a stream of batcher %r failed", self._batcher.name)


def hold_until_done(stream: BatchStream[Any], anchor: object) -> None:
    """Keep ``anchor`` alive until ``stream`` is over (ended, failed or left).

    For a batched method of an instance its batcher only references weakly (one with
    ``__slots__``): the instance lives while any of its streams is still running.
    """
    stream._caller.add_done_callback(functools.partial(_release, anchor))


def _release(anchor: object, done: object) -> None:
    """A done-callback whose only work is to have held ``anchor`` until now."""


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def _leave(
    batcher: StreamSource, item: Any, caller: StreamCaller, queued: bool, finished: bool
) -> None:
    """A stream's caller leaves its batch (on the loop's thread): its item is withdrawn
    if still buffered, and its later steps skip it."""
    if caller.done():
        if not caller.cancelled() and not finished:
            caller.exception()  # its caller gave the error up: mark it retrieved
        return
    if queued:
        batcher._withdraw(item, caller)
    caller.leave()
