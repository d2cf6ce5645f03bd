"""The shared part of ``@batched``'s three forms (see :mod:`freight._batched`).

Rules: this module maps one call to the item a batcher holds (``_Params``: one list
per parameter), builds the list handler the batcher calls, and binds a batched
method to its instance (``_Binding`` in ``__dict__``, or a weak map and a held view
for a slotted instance). It knows nothing of the concrete forms (``AsyncBatched``,
``StreamBatched``, ``SyncBatched``): they subclass :class:`_Batched` and supply
``_bound_form``, ``_held_view`` and ``_batchers_now``. It imports no freight module
that imports it (no cycles): ``freight._batched`` imports from here, never the reverse.
"""

from __future__ import annotations

import functools
import inspect
import threading
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal

from freight._core._spec import BatchSpec
from freight._drivers._options import BatcherKwargs
from freight._errors import ConfigError

_KIND = inspect.Parameter

_UNSET: Any = object()


def _whole(size: Any) -> Any:
    """A whole float size as an int (Ray takes ``max_batch_size=1.0``); others as given."""
    if isinstance(size, float) and size.is_integer():
        return int(size)
    return size


# -- how calls map to the handler's lists ----------------------------------------------


@dataclass(frozen=True, slots=True)
class _Params:
    """A handler of several lists: its parameters (after ``self``), to bind calls to.

    A call becomes a ``dict`` of its arguments (parameter name -> value), in signature
    order: the item the batcher holds (and ``key``, ``where``, ``sizer`` see). Calls
    naming the same parameters share batches; the handler gets one list per parameter.
    """

    signature: inspect.Signature
    positional_only: frozenset[str]

    def item(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        return self.signature.bind(*args, **kwargs).arguments

    def lists(self, calls: list[dict[str, Any]]) -> tuple[list[Any], dict[str, list[Any]]]:
        """The handler's arguments for ``calls`` (all naming the same parameters)."""
        args: list[list[Any]] = []
        kwargs: dict[str, list[Any]] = {}
        for name in calls[0]:
            values = [call[name] for call in calls]
            if name in self.positional_only:
                args.append(values)
            else:
                kwargs[name] = values
        return args, kwargs


def _params_of(fn: Callable[..., Any], method: bool) -> _Params | None:
    """``None`` for a handler of one list (the fast path), else how to bind its calls."""
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):  # a callable we cannot read: it takes the list
        return None
    params = list(signature.parameters.values())[1 if method else 0 :]
    for param in params:
        if param.kind in (_KIND.VAR_POSITIONAL, _KIND.VAR_KEYWORD):
            raise ConfigError(
                f"@batched {getattr(fn, '__qualname__', fn)!r} takes *{param.name}: a batched "
                "function names its parameters, each receiving one list (one value per call)"
            )
    if len(params) == 1 and params[0].kind != _KIND.KEYWORD_ONLY:
        return None
    return _Params(
        signature.replace(parameters=params),
        frozenset(p.name for p in params if p.kind == _KIND.POSITIONAL_ONLY),
    )


def _shape(call: dict[str, Any]) -> Hashable:
    return tuple(call)


def _keyed(user_key: Callable[[Any], Hashable] | None) -> Callable[[Any], Hashable]:
    """The batcher's key for calls of several lists: their parameters (and the user's key)."""
    if user_key is None:
        return _shape
    return lambda call: (tuple(call), user_key(call))


def _many_async(
    fn: Callable[..., Any], prefix: tuple[Any, ...], params: _Params
) -> Callable[[list[dict[str, Any]]], Awaitable[Any]]:
    async def handler(calls: list[dict[str, Any]]) -> Any:
        args, kwargs = params.lists(calls)
        return await fn(*prefix, *args, **kwargs)

    return functools.update_wrapper(handler, fn)


def _many_sync(
    fn: Callable[..., Any], prefix: tuple[Any, ...], params: _Params
) -> Callable[[list[dict[str, Any]]], Any]:
    def handler(calls: list[dict[str, Any]]) -> Any:
        args, kwargs = params.lists(calls)
        return fn(*prefix, *args, **kwargs)

    return functools.update_wrapper(handler, fn)


