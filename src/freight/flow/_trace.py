"""Spans: every flush, handler run, publish and dead letter of a flow, to subscribers.

A subscriber is any callable taking a :class:`Span`. Two ship with freight:

- :class:`DuckDBTracer` writes spans to a DuckDB file (extra ``freight[trace]``,
  ``.freight/traces.duckdb``, table ``spans``), so a question such as "which batches
  flushed by timeout last hour and how full were they" is one SQL query.
- :class:`OpenTelemetryTracer` hands them to OpenTelemetry (extra ``freight[otel]``),
  for whatever exporter the application configured.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal

__all__ = ["DuckDBTracer", "OpenTelemetryTracer", "Span", "SpanKind"]

SpanKind = Literal["flush", "handler", "publish", "dead_letter"]


@dataclass(frozen=True, slots=True)
class Span:
    """One traced step of a flow.

    Attributes:
        id: unique id; ``parent_id`` links a handler run to its flush.
        name: ``"flush"``, ``"handler"``, ``"publish"`` or ``"dead_letter"``.
        consumer: the consumer concerned (``None`` for an outside publish).
        started_at, ended_at: timezone-aware UTC.
        duration: seconds on the flow's clock.
        attributes: ``consumer`` and ``duration`` again, then ``batch_size``,
            ``flush_reason``, ``efficiency``, ``succeeded``, ``failed``, ``artifact_type``,
            ``reason``, ``tenant``… as they apply (``None`` values left out).
    """

    id: str
    name: SpanKind
    consumer: str | None
    started_at: datetime
    duration: float
    attributes: dict[str, Any] = field(default_factory=dict)
    parent_id: str | None = None
    flow: str = "default"

    @property
    def ended_at(self) -> datetime:
        return self.started_at + timedelta(seconds=self.duration)


_FIELDS = ("consumer", "duration")  # columns of their own, also in the attributes
_KEEP = 100_000  # spans kept while the file cannot be written

_COLUMNS = (
    "batch_size",
    "flush_reason",
    "efficiency",
    "succeeded",
    "failed",
    "artifact_type",
    "reason",
    "tenant",
)

_DDL = """
CREATE TABLE IF NOT EXISTS spans (
    span_id VARCHAR PRIMARY KEY,
    parent_id VARCHAR,
    flow VARCHAR NOT NULL,
    name VARCHAR NOT NULL,
    kind VARCHAR NOT NULL,
    consumer VARCHAR,
    started_at TIMESTAMPTZ NOT NULL,
    ended_at TIMESTAMPTZ NOT NULL,
    duration DOUBLE NOT NULL,
    batch_size INTEGER,
    flush_reason VARCHAR,
    efficiency DOUBLE,
    succeeded INTEGER,
    failed INTEGER,
    artifact_type VARCHAR,
    reason VARCHAR,
    tenant VARCHAR,
    attributes JSON
)
"""


class DuckDBTracer:
    """Writes spans to the table ``spans`` of a DuckDB file.

    Columns: ``span_id``, ``parent_id``, ``flow``, ``name`` (and its alias ``kind``:
    ``flush``, ``handler``, ``publish``, ``dead_letter``), ``consumer``, ``started_at``,
    ``ended_at`` (UTC), ``duration`` (s), ``batch_size``, ``flush_reason``, ``efficiency``,
    ``succeeded``, ``failed``, ``artifact_type``, ``reason``, ``tenant``, and
    ``attributes`` (JSON, the rest).

    Spans are buffered and written in one statement per :meth:`flush` (the flow
    flushes its subscribers when it goes idle and when it closes, and this tracer
    flushes itself every ``buffer`` spans). The file is opened only while writing, so
    other processes can query it between writes.

    Args:
        path: the DuckDB file (default ``.freight/traces.duckdb``).
        buffer: spans held before a write.
    """

    def __init__(self, path: str | Path = ".freight/traces.duckdb", *, buffer: int = 1000) -> None:
        try:
            import duckdb  # noqa: F401, PLC0415 (extra freight[trace])
        except ImportError as exc:  # pragma: no cover - only without the extra
            raise ImportError("DuckDBTracer needs duckdb: pip install 'freight[trace]'") from exc
        self.path = Path(path)
        self._buffer = max(1, buffer)
        self._rows: list[tuple[Any, ...]] = []
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"DuckDBTracer({str(self.path)!r})"

    def __call__(self, span: Span) -> None:
        extra = {k: v for k, v in span.attributes.items() if k not in _COLUMNS and k not in _FIELDS}
        row = (
            span.id,
            span.parent_id,
            span.flow,
            span.name,
            span.name,
            span.consumer,
            span.started_at,
            span.ended_at,
            span.duration,
            *(span.attributes.get(c) for c in _COLUMNS),
            json.dumps(extra, default=str),
        )
        with self._lock:
            self._rows.append(row)
            full = len(self._rows) >= self._buffer
        if full:
            self.flush()

    def flush(self) -> None:
        """Write the buffered spans."""
        import duckdb  # noqa: PLC0415 (extra freight[trace])

        with self._lock:
            rows, self._rows = self._rows, []
            if not rows:
                return
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                with duckdb.connect(str(self.path)) as db:
                    db.execute(_DDL)
                    marks = ", ".join("?" * len(rows[0]))
                    db.executemany(f"INSERT INTO spans VALUES ({marks})", rows)  # noqa: S608
            except (OSError, duckdb.Error):
                # Another process holds the file, or the disk is full: keep the spans for
                # the next flush (at most _KEEP of them), then let the caller log it.
                self._rows = (rows + self._rows)[-_KEEP:]
                raise

    def close(self) -> None:
        """Write what is buffered."""
        self.flush()


class OpenTelemetryTracer:
    """Hands spans to OpenTelemetry (``opentelemetry-api``; extra ``freight[otel]``).

    Args:
        tracer_provider: the provider to use; the global one by default.
    """

    def __init__(self, tracer_provider: Any = None) -> None:
        try:
            from opentelemetry import trace  # noqa: PLC0415 (extra freight[otel])
        except ImportError as exc:  # pragma: no cover - only without the extra
            raise ImportError(
                "OpenTelemetryTracer needs opentelemetry-api: pip install 'freight[otel]'"
            ) from exc
        self._tracer = trace.get_tracer("freight.flow", tracer_provider=tracer_provider)

    def __call__(self, span: Span) -> None:
        start = int(span.started_at.timestamp() * 1e9)
        attributes = {
            f"freight.{k}": v
            for k, v in span.attributes.items()
            if isinstance(v, str | bool | int | float)
        }
        attributes["freight.flow"] = span.flow
        if span.consumer is not None:
            attributes["freight.consumer"] = span.consumer
        otel_span = self._tracer.start_span(
            f"freight.{span.name}", start_time=start, attributes=attributes
        )
        otel_span.end(end_time=start + int(span.duration * 1e9))
