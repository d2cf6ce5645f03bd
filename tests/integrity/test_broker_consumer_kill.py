"""At least once under consumer death, on the real brokers (RabbitMQ, NATS JetStream,
Kafka/Tansu): a consumer process is SIGKILLed in the middle of a batch (its handler
already did its work, nothing acknowledged yet); a second consumer finishes. Every
message is handled at least once (counted), none is lost, and the messages handled
twice are at most one batch: the one the first consumer died in.

Run as a module (``python -m tests.integrity.test_broker_consumer_kill <broker> ...``)
it is the consumer that gets killed.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from freight import BatchSpec, Retry
from freight.connectors import BrokerSource, consume
from freight.connectors.kafka import KafkaSink, KafkaSource
from freight.connectors.nats import NatsSink, NatsSource
from freight.connectors.rabbitmq import RabbitMQSink, RabbitMQSource
from tests.connectors.brokers import kafka, need_nats, need_rabbitmq, unique

pytestmark = [pytest.mark.slow, pytest.mark.service]

__all__ = ["kafka"]  # the session fixture, imported for pytest

ROOT = Path(__file__).resolve().parents[2]
MESSAGES = 60
BATCH = 10
STALL_AFTER = 20  # the consumer stalls (and is killed) in the batch after this many


def make_source(broker: str, address: str, name: str) -> BrokerSource:
    """The consumer of broker ``broker`` at ``address`` for the queue/stream/topic ``name``."""
    if broker == "rabbitmq":
        return RabbitMQSource(address, name, dead_letter_exchange=f"{name}.dlx", declare=True)
    if broker == "nats":
        return NatsSource(address, name, "workers", ack_wait=2)
    return KafkaSource(address, name, "workers", session_timeout=2)


async def publish(broker: str, address: str, name: str) -> None:
    bodies: list[Any] = [{"n": i} for i in range(MESSAGES)]
    if broker == "rabbitmq":
        declared = make_source(broker, address, name)
        await declared.fetch(1, 0)  # declares the queue (and takes nothing: it is empty)
        await declared.close()
        rabbit = RabbitMQSink(address, routing_key=name)
        assert await rabbit.write(bodies) is None
        await rabbit.aclose()
    elif broker == "nats":
        import nats

        nc = await nats.connect(address)
        await nc.jetstream().add_stream(name=name, subjects=[f"{name}.>"])
        await nc.close()
        sink = NatsSink(address, f"{name}.items")
        assert await sink.write(bodies) is None
        await sink.aclose()
    else:
        from aiokafka.admin import (  # type: ignore[import-untyped]
            AIOKafkaAdminClient,
            NewTopic,
        )

        admin = AIOKafkaAdminClient(bootstrap_servers=address)
        await admin.start()
        await admin.create_topics([NewTopic(name, 1, 1)])
        await admin.close()
        producer = KafkaSink(address, name)
        assert await producer.write(bodies) is None
        await producer.aclose()


async def cleanup(broker: str, address: str, name: str) -> None:
    if broker == "rabbitmq":
        import aio_pika

        conn = await aio_pika.connect(address)
        channel = await conn.channel()
        for queue in (name, f"{name}.dead"):
            await channel.queue_delete(queue)
        await channel.exchange_delete(f"{name}.dlx")
        await conn.close()
    elif broker == "nats":
        import nats

        nc = await nats.connect(address)
        await nc.jetstream().delete_stream(name)
        await nc.close()


async def doomed_consumer(broker: str, address: str, name: str, log: str) -> None:
    """Record each message handled in ``log``; stall forever in the batch that starts
    after ``STALL_AFTER`` are recorded (after recording it: work done, no ack)."""
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    recorded = 0

    async def handle(items: list[Any]) -> None:
        nonlocal recorded
        stall = recorded >= STALL_AFTER
        os.write(fd, "".join(f"{item['n']}\n" for item in items).encode())
        recorded += len(items)
        if stall:
            os.write(fd, b"stalled\n")
            await asyncio.sleep(3600)

    await consume(
        make_source(broker, address, name), handle, spec=BatchSpec(size=BATCH, timeout=0.5)
    )


def handled(log: Path) -> list[int]:
    return [int(line) for line in log.read_text().split() if line.isdigit()]


async def finish(broker: str, address: str, name: str, seen: list[int]) -> None:
    """The second consumer: consume until it handled every message the first did not
    acknowledge (the batch that one died in included), or 40 s."""
    source = make_source(broker, address, name)

    async def handle(items: list[Any]) -> None:
        seen.extend(item["n"] for item in items)

    deadline = time.monotonic() + 40
    while not set(range(STALL_AFTER, MESSAGES)) <= set(seen) and time.monotonic() < deadline:
        await consume(
            source,
            handle,
            spec=BatchSpec(size=BATCH, timeout=0.5),
            retry=Retry(attempts=1),
            until_idle=True,
        )
    await source.close()


async def kill_mid_batch_then_finish(broker: str, address: str, tmp_path: Path) -> None:
    name = unique("fkill").replace("-", "_")
    await publish(broker, address, name)
    log = tmp_path / "handled.log"
    log.touch()
    worker = subprocess.Popen(  # noqa: ASYNC220  (started, then polled below)
        [
            sys.executable,
            "-m",
            "tests.integrity.test_broker_consumer_kill",
            broker,
            address,
            name,
            str(log),
        ],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 30
        while "stalled" not in log.read_text():
            assert worker.poll() is None, worker.stderr.read().decode()[-2000:]  # type: ignore[union-attr]
            assert time.monotonic() < deadline, "the first consumer never reached its stall"
            await asyncio.sleep(0.05)
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait(timeout=10)
    finally:
        if worker.poll() is None:
            worker.kill()
        worker.wait(timeout=10)
        if worker.stderr is not None:
            worker.stderr.close()
    first = handled(log)
    assert len(first) == STALL_AFTER + BATCH  # killed mid-batch: the batch's work was done
    seen: list[int] = []
    try:
        await finish(broker, address, name, seen)
    finally:
        await cleanup(broker, address, name)
    counts = Counter(first + seen)
    assert set(counts) == set(range(MESSAGES)), f"lost: {set(range(MESSAGES)) - set(counts)}"
    twice = sum(c - 1 for c in counts.values())
    assert twice <= BATCH, f"{twice} duplicates, more than one batch"
    assert set(first[STALL_AFTER:]) <= set(seen)  # the batch died in came back


async def test_rabbitmq_consumer_killed_mid_batch_loses_nothing(tmp_path: Path) -> None:
    await kill_mid_batch_then_finish("rabbitmq", need_rabbitmq(), tmp_path)


async def test_nats_consumer_killed_mid_batch_loses_nothing(tmp_path: Path) -> None:
    await kill_mid_batch_then_finish("nats", need_nats(), tmp_path)


async def test_kafka_consumer_killed_mid_batch_loses_nothing(kafka: str, tmp_path: Path) -> None:
    await kill_mid_batch_then_finish("kafka", kafka, tmp_path)


if __name__ == "__main__":
    asyncio.run(doomed_consumer(*sys.argv[1:5]))
