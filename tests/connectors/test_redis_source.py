"""Redis Streams consumer groups through the broker source port, on the real server.

Every stream is ``freight-test:<uuid>`` (db 0 is shared), deleted afterwards.
"""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import pytest
import redis.asyncio

from freight import BatchSpec, PermanentError, Retry, TransientError
from freight._errors import ConfigError, ConfigTypeError
from freight.connectors import BrokerSource, consume
from freight.connectors.redis import RedisStreamSource
from tests.connectors.broker_contract import SOURCE_CHECKS, BrokerHarness, drain, settle_soon
from tests.services import require

REDIS_URL = os.environ.get("FREIGHT_TEST_REDIS", "redis://127.0.0.1:6379/0")
pytestmark = pytest.mark.service


def need_redis() -> str:
    """The URL, once Redis answers (skip locally / fail under CI otherwise)."""
    require("127.0.0.1", 6379, "Redis")
    return REDIS_URL


class RedisHarness:
    """The contract's harness over one test stream and its consumer group."""

    def __init__(self, client: redis.asyncio.Redis, *, claim_idle: float = 0.3) -> None:
        self.client: Any = client  # redis-py's stubs type replies as unions of every shape
        self.stream = f"freight-test:{uuid.uuid4().hex}"
        self.group = "workers"
        self.redelivery = claim_idle
        self.claim_idle = claim_idle
        self.sources: list[RedisStreamSource] = []

    async def publish(self, bodies: Sequence[dict[str, Any]]) -> None:
        pipe = self.client.pipeline(transaction=False)
        for body in bodies:
            pipe.xadd(self.stream, {"body": json.dumps(body)})
        await pipe.execute()

    async def source(self) -> BrokerSource:
        name = f"freight-test-{uuid.uuid4().hex[:8]}"
        source = RedisStreamSource(
            f"{REDIS_URL}?client_name={name}",
            self.stream,
            self.group,
            name,
            claim_idle=self.claim_idle,
        )
        self.sources.append(source)
        return source

    async def dead_letters(self) -> list[tuple[dict[str, Any], str]]:
        entries = await self.client.xrange(f"{self.stream}:dead")
        return [(json.loads(f[b"body"]), f[b"dead:reason"].decode()) for _, f in entries]

    async def drop_connection(self, source: BrokerSource) -> None:
        assert isinstance(source, RedisStreamSource)
        killed = 0
        for client in await self.client.client_list():
            if client["name"] == source.consumer:
                await self.client.client_kill_filter(_id=client["id"])
                killed += 1
        assert killed >= 1

    async def cleanup(self) -> None:
        for source in self.sources:
            await source.close()
        await self.client.delete(self.stream, f"{self.stream}:dead")


_: type[BrokerHarness] = RedisHarness


@pytest.fixture
async def harness() -> AsyncIterator[RedisHarness]:
    client = redis.asyncio.Redis.from_url(need_redis())
    found = RedisHarness(client)
    yield found
    await found.cleanup()
    await client.aclose()


@pytest.mark.parametrize("check", SOURCE_CHECKS, ids=lambda c: c.__name__)
async def test_redis_streams_keep_the_source_contract(
    check: Callable[[BrokerHarness], Awaitable[None]], harness: RedisHarness
) -> None:
    await settle_soon(check(harness))


async def test_an_undecodable_entry_is_dead_lettered_at_fetch_and_the_rest_flow(
    harness: RedisHarness,
) -> None:
    await harness.client.xadd(harness.stream, {"body": b"{not json"})
    await harness.publish([{"n": 1}])
    source = await harness.source()
    seen: list[Any] = []

    async def handle(items: list[Any]) -> None:
        seen.extend(items)

    await consume(source, handle, spec=BatchSpec(size=10, timeout=0.05), until_idle=True)
    assert seen == [{"n": 1}]
    [(fields)] = [f for _, f in await harness.client.xrange(f"{harness.stream}:dead")]
    assert fields[b"body"] == b"{not json"
    assert fields[b"dead:reason"].startswith(b"RecordError: cannot decode the entry's 'body'")
    assert await harness.client.xpending(harness.stream, harness.group) == {
        "pending": 0, "min": None, "max": None, "consumers": [],
    }  # fmt: skip


async def test_an_entry_without_the_body_field_gives_its_fields(harness: RedisHarness) -> None:
    await harness.client.xadd(harness.stream, {"user": "ada", "event": "login"})
    source = await harness.source()
    [message] = await source.fetch(5, 0.1)
    assert message.body == {"user": "ada", "event": "login"}
    assert message.attempts == 1
    await source.ack([message])


async def test_a_handed_back_entry_comes_back_to_the_same_consumer_after_its_delay(
    harness: RedisHarness,
) -> None:
    await harness.publish([{"n": 0}, {"n": 1}])
    source = await harness.source()
    calls: list[list[int]] = []

    async def handle(items: list[Any]) -> list[Any]:
        calls.append([i["n"] for i in items])
        return [TransientError("busy") if i["n"] == 1 and len(calls) == 1 else 0 for i in items]

    one_try = Retry(attempts=1, backoff=0.05, max_backoff=0.05, jitter=0)
    report = await consume(
        source, handle, spec=BatchSpec(size=10, timeout=0.3), retry=one_try, max_batches=2
    )
    assert calls == [[0, 1], [1]]
    assert (report.acked, report.retried) == (2, 1)


