"""NatsSink against the real JetStream: a batch stored with every ack awaited, one
outcome per message, a payload the server refuses failing alone."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import nats
import pytest

from freight import Batcher, BatchSpec, PermanentError, TransientError
from freight.connectors.nats import NatsSink, classify
from tests.connectors.broker_contract import SINK_CHECKS, SinkHarness, settle_soon
from tests.connectors.brokers import need_nats, unique

pytestmark = pytest.mark.service


@pytest.fixture
async def stream() -> AsyncIterator[str]:
    """A stream of its own taking ``<name>.>``; its name is the subject prefix."""
    url = need_nats()
    name = unique("fsink").replace("-", "_")
    nc = await nats.connect(url)
    js = nc.jetstream()
    await js.add_stream(name=name, subjects=[f"{name}.>"], max_msg_size=1024)
    yield name
    await js.delete_stream(name)
    await nc.close()


async def stored(stream: str) -> list[tuple[str, bytes, dict[str, str]]]:
    nc = await nats.connect(need_nats())
    js = nc.jetstream()
    info = await js.stream_info(stream)
    found = []
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        msg = await js.get_msg(stream, seq)
        found.append((msg.subject or "", msg.data or b"", dict(msg.headers or {})))
    await nc.close()
    return found


async def test_a_batch_is_stored_in_order_with_its_headers(stream: str) -> None:
    sink = NatsSink(need_nats(), f"{stream}.orders", headers=lambda item: {"n": str(item["n"])})
    assert await sink.write([{"n": i} for i in range(60)]) is None
    await sink.aclose()
    found = await stored(stream)
    assert [json.loads(data)["n"] for _, data, _ in found] == list(range(60))
    assert all(h["content-type"] == "application/json" for _, _, h in found)
    assert [h["n"] for _, _, h in found] == [str(i) for i in range(60)]


async def test_a_message_no_stream_takes_fails_alone(stream: str) -> None:
    sink = NatsSink(
        need_nats(),
        lambda item: "nobody.listens.here" if item == "3" else f"{stream}.{item}",
    )
    outcomes = await sink.write([str(i) for i in range(6)])
    await sink.aclose()
    assert outcomes is not None
    assert [i for i, o in enumerate(outcomes) if o is not None] == [3]
    assert isinstance(outcomes[3], PermanentError)
    assert "no JetStream stream" in str(outcomes[3])
    assert [data for _, data, _ in await stored(stream)] == [b"0", b"1", b"2", b"4", b"5"]


async def test_a_message_over_the_streams_size_limit_fails_alone(stream: str) -> None:
    sink = NatsSink(need_nats(), f"{stream}.big")
    outcomes = await sink.write([b"small", b"x" * 4096, b"fine"])
    await sink.aclose()
    assert outcomes is not None
    assert outcomes[0] is None
    assert outcomes[2] is None
    assert isinstance(outcomes[1], PermanentError | TransientError)
    assert [data for _, data, _ in await stored(stream)] == [b"small", b"fine"]


async def test_the_sink_is_a_batcher_handler(stream: str) -> None:
    sink = NatsSink(need_nats(), f"{stream}.b")
    async with Batcher(sink.write, BatchSpec(size=10, timeout=0.05)) as batcher:
        results = [await f for f in [batcher.submit_nowait(f"m{i}") for i in range(25)]]
    await sink.aclose()
    assert results == [None] * 25
    assert len(await stored(stream)) == 25


async def test_an_unreachable_server_fails_the_write_transiently() -> None:
    sink = NatsSink("nats://127.0.0.1:1", "x", timeout=0.5)
    with pytest.raises(TransientError):
        await sink.write(["a"])


def test_classify_keeps_the_original_as_cause() -> None:
    original = nats.errors.TimeoutError()
    mapped = classify(original)
    assert isinstance(mapped, TransientError)
    assert mapped.__cause__ is original


@dataclass
class NatsSinkHarness:
    """The sink contract on one stream; the poison is over its 1 KiB message limit."""

    url: str
    stream: str

    def items(self, n: int) -> list[Any]:
        return [{"n": i, "id": unique("m")} for i in range(n)]

    def poison(self) -> Any:
        return {"n": -1, "id": unique("poison"), "pad": "x" * 4096}

    async def write(self, items: list[Any]) -> list[Any] | None:
        sink = NatsSink(self.url, f"{self.stream}.contract")
        try:
            return await sink.write(items)
        finally:
            await sink.aclose()

    async def landed(self, items: list[Any]) -> list[bool]:
        ids = {json.loads(data)["id"] for _, data, _ in await stored(self.stream)}
        return [item["id"] in ids for item in items]


_: type[SinkHarness] = NatsSinkHarness


@pytest.mark.parametrize("check", SINK_CHECKS, ids=lambda c: c.__name__)
async def test_nats_keeps_the_sink_contract(
    check: Callable[[SinkHarness], Awaitable[None]], stream: str
) -> None:
    await settle_soon(check(NatsSinkHarness(need_nats(), stream)))


def test_without_the_client_the_import_error_names_the_extra() -> None:
    code = "import sys; sys.modules['nats'] = None; import freight.connectors.nats"
    found = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert found.returncode != 0
    assert "pip install 'freight[nats]'" in found.stderr


async def test_a_write_bigger_than_the_in_flight_window_lands_whole(stream: str) -> None:
    sink = NatsSink(need_nats(), f"{stream}.many")
    assert await sink.write([f"m{i}" for i in range(1200)]) is None
    await sink.aclose()
    found = await stored(stream)
    assert [data for _, data, _ in found] == [f"m{i}".encode() for i in range(1200)]
