"""RabbitMQSink against the real broker: a batch published with confirms, one outcome
per message, a refused exchange for every item, a reconnect after the server closed
the connection."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aio_pika
import pytest

from freight import Batcher, BatchSpec, PermanentError, TargetError, TransientError
from freight.connectors.rabbitmq import RabbitMQSink, classify
from tests.connectors.broker_contract import SINK_CHECKS, SinkHarness, settle_soon
from tests.connectors.brokers import close_amqp_connection, need_rabbitmq, unique

pytestmark = pytest.mark.service


@pytest.fixture
async def queue() -> AsyncIterator[str]:
    url = need_rabbitmq()
    name = unique("freight-sink")
    conn = await aio_pika.connect(url)
    channel = await conn.channel()
    await channel.declare_queue(name)
    yield name
    await channel.queue_delete(name)
    await conn.close()


async def drain(name: str) -> list[aio_pika.abc.AbstractIncomingMessage]:
    conn = await aio_pika.connect(need_rabbitmq())
    channel = await conn.channel()
    q = await channel.get_queue(name)
    got = []
    while (message := await q.get(no_ack=True, fail=False)) is not None:
        got.append(message)
    await conn.close()
    return got


async def test_a_batch_is_published_in_order_with_its_headers(queue: str) -> None:
    sink = RabbitMQSink(
        need_rabbitmq(), routing_key=queue, headers=lambda item: {"n": str(item["n"])}
    )
    assert await sink.write([{"n": i} for i in range(50)]) is None
    await sink.aclose()
    got = await drain(queue)
    assert [m.body for m in got] == [f'{{"n":{i}}}'.encode() for i in range(50)]
    assert [m.headers["n"] for m in got] == [str(i) for i in range(50)]
    assert all(m.delivery_mode == aio_pika.DeliveryMode.PERSISTENT for m in got)


async def test_an_unroutable_message_fails_alone_and_the_rest_land(queue: str) -> None:
    sink = RabbitMQSink(
        need_rabbitmq(), routing_key=lambda item: "nowhere-at-all" if item == b"3" else queue
    )
    outcomes = await sink.write([str(i).encode() for i in range(6)])
    await sink.aclose()
    assert outcomes is not None
    assert [type(o) for o in outcomes] == [type(None)] * 3 + [PermanentError] + [type(None)] * 2
    assert "unroutable" in str(outcomes[3])
    assert [m.body for m in await drain(queue)] == [b"0", b"1", b"2", b"4", b"5"]


async def test_an_item_that_cannot_be_encoded_fails_alone(queue: str) -> None:
    sink = RabbitMQSink(need_rabbitmq(), routing_key=queue)
    outcomes = await sink.write(["a", object(), "b"])
    await sink.aclose()
    assert outcomes is not None
    assert outcomes[0] is None
    assert outcomes[2] is None
    assert isinstance(outcomes[1], PermanentError)
    assert "object" in str(outcomes[1])
    assert [m.body for m in await drain(queue)] == [b"a", b"b"]


async def test_a_missing_exchange_refuses_every_item_with_a_target_error() -> None:
    sink = RabbitMQSink(need_rabbitmq(), exchange=unique("no-such-exchange"))
    outcomes = await sink.write(["a", "b"])
    await sink.aclose()
    assert outcomes is not None
    assert len(outcomes) == 2
    assert all(isinstance(o, TargetError) and "exists" in str(o) for o in outcomes)


async def test_the_next_write_reconnects_after_the_server_closed_the_connection(
    queue: str,
) -> None:
    name = unique("freight-conn")
    sink = RabbitMQSink(f"{need_rabbitmq()}?name={name}", routing_key=queue)
    assert await sink.write(["before"]) is None
    close_amqp_connection(name)
    outcomes = None
    for _ in range(3):  # a write racing the close fails transiently, then one lands
        try:
            outcomes = await sink.write(["after"])
        except TransientError:
            continue
        if outcomes is None:
            break
        assert all(isinstance(o, TransientError) for o in outcomes)
    await sink.aclose()
    assert outcomes is None
    bodies = [m.body for m in await drain(queue)]
    assert bodies[0] == b"before"
    assert bodies[-1] == b"after"


async def test_the_sink_is_a_batcher_handler(queue: str) -> None:
    sink = RabbitMQSink(need_rabbitmq(), routing_key=queue)
    async with Batcher(sink.write, BatchSpec(size=10, timeout=0.05)) as batcher:
        results = [await f for f in [batcher.submit_nowait(f"m{i}") for i in range(25)]]
    await sink.aclose()
    assert results == [None] * 25
    assert sorted(m.body for m in await drain(queue)) == sorted(f"m{i}".encode() for i in range(25))


def test_classify_keeps_the_original_as_cause() -> None:
    original = ConnectionResetError("reset by peer")
    mapped = classify(original)
    assert isinstance(mapped, TransientError)
    assert mapped.__cause__ is original


@dataclass
class RabbitSinkHarness:
    """The sink contract on one queue; the poison is routed to no queue (mandatory)."""

    url: str
    queue: str

    def items(self, n: int) -> list[Any]:
        return [{"n": i, "id": unique("m")} for i in range(n)]

    def poison(self) -> Any:
        return {"n": -1, "id": unique("poison"), "route": "nowhere-at-all"}

    async def write(self, items: list[Any]) -> list[Any] | None:
        sink = RabbitMQSink(self.url, routing_key=lambda i: i.get("route", self.queue))
        try:
            return await sink.write(items)
        finally:
            await sink.aclose()

    async def landed(self, items: list[Any]) -> list[bool]:
        conn = await aio_pika.connect(self.url)
        channel = await conn.channel()
        q = await channel.get_queue(self.queue)
        ids = set()
        while (message := await q.get(no_ack=False, fail=False)) is not None:
            ids.add(json.loads(message.body)["id"])
        await conn.close()  # not acknowledged: they stay in the queue
        return [item["id"] in ids for item in items]


_: type[SinkHarness] = RabbitSinkHarness


@pytest.mark.parametrize("check", SINK_CHECKS, ids=lambda c: c.__name__)
async def test_rabbitmq_keeps_the_sink_contract(
    check: Callable[[SinkHarness], Awaitable[None]], queue: str
) -> None:
    await settle_soon(check(RabbitSinkHarness(need_rabbitmq(), queue)))


def test_without_the_client_the_import_error_names_the_extra() -> None:
    code = "import sys; sys.modules['aio_pika'] = None; import freight.connectors.rabbitmq"
    found = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert found.returncode != 0
    assert "pip install 'freight[rabbitmq]'" in found.stderr
