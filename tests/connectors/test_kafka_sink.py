"""KafkaSink against a real Kafka-protocol broker (Tansu): a batch produced with every
delivery awaited, one outcome per record, the BatchSpec mapped to the producer."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition  # type: ignore[import-untyped]
from aiokafka.admin import AIOKafkaAdminClient, NewTopic  # type: ignore[import-untyped]

from freight import Batcher, BatchSpec, Job, PermanentError, Retry, TransientError
from freight.connectors.kafka import KafkaSink, classify, producer_options
from tests.connectors.broker_contract import SINK_CHECKS, SinkHarness, settle_soon
from tests.connectors.brokers import kafka, unique

pytestmark = pytest.mark.service

__all__ = ["kafka"]  # the session fixture, imported for pytest


async def new_topic(bootstrap: str, partitions: int = 1) -> str:
    name = unique("fsink")
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)])
    finally:
        await admin.close()
    return name


async def records(
    bootstrap: str, topic: str, partitions: int = 1
) -> list[tuple[int, bytes, bytes | None, dict[str, bytes]]]:
    """``(partition, value, key, headers)`` of every record, partition by partition."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    tps = [TopicPartition(topic, p) for p in range(partitions)]
    consumer.assign(tps)
    await consumer.seek_to_beginning(*tps)
    ends = await consumer.end_offsets(tps)
    found = []
    for tp in tps:
        while await consumer.position(tp) < ends[tp]:
            for message in (await consumer.getmany(tp, timeout_ms=1000)).get(tp, []):
                found.append(
                    (tp.partition, message.value or b"", message.key, dict(message.headers))
                )
    await consumer.stop()
    return found


async def test_a_batch_is_delivered_in_order_with_its_headers(kafka: str) -> None:
    topic = await new_topic(kafka)
    sink = KafkaSink(kafka, topic, headers=lambda item: {"n": str(item["n"])})
    assert await sink.write([{"n": i} for i in range(80)]) is None
    await sink.aclose()
    found = await records(kafka, topic)
    assert [json.loads(value)["n"] for _, value, _, _ in found] == list(range(80))
    assert all(h["content-type"] == b"application/json" for *_, h in found)
    assert [h["n"] for *_, h in found] == [str(i).encode() for i in range(80)]


async def test_records_of_one_key_keep_their_order_on_one_partition(kafka: str) -> None:
    topic = await new_topic(kafka, partitions=3)
    sink = KafkaSink(kafka, topic, key=lambda item: item.split(":")[0], spec=BatchSpec(size=7))
    items = [f"k{i % 4}:{i}" for i in range(60)]
    assert await sink.write(items) is None
    await sink.aclose()
    found = await records(kafka, topic, partitions=3)
    for k in range(4):
        mine = [(p, v.decode()) for p, v, key, _ in found if key == f"k{k}".encode()]
        assert len({p for p, _ in mine}) == 1
        assert [v for _, v in mine] == [i for i in items if i.startswith(f"k{k}:")]


async def test_a_record_over_the_size_limit_fails_alone(kafka: str) -> None:
    topic = await new_topic(kafka)
    sink = KafkaSink(kafka, topic)
    outcomes = await sink.write([b"a", b"x" * (2 << 20), b"b"])
    await sink.aclose()
    assert outcomes is not None
    assert outcomes[0] is None
    assert outcomes[2] is None
    assert isinstance(outcomes[1], PermanentError)
    assert "too large" in str(outcomes[1])
    assert [v for _, v, _, _ in await records(kafka, topic)] == [b"a", b"b"]


async def test_the_sink_is_a_batcher_handler(kafka: str) -> None:
    topic = await new_topic(kafka)
    sink = KafkaSink(kafka, topic, spec=BatchSpec(size=10, timeout=0.001))
    async with Batcher(sink.write, BatchSpec(size=10, timeout=0.05)) as batcher:
        results = [await f for f in [batcher.submit_nowait(f"m{i}") for i in range(25)]]
    await sink.aclose()
    assert results == [None] * 25
    assert len(await records(kafka, topic)) == 25


async def test_an_unreachable_broker_fails_the_write_transiently() -> None:
    sink = KafkaSink("127.0.0.1:1", "t", timeout=1)
    with pytest.raises(TransientError):
        await sink.write(["a"])


def test_the_batch_spec_maps_to_linger_and_batch_bytes() -> None:
    assert producer_options(None) == {"linger_ms": 0, "max_batch_size": 16384}
    assert producer_options(BatchSpec(size=500, timeout=0.005, max_bytes=1 << 20)) == {
        "linger_ms": 5,
        "max_batch_size": 1 << 20,
    }
    assert producer_options(BatchSpec(size=10)) == {"linger_ms": 0, "max_batch_size": 16384}


def test_classify_keeps_the_original_as_cause() -> None:
    from aiokafka.errors import KafkaConnectionError  # type: ignore[import-untyped]

    original = KafkaConnectionError("gone")
    mapped = classify(original)
    assert isinstance(mapped, TransientError)
    assert mapped.__cause__ is original


@dataclass
class KafkaSinkHarness:
    """The sink contract on one topic; the poison is over the 1 MiB request size."""

    bootstrap: str
    topic: str

    def items(self, n: int) -> list[Any]:
        return [{"n": i, "id": unique("m")} for i in range(n)]

    def poison(self) -> Any:
        return {"n": -1, "id": unique("poison"), "pad": "x" * (2 << 20)}

    async def write(self, items: list[Any]) -> list[Any] | None:
        sink = KafkaSink(self.bootstrap, self.topic)
        try:
            return await sink.write(items)
        finally:
            await sink.aclose()

    async def landed(self, items: list[Any]) -> list[bool]:
        ids = {
            json.loads(value)["id"] for _, value, _, _ in await records(self.bootstrap, self.topic)
        }
        return [item["id"] in ids for item in items]


_: type[SinkHarness] = KafkaSinkHarness


@pytest.mark.parametrize("check", SINK_CHECKS, ids=lambda c: c.__name__)
async def test_kafka_keeps_the_sink_contract(
    check: Callable[[SinkHarness], Awaitable[None]], kafka: str
) -> None:
    await settle_soon(check(KafkaSinkHarness(kafka, await new_topic(kafka))))


def test_without_the_client_the_import_error_names_the_extra() -> None:
    code = "import sys; sys.modules['aiokafka'] = None; import freight.connectors.kafka"
    found = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert found.returncode != 0
    assert "pip install 'freight[kafka]'" in found.stderr


def test_a_bulk_job_writes_to_kafka_and_one_bad_record_is_its_only_failure(
    kafka: str, tmp_path: Path
) -> None:
    topic = asyncio.run(new_topic(kafka))
    rows: list[Any] = [{"n": i} for i in range(500)]
    rows[123] = {"n": 123, "pad": "x" * (2 << 20)}  # over the request size: fails alone
    job = Job(
        "to-kafka",
        rows,
        KafkaSink(kafka, topic),
        executor="async",
        chunk_size=100,
        store=tmp_path / "store.db",
        retry=Retry(attempts=1),
    )
    report = job.run()
    assert report.summary["failed"] == 1
    assert report.summary["succeeded"] == 499
    found = asyncio.run(records(kafka, topic))
    assert sorted(json.loads(value)["n"] for _, value, _, _ in found) == [
        n for n in range(500) if n != 123
    ]
