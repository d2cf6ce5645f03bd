"""KafkaSource against a real Kafka-protocol broker (Tansu): the source contract (round
trip, per-item outcome, poison to ``<topic>.dead`` with its reason, unsettled records
read again by the next member, a restarted consumer, order per partition), commits
only after success, and a rebalance that commits what finished."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition  # type: ignore[import-untyped]
from aiokafka.admin import AIOKafkaAdminClient, NewTopic  # type: ignore[import-untyped]

from freight.connectors import BrokerSource
from freight.connectors.kafka import REASON, KafkaSink, KafkaSource
from tests.connectors.broker_contract import SOURCE_CHECKS, BrokerHarness, settle_soon
from tests.connectors.brokers import kafka, unique

pytestmark = pytest.mark.service

__all__ = ["kafka"]  # the session fixture, imported for pytest


async def create_topic(bootstrap: str, name: str, partitions: int = 1) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, partitions, 1)])
    finally:
        await admin.close()


async def read_all(bootstrap: str, topic: str) -> list[Any]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    tp = TopicPartition(topic, 0)
    consumer.assign([tp])
    await consumer.seek_to_beginning(tp)
    end = (await consumer.end_offsets([tp]))[tp]
    found = []
    while await consumer.position(tp) < end:
        found += (await consumer.getmany(tp, timeout_ms=1000)).get(tp, [])
    await consumer.stop()
    return found


@dataclass
class KafkaHarness:
    """One topic (one partition), one group; a dropped connection is a restart."""

    bootstrap: str
    topic: str = field(default_factory=lambda: unique("fsrc"))
    redelivery: float = 3.0
    opened: list[KafkaSource] = field(default_factory=list)

    async def setup(self) -> None:
        await create_topic(self.bootstrap, self.topic)

    async def publish(self, bodies: Sequence[dict[str, Any]]) -> None:
        sink = KafkaSink(self.bootstrap, self.topic)
        assert await sink.write(list(bodies)) is None
        await sink.aclose()

    async def source(self) -> BrokerSource:
        source = KafkaSource(self.bootstrap, self.topic, "workers", session_timeout=2)
        self.opened.append(source)
        return source

    async def dead_letters(self) -> list[tuple[dict[str, Any], str]]:
        return [
            (json.loads(r.value), dict(r.headers)[REASON].decode())
            for r in await read_all(self.bootstrap, f"{self.topic}.dead")
        ]

    async def drop_connection(self, source: BrokerSource) -> None:
        await source.close()  # the consumer restarts (rejoins the group) at its next fetch

    async def cleanup(self) -> None:
        for source in self.opened:
            await source.close()


_: type[BrokerHarness] = KafkaHarness


@pytest.fixture
async def harness(kafka: str) -> AsyncIterator[KafkaHarness]:
    made = KafkaHarness(kafka)
    await made.setup()
    yield made
    await made.cleanup()


# Kafka counts no deliveries (``attempts`` restarts at 1 with another member), so the
# contract's unsettled_comes_back is replaced by the test below that checks the rest.
KAFKA_CHECKS = [c for c in SOURCE_CHECKS if c.__name__ != "unsettled_comes_back"]


@pytest.mark.parametrize("check", KAFKA_CHECKS, ids=lambda c: c.__name__)
async def test_kafka_keeps_the_source_contract(
    check: Callable[[BrokerHarness], Awaitable[None]], harness: KafkaHarness
) -> None:
    await settle_soon(check(harness))


async def committed(harness: KafkaHarness) -> int | None:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=harness.bootstrap, group_id="workers", enable_auto_commit=False
    )
    await consumer.start()
    found = await consumer.committed(TopicPartition(harness.topic, 0))
    await consumer.stop()
    return found  # type: ignore[no-any-return]


async def test_offsets_are_committed_only_after_the_batch_succeeded(
    harness: KafkaHarness,
) -> None:
    await harness.publish([{"n": i} for i in range(10)])
    source = KafkaSource(harness.bootstrap, harness.topic, "workers", session_timeout=2)
    batch: list[Any] = []
    while len(batch) < 4:
        batch += await source.fetch(4 - len(batch), 2.0)
    assert [m.body["n"] for m in batch] == [0, 1, 2, 3]
    assert await committed(harness) in (None, 0)  # fetched, handled or not: not committed
    await source.ack(batch[:2])
    assert await committed(harness) == 2
    await source.ack(batch[2:])
    assert await committed(harness) == 4
    await source.close()


async def test_a_handed_back_record_is_read_again_and_later_ones_not_twice(
    harness: KafkaHarness,
) -> None:
    await harness.publish([{"n": i} for i in range(6)])
    source = KafkaSource(harness.bootstrap, harness.topic, "workers", session_timeout=2)
    batch: list[Any] = []
    while len(batch) < 6:
        batch += await source.fetch(6 - len(batch), 2.0)
    await source.retry([batch[2]], 0)
    await source.ack([m for m in batch if m is not batch[2]])
    assert await committed(harness) == 2  # the record handed back holds the commit
    again = await source.fetch(10, 2.0)
    assert [(m.body["n"], m.attempts) for m in again] == [(2, 2)]
    await source.ack(again)
    assert await committed(harness) == 6
    await source.close()


async def test_a_new_member_reads_again_what_a_member_that_left_never_settled(
    harness: KafkaHarness,
) -> None:
    """The contract's ``unsettled_comes_back`` but for the count: Kafka counts no
    deliveries, so a record read again by another member starts again at 1."""
    await harness.publish([{"n": i} for i in range(6)])
    first = KafkaSource(harness.bootstrap, harness.topic, "workers", session_timeout=2)
    taken: list[Any] = []
    while len(taken) < 6:
        taken += await first.fetch(6 - len(taken), 2.0)
    await first.ack(taken[:2])
    await first.close()  # left with 4 unsettled: nothing committed past them
    second = KafkaSource(harness.bootstrap, harness.topic, "workers", session_timeout=2)
    again: list[Any] = []
    for _ in range(10):
        again += await second.fetch(6, 1.0)
        if len(again) >= 4:
            break
    assert [m.body["n"] for m in again] == [2, 3, 4, 5]
    await second.ack(again)
    assert await committed(harness) == 6
    await second.close()


async def test_a_rebalance_keeps_what_finished_and_hands_on_what_was_in_flight(
    harness: KafkaHarness,
) -> None:
    """Member A settled partition 0 and holds partition 1's records in flight when B
    joins: whoever owns partition 1 afterwards reads its records again, nobody reads
    partition 0's again, and A settling its stale records afterwards raises nothing."""
    topic = unique("frebalance")
    await create_topic(harness.bootstrap, topic, partitions=2)
    sink = KafkaSink(harness.bootstrap, lambda item: topic, key=lambda item: item["k"])
    items = [{"k": k, "n": n} for k in ("a", "b", "c", "d") for n in range(5)]
    assert await sink.write(items) is None
    await sink.aclose()
    a = KafkaSource(harness.bootstrap, topic, "rebalance", session_timeout=2)
    fetched: list[Any] = []
    for _ in range(20):
        fetched += await a.fetch(20, 0.5)
        if len(fetched) == 20:
            break
    by_partition = {p: [m for m in fetched if m.raw[0].partition == p] for p in (0, 1)}
    assert by_partition[0]
    assert by_partition[1]
    await a.ack(by_partition[0])
    b = KafkaSource(harness.bootstrap, topic, "rebalance", session_timeout=2)
    read_again: list[Any] = []

    async def keep_reading(source: KafkaSource) -> None:
        for _ in range(40):
            got = await source.fetch(20, 0.25)
            read_again.extend(got)
            await source.ack(got)
            if len(read_again) >= len(by_partition[1]):
                return

    await asyncio.gather(keep_reading(a), keep_reading(b))
    await a.ack(by_partition[1])  # stale now: settles nothing, raises nothing
    await a.close()
    await b.close()
    assert sorted(m.raw[1].offset for m in read_again) == sorted(
        m.raw[1].offset for m in by_partition[1]
    )
    assert {m.raw[0].partition for m in read_again} == {1}
