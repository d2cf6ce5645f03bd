"""PrometheusSubscriber exports every batch event, labelled by batcher name."""

from __future__ import annotations

import asyncio

from prometheus_client import CollectorRegistry

from freight import Batcher, BatchSpec
from freight.metrics import PrometheusSubscriber


async def test_prometheus_subscriber_exports_the_documented_metrics() -> None:
    registry = CollectorRegistry()
    metrics = PrometheusSubscriber(registry)

    async def handler(items: list[int]) -> list[int | Exception]:
        return [ValueError("bad") if i == 0 else i for i in items]

    async with Batcher(handler, BatchSpec(size=2), name="ids", subscribers=[metrics]) as b:
        futures = [b.submit_nowait(i) for i in range(3)]
    await asyncio.gather(*futures, return_exceptions=True)  # the third one flushed on close

    def value(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, {"batcher": "ids", **labels})

    assert value("freight_flushes_total", reason="size") == 1
    assert value("freight_flushes_total", reason="close") == 1
    assert value("freight_items_total", outcome="succeeded") == 2
    assert value("freight_items_total", outcome="failed") == 1
    assert value("freight_batch_size_count") == 2
    assert value("freight_batch_size_sum") == 3
    assert value("freight_batch_duration_seconds_count") == 2
    assert value("freight_item_wait_seconds_count") == 2
    assert value("freight_queue_depth") == 0


def test_retried_items_are_counted() -> None:
    from freight import BatchEvent

    registry = CollectorRegistry()
    metrics = PrometheusSubscriber(registry, namespace="app")
    metrics(
        BatchEvent(
            batcher="b",
            key=None,
            size=3,
            reason="timeout",
            wait=0.5,
            duration=0.1,
            succeeded=1,
            failed=0,
            retried=2,
            queue_depth=2,
        )
    )
    labels = {"batcher": "b", "outcome": "retried"}
    assert registry.get_sample_value("app_items_total", labels) == 2
    assert registry.get_sample_value("app_queue_depth", {"batcher": "b"}) == 2


def test_subscribers_of_one_registry_share_its_metrics() -> None:
    registry = CollectorRegistry()
    first, second = PrometheusSubscriber(registry), PrometheusSubscriber(registry)
    assert first.flushes is second.flushes


async def test_flow_spans_reach_the_prometheus_subscriber() -> None:
    """Batch sizes, flush reasons, handler time and dead letters, per flow consumer."""
    from dataclasses import dataclass

    from freight import Flow
    from freight.testing import FakeClock

    @dataclass
    class Payment:
        amount: float

    registry = CollectorRegistry()
    clock = FakeClock()
    flow = Flow(clock=clock, trace=False, subscribers=[PrometheusSubscriber(registry)])

    @flow.consumer("pay").consumes(Payment, batch=BatchSpec(size=2, timeout=30))
    async def pay(batch: list[Payment]) -> list[Exception | None]:
        return [ValueError("negative") if p.amount < 0 else None for p in batch]

    for amount in (1.0, -1.0, 2.0):
        await flow.publish(Payment(amount))
    await flow.run_until_idle()
    await clock.advance(30)  # the third waits for its timeout
    await flow.close()

    def value(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, {"batcher": "pay", **labels})

    assert value("freight_flushes_total", reason="size") == 1
    assert value("freight_flushes_total", reason="timeout") == 1
    assert value("freight_batch_size_sum") == 3
    assert value("freight_batch_size_count") == 2
    assert value("freight_items_total", outcome="succeeded") == 2
    assert value("freight_items_total", outcome="failed") == 1
    assert value("freight_batch_duration_seconds_count") == 2  # handler time, flow clock
    assert value("freight_item_wait_seconds_sum") == 30  # the timeout batch's first waited 30 s
    assert value("freight_dead_letters_total", reason="handler_error") == 1


def test_a_new_registry_never_gets_the_metrics_of_a_collected_one() -> None:
    """Reproduces CI's `assert None == 1` (stop 18): metrics were shared by ``id(registry)``,
    and a registry made after another was collected could get its address, so the new
    subscriber updated metrics registered in the dead registry."""
    import gc

    from freight import BatchEvent

    event = BatchEvent(batcher="b", key=None, size=1, reason="size", wait=0.0, duration=0.0,
                       succeeded=1, failed=0, retried=0, queue_depth=0)  # fmt: skip
    for _ in range(20):  # CPython reuses a freed object's address at once, mostly
        registry = CollectorRegistry()
        PrometheusSubscriber(registry)(event)
        labels = {"batcher": "b", "reason": "size"}
        assert registry.get_sample_value("freight_flushes_total", labels) == 1
        del registry
        gc.collect()
