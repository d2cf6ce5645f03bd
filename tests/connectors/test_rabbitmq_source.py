"""RabbitMQSource against the real broker: the source contract (round trip, per-item
outcome, poison to the dead-letter exchange with its reason, unsettled deliveries
coming back, a connection the server closes, order), and the AMQP details."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import aio_pika
import pytest

from freight import BatchSpec, PermanentError, TargetError
from freight.connectors import BrokerSource, consume
from freight.connectors.rabbitmq import REASON, RabbitMQSink, RabbitMQSource
from tests.connectors.broker_contract import SOURCE_CHECKS, BrokerHarness, settle_soon
from tests.connectors.brokers import close_amqp_connection, need_rabbitmq, unique

pytestmark = pytest.mark.service


@dataclass
class RabbitHarness:
    """One queue with its dead-letter exchange and ``<queue>.dead``; each source
    names its connection, so the server can close it."""

    url: str
    queue: str = field(default_factory=lambda: unique("freight-src"))
    redelivery: float = 0.0
    names: dict[int, str] = field(default_factory=dict)
    opened: list[RabbitMQSource] = field(default_factory=list)

    @property
    def dlx(self) -> str:
        return f"{self.queue}.dlx"

    async def publish(self, bodies: Sequence[dict[str, Any]]) -> None:
        await self._declare()
        sink = RabbitMQSink(self.url, routing_key=self.queue)
        assert await sink.write(list(bodies)) is None
        await sink.aclose()

    async def _declare(self) -> None:
        source = RabbitMQSource(self.url, self.queue, dead_letter_exchange=self.dlx, declare=True)
        await source.fetch(1, 0)  # declares; a message it took goes back on close
        await source.close()

    async def source(self) -> BrokerSource:
        name = unique("freight-consumer")
        source = RabbitMQSource(
            f"{self.url}?name={name}", self.queue, dead_letter_exchange=self.dlx, declare=True
        )
        self.names[id(source)] = name
        self.opened.append(source)
        return source

    async def dead_letters(self) -> list[tuple[dict[str, Any], str]]:
        conn = await aio_pika.connect(self.url)
        channel = await conn.channel()
        queue = await channel.get_queue(f"{self.queue}.dead")
        found = []
        while (message := await queue.get(no_ack=False, fail=False)) is not None:
            found.append((json.loads(message.body), str((message.headers or {})[REASON])))
        await conn.close()  # unacknowledged: they stay there
        return found

    async def drop_connection(self, source: BrokerSource) -> None:
        close_amqp_connection(self.names[id(source)])

    async def cleanup(self) -> None:
        for source in self.opened:
            await source.close()
        conn = await aio_pika.connect(self.url)
        channel = await conn.channel()
        for name in (self.queue, f"{self.queue}.dead"):
            await channel.queue_delete(name)
        await channel.exchange_delete(self.dlx)
        await conn.close()


_: type[BrokerHarness] = RabbitHarness


@pytest.fixture
async def harness() -> AsyncIterator[RabbitHarness]:
    made = RabbitHarness(need_rabbitmq())
    yield made
    await made.cleanup()


@pytest.mark.parametrize("check", SOURCE_CHECKS, ids=lambda c: c.__name__)
async def test_rabbitmq_keeps_the_source_contract(
    check: Callable[[BrokerHarness], Awaitable[None]], harness: RabbitHarness
) -> None:
    await settle_soon(check(harness))


async def test_prefetch_is_sized_to_the_batch_and_one_multiple_ack_settles_it(
    harness: RabbitHarness,
) -> None:
    await harness.publish([{"n": i} for i in range(30)])
    source = RabbitMQSource(harness.url, harness.queue)
    batch = await source.fetch(10, 2.0)
    assert [m.body["n"] for m in batch] == list(range(10))  # prefetch 10: no more came
    assert source._inbox.qsize() == 0
    await source.ack(batch)
    assert source._unsettled == set()
    following = await source.fetch(10, 2.0)
    assert [m.body["n"] for m in following] == list(range(10, 20))
    await source.close()  # unacknowledged: back to the queue
    again = RabbitMQSource(harness.url, harness.queue)
    rest = await again.fetch(20, 2.0)
    assert sorted(m.body["n"] for m in rest) == list(range(10, 30))
    assert all(m.attempts == 2 for m in rest if m.body["n"] < 20)
    await again.ack(rest)
    await again.close()


async def test_a_body_that_cannot_be_decoded_is_dead_lettered_with_why(
    harness: RabbitHarness,
) -> None:
    await harness._declare()
    sink = RabbitMQSink(harness.url, routing_key=harness.queue)
    assert await sink.write([b"1", b"not json", b"3"]) is None
    await sink.aclose()
    source = RabbitMQSource(
        harness.url, harness.queue, dead_letter_exchange=harness.dlx, decode=json.loads
    )
    seen: list[int] = []

    async def handle(items: list[Any]) -> None:
        seen.extend(items)

    report = await consume(source, handle, spec=BatchSpec(size=10, timeout=0.2), until_idle=True)
    await source.close()
    assert seen == [1, 3]
    assert report.acked == 2
    conn = await aio_pika.connect(harness.url)
    dead = await (await (await conn.channel()).get_queue(f"{harness.queue}.dead")).get()
    assert dead is not None
    assert dead.body == b"not json"
    assert str((dead.headers or {})[REASON]).startswith("RecordError: the message body")
    await conn.close()


async def test_without_a_dead_letter_exchange_the_queues_own_policy_takes_it(
    harness: RabbitHarness,
) -> None:
    await harness.publish([{"n": 1}])
    source = RabbitMQSource(harness.url, harness.queue)  # no DLX given: plain reject

    async def refuse(items: list[Any]) -> list[Any]:
        return [PermanentError("no") for _ in items]

    report = await consume(source, refuse, spec=BatchSpec(size=5, timeout=0.2), until_idle=True)
    await source.close()
    assert report.dead_lettered == 1
    conn = await aio_pika.connect(harness.url)
    dead = await (await (await conn.channel()).get_queue(f"{harness.queue}.dead")).get()
    assert dead is not None  # x-dead-letter-exchange on the queue routed it
    assert dead.headers is not None
    assert "x-death" in dead.headers
    await conn.close()


async def test_a_bigger_batch_after_a_small_one_gets_a_bigger_prefetch(
    harness: RabbitHarness,
) -> None:
    await harness.publish([{"n": i} for i in range(12)])
    source = RabbitMQSource(harness.url, harness.queue)
    first = await source.fetch(1, 2.0)
    await source.ack(first)
    batch = await source.fetch(10, 2.0)  # basic.qos binds new consumers only: restarted
    assert [m.body["n"] for m in batch] == list(range(1, 11))
    await source.ack(batch)
    await source.close()


async def test_a_dead_letter_exchange_that_routes_nowhere_is_a_target_error(
    harness: RabbitHarness,
) -> None:
    await harness.publish([{"n": 1}])
    conn = await aio_pika.connect(harness.url)
    lonely = unique("freight-lonely-dlx")
    channel = await conn.channel()
    await channel.declare_exchange(lonely, aio_pika.ExchangeType.DIRECT, auto_delete=True)
    source = RabbitMQSource(harness.url, harness.queue, dead_letter_exchange=lonely)

    async def refuse(items: list[Any]) -> list[Any]:
        return [PermanentError("no") for _ in items]

    with pytest.raises(TargetError, match="bind a queue"):
        await consume(source, refuse, spec=BatchSpec(size=5, timeout=0.5), until_idle=True)
    await source.close()  # not settled: the message is back in its queue
    again = RabbitMQSource(harness.url, harness.queue)
    back = await again.fetch(5, 2.0)
    assert [m.body for m in back] == [{"n": 1}]
    await again.ack(back)
    await again.close()
    await channel.exchange_delete(lonely)
    await conn.close()


async def test_a_message_keeps_its_id_when_delivered_again(harness: RabbitHarness) -> None:
    await harness.publish([{"n": 1}, {"n": 2}])
    source = RabbitMQSource(harness.url, harness.queue)
    first = await source.fetch(2, 2.0)
    await source.retry(first[:1], 0)  # handed back: a copy
    await source.close()  # the other one: requeued by the broker
    again = RabbitMQSource(harness.url, harness.queue)
    second = await again.fetch(2, 2.0)
    await again.ack(second)
    await again.close()
    assert sorted(m.id for m in second) == sorted(m.id for m in first)
    assert len({m.id for m in first}) == 2
