"""Prometheus export of batch events and flow spans (extra ``freight[prometheus]``).

::

    from freight.metrics import PrometheusSubscriber

    metrics = PrometheusSubscriber()
    batcher = Batcher(handler, spec, name="embed", subscribers=[metrics])
    flow = Flow(subscribers=[metrics])  # a flow's consumers report as batchers too

Exported, each labelled by ``batcher`` (a batcher's name, or a flow consumer's):

- ``freight_batch_size`` (histogram): items per batch;
- ``freight_flushes_total{reason}``: batches by flush reason;
- ``freight_items_total{outcome}``: items by outcome (``succeeded``, ``failed``, ``retried``);
- ``freight_batch_duration_seconds`` (histogram): handler time per batch, retries included;
- ``freight_item_wait_seconds`` (histogram): how long the oldest item of a batch waited;
- ``freight_queue_depth`` (gauge): items pending after the latest batch (batchers);
- ``freight_batch_size_limit`` (gauge): the batch size the batcher flushes at now,
  as ``reconfigure`` set it or, with ``BatchSpec(size="auto")``, as the tuner chose it;
- ``freight_dead_letters_total{reason}``: a flow consumer's dead letters, by reason;
- ``freight_managed_batches_total{status}``: managed batches submitted (``pending``) and
  reaching each later status, labelled by endpoint (a ``BatchManager``'s chunks are
  batches of its endpoint, in the metrics above);
- ``freight_managed_batch_seconds{status}`` (histogram): submit to end of a managed
  batch, by the status it ended with.

A flow's spans map onto the same metrics: a ``flush`` span is a batch (its size, its
reason, and its duration, from the batch's first artifact to the flush, is the oldest
item's wait); a ``handler`` span is the handler's time and its items' outcomes; a
``dead_letter`` span counts one dead letter. ``publish`` spans (one per artifact) are
not counted.
"""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING, Any

from freight._core._stats import BatchEvent
from freight.flow._trace import Span
from freight.manager._models import BatchChange

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

__all__ = ["PrometheusSubscriber"]

_CREATED: weakref.WeakKeyDictionary[Any, dict[str, PrometheusSubscriber]] = (
    weakref.WeakKeyDictionary()
)
"""The first subscriber made for each live registry, by namespace (keyed by the registry
itself, held weakly: an ``id`` can be a later registry's once this one is collected)."""

_SIZE_BUCKETS = (1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000)
_BATCH_SECONDS = (1, 10, 60, 300, 900, 1800, 3600, 4 * 3600, 12 * 3600, 24 * 3600, 48 * 3600)


def _prometheus() -> Any:
    try:
        import prometheus_client  # noqa: PLC0415  (optional extra)
    except ImportError as exc:  # pragma: no cover - exercised only without the extra
        raise ImportError(
            "freight.metrics.PrometheusSubscriber needs prometheus-client; "
            "install it with: pip install 'freight[prometheus]'"
        ) from exc
    return prometheus_client


class PrometheusSubscriber:
    """A batch-event subscriber that updates Prometheus metrics.

    Args:
        registry: where to register the metrics (default: the global registry).
            One subscriber may serve many batchers; the ``batcher`` label tells
            them apart. Subscribers made for the same registry share its metrics.
        namespace: metric name prefix.
    """

    def __init__(
        self, registry: CollectorRegistry | None = None, *, namespace: str = "freight"
    ) -> None:
        prom = _prometheus()
        registry = registry if registry is not None else prom.REGISTRY
        made = _CREATED.setdefault(registry, {})
        shared = made.get(namespace)
        if shared is not None:  # metrics register once per registry: share them
            self.__dict__.update(shared.__dict__)
            return
        common: dict[str, Any] = {"namespace": namespace, "registry": registry}
        self.batch_size = prom.Histogram(
            "batch_size", "Items per batch.", ["batcher"], buckets=_SIZE_BUCKETS, **common
        )
        self.flushes = prom.Counter(
            "flushes", "Batches flushed, by reason.", ["batcher", "reason"], **common
        )
        self.items = prom.Counter(
            "items", "Items settled, by outcome.", ["batcher", "outcome"], **common
        )
        self.duration = prom.Histogram(
            "batch_duration_seconds",
            "Handler time per batch, retries included.",
            ["batcher"],
            **common,
        )
        self.wait = prom.Histogram(
            "item_wait_seconds",
            "Wait of the oldest item of a batch before its handler ran.",
            ["batcher"],
            **common,
        )
        self.queue_depth = prom.Gauge(
            "queue_depth", "Items pending in the batcher.", ["batcher"], **common
        )
        self.size_limit = prom.Gauge(
            "batch_size_limit",
            "The batch size the batcher flushes at now (tuned with size='auto').",
            ["batcher"],
            **common,
        )
        self.dead_letters = prom.Counter(
            "dead_letters",
            "Dead letters of a flow consumer, by reason.",
            ["batcher", "reason"],
            **common,
        )
        self.managed_batches = prom.Counter(
            "managed_batches",
            "Managed batches submitted and reaching each status, by endpoint.",
            ["batcher", "status"],
            **common,
        )
        self.managed_seconds = prom.Histogram(
            "managed_batch_seconds",
            "Submit to end of a managed batch, by the status it ended with.",
            ["batcher", "status"],
            buckets=_BATCH_SECONDS,
            **common,
        )
        made[namespace] = self

    def __call__(self, event: BatchEvent | Span | BatchChange) -> None:
        """Record one batch event, one span of a flow, or a managed batch's change."""
        if isinstance(event, Span):
            self._span(event)
            return
        if isinstance(event, BatchChange):
            self.managed_batches.labels(event.endpoint, event.status).inc()
            if event.status.terminal:
                self.managed_seconds.labels(event.endpoint, event.status).observe(event.elapsed)
            return
        name = event.batcher
        self.batch_size.labels(name).observe(event.size)
        self.flushes.labels(name, event.reason).inc()
        if event.succeeded:
            self.items.labels(name, "succeeded").inc(event.succeeded)
        if event.failed:
            self.items.labels(name, "failed").inc(event.failed)
        if event.retried:
            self.items.labels(name, "retried").inc(event.retried)
        self.duration.labels(name).observe(event.duration)
        self.wait.labels(name).observe(event.wait)
        self.queue_depth.labels(name).set(event.queue_depth)
        if event.current_size is not None:
            self.size_limit.labels(name).set(event.current_size)

    def _span(self, span: Span) -> None:
        """A flow's span, as the module docstring maps it."""
        name = span.consumer
        if name is None:
            return  # an outside publish
        attributes = span.attributes
        if span.name == "flush":
            self.batch_size.labels(name).observe(attributes.get("batch_size", 0))
            self.flushes.labels(name, attributes.get("flush_reason", "unknown")).inc()
            self.wait.labels(name).observe(span.duration)
        elif span.name == "handler":
            self.duration.labels(name).observe(span.duration)
            for outcome in ("succeeded", "failed", "retried"):
                if attributes.get(outcome):
                    self.items.labels(name, outcome).inc(attributes[outcome])
        elif span.name == "dead_letter":
            self.dead_letters.labels(name, attributes.get("reason", "unknown")).inc()