def _many_stream(
    fn: Callable[..., Any], prefix: tuple[Any, ...], params: _Params
) -> Callable[[list[dict[str, Any]]], AsyncIterator[Any]]:
    async def handler(calls: list[dict[str, Any]]) -> AsyncIterator[Any]:
        # ``calls`` is the runner's live list: between steps it drops the calls of
        # callers that left. Mirror that in the per-parameter lists the handler holds.
        args, kwargs = params.lists(calls)
        lists = [*args, *kwargs.values()]
        known = list(calls)
        steps = fn(*prefix, *args, **kwargs)
        try:
            async for step in steps:
                yield step
                if len(calls) != len(known):
                    _follow(known, calls, lists)
        finally:
            await steps.aclose()

    return functools.update_wrapper(handler, fn)


def _follow(known: list[Any], calls: list[Any], lists: list[list[Any]]) -> None:
    """Delete from ``lists`` the positions of ``known`` no longer in ``calls`` (same order)."""
    j = 0
    for i in range(len(known) - 1, -1, -1):
        if j < len(calls) and known[i] is calls[len(calls) - 1 - j]:
            j += 1
            continue
        del known[i]
        for values in lists:
            del values[i]


# -- the decorated forms ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Options:
    """What ``@batched(...)`` was given: the spec and the batcher options (validated)."""

    spec: BatchSpec
    options: BatcherKwargs[Any]

    def kwargs(self, fn: Callable[..., Any], params: _Params | None) -> BatcherKwargs[Any]:
        options = self.options.copy()
        if options.get("name") is None:
            options["name"] = getattr(fn, "__qualname__", None)
        if params is not None:
            options["key"] = _keyed(options.get("key"))
        return options


class _Binding:
    """What a bound batched method leaves in its instance's ``__dict__``.

    The instance holds its bound form (and so its batcher) and the bound form holds
    the instance: a pending call keeps the instance alive, and the pair is collected
    together once neither is in use. A copy or a pickle of the instance gets an empty
    binding, so the copy binds its own batcher on first use.
    """

    __slots__ = ("bound", "owner", "source")

    def __init__(self, owner: Any = None, source: Any = None, bound: Any = None) -> None:
        self.owner = owner
        self.source = source
        self.bound = bound

    def __reduce__(self) -> tuple[type[_Binding], tuple[()]]:
        return (_Binding, ())


