"""``@batched``: write a function over a list, call it with one item.

::

    @freight.batched(size=64, timeout=0.01)
    async def embed(texts: list[str]) -> list[Vector]: ...

    vector = await embed("hello")          # one item in, its own result out
    vectors = await embed.batch(["a", "b"])  # the list form, called directly

Module functions get one batcher (per event loop for ``async def``); methods get
one batcher per instance. A plain ``def`` is driven by a :class:`ThreadBatcher`
and called from threads; an ``async def`` by a :class:`Batcher`.
"""

from __future__ import annotations

import asyncio
import functools
import threading
import weakref
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Generic, TypeVar, Unpack, overload

from freight._core._spec import BatchSpec
from freight._drivers._asyncio import Batcher, is_async_callable
from freight._drivers._options import BatcherKwargs, options_from
from freight._drivers._threads import ThreadBatcher
from freight._errors import ConfigError

__all__ = ["AsyncBatched", "BatchedDecorator", "SyncBatched", "batched"]

T = TypeVar("T")
R = TypeVar("R")
S = TypeVar("S")

DEFAULT_TIMEOUT = 0.01
"""Seconds a decorated function's partial batch waits for company (see :func:`batched`)."""

AsyncListFn = Callable[[list[T]], Awaitable[Sequence[R | BaseException] | None]]
SyncListFn = Callable[[list[T]], Sequence[R | BaseException] | None]


@dataclass(frozen=True, slots=True)
class _Options:
    """What ``@batched(...)`` was given: the spec and the batcher options (validated)."""

    spec: BatchSpec
    options: BatcherKwargs[Any]

    def kwargs(self, fn: Callable[..., Any]) -> BatcherKwargs[Any]:
        options = self.options.copy()
        if options.get("name") is None:
            options["name"] = getattr(fn, "__qualname__", None)
        return options


class _PerInstance:
    """Descriptor half shared by both forms: one bound object per instance."""

    _fn: Callable[..., Any]
    _options: _Options

    _bound: weakref.WeakKeyDictionary[Any, Any]
    _bound_lock = threading.Lock()  # guards the first binding only; shared is fine

    def _bind_to(self, obj: Any, factory: Callable[[Callable[..., Any]], Any]) -> Any:
        with self._bound_lock:
            bound_map = self.__dict__.get("_bound")
            if bound_map is None:
                bound_map = self._bound = weakref.WeakKeyDictionary()
            bound = bound_map.get(obj)
            if bound is None:
                bound = factory(_weak_method(self._fn, weakref.ref(obj)))
                bound_map[obj] = bound
            return bound


def _weak_method(fn: Callable[..., Any], ref: weakref.ref[Any]) -> Callable[..., Any]:
    """``fn`` bound to the object behind ``ref`` without keeping that object alive."""
    if is_async_callable(fn):

        async def async_bound(items: list[Any]) -> Any:
            return await fn(_deref(ref), items)

        return functools.update_wrapper(async_bound, fn)

    def bound(items: list[Any]) -> Any:
        return fn(_deref(ref), items)

    return functools.update_wrapper(bound, fn)


def _deref(ref: weakref.ref[Any]) -> Any:
    obj = ref()
    if obj is None:  # pragma: no cover - the batcher dies with its instance
        raise ReferenceError("the instance of this batched method no longer exists")
    return obj


class AsyncBatched(_PerInstance, Generic[T, R]):
    """An ``async def`` list function called one item at a time (see :func:`batched`)."""

    def __init__(self, fn: Callable[..., Any], options: _Options) -> None:
        self._fn = fn
        self._options = options
        self._batchers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Batcher[T, R]] = (
            weakref.WeakKeyDictionary()
        )
        functools.update_wrapper(self, fn)

    def batcher(self) -> Batcher[T, R]:
        """The :class:`Batcher` serving the running event loop (created on first use)."""
        loop = asyncio.get_running_loop()
        batcher = self._batchers.get(loop)
        if batcher is None:
            batcher = Batcher(self._fn, self._options.spec, **self._options.kwargs(self._fn))
            self._batchers[loop] = batcher
        return batcher

    async def __call__(self, item: T) -> R:
        """Submit one item and wait for its own result (or raise its own error)."""
        return await self.batcher().submit(item)

    async def batch(self, items: list[T]) -> Sequence[R | BaseException] | None:
        """Call the undecorated list function directly, bypassing the batcher."""
        result: Sequence[R | BaseException] | None = await self._fn(items)
        return result

    async def close(self) -> None:
        """Drain and close the batcher of the running event loop."""
        batcher = self._batchers.pop(asyncio.get_running_loop(), None)
        if batcher is not None:
            await batcher.close()

    @overload
    def __get__(self, obj: None, owner: type | None = None) -> AsyncBatched[T, R]: ...
    @overload
    def __get__(self, obj: object, owner: type | None = None) -> AsyncBatched[Any, Any]: ...
    def __get__(self, obj: object | None, owner: type | None = None) -> AsyncBatched[Any, Any]:
        if obj is None:
            return self
        return self._bind_to(  # type: ignore[no-any-return]
            obj, lambda fn: AsyncBatched(fn, self._options)
        )


