"""``BatchSpec``: when a batch is due (size, bytes, cost or timeout, whichever first)."""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import timedelta
from typing import Any, Literal

from freight._core._time import to_positive_int, to_seconds
from freight._errors import ConfigError, ConfigTypeError

__all__ = ["DEFAULT_MAX_SIZE", "BatchSpec", "CostFn", "default_sizer"]

DEFAULT_MAX_SIZE = 1024
"""The most items an adaptive batch (``size="auto"``) grows to without ``max_size``."""

CostFn = Callable[[list[Any]], float]
"""``items -> number``: what a whole batch costs (e.g. ``max(len) * len(items)``)."""

_KEEP: Any = object()


def default_sizer(item: object) -> int:
    """Size in bytes of ``bytes``-like and ``str`` items (UTF-8); other types need a sizer."""
    if isinstance(item, bytes | bytearray):
        return len(item)
    if isinstance(item, memoryview):
        return item.nbytes
    if isinstance(item, str):
        return len(item.encode("utf-8"))
    raise TypeError(
        f"max_bytes is set but items of type {type(item).__name__} have no default size; "
        "pass sizer=<callable returning the item's size in bytes> to BatchSpec"
    )


def _positive_number(value: object, name: str) -> float:
    """``value`` if a finite number > 0: else a :class:`ConfigTypeError` for a value
    that is no number, a :class:`ConfigError` for one out of range."""
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise ConfigTypeError(
            f"{name} must be a finite number > 0, got {value!r} ({type(value).__name__})"
        )
    if math.isnan(value) or math.isinf(value) or value <= 0:
        raise ConfigError(f"{name} must be a finite number > 0, got {value!r}")
    return value


