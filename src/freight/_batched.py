"""``@batched``: write a function over a list, call it with one item.

::

    @freight.batched(size=64, timeout=0.01)
    async def embed(texts: list[str]) -> list[Vector]: ...

    vector = await embed("hello")          # one item in, its own result out
    vectors = await embed.batch(["a", "b"])  # the list form, called directly

``@freight.batched`` alone takes Ray Serve's defaults (``size=10``, ``timeout=0.01``).
Module functions get one batcher (per event loop for ``async def``); methods get one
batcher per instance, and a pending call keeps its instance alive (``await
Model().predict(x)`` works). A plain ``def`` is driven by a :class:`ThreadBatcher` and
called from threads; an ``async def`` by a :class:`Batcher`; an ``async def`` with
``yield`` streams (:class:`StreamBatched`: each call returns an async iterator).

A function of several lists, ``f(texts: list[str], langs: list[str])``, is called with
one value per parameter, ``f("hi", lang="en")`` or positionally: the handler gets one
list per parameter, and calls naming different parameters are batched apart.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import threading
import weakref
from _thread import get_ident
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Sequence
from concurrent.futures import Future
from datetime import timedelta
from typing import Any, Generic, Literal, TypeVar, Unpack, overload

from freight._batched_base import _UNSET, _Batched, _Options, _whole
from freight._core._spec import BatchSpec, CostFn
from freight._drivers._asyncio import (
    Batcher,
    BatchStream,
    StreamHandler,
    hold_until_done,
    is_async_callable,
    is_stream_callable,
    refuse_auto_stream,
)
from freight._drivers._options import BatcherKwargs, options_from
from freight._drivers._runner import _End
from freight._drivers._threads import ThreadBatcher
from freight._errors import ConfigError

__all__ = ["AsyncBatched", "BatchedDecorator", "StreamBatched", "SyncBatched", "batched"]

T = TypeVar("T")
R = TypeVar("R")
S = TypeVar("S")

DEFAULT_SIZE = 10
"""Items in a decorated function's batch when no ``size`` is given (Ray Serve's default)."""

DEFAULT_TIMEOUT = 0.01
"""Seconds a decorated function's partial batch waits for company (see :func:`batched`)."""

AsyncListFn = Callable[[list[T]], Awaitable[Sequence[R | BaseException] | None]]
SyncListFn = Callable[[list[T]], Sequence[R | BaseException] | None]
StreamListFn = StreamHandler[T, R]


