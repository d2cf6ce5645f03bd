"""A flow's spans: building them and handing them to every subscriber.

Rules:

1. A span is built only when someone listens: without subscribers :meth:`Tracing.span`
   returns ``None`` at once (the hot path of a flow with ``trace=False`` pays one
   attribute test).
2. A :class:`DuckDBTracer` gets the span as one queued tuple (``DuckDBTracer.record``):
   no :class:`Span` object, no timestamp conversion, no copy of the attributes on the
   flow's path; its writer thread does that work in bulk. A publish span (one per
   artifact, most of a flow's spans) is queued as the envelope's fields
   (:meth:`Tracing.published`; its id is the artifact's). Other subscribers get a
   :class:`Span`, built once for all of them.
3. Durations are on the flow's clock (a fake clock gives exact ones); ``started_at``
   is the wall clock (UTC) minus the span's age on the flow's clock.
4. A subscriber never breaks the flow: its exceptions are logged, and the next
   subscriber still gets the span.
5. When the flow goes idle, DuckDB tracers write what they hold and other subscribers
   with a ``flush`` are flushed; when it
   closes, the subscribers with a ``close`` are closed (a DuckDB tracer writes then).
   The flow awaits those DuckDB writes in a worker thread (``aflush``, ``aclose``):
   its event loop never blocks on the trace file.

The tracers themselves (DuckDB, OpenTelemetry) are in ``_trace.py``.
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import time
import uuid
from collections.abc import Callable, Hashable, Iterable, Sequence, Sized
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from freight._drivers._engine import fan_out
from freight.flow._artifacts import Envelope
from freight.flow._trace import _SKEW, DuckDBTracer, Issuer, Span, SpanIds, SpanKind, _Queues

__all__ = ["Tracing"]


class _NoIssuer:
    """The issuer of a tracing no router has claimed (ids then are parsed)."""

    newest: str | None = None
    issued = -1
    id_prefix = ""


_NO_ISSUER = _NoIssuer()

_log = logging.getLogger("freight.flow")


class Tracing:
    """The subscribers of one flow, and the spans they get.

    Args:
        flow: the flow's name (each span carries it).
        subscribers: callables receiving every :class:`Span`.
        trace: ``True``, a path, ``False``, or ``None`` (a DuckDB file when duckdb is
            installed); see ``Flow``.
    """

    __slots__ = (
        "_ids", "_others", "_queues", "_single", "_tracers", "flow", "issuer", "steady",
        "subscribers",
    )  # fmt: skip

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
        self._tracers = [s for s in self.subscribers if isinstance(s, DuckDBTracer)]
        self._others = [s for s in self.subscribers if not isinstance(s, DuckDBTracer)]
        self._queues = [tracer.queues(flow) for tracer in self._tracers]
        self._ids = SpanIds(uuid.uuid4().hex[:12] + "-")
        # the queues of the only subscriber, a DuckDB tracer (the default): publish
        # spans' fast path
        only = len(self._queues) == 1 and not self._others
        self._single: _Queues | None = self._queues[0] if only else None
        # what makes the flow's artifact ids (its router, which sets this)
        self.issuer: Issuer = _NO_ISSUER
        # the flow's clock is monotonic (its router says so when it starts): its offset
        # to the wall clock is checked every _COUNT_EVERY publish spans, not at each
        self.steady = False

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
        return its id (``None`` without subscribers).

        ``attributes`` is the caller's fresh dict: a DuckDB tracer keeps it as it is
        until its writer thread writes it (rule 2)."""
        if not self.subscribers:
            return None
        span_id = self._ids.next()
        duration = now - start if now > start else 0.0
        ended = time.time()
        if self._tracers:
            row = (span_id, parent, self.flow, name, consumer, ended, duration, attributes)
            for tracer in self._tracers:
                tracer.record(row)
        if self._others:
            started = datetime.fromtimestamp(ended - duration, UTC)
            self._fan_out(
                span_id, name, consumer, started=started, duration=duration,
                attributes=attributes, parent=parent,
            )  # fmt: skip
        return span_id

    def flush(
        self,
        consumer: str,
        start: float,
        now: float,
        batch: tuple[int, str, float | None, Hashable],
    ) -> str | None:
        """The ``flush`` span of a batch opened at ``start`` and due at ``now`` (flow
        clock), ``batch`` being its ``(batch_size, flush_reason, efficiency, tenant)``;
        its id (``None`` without subscribers). A DuckDB tracer gets its values (rule
        2), other subscribers a :class:`Span`."""
        if not self.subscribers:
            return None
        batch_size, reason, efficiency, tenant = batch
        span_id = self._ids.next()
        duration = now - start if now > start else 0.0
        ended = time.time()
        values = (span_id, None, "flush", consumer, ended, duration, batch_size, reason,
                  efficiency, None, None, tenant, None, None, None)  # fmt: skip
        self._ran(values)
        if self._others:
            self._fan_out(
                span_id, "flush", consumer, started=datetime.fromtimestamp(ended - duration, UTC),
                duration=duration, parent=None, attributes={
                    "batch_size": batch_size, "flush_reason": reason,
                    "efficiency": efficiency, "tenant": tenant,
                },
            )  # fmt: skip
        return span_id

    def handler(
        self,
        consumer: str,
        start: float,
        now: float,
        parent: str | None,
        counts: tuple[int, int, int, int, int, int],
    ) -> None:
        """The ``handler`` span of a run from ``start`` to ``now`` (flow clock), child of
        its flush ``parent``; ``counts``: ``(batch_size, succeeded, failed, tries,
        published, retried)``."""
        if not self.subscribers:
            return
        batch_size, succeeded, failed, tries, published, retried = counts
        span_id = self._ids.next()
        duration = now - start if now > start else 0.0
        ended = time.time()
        values = (span_id, parent, "handler", consumer, ended, duration, batch_size, None,
                  None, succeeded, failed, None, tries, published, retried)  # fmt: skip
        self._ran(values)
        if self._others:
            self._fan_out(
                span_id, "handler", consumer,
                started=datetime.fromtimestamp(ended - duration, UTC), duration=duration,
                parent=parent, attributes={
                    "batch_size": batch_size, "succeeded": succeeded, "failed": failed,
                    "tries": tries, "published": published, "retried": retried,
                },
            )  # fmt: skip

    def published(self, routed: Sequence[tuple[Envelope, int, Sized]], now: float) -> None:
        """The ``publish`` spans of one route at ``now`` (flow clock): ``(envelope, seq,
        the subscriptions that took it)`` each (rule 2); nothing without subscribers.

        For a DuckDB tracer a publish span starts at its envelope's ``created_at`` on the
        wall clock (rule 3: the wall clock now, minus its age on the flow's clock), its
        envelope's ``published_at`` give or take the microseconds between them; the
        offset between the clocks is its run's (``_trace._Queues``), checked at each
        span on a fake clock and every ``_COUNT_EVERY`` spans on a monotonic one (a wall
        clock set meanwhile moves at most that many starts). (The router calls this only
        when there are subscribers.)"""
        single = self._single
        if single is not None and len(routed) == 1:
            # one DuckDB tracer, one artifact (an outside publish, most often):
            # ``_Queues.publish`` and ``_Queues.count`` inlined (~0.3 us less)
            e, _, takers = routed[0]
            key = (e[1], e[3], e[7], e[9], len(takers))
            issuer = self.issuer
            steady = self.steady
            if (
                key == single.key
                and e[0] is issuer.newest
                and issuer.issued == single.number + 1
                and single.owner is issuer
                and (steady or -_SKEW < time.time() - now - single.offset < _SKEW)
            ):  # the newest artifact, the next in the run: its start is all there is
                single.publishes.append(e[4])
                single.number += 1
            else:
                single.publish(e, key, issuer, time.time() - now)
            uncounted = single.uncounted + 1
            if uncounted < single.limit:
                single.uncounted = uncounted
                return
            single.count(1)
            if steady and not -_SKEW < time.time() - now - single.offset < _SKEW:
                single.key = ()  # the wall clock was set: the next span opens a run
            return
        if self._queues:
            offset = time.time() - now
            issuer = self.issuer
            for queues in self._queues:
                publish = queues.publish
                for e, _, takers in routed:
                    # (id, type, payload, producer, created_at, published_at, visibility,
                    # tenant, correlation_id, depth)
                    publish(e, (e[1], e[3], e[7], e[9], len(takers)), issuer, offset)
                queues.count(len(routed))
        for envelope, _, takers in routed if self._others else ():
            attributes = {
                "artifact_type": envelope.type,
                "consumers": len(takers),
                "tenant": envelope.tenant,
                "depth": envelope.depth,
            }
            self._fan_out(
                envelope.id, "publish", envelope.producer, started=envelope.published_at,
                duration=0.0, attributes=attributes, parent=None,
            )  # fmt: skip

    def _ran(self, values: tuple[Any, ...]) -> None:
        """Queue a flush or handler span's values (``Columns.RUN``) for each DuckDB
        tracer (``_Queues.ran`` inlined for the only one)."""
        single = self._single
        if single is not None:
            single.runs += values
            uncounted = single.uncounted + 1
            if uncounted < single.limit:
                single.uncounted = uncounted
            else:
                single.count(1)
            return
        for queues in self._queues:
            queues.ran(values)

    def _fan_out(
        self,
        span_id: str,
        name: SpanKind,
        consumer: str | None,
        *,
        started: datetime,
        duration: float,
        attributes: dict[str, Any],
        parent: str | None,
    ) -> None:
        """Build the :class:`Span` once and hand it to the other subscribers."""
        given = {k: v for k, v in attributes.items() if v is not None}
        head = (
            {"duration": duration}
            if consumer is None
            else {"consumer": consumer, "duration": duration}
        )
        span = Span(
            id=span_id,
            name=name,
            consumer=consumer,
            started_at=started,
            duration=duration,
            attributes={**head, **given},
            parent_id=parent,
            flow=self.flow,
        )
        fan_out(self._others, span, f"flow {self.flow}: span")

    async def aflush(self) -> None:
        """The flow is idle: DuckDB tracers write what they hold (in a worker thread:
        the event loop goes on meanwhile), other buffering subscribers flush (rule 5)."""
        for tracer in self._tracers:
            if tracer.due():
                await asyncio.to_thread(self._guard, tracer.idle, tracer, "flush")
        self._each(self._others, "flush")

    def close(self) -> None:
        """Close the subscribers that can be closed (the flow is closed)."""
        self._closing()
        self._each(self.subscribers, "close")

    async def aclose(self) -> None:
        """:meth:`close`, the DuckDB tracers' last writes in a worker thread."""
        self._closing()
        for tracer in self._tracers:
            await asyncio.to_thread(self._guard, tracer.close, tracer, "close")
        self._each(self._others, "close")

    def _closing(self) -> None:
        """This flow's queues are done with: a tracer drops them once written."""
        for queues in self._queues:
            queues.closed = True

    def _each(self, subscribers: list[Callable[[Span], Any]], method: str) -> None:
        for subscriber in subscribers:
            # A subscriber is any callable; flush/close are optional (rule 5).
            action = getattr(subscriber, method, None)
            if callable(action):
                self._guard(action, subscriber, method)

    def _guard(self, action: Callable[[], Any], subscriber: object, method: str) -> None:
        try:
            action()
        except Exception:
            _log.exception("%s: span subscriber %r failed (%s)", self.flow, subscriber, method)