async def test_a_new_consumer_with_the_same_name_resumes_its_pending_entries_at_once(
    harness: RedisHarness,
) -> None:
    await harness.publish([{"n": i} for i in range(3)])
    client = redis.asyncio.Redis.from_url(REDIS_URL)
    first = RedisStreamSource(client, harness.stream, harness.group, "fixed", claim_idle=60)
    assert len(await first.fetch(3, 0.1)) == 3  # then it dies without settling
    second = RedisStreamSource(client, harness.stream, harness.group, "fixed", claim_idle=60)
    again = await second.fetch(10, 0.1)
    assert [m.body["n"] for m in again] == [0, 1, 2]
    assert [m.attempts for m in again] == [2, 2, 2]
    await second.ack(again)
    await client.aclose()


async def test_an_unreachable_server_is_a_transient_error() -> None:
    client = redis.asyncio.Redis.from_url("redis://127.0.0.1:1/0")  # no reconnects to wait
    source = RedisStreamSource(client, "s", "g", "c")
    with pytest.raises(TransientError, match="Redis connection"):
        await source.fetch(1, 0)
    await client.aclose()


def test_names_are_checked() -> None:
    with pytest.raises(ConfigError, match="stream must be a non-empty str"):
        RedisStreamSource("redis://127.0.0.1:6379/0", "", "g")


async def test_consuming_goes_on_after_client_kill_type_normal_mid_run(
    harness: RedisHarness,
) -> None:
    """``CLIENT KILL TYPE normal`` (every normal client but the killer) in the middle of a
    run: the source's client reconnects, the run ends with every message acknowledged."""
    await harness.publish([{"n": i} for i in range(30)])
    source = RedisStreamSource(REDIS_URL, harness.stream, harness.group, claim_idle=60)
    harness.sources.append(source)
    seen: list[int] = []

    async def handle(items: list[Any]) -> None:
        seen.extend(i["n"] for i in items)
        if len(seen) == 10:
            killed = await harness.client.client_kill_filter(_type="normal", skipme=True)
            assert killed >= 1

    report = await consume(source, handle, spec=BatchSpec(size=10, timeout=0.05), until_idle=True)
    assert seen == list(range(30))
    assert report.acked == 30
    assert (await harness.client.xpending(harness.stream, harness.group))["pending"] == 0


async def test_a_dead_letter_that_cannot_be_written_leaves_its_entry_pending(
    harness: RedisHarness,
) -> None:
    """The dead-letter stream's key holds a string: the XADD fails, so the entry must not
    be acknowledged either (else it is gone from the group without a dead letter)."""
    await harness.client.set(f"{harness.stream}:dead", "not a stream")
    await harness.client.xadd(harness.stream, {"body": b"{not json"})
    source = await harness.source()
    with pytest.raises(PermanentError, match="WRONGTYPE"):
        await source.fetch(10, 0.1)
    assert (await harness.client.xpending(harness.stream, harness.group))["pending"] == 1


async def test_a_dead_letter_written_beside_one_that_cannot_be_is_acknowledged_alone(
    harness: RedisHarness,
) -> None:
    await harness.publish([{"n": 1}, {"n": 2}])
    source = RedisStreamSource(
        REDIS_URL, harness.stream, harness.group, "one", dead_letter=f"{harness.stream}:dead"
    )
    harness.sources.append(source)
    first, second = await source.fetch(10, 0.1)
    await source.dead_letter([(first, PermanentError("no"))])
    await harness.client.delete(f"{harness.stream}:dead")
    await harness.client.set(f"{harness.stream}:dead", "not a stream")
    with pytest.raises(PermanentError, match="WRONGTYPE"):
        await source.dead_letter([(second, PermanentError("no"))])
    rows = await harness.client.xpending_range(harness.stream, harness.group, "-", "+", 10)
    assert [r["message_id"].decode() for r in rows] == [second.id]


async def test_an_entry_deleted_while_pending_is_not_handed_to_the_handler(
    harness: RedisHarness,
) -> None:
    """A stream trimmed (XTRIM, XADD MAXLEN) or an entry deleted while a consumer held it:
    the restarted consumer finds it pending with no fields. There is nothing to handle: it
    is acknowledged, and the handler never sees a phantom empty body."""
    await harness.publish([{"n": i} for i in range(3)])
    client = redis.asyncio.Redis.from_url(REDIS_URL)
    first = RedisStreamSource(client, harness.stream, harness.group, "fixed", claim_idle=60)
    held = await first.fetch(3, 0.1)  # then it dies without settling
    await harness.client.xdel(harness.stream, held[1].id)
    second = RedisStreamSource(client, harness.stream, harness.group, "fixed", claim_idle=60)
    seen: list[Any] = []

    async def handle(items: list[Any]) -> None:
        seen.extend(items)

    report = await consume(second, handle, spec=BatchSpec(size=10, timeout=0.05), until_idle=True)
    await client.aclose()
    assert seen == [{"n": 0}, {"n": 2}]
    assert report.messages == 2
    assert (await harness.client.xpending(harness.stream, harness.group))["pending"] == 0


