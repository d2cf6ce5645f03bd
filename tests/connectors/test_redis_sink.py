"""The Redis sinks: one pipeline per batch, a per-command outcome, MSET chosen on its own.

Keys are ``freight-test:<uuid>:…`` (db 0 is shared), deleted afterwards.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import redis
from hypothesis import given, settings
from hypothesis import strategies as st

from freight import BatchSpec, Job, PermanentError, TransientError
from freight._errors import ConfigError, ConfigTypeError
from freight.connectors import consume
from freight.connectors._rediskit import classify
from freight.connectors._redisplan import MSET_CHUNK, outcomes, plan
from freight.connectors.redis import AsyncRedisSink, RedisSink
from freight.jobs import IterableSource
from freight.testing import MemoryBroker
from tests.connectors.broker_contract import SINK_CHECKS, SinkHarness, settle_soon
from tests.connectors.test_redis_source import REDIS_URL, need_redis

pytestmark = pytest.mark.service


class RedisSinkHarness:
    """The sink contract over one sink (sync ones in a thread) and a key prefix."""

    def __init__(self, sink: RedisSink | AsyncRedisSink, client: redis.Redis) -> None:
        self.sink = sink
        self.client: Any = client  # redis-py's stubs type replies as unions of every shape
        self.prefix = f"freight-test:{uuid.uuid4().hex}"

    def items(self, n: int) -> list[Any]:
        p = self.prefix
        kinds: list[Callable[[int], tuple[Any, ...]]] = [
            lambda i: ("SET", f"{p}:s{i}", f"v{i}"),
            lambda i: ("HSET", f"{p}:h{i}", {"f": i}),
            lambda i: ("LPUSH", f"{p}:l{i}", i),
            lambda i: ("ZADD", f"{p}:z{i}", {"m": i}),
            lambda i: ("XADD", f"{p}:x{i}", {"f": i}),
        ]
        return [kinds[i % len(kinds)](i) for i in range(n)]

    def poison(self) -> Any:
        return ("HSET", f"{self.prefix}:bad", "a-field-without-its-value")

    async def write(self, items: list[Any]) -> list[Any] | None:
        if isinstance(self.sink, AsyncRedisSink):
            return await self.sink.write(items)
        return await asyncio.to_thread(self.sink.write, items)

    async def landed(self, items: list[Any]) -> list[bool]:
        return [bool(self.client.exists(item[1])) for item in items]

    def cleanup(self) -> None:
        keys = list(self.client.scan_iter(f"{self.prefix}:*", count=1000))
        if keys:
            self.client.delete(*keys)


_: type[SinkHarness] = RedisSinkHarness


@pytest.fixture
def client() -> redis.Redis:
    return redis.Redis.from_url(need_redis())


@pytest.fixture(params=["sync", "async"])
async def harness(
    request: pytest.FixtureRequest, client: redis.Redis
) -> AsyncIterator[RedisSinkHarness]:
    sink = RedisSink(REDIS_URL) if request.param == "sync" else AsyncRedisSink(REDIS_URL)
    found = RedisSinkHarness(sink, client)
    yield found
    found.cleanup()
    if isinstance(sink, AsyncRedisSink):
        await sink.close()
    else:
        sink.close()
    client.close()


@pytest.mark.parametrize("check", SINK_CHECKS, ids=lambda c: c.__name__)
async def test_redis_sinks_keep_the_sink_contract(
    check: Callable[[SinkHarness], Awaitable[None]], harness: RedisSinkHarness
) -> None:
    await settle_soon(check(harness))


async def test_each_command_gets_its_own_reply_and_a_refused_one_its_error(
    harness: RedisSinkHarness,
) -> None:
    p = harness.prefix
    harness.client.set(f"{p}:str", "x")
    results: Any = await harness.write([
        ("SET", f"{p}:a", "1"),
        ("INCR", f"{p}:str"),  # not an integer: refused, alone
        ("RPUSH", f"{p}:list", "a", "b"),
        ("SET", f"{p}:b", "2"),
    ])  # fmt: skip
    assert results[0] is True or results[0] == b"OK"
    assert isinstance(results[1], PermanentError)
    assert "not an integer" in str(results[1])
    assert results[2] == 2
    assert harness.client.mget(f"{p}:a", f"{p}:b") == [b"1", b"2"]


async def test_ttl_expires_every_key_written(harness: RedisSinkHarness) -> None:
    p = harness.prefix
    sink = RedisSink(REDIS_URL, ttl=60)
    try:
        sink.write([("SET", f"{p}:a", "1"), ("HSET", f"{p}:h", {"f": "v"}), ("SET", f"{p}:b", 2)])
    finally:
        sink.close()
    for key in ("a", "h", "b"):
        assert 0 < harness.client.pttl(f"{p}:{key}") <= 60_000


async def test_plain_key_values_go_as_mset_and_land(harness: RedisSinkHarness) -> None:
    items = [("SET", f"{harness.prefix}:{i}", str(i)) for i in range(2500)]
    planned = plan(items, None)
    assert [c[0] for c in planned.commands] == ["MSET", "MSET", "MSET"]
    assert len(planned.commands[0]) == 1 + 2 * MSET_CHUNK
    await harness.write(items)
    got = harness.client.mget([k for _, k, _ in items])
    assert got == [str(i).encode() for i in range(2500)]


async def test_a_consumer_writes_a_broker_batch_through_the_sink(
    harness: RedisSinkHarness,
) -> None:
    broker = MemoryBroker()
    for item in harness.items(12):
        broker.publish(item)
    broker.publish(harness.poison())
    sink = AsyncRedisSink(REDIS_URL)
    report = await consume(broker, sink, spec=BatchSpec(size=20, timeout=0), until_idle=True)
    await sink.close()
    assert (report.acked, report.dead_lettered) == (12, 1)
    assert "wrong number of arguments" in broker.dead[0][1]


def test_an_unreachable_server_fails_the_whole_batch_transiently() -> None:
    sink = RedisSink("redis://127.0.0.1:1/0")
    with pytest.raises(TransientError, match="Redis connection"):
        sink.write([("SET", "freight-test:x", "1")])
    sink.close()


@pytest.mark.parametrize("item", [("SET",), "SET k v", [1], (1, 2, 3), None])
def test_an_item_that_is_not_a_command_is_refused_with_the_rule(item: Any) -> None:
    with pytest.raises(ConfigError, match="name first"):
        plan([("SET", "k", "v"), item], None)


def test_classify_keeps_freight_errors_and_unknown_ones() -> None:
    error = TransientError("x")
    assert classify(error) is error
    other = KeyError("k")
    assert classify(other) is other
    assert isinstance(classify(redis.exceptions.ResponseError("LOADING x")), TransientError)
    assert isinstance(classify(redis.exceptions.BusyLoadingError("x")), TransientError)
    assert isinstance(classify(redis.exceptions.DataError("x")), PermanentError)


commands = st.one_of(
    st.tuples(st.just("SET"), st.text(max_size=3), st.integers()),
    st.tuples(st.just("SET"), st.text(max_size=3), st.integers(), st.just("NX")),
    st.tuples(
        st.just("HSET"),
        st.text(max_size=3),
        st.dictionaries(st.text(max_size=2), st.integers(), min_size=1),
    ),
    st.tuples(st.just("LPUSH"), st.text(max_size=3), st.integers()),
)  # fmt: skip


@given(items=st.lists(commands, max_size=30), ttl=st.sampled_from([None, 1000]))
def test_every_item_owns_its_commands_in_key_order_and_gets_their_first_error(
    items: list[tuple[Any, ...]], ttl: int | None
) -> None:
    planned = plan(items, ttl)
    by_key: dict[str, list[int]] = {}
    for item, (first, _) in zip(items, planned.owners, strict=True):
        by_key.setdefault(item[1], []).append(first)
    assert all(firsts == sorted(firsts) for firsts in by_key.values())  # order per key kept
    covered = {c for first, count in planned.owners for c in range(first, first + count)}
    assert covered == set(range(len(planned.commands)))
    assert all(c[0] != "MSET" for c in planned.commands) or ttl is None
    replies: list[Any] = [f"r{i}" for i in range(len(planned.commands))]
    if replies:
        replies[-1] = ValueError("last")
    result = outcomes(planned, replies)
    assert len(result) == len(items)
    for (first, count), outcome in zip(planned.owners, result, strict=True):
        mine = replies[first : first + count]
        errors = [r for r in mine if isinstance(r, Exception)]
        assert outcome is (errors[0] if errors else mine[0])


async def test_a_sink_writes_on_after_client_kill_type_normal(harness: RedisSinkHarness) -> None:
    first = harness.items(10)
    await harness.write(first)
    harness.client.client_kill_filter(_type="normal", skipme=True)
    second = harness.items(20)[10:]
    outcomes = await harness.write(second)
    assert not any(isinstance(o, Exception) for o in outcomes or [])
    assert await harness.landed(first + second) == [True] * 20


async def test_pairs_are_plain_key_values_unless_a_one_argument_command(
    harness: RedisSinkHarness,
) -> None:
    p = harness.prefix
    pairs = [(f"{p}:{i}", i) for i in range(5)]
    assert [c[0] for c in plan(pairs, None).commands] == ["MSET"]
    await harness.write(pairs)
    assert harness.client.mget([k for k, _ in pairs]) == [b"0", b"1", b"2", b"3", b"4"]
    outcomes = await harness.write([("DEL", f"{p}:0"), (f"{p}:5", "five"), ("INCR", f"{p}:1")])
    assert outcomes == [1, True, 2]
    assert harness.client.get(f"{p}:0") is None
    assert harness.client.get(f"{p}:5") == b"five"


def test_the_sync_sink_is_a_job_sink(harness: RedisSinkHarness, tmp_path: Path) -> None:
    p = harness.prefix
    rows = [{"id": i, "name": f"n{i}"} for i in range(250)]
    sink = RedisSink(REDIS_URL)
    job = Job(
        "warm-cache",
        IterableSource(rows),
        sink,
        process=lambda r: ("SET", f"{p}:user:{r['id']}", r["name"]),
        chunk_size=100,
        store=tmp_path / "store.db",
    )
    report = job.run()
    sink.close()
    assert report.status == "completed"
    assert harness.client.get(f"{p}:user:249") == b"n249"
    assert len(list(harness.client.scan_iter(f"{p}:user:*", count=1000))) == 250


_KEYS = ["a", "b", "c"]
_spelled = st.tuples(st.sampled_from(_KEYS), st.booleans())  # (name, as bytes)
_mixed = st.one_of(
    st.tuples(st.just("SET"), _spelled, st.sampled_from(["1", "7", "x"])),
    st.tuples(st.just("PAIR"), _spelled, st.sampled_from(["2", "y"])),
    st.tuples(st.just("INCR"), _spelled),
    st.tuples(st.just("APPEND"), _spelled, st.just("5")),
)


@settings(max_examples=40, deadline=None)
@given(commands=st.lists(_mixed, max_size=12))
def test_a_batch_leaves_redis_as_its_commands_one_by_one_whatever_the_key_spelling(
    commands: list[tuple[Any, ...]],
) -> None:
    """A key spelled as ``str`` in one item and as ``bytes`` in another is one Redis key:
    moving the plain SETs first as one MSET must see it as one, or an INCR of the key
    lands before a SET that came after it."""
    need_redis()
    client: Any = redis.Redis.from_url(REDIS_URL)
    sink = RedisSink(REDIS_URL)
    prefix = f"freight-test:{uuid.uuid4().hex}:"

    def items(base: str) -> list[tuple[Any, ...]]:
        built: list[tuple[Any, ...]] = []
        for name, (key, as_bytes), *rest in commands:
            spelled: Any = (base + key).encode() if as_bytes else base + key
            built.append((spelled, *rest) if name == "PAIR" else (name, spelled, *rest))
        return built

    try:
        sink.write(items(prefix + "sink:"))
        for (name, *_), item in zip(commands, items(prefix + "ref:"), strict=True):
            command = ("SET", *item) if name == "PAIR" else item
            try:
                client.execute_command(*command)
            except redis.ResponseError:
                pass
        for key in _KEYS:
            assert client.get(prefix + "sink:" + key) == client.get(prefix + "ref:" + key)
    finally:
        keys = list(client.scan_iter(f"{prefix}*"))
        if keys:
            client.delete(*keys)
        sink.close()
        client.close()


def test_a_url_or_client_of_the_wrong_kind_is_refused_when_the_sink_is_made() -> None:
    with pytest.raises(ConfigTypeError, match="RedisSink url must be"):
        RedisSink(5)  # type: ignore[arg-type]
    with pytest.raises(ConfigTypeError, match=r"redis\.asyncio\.Redis"):
        AsyncRedisSink(redis.Redis())  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"'localhost:6379'.*redis://"):
        RedisSink("localhost:6379")