class _Batched:
    """What the three forms share: the options, the binding to instances, the call's item."""

    _fn: Callable[..., Any]
    _options: _Options
    _instance: Any
    _params: _Params | None
    _known: bool  # _params was worked out (on first use: a method only knows it then)
    _attr: str
    _bind_lock = threading.Lock()  # guards the first binding only; shared is fine

    def _setup(self, fn: Callable[..., Any], options: _Options, instance: Any) -> None:
        self._fn = fn
        self._options = options
        self._instance = instance
        self._params = None
        self._known = False
        self._attr = f"_freight_batched_{getattr(fn, '__name__', 'fn')}_{id(self):x}"
        functools.update_wrapper(self, fn)  # type: ignore[arg-type]

    def _item(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """The item a call stands for: its one argument, or its arguments by name."""
        if not self._known:
            self._learn()
        params = self._params
        if params is None:
            if len(args) == 1 and not kwargs:
                return args[0]
            fn = self._fn
            signature = inspect.signature(fn)
            if self._instance is not None:
                signature = signature.replace(parameters=list(signature.parameters.values())[1:])
            (value,) = signature.bind(*args, **kwargs).arguments.values()
            return value
        return params.item(args, kwargs)

    def _learn(self) -> None:
        self._params = _params_of(self._fn, self._instance is not None)
        self._known = True

    def _handler(self, kind: str) -> Callable[..., Any]:
        """The list function the batcher calls (bound to the instance for a method)."""
        if not self._known:
            self._learn()
        fn, params = self._fn, self._params
        prefix = () if self._instance is None else (self._instance,)
        if params is None:
            return fn if not prefix else functools.partial(fn, *prefix)
        make = {"async": _many_async, "sync": _many_sync, "stream": _many_stream}[kind]
        return make(fn, prefix, params)

    def _batcher_kwargs(self) -> BatcherKwargs[Any]:
        if not self._known:
            self._learn()
        return self._options.kwargs(self._fn, self._params)

    def _bind(self, obj: Any) -> Any:
        """This batched method bound to ``obj`` (made once per instance)."""
        try:
            state = obj.__dict__
        except AttributeError:
            return self._bind_weakly(obj)
        binding = state.get(self._attr)
        if type(binding) is _Binding and binding.owner is obj and binding.source is self:
            return binding.bound
        with self._bind_lock:
            binding = state.get(self._attr)
            if type(binding) is _Binding and binding.owner is obj and binding.source is self:
                return binding.bound
            bound = self._bound_form(obj)
            state[self._attr] = _Binding(obj, self, bound)
            return bound

    def _bind_weakly(self, obj: Any) -> Any:
        """For an instance without ``__dict__`` (``__slots__``), which has nowhere to keep
        its bound form: the form's state (its batchers, its spec) is kept per instance in
        a weak map and references the instance weakly (a proxy), so the instance can be
        collected. What an access returns is a *view* of that state holding the instance
        strongly (one view while any is alive, so ``s.f is s.f``): it bridges the moment
        between ``S().f`` and the call, and each call holds the instance until it is
        settled (a coroutine until its result, a stream until it is over, a future until
        it is dropped), so ``await S().predict(x)`` works as for any instance.
        """
        with self._bind_lock:
            views: weakref.WeakKeyDictionary[Any, list[Any]] | None = self.__dict__.get("_weak")
            if views is None:
                views = self.__dict__["_weak"] = weakref.WeakKeyDictionary()
            entry = views.get(obj)
            if entry is None:
                entry = views[obj] = [self._bound_form(weakref.proxy(obj)).__dict__, None]
            view = None if entry[1] is None else entry[1]()
            if view is None:
                view = self._held_view(entry[0], obj)
                entry[1] = weakref.ref(view)
            return view

    def _held_view(self, state: dict[str, Any], obj: Any) -> Any:
        raise NotImplementedError

    def _bound_form(self, obj: Any) -> Any:
        raise NotImplementedError

    def _check_spec(self, spec: BatchSpec) -> None:
        """Refuse a spec this form's batchers cannot honour (before anything changes)."""

    def _batchers_now(self) -> list[Any]:
        raise NotImplementedError

    @property
    def spec(self) -> BatchSpec:
        """When this function's batches are due (as :meth:`reconfigure` last left it)."""
        return self._options.spec

    def reconfigure(
        self,
        *,
        size: int | Literal["auto"] = _UNSET,
        timeout: float | timedelta | None = _UNSET,
        max_bytes: int | None = _UNSET,
        max_cost: float | None = _UNSET,
        latency_target: float | timedelta | None = _UNSET,
        max_size: int = _UNSET,
    ) -> None:
        """Change when batches are due, from the next batch on (Ray's ``set_max_batch_size``
        and ``set_batch_wait_timeout_s``): ``size=``, ``timeout=``, ``max_bytes=``,
        ``max_cost=``, ``latency_target=``, ``max_size=``; the others are kept.

        Checked as :class:`BatchSpec` checks them (a whole float size, Ray's ``1.0``,
        is taken as at decoration); applied to this function's batchers (see
        :meth:`Batcher.reconfigure <freight.Batcher.reconfigure>`: an open batch now
        due is flushed) and to those it makes later. For a method, to this instance's.
        """
        given: dict[str, Any] = {
            "size": _whole(size),
            "timeout": timeout,
            "max_bytes": max_bytes,
            "max_cost": max_cost,
            "latency_target": latency_target,
            "max_size": max_size,
        }
        changes = {name: value for name, value in given.items() if value is not _UNSET}
        spec = self._options.spec.replace(**changes)
        self._check_spec(spec)
        for batcher in self._batchers_now():
            batcher.reconfigure(**changes)
        self._options = _Options(spec, self._options.options)
