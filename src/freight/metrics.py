"""Prometheus export of batch events (extra ``freight[prometheus]``).

::

    from freight.metrics import PrometheusSubscriber

    batcher = Batcher(handler, spec, name="embed", subscribers=[PrometheusSubscriber()])

Exported, each labelled by ``batcher`` (the batcher's name):

- ``freight_batch_size`` (histogram): items per batch;
- ``freight_flushes_total{reason}``: batches by flush reason;
- ``freight_items_total{outcome}``: items by outcome (``succeeded``, ``failed``, ``retried``);
- ``freight_batch_duration_seconds`` (histogram): handler time per batch, retries included;
- ``freight_item_wait_seconds`` (histogram): how long the oldest item of a batch waited;
- ``freight_queue_depth`` (gauge): items pending after the latest batch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from freight._core._stats import BatchEvent

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

__all__ = ["PrometheusSubscriber"]

_CREATED: dict[tuple[int, str], PrometheusSubscriber] = {}

_SIZE_BUCKETS = (1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000)


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
        shared = _CREATED.get((id(registry), namespace))
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
        _CREATED[(id(registry), namespace)] = self

    def __call__(self, event: BatchEvent) -> None:
        """Record one batch event."""
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
