"""The sink port of bulk jobs: write one chunk, report one outcome per item."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, cast, runtime_checkable

from freight._errors import ConfigError

__all__ = ["CallableSink", "LinesSink", "Sink", "WriteContext", "as_sink", "lines_writer"]


@dataclass(frozen=True, slots=True)
class WriteContext:
    """What a sink may want to know about the chunk it writes.

    Attributes:
        job_id: the run's id (a sink in the store's database may record it).
        chunk_index: the chunk's index within the run.
        keys: the idempotency key of each item (from the job's ``key=``), or ``None``.
    """

    job_id: str
    chunk_index: int
    keys: list[Hashable] | None = None


@runtime_checkable
class Sink(Protocol):
    """Writes items; the handler contract applies to the return value.

    Return ``None`` when every item was written, or a list of the same length whose
    element *i* is item *i*'s result or an ``Exception`` instance for item *i* alone.
    Raising fails the whole call (retried and bisected under the job's ``retry``).
    A sink is called with parts of a chunk during retries and isolation, so writes
    should be idempotent on the item's key for exactly-once effect.

    Optional: ``conflict_keys(items) -> set | None``, the keys a write of ``items``
    touches as the target compares them (``None``: unknown). With
    ``Job(ordered_writes=True)``, chunks of disjoint keys then write at once.
    """

    def write(self, items: list[Any], context: WriteContext) -> Sequence[Any] | None:
        """Write ``items``; see the class docstring for the return value."""
        ...


@runtime_checkable
class LinesSink(Protocol):
    """A sink that also takes plain CSV lines as one text (PostgreSQL's COPY): the job
    engine's fast path for them (see :mod:`freight.jobs._chunk`). Private to freight's
    own sinks: the text's form is an agreement between its reader and its writer."""

    def _write_lines(self, text: bytes, context: WriteContext) -> bool:
        """Write every line of ``text`` (UTF-8, each line ending in ``\\n``, no quote,
        no ``\\r``) and return ``True``; or write none and return ``False`` (or raise):
        the engine then writes their texts through :meth:`Sink.write`."""
        ...


def lines_writer(sink: object) -> Callable[[bytes, WriteContext], bool] | None:
    """``sink``'s own ``_write_lines`` (:class:`LinesSink`), if its ``write`` is the one
    of the class that defines it: a subclass overriding ``write``, a ``write`` replaced
    on the sink itself (a mock wrapping it), or a wrapper handing other attributes on to
    a sink, has its ``write`` called for every item, never passed by."""
    if "write" in getattr(sink, "__dict__", ()):
        return None
    kind = type(sink)
    for base in kind.__mro__:
        if "_write_lines" in vars(base):
            same = getattr(kind, "write", None) is getattr(base, "write", None)
            return cast("LinesSink", sink)._write_lines if same else None
    return None


class CallableSink:
    """Adapts ``fn(items)`` (or ``fn(items, context)``) to the :class:`Sink` port."""

    def __init__(self, fn: Callable[..., Sequence[Any] | None], *, with_context: bool) -> None:
        self._fn = fn
        self._with_context = with_context

    def write(self, items: list[Any], context: WriteContext) -> Sequence[Any] | None:
        if self._with_context:
            return self._fn(items, context)
        return self._fn(items)


def as_sink(sink: Any) -> Sink:
    """A :class:`Sink`, or a callable taking ``(items)`` or ``(items, context)``."""
    if isinstance(sink, Sink):
        return sink
    if callable(sink):
        import inspect  # noqa: PLC0415  (only for plain callables)

        try:
            params = inspect.signature(sink).parameters
        except (TypeError, ValueError):
            params = {}  # type: ignore[assignment]
        return CallableSink(sink, with_context=len(params) >= 2)
    raise ConfigError(
        f"sink must have a write(items, context) method or be a callable, got {sink!r}"
    )