class AsyncBatched(_Batched, Generic[T, R]):
    """An ``async def`` list function called one item at a time (see :func:`batched`)."""

    def __init__(self, fn: Callable[..., Any], options: _Options, instance: Any = None) -> None:
        self._setup(fn, options, instance)
        self._batchers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Batcher[T, R]] = (
            weakref.WeakKeyDictionary()
        )
        # The batcher used last and its loop. A call whose thread runs that loop uses it
        # straight away: asyncio's BaseEventLoop records the thread running it
        # (``_thread_id``, set by run_forever), and comparing it with get_ident() costs
        # ~0.05 µs where get_running_loop() costs ~0.2 µs (it calls getpid() each time),
        # a third of what @batched used to add to Batcher.submit. Another kind of loop
        # (uvloop) is never cached here and takes get_running_loop() on every call.
        # The pair is one attribute, read once: read as two, another thread could
        # cache its own pair between the reads and divert this call to its batcher.
        self._cached: tuple[Any, Batcher[T, R]] | None = None
        self._one = False  # a handler of one list, known: the fast path applies

    def batcher(self) -> Batcher[T, R]:
        """The :class:`Batcher` serving the running event loop (created on first use)."""
        loop = asyncio.get_running_loop()
        batcher = self._batchers.get(loop)
        if batcher is None:
            batcher = Batcher(self._handler("async"), self._options.spec, **self._batcher_kwargs())
            self._batchers[loop] = batcher
        if isinstance(loop, asyncio.BaseEventLoop):
            self._cached = (loop, batcher)
        return batcher

    @overload
    def __call__(self, item: T, /) -> Coroutine[Any, Any, R]: ...
    @overload
    def __call__(self, *args: Any, **kwargs: Any) -> Coroutine[Any, Any, Any]: ...
    def __call__(self, *args: Any, **kwargs: Any) -> Coroutine[Any, Any, Any]:
        """Submit one item (or one value per parameter) and wait for its own result."""
        if self._one and not kwargs and len(args) == 1:
            cached = self._cached
            if cached is not None and cached[0]._thread_id == get_ident():
                return cached[1].submit(args[0])
        return self._call(args, kwargs)

    def _call(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Coroutine[Any, Any, Any]:
        item = self._item(args, kwargs)
        self._one = self._params is None
        try:
            asyncio.get_running_loop()
        except RuntimeError:  # a coroutine made before the loop runs: asyncio.run(f(x))
            return self._submit_later(item)
        return self.batcher().submit(item)

    async def _submit_later(self, item: Any) -> R:
        return await self.batcher().submit(item)

    async def batch(self, items: list[T], *more: Any, **kwargs: Any) -> Any:
        """Call the undecorated list function directly, bypassing the batcher."""
        prefix = () if self._instance is None else (self._instance,)
        return await self._fn(*prefix, items, *more, **kwargs)

    async def close(self) -> None:
        """Drain and close the batcher of the running event loop."""
        loop = asyncio.get_running_loop()
        batcher = self._batchers.pop(loop, None)
        cached = self._cached
        if cached is not None and cached[0] is loop:
            self._cached = None
        if batcher is not None:
            await batcher.close()

    def _bound_form(self, obj: Any) -> AsyncBatched[Any, Any]:
        return AsyncBatched(self._fn, self._options, obj)

    def _held_view(self, state: dict[str, Any], obj: Any) -> AsyncBatched[Any, Any]:
        return _view(_HeldAsync, state, obj)

    def _batchers_now(self) -> list[Batcher[T, R]]:
        return list(self._batchers.values())

    @overload
    def __get__(self, obj: None, owner: type | None = None) -> AsyncBatched[T, R]: ...
    @overload
    def __get__(self, obj: object, owner: type | None = None) -> AsyncBatched[Any, Any]: ...
    def __get__(self, obj: object | None, owner: type | None = None) -> AsyncBatched[Any, Any]:
        if obj is None:
            return self
        return self._bind(obj)  # type: ignore[no-any-return]


class StreamBatched(_Batched, Generic[T, R]):
    """An ``async def`` list function with ``yield`` (a streaming batch) called one item
    at a time: each call returns an async iterator of that item's outputs.

    ::

        @freight.batched(size=16, timeout=0.005)
        async def generate(prompts: list[str]):
            for step in range(20):
                yield [f"{p}:{step}" for p in prompts]   # one entry per prompt

        async for token in generate("hello"):
            ...

    See :meth:`Batcher.stream` for the step contract (values, ``Exception`` instances,
    :data:`freight.END`) and what happens when a caller stops reading. Its size is
    fixed: ``size="auto"`` is refused with a :class:`~freight.ConfigError` (see
    :func:`~freight._drivers._asyncio.refuse_auto_stream` for why).
    """

    def __init__(self, fn: Callable[..., Any], options: _Options, instance: Any = None) -> None:
        self._setup(fn, options, instance)
        self._check_spec(options.spec)
        self._batchers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Batcher[T, R]] = (
            weakref.WeakKeyDictionary()
        )

    def _check_spec(self, spec: BatchSpec) -> None:
        name = self._options.options.get("name") or getattr(self._fn, "__qualname__", "batcher")
        refuse_auto_stream(spec, str(name))

    def batcher(self) -> Batcher[T, R]:
        """The streaming :class:`Batcher` of the running event loop (created on first use)."""
        loop = asyncio.get_running_loop()
        batcher = self._batchers.get(loop)
        if batcher is None:
            batcher = Batcher(self._handler("stream"), self._options.spec, **self._batcher_kwargs())
            self._batchers[loop] = batcher
        return batcher

    @overload
    def __call__(self, item: T, /) -> BatchStream[R]: ...
    @overload
    def __call__(self, *args: Any, **kwargs: Any) -> BatchStream[Any]: ...
    def __call__(self, *args: Any, **kwargs: Any) -> BatchStream[Any]:
        """Queue one item (now: call it inside the running loop); iterate its outputs."""
        return self.batcher().stream(self._item(args, kwargs))

    def batch(self, items: list[T], *more: Any, **kwargs: Any) -> AsyncIterator[Any]:
        """Call the undecorated generator directly (its steps, one list each)."""
        prefix = () if self._instance is None else (self._instance,)
        result: AsyncIterator[Any] = self._fn(*prefix, items, *more, **kwargs)
        return result

    async def close(self) -> None:
        """Drain (every stream finishes) and close the batcher of the running event loop."""
        batcher = self._batchers.pop(asyncio.get_running_loop(), None)
        if batcher is not None:
            await batcher.close()

    def _bound_form(self, obj: Any) -> StreamBatched[Any, Any]:
        return StreamBatched(self._fn, self._options, obj)

    def _held_view(self, state: dict[str, Any], obj: Any) -> StreamBatched[Any, Any]:
        return _view(_HeldStream, state, obj)

    def _batchers_now(self) -> list[Batcher[T, R]]:
        return list(self._batchers.values())

    @overload
    def __get__(self, obj: None, owner: type | None = None) -> StreamBatched[T, R]: ...
    @overload
    def __get__(self, obj: object, owner: type | None = None) -> StreamBatched[Any, Any]: ...
    def __get__(self, obj: object | None, owner: type | None = None) -> StreamBatched[Any, Any]:
        if obj is None:
            return self
        return self._bind(obj)  # type: ignore[no-any-return]