class BatchSpec:
    """When a batch is due: ``size`` items, ``max_bytes`` bytes, ``max_cost``, or ``timeout``.

    Whichever limit is reached first flushes the batch. ``timeout`` counts from the
    arrival of the batch's *first* item, so no item waits longer than ``timeout``
    (plus the handler's own time). ``timeout=0`` flushes at the driver's next turn,
    which batches whatever arrived in the same event-loop iteration.

    ``BatchSpec(timeout=30)`` without a size is a *time-only* batch (Flock's meaning):
    whatever arrives within 30 s of the first item is one batch. Only a Flow consumer
    takes one (``time_only`` is then true): a ``Batcher``, ``ThreadBatcher`` or
    ``@batched`` sizes its batches and statistics by ``size``, and reading ``size``
    of a time-only spec raises a :class:`~freight.ConfigError` saying so, the moment
    one is built with it.

    ``cost`` prices a *whole* batch, for handlers whose cost is not a sum of their
    items (padded tensors cost ``max(len) * len(items)``): an item joins the open
    batch only if the batch's cost with it stays within ``max_cost``; otherwise the
    open batch flushes first (reason ``"cost"``). An item whose cost alone is over
    ``max_cost`` is refused at submit with :class:`~freight.ItemTooLarge`.

    ``size="auto"`` lets a :class:`~freight.Batcher` or :class:`~freight.ThreadBatcher`
    tune the batch size and wait from the handler times it measures, keeping each
    caller's p99 latency within ``latency_target`` while batching as much as that
    allows (``stats().current_size`` tells the size it uses now).

    Args:
        size: most items in one batch (``int`` ≥ 1), or ``"auto"`` (tuned, needs
            ``latency_target``); omitted (``None``) for a time-only batch, which then
            needs a ``timeout``.
        timeout: seconds (``float`` or ``timedelta``) a batch may stay open; ``None``
            waits for ``size``/``max_bytes`` or an explicit flush. With
            ``size="auto"``, the longest wait the tuner may choose.
        max_bytes: most bytes in one batch, measured by ``sizer``. A single item
            larger than ``max_bytes`` is flushed alone rather than refused.
        sizer: ``item -> int`` byte size; defaults to ``len`` of bytes / UTF-8 str.
        max_cost: the most a batch may cost, as priced by ``cost`` (a number > 0).
        cost: ``items -> number``: what the batch ``items`` costs as a whole. It is
            called with the open batch plus the arriving item, so it runs once per
            item on a list as long as the batch: keep it cheap.
        latency_target: with ``size="auto"``: the p99 latency (seconds or
            ``timedelta``, submit to result) the tuner keeps callers within.
        max_size: with ``size="auto"``: the largest batch the tuner may choose
            (default 1024).

    Raises:
        ConfigError: a value is out of range; the message names it and the rule.
            A value of the wrong type (``size=1.1``, ``timeout="a"``) is its subclass
            :class:`~freight.ConfigTypeError`, also a ``TypeError``.
    """

    __slots__ = (
        "_auto",
        "_size",
        "cost",
        "latency_target",
        "max_bytes",
        "max_cost",
        "sizer",
        "timeout",
    )

    _auto: bool
    _size: int | None
    timeout: float | None
    max_bytes: int | None
    sizer: Callable[[Any], int] | None
    max_cost: float | None
    cost: CostFn | None
    latency_target: float | None

    def __init__(
        self,
        size: int | Literal["auto"] | None = None,
        timeout: float | timedelta | None = None,
        max_bytes: int | None = None,
        sizer: Callable[[Any], int] | None = None,
        *,
        max_cost: float | None = None,
        cost: CostFn | None = None,
        latency_target: float | timedelta | None = None,
        max_size: int | None = None,
    ) -> None:
        if size is None and timeout is None:
            raise ConfigError(
                "BatchSpec requires at least one of: size, timeout; it needs a size, a "
                "timeout, or both: BatchSpec(size=25), "
                "BatchSpec(timeout=30) (a time-only batch) or BatchSpec(size=25, timeout=30)"
            )
        init = object.__setattr__
        init(self, "_auto", size == "auto")
        init(self, "_size", self._check_size(size, latency_target, max_size))
        init(
            self,
            "latency_target",
            None
            if latency_target is None
            else to_seconds(latency_target, "BatchSpec.latency_target", allow_zero=False),
        )
        init(
            self,
            "timeout",
            None if timeout is None else to_seconds(timeout, "BatchSpec.timeout"),
        )
        if max_bytes is not None:
            max_bytes = to_positive_int(max_bytes, "BatchSpec.max_bytes")
        init(self, "max_bytes", max_bytes)
        if sizer is not None and not callable(sizer):
            raise ConfigTypeError(f"BatchSpec.sizer must be callable (item -> int), got {sizer!r}")
        if sizer is not None and max_bytes is None:
            raise ConfigError(
                "BatchSpec.sizer has no effect without max_bytes; set max_bytes=<int> or drop sizer"
            )
        init(self, "sizer", sizer)
        init(
            self,
            "max_cost",
            None if max_cost is None else _positive_number(max_cost, "BatchSpec.max_cost"),
        )
        if cost is not None and not callable(cost):
            raise ConfigTypeError(
                f"BatchSpec.cost must be callable (items -> number), got {cost!r}"
            )
        if (cost is None) != (max_cost is None):
            raise ConfigError(
                "BatchSpec.max_cost and BatchSpec.cost go together: pass both "
                "(max_cost=<number>, cost=<items -> number>) or neither"
            )
        init(self, "cost", cost)

    @staticmethod
    def _check_size(size: object, latency_target: object, max_size: object) -> int | None:
        """The spec's size (the tuner's cap for ``"auto"``), checked with its companions."""
        if size == "auto":
            if latency_target is None:
                raise ConfigError(
                    "BatchSpec(size='auto') tunes the size to a latency target: pass "
                    "latency_target=<seconds>, e.g. BatchSpec(size='auto', latency_target=0.05)"
                )
            if max_size is None:
                return DEFAULT_MAX_SIZE
            return to_positive_int(max_size, "BatchSpec.max_size")
        for name, value in (("latency_target", latency_target), ("max_size", max_size)):
            if value is not None:
                raise ConfigError(
                    f"BatchSpec.{name} only applies to size='auto' (got size={size!r}); "
                    f"drop {name} or pass size='auto'"
                )
        if size is None:
            return None
        if not isinstance(size, int) or isinstance(size, bool):
            raise ConfigTypeError(
                f"BatchSpec.size must be an int >= 1 or 'auto', got {size!r} "
                f"({type(size).__name__})"
            )
        return to_positive_int(size, "BatchSpec.size")

    @property
    def size(self) -> int:
        """Most items in one batch; with ``size="auto"``, the largest the tuner may choose.

        Raises:
            ConfigError: a time-only spec has none; only a Flow consumer takes one.
        """
        if self._size is None:
            raise ConfigError(
                f"{self!r} has no size: a time-only batch, which only a Flow consumer "
                "takes; a Batcher, ThreadBatcher or @batched needs BatchSpec(size=<int>, ...)"
            )
        return self._size

    @property
    def auto(self) -> bool:
        """``size="auto"``: the driver tunes size and wait to ``latency_target``."""
        return self._auto

    @property
    def max_size(self) -> int | None:
        """With ``size="auto"``, the largest batch the tuner may choose; else ``None``."""
        return self._size if self._auto else None

    @property
    def time_only(self) -> bool:
        """No ``size``: the batch is due at its ``timeout`` (or ``max_bytes``)."""
        return self._size is None

    def replace(
        self,
        *,
        size: int | Literal["auto"] | None = _KEEP,
        timeout: float | timedelta | None = _KEEP,
        max_bytes: int | None = _KEEP,
        sizer: Callable[[Any], int] | None = _KEEP,
        max_cost: float | None = _KEEP,
        cost: CostFn | None = _KEEP,
        latency_target: float | timedelta | None = _KEEP,
        max_size: int | None = _KEEP,
    ) -> BatchSpec:
        """A new spec with the given fields changed, validated like the constructor.

        What only made sense with a removed limit goes with it: ``max_bytes=None``
        drops the ``sizer``, ``max_cost=None`` the ``cost``, and a fixed ``size`` the
        tuner's ``latency_target`` and ``max_size``.
        """
        fields: dict[str, Any] = {
            "size": "auto" if self._auto else self._size,
            "timeout": self.timeout,
            "max_bytes": self.max_bytes,
            "sizer": self.sizer,
            "max_cost": self.max_cost,
            "cost": self.cost,
            "latency_target": self.latency_target,
            "max_size": self.max_size,
        }
        if size is not _KEEP and size != "auto":
            fields.update(latency_target=None, max_size=None)
        if max_bytes is None:
            fields["sizer"] = None
        if max_cost is None:
            fields["cost"] = None
        given = {
            "size": size,
            "timeout": timeout,
            "max_bytes": max_bytes,
            "sizer": sizer,
            "max_cost": max_cost,
            "cost": cost,
            "latency_target": latency_target,
            "max_size": max_size,
        }
        fields.update({name: value for name, value in given.items() if value is not _KEEP})
        return BatchSpec(**fields)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"BatchSpec is immutable; build a new one instead of setting {name}")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"BatchSpec is immutable; cannot delete {name}")

    def __repr__(self) -> str:
        if self._auto:
            parts = ["size='auto'", f"latency_target={self.latency_target}"]
            if self._size != DEFAULT_MAX_SIZE:
                parts.append(f"max_size={self._size}")
        else:
            parts = [] if self._size is None else [f"size={self._size}"]
        for name in ("timeout", "max_bytes", "sizer", "max_cost", "cost"):
            value = getattr(self, name)
            if value is not None:
                parts.append(f"{name}={value!r}")
        return f"BatchSpec({', '.join(parts)})"

    def _astuple(self) -> tuple[object, ...]:
        return (
            self._auto,
            self._size,
            self.timeout,
            self.max_bytes,
            self.sizer,
            self.max_cost,
            self.cost,
            self.latency_target,
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, BatchSpec):
            return NotImplemented
        return self._astuple() == other._astuple()

    def __hash__(self) -> int:
        return hash(self._astuple())
