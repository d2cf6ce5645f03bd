"""A RabbitMQ queue consumed into each kind of target on real servers: a sink (here
NATS JetStream: broker to broker, each message acknowledged once stored there) and a
``Batcher`` (each message's outcome is its caller's)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import nats
import pytest

from freight import Batcher, BatchSpec, PermanentError
from freight.connectors import consume
from freight.connectors.nats import NatsSink
from tests.connectors.brokers import need_nats, need_rabbitmq
from tests.connectors.test_nats_source import NatsHarness
from tests.connectors.test_rabbitmq_source import RabbitHarness

pytestmark = pytest.mark.service


@pytest.fixture
async def rabbit() -> AsyncIterator[RabbitHarness]:
    made = RabbitHarness(need_rabbitmq())
    yield made
    await made.cleanup()


@pytest.fixture
async def jet() -> AsyncIterator[NatsHarness]:
    made = NatsHarness(need_nats())
    await made.setup()
    yield made
    await made.cleanup()


async def test_a_queue_consumed_into_a_nats_sink_lands_whole(
    rabbit: RabbitHarness, jet: NatsHarness
) -> None:
    await rabbit.publish([{"n": i} for i in range(30)])
    source = await rabbit.source()
    sink = NatsSink(jet.url, f"{jet.name}.copied")
    report = await consume(source, sink, spec=BatchSpec(size=8, timeout=0.2), until_idle=True)
    await sink.aclose()
    assert report.acked == 30
    nc = await nats.connect(jet.url)
    info = await nc.jetstream().stream_info(jet.name)
    await nc.close()
    assert info.state.messages == 30


async def test_a_queue_consumed_through_a_batcher_settles_each_by_its_callers_outcome(
    rabbit: RabbitHarness,
) -> None:
    await rabbit.publish([{"n": i} for i in range(12)])
    source = await rabbit.source()

    async def handle(items: list[Any]) -> list[Any]:
        return [PermanentError(f"odd: {i['n']}") if i["n"] % 2 else i["n"] for i in items]

    async with Batcher(handle, BatchSpec(size=4, timeout=0.05)) as batcher:
        report = await consume(
            source, batcher, spec=BatchSpec(size=6, timeout=0.2), until_idle=True
        )
    assert report.acked == 6
    assert report.dead_lettered == 6
    dead = await rabbit.dead_letters()
    assert sorted(body["n"] for body, _ in dead) == [1, 3, 5, 7, 9, 11]
    assert all(why.startswith("PermanentError: odd: ") for _, why in dead)
