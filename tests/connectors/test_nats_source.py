"""NatsSource against the real JetStream: the source contract (round trip, per-item
outcome, poison terminated and published to a dead-letter subject with its reason,
unsettled messages coming back, a dropped connection, order), and nak's delay."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import nats
import pytest

from freight import BatchSpec, PermanentError, TransientError
from freight.connectors import BrokerSource, consume
from freight.connectors.nats import REASON, NatsSink, NatsSource
from tests.connectors.broker_contract import SOURCE_CHECKS, BrokerHarness, settle_soon
from tests.connectors.brokers import need_nats, unique

pytestmark = pytest.mark.service


@dataclass
class NatsHarness:
    """A stream ``<name>`` taking ``<name>.>``, its dead letters in ``<name>_DEAD``."""

    url: str
    name: str = field(default_factory=lambda: unique("fsrc").replace("-", "_"))
    redelivery: float = 2.0
    opened: list[NatsSource] = field(default_factory=list)

    async def setup(self) -> None:
        nc = await nats.connect(self.url)
        js = nc.jetstream()
        await js.add_stream(name=self.name, subjects=[f"{self.name}.>"])
        await js.add_stream(name=f"{self.name}_DEAD", subjects=[f"{self.name}_dead"])
        await nc.close()

    async def publish(self, bodies: Sequence[dict[str, Any]]) -> None:
        sink = NatsSink(self.url, f"{self.name}.items")
        assert await sink.write(list(bodies)) is None
        await sink.aclose()

    async def source(self) -> BrokerSource:
        source = NatsSource(
            self.url,
            self.name,
            "workers",
            dead_letter_subject=f"{self.name}_dead",
            ack_wait=self.redelivery,
        )
        self.opened.append(source)
        return source

    async def dead_letters(self) -> list[tuple[dict[str, Any], str]]:
        nc = await nats.connect(self.url)
        js = nc.jetstream()
        info = await js.stream_info(f"{self.name}_DEAD")
        found = []
        for seq in range(info.state.first_seq, info.state.last_seq + 1):
            msg = await js.get_msg(f"{self.name}_DEAD", seq)
            found.append((json.loads(msg.data or b""), (msg.headers or {})[REASON]))
        await nc.close()
        return found

    async def drop_connection(self, source: BrokerSource) -> None:
        assert isinstance(source, NatsSource)
        nc = source.connection
        assert nc is not None
        transport = nc._transport
        assert transport is not None
        transport._io_writer.transport.abort()  # type: ignore[attr-defined]

    async def cleanup(self) -> None:
        for source in self.opened:
            await source.close()
        nc = await nats.connect(self.url)
        js = nc.jetstream()
        for stream in (self.name, f"{self.name}_DEAD"):
            await js.delete_stream(stream)
        await nc.close()


_: type[BrokerHarness] = NatsHarness


@pytest.fixture
async def harness() -> AsyncIterator[NatsHarness]:
    made = NatsHarness(need_nats())
    await made.setup()
    yield made
    await made.cleanup()


@pytest.mark.parametrize("check", SOURCE_CHECKS, ids=lambda c: c.__name__)
async def test_nats_keeps_the_source_contract(
    check: Callable[[BrokerHarness], Awaitable[None]], harness: NatsHarness
) -> None:
    await settle_soon(check(harness))


async def test_a_transient_failure_is_nakked_with_the_backoff_as_delay(
    harness: NatsHarness,
) -> None:
    await harness.publish([{"n": 1}])
    source = NatsSource(harness.url, harness.name, "delayed", ack_wait=30)
    first = await source.fetch(5, 2.0)
    assert [m.attempts for m in first] == [1]
    await source.retry(first, 0.5)
    assert await source.fetch(5, 0.1) == []  # not before the delay
    started = time.monotonic()
    again = await source.fetch(5, 3.0)
    assert [m.body for m in again] == [{"n": 1}]
    assert again[0].attempts == 2
    assert time.monotonic() - started < 2.5  # well before ack_wait (30 s)
    await source.ack(again)
    await source.close()


async def test_a_message_failing_every_time_ends_terminated_as_a_dead_letter(
    harness: NatsHarness,
) -> None:
    await harness.publish([{"n": i} for i in range(5)])
    source = NatsSource(
        harness.url, harness.name, "strict", dead_letter_subject=f"{harness.name}_dead"
    )

    async def handle(items: list[Any]) -> list[Any]:
        return [TransientError("flaky") if i["n"] == 2 else None for i in items]

    acked = 0
    for _ in range(4):
        report = await consume(
            source,
            handle,
            spec=BatchSpec(size=5, timeout=0.2),
            max_deliveries=3,
            until_idle=True,
            retry=None,
        )
        acked += report.acked
        if report.dead_lettered:
            break
    await source.close()
    assert acked == 4
    dead = await harness.dead_letters()
    assert [body for body, _ in dead] == [{"n": 2}]
    assert "delivered 3 times" in dead[0][1]


async def test_undecodable_bodies_are_dead_lettered_before_any_handler(
    harness: NatsHarness,
) -> None:
    sink = NatsSink(harness.url, f"{harness.name}.raw")
    assert await sink.write([b"1", b"{oops", b"3"]) is None
    await sink.aclose()
    source = NatsSource(
        harness.url,
        harness.name,
        "decoding",
        decode=json.loads,
        dead_letter_subject=f"{harness.name}_dead",
    )
    seen: list[Any] = []

    async def handle(items: list[Any]) -> None:
        seen.extend(items)

    await consume(source, handle, spec=BatchSpec(size=5, timeout=0.2), until_idle=True)
    await source.close()
    assert seen == [1, 3]
    nc = await nats.connect(harness.url)
    msg = await nc.jetstream().get_msg(f"{harness.name}_DEAD", 1)
    await nc.close()
    assert msg.data == b"{oops"
    assert (msg.headers or {})[REASON].startswith("RecordError")


async def test_a_permanent_error_is_never_redelivered(harness: NatsHarness) -> None:
    await harness.publish([{"n": 1}])
    source = NatsSource(harness.url, harness.name, "term", ack_wait=1)

    async def refuse(items: list[Any]) -> list[Any]:
        return [PermanentError("no") for _ in items]

    report = await consume(source, refuse, spec=BatchSpec(size=5, timeout=0.2), until_idle=True)
    assert report.dead_lettered == 1
    assert await source.fetch(5, 1.5) == []  # past ack_wait: terminated, not pending
    await source.close()


async def test_a_worker_joins_a_durable_consumer_made_with_another_ack_wait(
    harness: NatsHarness,
) -> None:
    await harness.publish([{"n": 1}])
    first = NatsSource(harness.url, harness.name, "shared", ack_wait=30)
    await first.fetch(1, 2.0)  # creates the consumer
    await first.close()  # what it took goes back (nak)
    second = NatsSource(harness.url, harness.name, "shared", ack_wait=5)
    got = await second.fetch(5, 2.0)
    assert [m.body for m in got] == [{"n": 1}]
    await second.ack(got)
    await second.close()


async def test_a_json_body_from_another_producer_is_decoded_whatever_the_header_case(
    harness: NatsHarness,
) -> None:
    """Found in review: only ``content-type`` in lower case was read; another producer's
    ``Content-Type: application/json`` reached the handler as bytes."""
    nc = await nats.connect(harness.url)
    js = nc.jetstream()
    await js.publish(
        f"{harness.name}.items", b'{"n": 7}', headers={"Content-Type": "application/json"}
    )
    await nc.close()
    source = NatsSource(harness.url, harness.name, "cased")
    [message] = await source.fetch(5, 2.0)
    assert message.body == {"n": 7}
    await source.ack([message])
    await source.close()
