"""A flow's spans: building them and handing them to every subscriber.

Rules:

1. A span is built only when someone listens: without subscribers :meth:`Tracing.span`
   returns ``None`` at once (the hot path of a flow with ``trace=False`` pays one
   attribute test).
2. Durations are on the flow's clock (a fake clock gives exact ones); ``started_at``
   is the wall clock (UTC) minus the span's age on the flow's clock.
3. A subscriber never breaks the flow: its exceptions are logged, and the next
   subscriber still gets the span.
4. Subscribers that buffer (``DuckDBTracer``) are flushed when the flow goes idle and
   closed when it closes, if they have ``flush`` / ``close``.

The tracers themselves (DuckDB, OpenTelemetry) are in ``_trace.py``.
"""

from __future__ import annotations

import importlib.util
import logging
import uuid
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from freight._drivers._engine import fan_out
from freight.flow._trace import DuckDBTracer, Span, SpanKind

__all__ = ["Tracing"]

_log = logging.getLogger("freight.flow")


class Tracing:
    """The subscribers of one flow, and the spans they get.

    Args:
        flow: the flow's name (each span carries it).
        subscribers: callables receiving every :class:`Span`.
        trace: ``True``, a path, ``False``, or ``None`` (a DuckDB file when duckdb is
            installed); see ``Flow``.
    """

    __slots__ = ("flow", "subscribers")

    def __init__(
        self,
        flow: str,
        subscribers: Iterable[Callable[[Span], Any]],
        trace: bool | str | Path | None,
    ) -> None:
        self.flow = flow
        self.subscribers: list[Callable[[Span], Any]] = list(subscribers)
        if trace is None:
            trace = importlib.util.find_spec("duckdb") is not None
        if trace:
            self.subscribers.append(DuckDBTracer() if trace is True else DuckDBTracer(trace))

    def span(
        self,
        name: SpanKind,
        consumer: str | None,
        start: float,
        now: float,
        attributes: dict[str, Any],
        *,
        parent: str | None = None,
    ) -> str | None:
        """Hand a span from ``start`` to ``now`` (flow clock) to every subscriber;
        return its id (``None`` without subscribers)."""
        if not self.subscribers:
            return None
        duration = max(0.0, now - start)
        attributes = {"consumer": consumer, "duration": duration, **attributes}
        span = Span(
            id=uuid.uuid4().hex,
            name=name,
            consumer=consumer,
            started_at=datetime.now(UTC) - timedelta(seconds=duration),
            duration=duration,
            attributes={k: v for k, v in attributes.items() if v is not None},
            parent_id=parent,
            flow=self.flow,
        )
        fan_out(self.subscribers, span, f"flow {self.flow}: span")
        return span.id

    def flush(self) -> None:
        """Let buffering subscribers write what they hold (the flow is idle)."""
        self._each("flush")

    def close(self) -> None:
        """Close the subscribers that can be closed (the flow is closed)."""
        self._each("close")

    def _each(self, method: str) -> None:
        for subscriber in self.subscribers:
            # A subscriber is any callable; flush/close are optional (rule 4).
            action = getattr(subscriber, method, None)
            if callable(action):
                try:
                    action()
                except Exception:
                    _log.exception(
                        "%s: span subscriber %r failed (%s)", self.flow, subscriber, method
                    )
