"""``BatchSpec``: when a batch is due (size, bytes or timeout, whichever first)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

from freight._core._time import to_positive_int, to_seconds
from freight._errors import ConfigError

__all__ = ["BatchSpec", "default_sizer"]


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


class BatchSpec:
    """When a batch is due: ``size`` items, ``max_bytes`` bytes, or ``timeout`` seconds.

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

    Args:
        size: most items in one batch (``int`` ≥ 1); omitted (``None``) for a
            time-only batch, which then needs a ``timeout``.
        timeout: seconds (``float`` or ``timedelta``) a batch may stay open; ``None``
            waits for ``size``/``max_bytes`` or an explicit flush.
        max_bytes: most bytes in one batch, measured by ``sizer``. A single item
            larger than ``max_bytes`` is flushed alone rather than refused.
        sizer: ``item -> int`` byte size; defaults to ``len`` of bytes / UTF-8 str.

    Raises:
        ConfigError: a value is out of range; the message names it and the rule.
    """

    __slots__ = ("_size", "max_bytes", "sizer", "timeout")

    _size: int | None
    timeout: float | None
    max_bytes: int | None
    sizer: Callable[[Any], int] | None

    def __init__(
        self,
        size: int | None = None,
        timeout: float | timedelta | None = None,
        max_bytes: int | None = None,
        sizer: Callable[[Any], int] | None = None,
    ) -> None:
        if size is None and timeout is None:
            raise ConfigError(
                "BatchSpec needs a size, a timeout, or both: BatchSpec(size=25), "
                "BatchSpec(timeout=30) (a time-only batch) or BatchSpec(size=25, timeout=30)"
            )
        if size is not None:
            size = to_positive_int(size, "BatchSpec.size")
        object.__setattr__(self, "_size", size)
        object.__setattr__(
            self,
            "timeout",
            None if timeout is None else to_seconds(timeout, "BatchSpec.timeout"),
        )
        if max_bytes is not None:
            max_bytes = to_positive_int(max_bytes, "BatchSpec.max_bytes")
        object.__setattr__(self, "max_bytes", max_bytes)
        if sizer is not None and not callable(sizer):
            raise ConfigError(f"BatchSpec.sizer must be callable (item -> int), got {sizer!r}")
        if sizer is not None and max_bytes is None:
            raise ConfigError(
                "BatchSpec.sizer has no effect without max_bytes; set max_bytes=<int> or drop sizer"
            )
        object.__setattr__(self, "sizer", sizer)

    @property
    def size(self) -> int:
        """Most items in one batch.

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
    def time_only(self) -> bool:
        """No ``size``: the batch is due at its ``timeout`` (or ``max_bytes``)."""
        return self._size is None

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"BatchSpec is immutable; build a new one instead of setting {name}")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"BatchSpec is immutable; cannot delete {name}")

    def __repr__(self) -> str:
        parts = [] if self._size is None else [f"size={self._size}"]
        if self.timeout is not None:
            parts.append(f"timeout={self.timeout}")
        if self.max_bytes is not None:
            parts.append(f"max_bytes={self.max_bytes}")
        if self.sizer is not None:
            parts.append(f"sizer={self.sizer!r}")
        return f"BatchSpec({', '.join(parts)})"

    def _astuple(self) -> tuple[object, ...]:
        return (self._size, self.timeout, self.max_bytes, self.sizer)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, BatchSpec):
            return NotImplemented
        return self._astuple() == other._astuple()

    def __hash__(self) -> int:
        return hash(self._astuple())