class SyncBatched(_PerInstance, Generic[T, R]):
    """A plain list function called one item at a time, from threads (see :func:`batched`)."""

    def __init__(self, fn: Callable[..., Any], options: _Options) -> None:
        self._fn = fn
        self._options = options
        self._batcher: ThreadBatcher[T, R] | None = None
        self._lock = threading.Lock()
        functools.update_wrapper(self, fn)

    def batcher(self) -> ThreadBatcher[T, R]:
        """The :class:`ThreadBatcher` behind this function (created on first use)."""
        with self._lock:
            if self._batcher is None or self._batcher.closed:
                self._batcher = ThreadBatcher(
                    self._fn, self._options.spec, **self._options.kwargs(self._fn)
                )
            return self._batcher

    def __call__(self, item: T) -> R:
        """Submit one item and block until its own result (or raise its own error)."""
        return self.batcher().call(item)

    def submit(self, item: T) -> Future[R]:
        """Submit one item; return the future of its outcome."""
        return self.batcher().submit(item)

    def batch(self, items: list[T]) -> Sequence[R | BaseException] | None:
        """Call the undecorated list function directly, bypassing the batcher."""
        result: Sequence[R | BaseException] | None = self._fn(items)
        return result

    def close(self) -> None:
        """Drain and close the batcher (a later call starts a new one)."""
        with self._lock:
            batcher, self._batcher = self._batcher, None
        if batcher is not None:
            batcher.close()

    @overload
    def __get__(self, obj: None, owner: type | None = None) -> SyncBatched[T, R]: ...
    @overload
    def __get__(self, obj: object, owner: type | None = None) -> SyncBatched[Any, Any]: ...
    def __get__(self, obj: object | None, owner: type | None = None) -> SyncBatched[Any, Any]:
        if obj is None:
            return self
        return self._bind_to(  # type: ignore[no-any-return]
            obj, lambda fn: SyncBatched(fn, self._options)
        )


class AsyncBatchedMethod(AsyncBatched[T, R], Generic[S, T, R]):
    """Typing view of :class:`AsyncBatched` on a method: access binds it per instance."""

    @overload  # type: ignore[override]
    def __get__(self, obj: None, owner: type | None = None) -> AsyncBatchedMethod[S, T, R]: ...
    @overload
    def __get__(self, obj: S, owner: type | None = None) -> AsyncBatched[T, R]: ...
    def __get__(self, obj: Any, owner: type | None = None) -> Any:
        return AsyncBatched.__get__(self, obj, owner)


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
    def __call__(self, fn: Callable[..., Any]) -> Any:
        if not callable(fn):
            raise ConfigError(f"@batched decorates a function over a list, got {fn!r}")
        if is_async_callable(fn):
            return AsyncBatchedMethod(fn, self._options)
        return SyncBatchedMethod(fn, self._options)


_UNSET: Any = object()


def batched(
    size: int,
    timeout: float | timedelta | None = _UNSET,
    *,
    max_bytes: int | None = None,
    sizer: Callable[[Any], int] | None = None,
    **options: Unpack[BatcherKwargs[Any]],
) -> BatchedDecorator:
    """Turn ``f(items: list[T]) -> list[R]`` into ``f(item: T) -> R``, batched.

    Callers call the decorated function with ONE item and get that item's result;
    concurrent calls are grouped into batches by ``size``, ``max_bytes`` and
    ``timeout`` (see :class:`BatchSpec`), and the handler contract applies (an
    ``Exception`` at position *i* fails item *i* alone). The list form stays
    reachable as ``f.batch(items)``.

    ``timeout`` defaults to 0.01 s (not ``None`` as in :class:`BatchSpec`): each
    caller waits for its result, so a lone caller must not wait forever for
    company. Pass ``timeout=None`` to flush on size only. The other keyword
    arguments are the batcher options (:class:`~freight.Batcher`), checked here.
    """
    spec = BatchSpec(
        size,
        DEFAULT_TIMEOUT if timeout is _UNSET else timeout,
        max_bytes=max_bytes,
        sizer=sizer,
    )
    if "subscribers" in options:  # an iterator is read once: keep what it held
        options["subscribers"] = tuple(options["subscribers"])
    options_from("@batched", dict(options))  # refuse bad options at decoration time
    return BatchedDecorator(_Options(spec, options))