class SyncBatched(_Batched, Generic[T, R]):
    """A plain list function called one item at a time, from threads (see :func:`batched`)."""

    def __init__(self, fn: Callable[..., Any], options: _Options, instance: Any = None) -> None:
        self._setup(fn, options, instance)
        self._batcher: ThreadBatcher[T, R] | None = None
        self._lock = threading.Lock()

    def batcher(self) -> ThreadBatcher[T, R]:
        """The :class:`ThreadBatcher` behind this function (created on first use)."""
        with self._lock:
            if self._batcher is None or self._batcher.closed:
                self._batcher = ThreadBatcher(
                    self._handler("sync"), self._options.spec, **self._batcher_kwargs()
                )
            return self._batcher

    @overload
    def __call__(self, item: T, /) -> R: ...
    @overload
    def __call__(self, *args: Any, **kwargs: Any) -> Any: ...
    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Submit one item and block until its own result (or raise its own error)."""
        return self.batcher().call(self._item(args, kwargs))

    @overload
    def submit(self, item: T, /) -> Future[R]: ...
    @overload
    def submit(self, *args: Any, **kwargs: Any) -> Future[Any]: ...
    def submit(self, *args: Any, **kwargs: Any) -> Future[Any]:
        """Submit one item; return the future of its outcome."""
        return self.batcher().submit(self._item(args, kwargs))

    def batch(self, items: list[T], *more: Any, **kwargs: Any) -> Any:
        """Call the undecorated list function directly, bypassing the batcher."""
        prefix = () if self._instance is None else (self._instance,)
        return self._fn(*prefix, items, *more, **kwargs)

    def close(self) -> None:
        """Drain and close the batcher (a later call starts a new one)."""
        with self._lock:
            batcher, self._batcher = self._batcher, None
        if batcher is not None:
            batcher.close()

    def _bound_form(self, obj: Any) -> SyncBatched[Any, Any]:
        return SyncBatched(self._fn, self._options, obj)

    def _held_view(self, state: dict[str, Any], obj: Any) -> SyncBatched[Any, Any]:
        return _view(_HeldSync, state, obj)

    def _batchers_now(self) -> list[ThreadBatcher[T, R]]:
        with self._lock:
            return [] if self._batcher is None else [self._batcher]

    @overload
    def __get__(self, obj: None, owner: type | None = None) -> SyncBatched[T, R]: ...
    @overload
    def __get__(self, obj: object, owner: type | None = None) -> SyncBatched[Any, Any]: ...
    def __get__(self, obj: object | None, owner: type | None = None) -> SyncBatched[Any, Any]:
        if obj is None:
            return self
        return self._bind(obj)  # type: ignore[no-any-return]


# -- views of a slotted instance's bound form (see _Batched._bind_weakly) --------------

V = TypeVar("V")


def _view(cls: type[V], state: dict[str, Any], obj: Any) -> V:
    """A ``cls`` sharing ``state`` (the bound form's attributes) and holding ``obj``."""
    view = cls.__new__(cls)
    view.__dict__ = state  # one state: a reconfigure or a batcher made through any view
    view._anchor = obj  # type: ignore[attr-defined]  # (a slot of each view class)
    return view


async def _holding(call: Awaitable[Any], anchor: object) -> Any:
    """Await ``call`` while holding ``anchor`` (the instance its handler needs)."""
    result = await call
    del anchor  # held until the result is in
    return result


class _HeldAsync(AsyncBatched[Any, Any]):
    """A view of a slotted instance's :class:`AsyncBatched`: each call holds the instance."""

    __slots__ = ("_anchor",)
    _anchor: Any

    def __call__(self, *args: Any, **kwargs: Any) -> Coroutine[Any, Any, Any]:
        return _holding(AsyncBatched.__call__(self, *args, **kwargs), self._anchor)


class _HeldStream(StreamBatched[Any, Any]):
    """A view of a slotted instance's :class:`StreamBatched`: each stream holds the instance."""

    __slots__ = ("_anchor",)
    _anchor: Any

    def __call__(self, *args: Any, **kwargs: Any) -> BatchStream[Any]:
        stream = StreamBatched.__call__(self, *args, **kwargs)
        hold_until_done(stream, self._anchor)
        return stream


class _HeldSync(SyncBatched[Any, Any]):
    """A view of a slotted instance's :class:`SyncBatched`: a blocking call holds the
    instance in its frame; a submitted item's future holds it."""

    __slots__ = ("_anchor",)
    _anchor: Any

    def submit(self, *args: Any, **kwargs: Any) -> Future[Any]:
        future = SyncBatched.submit(self, *args, **kwargs)
        future.add_done_callback(functools.partial(_keep, self._anchor))
        return future


def _keep(anchor: object, future: object) -> None:
    """A done-callback whose only work is to hold ``anchor`` as long as the future."""


class AsyncBatchedMethod(AsyncBatched[T, R], Generic[S, T, R]):
    """Typing view of :class:`AsyncBatched` on a method: access binds it per instance."""

    @overload  # type: ignore[override]
    def __get__(self, obj: None, owner: type | None = None) -> AsyncBatchedMethod[S, T, R]: ...
    @overload
    def __get__(self, obj: S, owner: type | None = None) -> AsyncBatched[T, R]: ...
    def __get__(self, obj: Any, owner: type | None = None) -> Any:
        return AsyncBatched.__get__(self, obj, owner)


class StreamBatchedMethod(StreamBatched[T, R], Generic[S, T, R]):
    """Typing view of :class:`StreamBatched` on a method: access binds it per instance."""

    @overload  # type: ignore[override]
    def __get__(self, obj: None, owner: type | None = None) -> StreamBatchedMethod[S, T, R]: ...
    @overload
    def __get__(self, obj: S, owner: type | None = None) -> StreamBatched[T, R]: ...
    def __get__(self, obj: Any, owner: type | None = None) -> Any:
        return StreamBatched.__get__(self, obj, owner)


class SyncBatchedMethod(SyncBatched[T, R], Generic[S, T, R]):
    """Typing view of :class:`SyncBatched` on a method: access binds it per instance."""

    @overload  # type: ignore[override]
    def __get__(self, obj: None, owner: type | None = None) -> SyncBatchedMethod[S, T, R]: ...
    @overload
    def __get__(self, obj: S, owner: type | None = None) -> SyncBatched[T, R]: ...
    def __get__(self, obj: Any, owner: type | None = None) -> Any:
        return SyncBatched.__get__(self, obj, owner)


class BatchedDecorator:
    """What ``batched(...)`` returns: apply it to a list function or method."""

    def __init__(self, options: _Options) -> None:
        self._options = options

    @overload
    def __call__(self, fn: StreamListFn[T, R]) -> StreamBatched[T, R]: ...
    @overload
    def __call__(
        self, fn: Callable[[S, list[T]], AsyncIterator[Sequence[R | BaseException | _End] | None]]
    ) -> StreamBatchedMethod[S, T, R]: ...
    @overload
    def __call__(self, fn: AsyncListFn[T, R]) -> AsyncBatched[T, R]: ...
    @overload
    def __call__(
        self, fn: Callable[[S, list[T]], Awaitable[Sequence[R | BaseException] | None]]
    ) -> AsyncBatchedMethod[S, T, R]: ...
    @overload
    def __call__(self, fn: SyncListFn[T, R]) -> SyncBatched[T, R]: ...
    @overload
    def __call__(
        self, fn: Callable[[S, list[T]], Sequence[R | BaseException] | None]
    ) -> SyncBatchedMethod[S, T, R]: ...
    @overload  # several lists (or none): typed loosely
    def __call__(
        self, fn: Callable[..., AsyncIterator[Any]]
    ) -> StreamBatchedMethod[Any, Any, Any]: ...
    @overload
    def __call__(self, fn: Callable[..., Awaitable[Any]]) -> AsyncBatchedMethod[Any, Any, Any]: ...
    @overload
    def __call__(self, fn: Callable[..., Any]) -> SyncBatchedMethod[Any, Any, Any]: ...
    def __call__(self, fn: Callable[..., Any]) -> Any:
        if not callable(fn):
            raise ConfigError(f"@batched decorates a function over a list, got {fn!r}")
        if is_stream_callable(fn):
            return StreamBatchedMethod(fn, self._options)
        if is_async_callable(fn):
            return AsyncBatchedMethod(fn, self._options)
        if inspect.isgeneratorfunction(fn):
            raise ConfigError(
                f"@batched {getattr(fn, '__qualname__', fn)!r} is a generator function: "
                "streaming batches are `async def` functions that `yield` their steps"
            )
        return SyncBatchedMethod(fn, self._options)


@overload
def batched(size: StreamListFn[T, R], /) -> StreamBatched[T, R]: ...
@overload
def batched(
    size: Callable[[S, list[T]], AsyncIterator[Sequence[R | BaseException | _End] | None]], /
) -> StreamBatchedMethod[S, T, R]: ...
@overload
def batched(size: AsyncListFn[T, R], /) -> AsyncBatched[T, R]: ...
@overload
def batched(
    size: Callable[[S, list[T]], Awaitable[Sequence[R | BaseException] | None]], /
) -> AsyncBatchedMethod[S, T, R]: ...
@overload
def batched(size: SyncListFn[T, R], /) -> SyncBatched[T, R]: ...
@overload
def batched(
    size: Callable[[S, list[T]], Sequence[R | BaseException] | None], /
) -> SyncBatchedMethod[S, T, R]: ...
@overload  # several lists (or none): typed loosely
def batched(size: Callable[..., AsyncIterator[Any]], /) -> StreamBatchedMethod[Any, Any, Any]: ...
@overload
def batched(size: Callable[..., Awaitable[Any]], /) -> AsyncBatchedMethod[Any, Any, Any]: ...
@overload
def batched(size: Callable[..., Any], /) -> SyncBatchedMethod[Any, Any, Any]: ...
@overload
def batched(
    size: int | Literal["auto"] = DEFAULT_SIZE,
    timeout: float | timedelta | None = ...,
    *,
    max_bytes: int | None = None,
    sizer: Callable[[Any], int] | None = None,
    max_cost: float | None = None,
    cost: CostFn | None = None,
    latency_target: float | timedelta | None = None,
    max_size: int | None = None,
    **options: Unpack[BatcherKwargs[Any]],
) -> BatchedDecorator: ...
def batched(
    size: Any = DEFAULT_SIZE,
    timeout: float | timedelta | None = _UNSET,
    *,
    max_bytes: int | None = None,
    sizer: Callable[[Any], int] | None = None,
    max_cost: float | None = None,
    cost: CostFn | None = None,
    latency_target: float | timedelta | None = None,
    max_size: int | None = None,
    **options: Unpack[BatcherKwargs[Any]],
) -> Any:
    """Turn ``f(items: list[T]) -> list[R]`` into ``f(item: T) -> R``, batched.

    Callers call the decorated function with ONE item and get that item's result;
    concurrent calls are grouped into batches by ``size``, ``max_bytes`` and
    ``timeout`` (see :class:`BatchSpec`), and the handler contract applies (an
    ``Exception`` at position *i* fails item *i* alone). The list form stays
    reachable as ``f.batch(items)``.

    ``@batched`` without arguments (or ``@batched()``) uses ``size=10`` and
    ``timeout=0.01``, Ray Serve's ``@serve.batch`` defaults. ``timeout`` defaults to
    0.01 s (not ``None`` as in :class:`BatchSpec`): each caller waits for its result,
    so a lone caller must not wait forever for company. Pass ``timeout=None`` to flush
    on size only. ``max_bytes``, ``sizer``, ``max_cost``, ``cost``, ``latency_target``
    and ``max_size`` are :class:`BatchSpec`'s; the other keyword arguments are the
    batcher options (:class:`~freight.Batcher`), checked here. ``f.reconfigure(...)``
    changes the limits later; ``f.spec`` is the spec in force.

    A function of several lists (``f(texts, langs)``) is called with one value per
    parameter, by position or by name; the handler gets one list per parameter, and
    calls naming different parameters are batched apart. ``key``, ``where`` and
    ``sizer`` then see a call as a ``dict`` of its arguments. An ``async def`` with
    ``yield`` streams: see :class:`StreamBatched`.
    """
    if callable(size) and not isinstance(size, int):
        return batched()(size)
    spec = BatchSpec(
        _whole(size),
        DEFAULT_TIMEOUT if timeout is _UNSET else timeout,
        max_bytes=max_bytes,
        sizer=sizer,
        max_cost=max_cost,
        cost=cost,
        latency_target=latency_target,
        max_size=max_size,
    )
    if "subscribers" in options:  # an iterator is read once: keep what it held
        options["subscribers"] = tuple(options["subscribers"])
    options_from("@batched", dict(options))  # refuse bad options at decoration time
    return BatchedDecorator(_Options(spec, options))