def test_a_url_or_client_of_the_wrong_kind_is_refused_when_made() -> None:
    with pytest.raises(ConfigError, match=r"'http://127.0.0.1:6379'.*redis://"):
        RedisStreamSource("http://127.0.0.1:6379", "s", "g")
    with pytest.raises(ConfigTypeError, match=r"redis\.asyncio\.Redis"):
        RedisStreamSource(redis.Redis(), "s", "g")  # type: ignore[arg-type]
    with pytest.raises(ConfigTypeError, match="field must be a non-empty str"):
        RedisStreamSource(REDIS_URL, "s", "g", field=5)  # type: ignore[arg-type]
    with pytest.raises(ConfigTypeError, match="start must be"):
        RedisStreamSource(REDIS_URL, "s", "g", start=0)  # type: ignore[arg-type]


async def test_a_group_that_cannot_be_created_says_which_and_from_where(
    harness: RedisHarness,
) -> None:
    source = RedisStreamSource(REDIS_URL, harness.stream, harness.group, start="latest")
    harness.sources.append(source)
    with pytest.raises(PermanentError, match=r"group 'workers' on stream '.*' from start 'latest'"):
        await source.fetch(1, 0)


async def test_attempts_are_counted_for_entries_far_apart_in_a_long_pending_list(
    harness: RedisHarness,
) -> None:
    """Two handed-back entries with 58 others pending to the same consumer between them:
    each one's ``attempts`` is its own delivery count (a wrong count would keep a message
    that always fails transiently from ever reaching ``max_deliveries``)."""
    await harness.publish([{"n": i} for i in range(60)])
    source = await harness.source()
    held = await source.fetch(60, 0.1)
    ends = [held[0], held[-1]]
    await source.retry(held[1:-1], 3600.0)  # pending, not due during the test
    for delivery in (2, 3, 4):
        await source.retry(ends, 0.0)
        ends = await source.fetch(2, 0)
        assert [(m.body["n"], m.attempts) for m in ends] == [(0, delivery), (59, delivery)]
    await source.ack(held[1:-1] + ends)


async def test_a_hand_back_longer_than_claim_idle_counts_one_more_delivery_only(
    harness: RedisHarness,
) -> None:
    """A hand-back's delay past ``claim_idle`` (a 429's Retry-After): while it waits, the
    consumer's own XAUTOCLAIM passes find the entry idle; they must not count deliveries
    the handler never saw, or ``max_deliveries`` dead-letters it early."""
    await harness.publish([{"n": 0}])
    source = RedisStreamSource(REDIS_URL, harness.stream, harness.group, "patient", claim_idle=0.05)
    harness.sources.append(source)
    [message] = await source.fetch(1, 0)
    await source.retry([message], 0.4)
    again: list[Any] = []
    while not again:
        again = await source.fetch(1, 0.02)
    assert [(m.id, m.attempts) for m in again] == [(message.id, 2)]
    await source.ack(again)


async def test_an_entry_with_thousands_of_fields_is_dead_lettered_too(
    harness: RedisHarness,
) -> None:
    """Past what one script takes as arguments, the copy goes by a plain XADD first."""
    await harness.client.xadd(harness.stream, {f"f{i}": "v" for i in range(5000)})
    await harness.publish([{"n": 1}])
    source = await harness.source()
    first, second = await source.fetch(10, 0.1)
    await source.dead_letter([(first, PermanentError("too wide")), (second, PermanentError("no"))])
    dead = await harness.client.xrange(f"{harness.stream}:dead")
    assert [len(fields) for _, fields in dead] == [5004, 5]
    assert dead[0][1][b"dead:reason"] == b"PermanentError: too wide"
    assert (await harness.client.xpending(harness.stream, harness.group))["pending"] == 0


async def test_consume_cancelled_mid_batch_leaves_the_batch_pending_for_another(
    harness: RedisHarness,
) -> None:
    await harness.publish([{"n": i} for i in range(6)])
    source = await harness.source()
    holding = asyncio.Event()

    async def hold(items: list[Any]) -> None:
        if any(i["n"] == 3 for i in items):
            holding.set()
            await asyncio.Event().wait()  # until cancelled

    task = asyncio.create_task(consume(source, hold, spec=BatchSpec(size=3, timeout=0.05)))
    await holding.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    rows = await harness.client.xpending_range(harness.stream, harness.group, "-", "+", 10)
    assert len(rows) == 3  # the first batch acknowledged, the one in hand not
    seen: list[int] = []

    async def collect(items: list[Any]) -> None:
        seen.extend(i["n"] for i in items)

    other = await harness.source()  # claims them once idle past claim_idle
    report = await drain(harness, other, collect, expect=3)
    assert sorted(seen) == [3, 4, 5]
    assert report.acked == 3
