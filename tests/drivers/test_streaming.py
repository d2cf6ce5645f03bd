"""Streaming batches: an async generator handler, one step per ``yield``, one stream per caller.

The step contract, callers that leave (the handler sees the shrinking set), errors,
END, several arguments, methods, the plan's retries before the first step, closing.
Time is virtual (FakeClock) or absent (batches flush by size); nothing sleeps.
"""

from __future__ import annotations

import asyncio
import gc
import pickle
import threading
from collections.abc import AsyncIterator
from typing import Any

import pytest

import freight
from freight import (
    END,
    Batcher,
    BatcherClosed,
    BatchEvent,
    BatchSpec,
    ConfigError,
    HandlerContractError,
    QueueFull,
    Retry,
    Skipped,
    TransientError,
)
from freight._drivers._asyncio import BatchStream
from freight.testing import FakeClock


async def collect(stream: AsyncIterator[Any]) -> list[Any]:
    return [value async for value in stream]


# -- the acceptance test -----------------------------------------------------------


class Crowd:
    """64 callers of one streaming batch: 0-9 break after 1-10 outputs, 10-14 are
    cancelled (by the test) once they read 3-7, the others read to the end."""

    def __init__(self) -> None:
        self.steps: list[list[int]] = []  # the ids the handler held at each step
        self.got: dict[int, list[tuple[int, int]]] = {i: [] for i in range(64)}
        self.left_at: dict[int, int] = {}  # caller -> steps started when it left
        self.ready = {i: asyncio.Event() for i in range(10, 15)}

    async def generate(self, ids: list[int]) -> AsyncIterator[list[tuple[int, int]]]:
        for step in range(20):
            self.steps.append(list(ids))
            await asyncio.sleep(0)  # the model's work: other tasks run meanwhile
            yield [(i, step) for i in ids]

    async def caller(self, stream: AsyncIterator[tuple[int, int]], i: int) -> None:
        try:
            async for output in stream:
                self.got[i].append(output)
                if i < 10 and len(self.got[i]) == 1 + i:
                    self.left_at[i] = len(self.steps)
                    break
                if i in self.ready and len(self.got[i]) == i - 7:
                    self.ready[i].set()
        except asyncio.CancelledError:
            self.left_at[i] = len(self.steps)
            raise


async def test_64_callers_20_steps_10_break_5_cancelled_the_rest_get_all_20_in_order() -> None:
    crowd = Crowd()
    generate = freight.batched(size=64, timeout=None)(crowd.generate)
    tasks = {i: asyncio.create_task(crowd.caller(generate(i), i)) for i in range(64)}
    for i, event in crowd.ready.items():
        await event.wait()
        tasks[i].cancel()
    done = await asyncio.gather(*tasks.values(), return_exceptions=True)

    assert [i for i, r in zip(tasks, done, strict=True) if r is not None] == list(range(10, 15))
    got, steps = crowd.got, crowd.steps
    for i in range(15, 64):
        assert got[i] == [(i, step) for step in range(20)]
    for i in range(10):
        assert got[i] == [(i, step) for step in range(1 + i)]
        assert [s for s, ids in enumerate(steps) if i in ids] == list(range(1 + i))
    for i in range(10, 15):
        assert got[i] == [(i, step) for step in range(len(got[i]))]
        assert len(got[i]) >= i - 7
    assert len(crowd.left_at) == 15
    for i, started in crowd.left_at.items():  # no step started after a caller left holds it
        assert not [ids for ids in steps[started:] if i in ids]
    assert len(steps) == 20
    assert steps[-1] == list(range(15, 64))
    await generate.close()
    assert generate.batcher().pending == 0


# -- the step contract -------------------------------------------------------------


async def test_each_caller_reads_its_own_entry_of_every_step() -> None:
    async def handler(items: list[str]) -> AsyncIterator[list[str]]:
        for n in range(3):
            yield [f"{item}{n}" for item in items]

    async with Batcher(handler, BatchSpec(size=2)) as b:
        a, c = b.stream("a"), b.stream("c")
        assert await collect(a) == ["a0", "a1", "a2"]
        assert await collect(c) == ["c0", "c1", "c2"]


async def test_end_stops_one_caller_and_the_others_go_on() -> None:
    async def handler(items: list[int]) -> AsyncIterator[list[Any]]:
        yield list(items)
        yield [END if item == 1 else item * 10 for item in items]
        yield [item * 100 for item in items]  # caller 1's entry is ignored: it ended

    async with Batcher(handler, BatchSpec(size=3)) as b:
        streams = [b.stream(i) for i in range(3)]
        results = [await collect(s) for s in streams]
    assert results == [[0, 0, 0], [1], [2, 20, 200]]


async def test_an_exception_entry_ends_that_caller_with_it_once() -> None:
    async def handler(items: list[int]) -> AsyncIterator[list[Any]]:
        yield [ValueError(f"bad {i}") if i == 0 else i for i in items]
        yield list(items)

    async with Batcher(handler, BatchSpec(size=2)) as b:
        bad, good = b.stream(0), b.stream(1)
        with pytest.raises(ValueError, match="bad 0"):
            await bad.__anext__()
        with pytest.raises(StopAsyncIteration):
            await bad.__anext__()
        assert await collect(good) == [1, 1]


async def test_rays_stop_tokens_end_a_caller_too() -> None:
    async def handler(items: list[int]) -> AsyncIterator[list[Any]]:
        yield [StopAsyncIteration, StopIteration, StopIteration(), items[3]]
        yield [items[3]] * 4

    async with Batcher(handler, BatchSpec(size=4)) as b:
        streams = [b.stream(i) for i in range(4)]
        assert [await collect(s) for s in streams] == [[], [], [], [3, 3]]


async def test_a_raising_handler_ends_every_open_stream_with_its_error() -> None:
    async def handler(items: list[int]) -> AsyncIterator[list[int]]:
        yield list(items)
        raise RuntimeError("model crashed")

    async with Batcher(handler, BatchSpec(size=2)) as b:
        for stream in [b.stream(1), b.stream(2)]:
            assert await stream.__anext__() in (1, 2)
            with pytest.raises(RuntimeError, match="model crashed"):
                await stream.__anext__()
            with pytest.raises(StopAsyncIteration):
                await stream.__anext__()
    assert b.stats().failed == 2


@pytest.mark.parametrize(
    ("step", "message"),
    [([1, 2, 3], "yielded 3 entries for 2 items"), (42, "yielded int")],
)
async def test_a_step_of_the_wrong_shape_fails_every_open_stream(step: Any, message: str) -> None:
    closed = []

    async def handler(items: list[int]) -> AsyncIterator[Any]:
        try:
            yield list(items)
            yield step
            yield list(items)
        finally:
            closed.append(True)

    async with Batcher(handler, BatchSpec(size=2)) as b:
        streams = [b.stream(1), b.stream(2)]
        for stream in streams:
            await stream.__anext__()
            with pytest.raises(HandlerContractError, match=message):
                await stream.__anext__()
    assert closed == [True]


async def test_a_handler_that_yields_nothing_ends_every_stream_empty() -> None:
    async def handler(items: list[int]) -> AsyncIterator[list[int]]:
        nothing: list[list[int]] = []
        for step in nothing:  # pragma: no cover - a generator that yields nothing
            yield step

    async with Batcher(handler, BatchSpec(size=2)) as b:
        streams = [b.stream(1), b.stream(2)]
        assert [await collect(s) for s in streams] == [[], []]


async def test_a_step_of_none_gives_every_caller_none() -> None:
    async def handler(items: list[int]) -> AsyncIterator[None]:
        yield None

    b: Batcher[int, None]
    async with Batcher(handler, BatchSpec(size=1)) as b:
        assert await collect(b.stream(1)) == [None]


# -- callers that leave ----------------------------------------------------------------


async def test_a_caller_that_breaks_is_out_of_the_next_steps() -> None:
    seen: list[list[int]] = []

    async def handler(items: list[int]) -> AsyncIterator[list[int]]:
        for _ in range(4):
            seen.append(list(items))
            yield list(items)

    async def read(b: Batcher[int, int], item: int, keep: int) -> list[int]:
        out = []
        async for value in b.stream(item):
            out.append(value)
            if len(out) == keep:
                break
        return out

    async with Batcher(handler, BatchSpec(size=3)) as b:
        got = await asyncio.gather(read(b, 0, 4), read(b, 1, 1), read(b, 2, 2))
    assert list(got) == [[0] * 4, [1], [2] * 2]
    assert seen == [[0, 1, 2], [0, 2], [0], [0]]


async def test_aclose_leaves_and_a_step_may_have_one_entry_per_original_item() -> None:
    seen: list[int] = []

    async def handler(items: list[int]) -> AsyncIterator[list[int]]:
        size = len(items)  # Ray's handlers keep the original positions
        for n in range(3):
            seen.append(len(items))
            yield [n] * size

    async with Batcher(handler, BatchSpec(size=2)) as b:
        first, second = b.stream(1), b.stream(2)
        assert await first.__anext__() == 0
        await first.aclose()
        with pytest.raises(StopAsyncIteration):
            await first.__anext__()
        assert await collect(second) == [0, 1, 2]
    assert seen == [2, 1, 1]


async def test_when_every_caller_left_the_handler_is_closed() -> None:
    steps = 0
    closed = asyncio.Event()

    async def handler(items: list[int]) -> AsyncIterator[list[int]]:
        nonlocal steps
        try:
            while True:
                steps += 1
                yield list(items)
        finally:
            closed.set()

    async with Batcher(handler, BatchSpec(size=2)) as b:
        streams = [b.stream(1), b.stream(2)]
        for stream in streams:
            assert await stream.__anext__() in (1, 2)
        del stream, streams  # dropped without reading on: both leave
        gc.collect()
        await asyncio.wait_for(closed.wait(), 1)
        assert b.pending == 0
    assert steps == 1
    assert b.stats().cancelled == 2


async def test_a_caller_cancelled_before_its_batch_starts_is_never_handled() -> None:
    clock = FakeClock()
    seen: list[list[int]] = []

    async def handler(items: list[int]) -> AsyncIterator[list[int]]:
        seen.append(list(items))
        yield list(items)

    async with Batcher(handler, BatchSpec(size=3, timeout=1), clock=clock) as b:
        gone = asyncio.create_task(b.stream(0).__anext__())
        kept = b.stream(1)
        await asyncio.sleep(0)
        gone.cancel()
        await asyncio.sleep(0)
        assert b.pending == 1  # withdrawn from the open batch at once
        await clock.advance(1)
        assert await collect(kept) == [1]
    assert seen == [[1]]


async def test_a_slow_reader_gets_every_output_the_fast_one_asked_for() -> None:
    async def handler(items: list[str]) -> AsyncIterator[list[str]]:
        for n in range(3):
            yield [f"{item}{n}" for item in items]

    async with Batcher(handler, BatchSpec(size=2)) as b:
        fast, slow = b.stream("f"), b.stream("s")
        assert await collect(fast) == ["f0", "f1", "f2"]
        assert await collect(slow) == ["s0", "s1", "s2"]


async def test_unread_outputs_wait_and_the_handler_goes_on() -> None:
    taken = 0

    async def handler(items: list[int]) -> AsyncIterator[list[int]]:
        nonlocal taken
        for n in range(5):
            taken += 1
            yield [item + n for item in items]

    async with Batcher(handler, BatchSpec(size=1)) as b:
        stream = b.stream(10)
        await b.flush()  # the batch is handled to its end, nobody reading yet
        assert taken == 5
        assert await collect(stream) == [10, 11, 12, 13, 14]


# -- the plan: retries before the first step, stats, closing -----------------------------


async def test_a_transient_failure_before_the_first_step_is_retried_as_a_batch() -> None:
    clock = FakeClock()
    calls = 0

    async def handler(items: list[int]) -> AsyncIterator[list[int]]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise TransientError("warming up")
        yield list(items)

    async with Batcher(
        handler, BatchSpec(size=2), clock=clock, retry=Retry(attempts=2, backoff=1, jitter=0)
    ) as b:
        streams = [b.stream(1), b.stream(2)]
        await clock.advance(1)
        assert [await collect(s) for s in streams] == [[1], [2]]
    assert calls == 2


async def test_a_transient_error_entry_in_the_first_step_comes_back_in_a_later_batch() -> None:
    clock = FakeClock()
    batches: list[list[int]] = []

    async def handler(items: list[int]) -> AsyncIterator[list[Any]]:
        batches.append(list(items))
        yield [TransientError("busy") if i == 1 and len(batches) == 1 else i for i in items]
        yield list(items)

    async with Batcher(
        handler, BatchSpec(size=2, timeout=5), clock=clock, retry=Retry(attempts=2, backoff=1)
    ) as b:
        first, second = b.stream(0), b.stream(1)
        assert await collect(first) == [0, 0]
        await clock.advance(10)
        assert await collect(second) == [1, 1]
    assert batches == [[0, 1], [1]]


async def test_a_stream_waiting_for_its_retry_fails_if_a_reconfigure_makes_it_too_costly() -> None:
    # Given a stream whose first step sent its item back for a retry (cost: its length)
    clock = FakeClock()

    async def handler(items: list[str]) -> AsyncIterator[list[Any]]:
        yield [TransientError("busy") if i == "long" else i for i in items]

    spec = BatchSpec(size=2, timeout=5, max_cost=10, cost=lambda items: sum(map(len, items)))
    retry = Retry(attempts=2, backoff=1, jitter=0)
    async with Batcher(handler, spec, clock=clock, retry=retry) as b:
        waiting, short = b.stream("long"), b.stream("ab")
        assert await collect(short) == ["ab"]
        # When max_cost drops below its cost alone while it waits
        b.reconfigure(max_cost=3)
        await clock.advance(1)
        # Then its reader gets ItemTooLarge, and nothing stays pending
        with pytest.raises(freight.ItemTooLarge, match=r"costs 4 alone, over max_cost=3"):
            await asyncio.wait_for(collect(waiting), timeout=1)
        assert b.pending == 0
        assert b.stats().failed == 1


async def test_rate_limit_paces_streaming_batches() -> None:
    clock = FakeClock()

    async def handler(items: list[int]) -> AsyncIterator[list[int]]:
        yield list(items)

    async with Batcher(handler, BatchSpec(size=1), clock=clock, rate_limit=1.0) as b:
        first, second = b.stream(1), b.stream(2)
        assert await collect(first) == [1]
        task = asyncio.create_task(collect(second))
        await clock.advance(0.5)
        assert not task.done()
        await clock.advance(0.5)
        assert await task == [2]


async def test_a_batch_event_counts_streams_by_how_they_ended() -> None:
    events: list[BatchEvent] = []

    async def handler(items: list[int]) -> AsyncIterator[list[Any]]:
        yield [ValueError("no") if i == 0 else END if i == 1 else i for i in items]
        yield list(items)

    async with Batcher(handler, BatchSpec(size=4), subscribers=[events.append]) as b:
        streams = [b.stream(i) for i in range(4)]
        with pytest.raises(ValueError, match="no"):
            await streams[0].__anext__()
        assert await collect(streams[1]) == []
        assert await streams[2].__anext__() == 2
        await streams[2].aclose()
        assert await collect(streams[3]) == [3, 3]
    (event,) = events
    assert (event.size, event.succeeded, event.failed) == (4, 2, 1)
    assert b.stats().cancelled == 1
    assert b.pending == 0


async def test_close_drains_open_streams() -> None:
    async def handler(items: list[int]) -> AsyncIterator[list[int]]:
        for _ in range(3):
            yield list(items)

    b = Batcher(handler, BatchSpec(size=5, timeout=10))
    stream = b.stream(4)
    reader = asyncio.create_task(collect(stream))
    await b.close()
    assert await reader == [4, 4, 4]
    assert b.stats().flushes == {"close": 1}


async def test_close_without_draining_fails_open_streams_with_batcher_closed() -> None:
    gate = asyncio.Event()

    async def handler(items: list[int]) -> AsyncIterator[list[int]]:
        yield list(items)
        await gate.wait()
        yield list(items)  # pragma: no cover - never reached

    b = Batcher(handler, BatchSpec(size=1))
    stream = b.stream(1)
    assert await stream.__anext__() == 1
    reader = asyncio.create_task(stream.__anext__())
    await asyncio.sleep(0)
    await b.close(drain=False)
    with pytest.raises(BatcherClosed, match="without draining"):
        await reader
    assert b.pending == 0


async def test_submit_and_stream_are_not_interchangeable() -> None:
    async def steps(items: list[int]) -> AsyncIterator[list[int]]:
        yield list(items)

    async def results(items: list[int]) -> list[int]:
        return items

    async with (
        Batcher(steps, BatchSpec(size=1)) as streaming,
        Batcher(results, BatchSpec(size=1)) as plain,
    ):
        with pytest.raises(ConfigError, match=r"stream\(item\)"):
            await streaming.submit(1)
        with pytest.raises(ConfigError, match=r"submit\(item\)"):
            plain.stream(1)
    with pytest.raises(BatcherClosed):
        streaming.stream(1)


async def test_where_and_a_full_batcher() -> None:
    async def handler(items: list[int]) -> AsyncIterator[list[int]]:
        yield list(items)

    async with Batcher(
        handler, BatchSpec(size=2), where=lambda i: i > 0, max_pending=1, overflow="reject"
    ) as b:
        with pytest.raises(Skipped):
            b.stream(0)
        first = b.stream(1)
        with pytest.raises(QueueFull):
            b.stream(2)
        await b.flush()
        assert await collect(first) == [1]


async def test_a_stream_opened_while_full_waits_for_room_when_read() -> None:
    clock = FakeClock()

    async def handler(items: list[int]) -> AsyncIterator[list[int]]:
        yield list(items)

    async with Batcher(handler, BatchSpec(size=5, timeout=1), clock=clock, max_pending=1) as b:
        first, second = b.stream(1), b.stream(2)  # the second waits for room
        assert b.pending == 1
        reader = asyncio.create_task(collect(second))
        assert await collect(first) == [1]
        await clock.advance(1)
        assert await reader == [2]


# -- @batched ------------------------------------------------------------------------------


async def test_batched_async_generator_with_several_arguments_follows_leavers() -> None:
    seen: list[tuple[list[str], list[str]]] = []

    @freight.batched(size=3, timeout=None)
    async def translate(texts: list[str], langs: list[str]) -> AsyncIterator[list[str]]:
        for n in range(3):
            seen.append((list(texts), list(langs)))
            yield [f"{t}-{lang}-{n}" for t, lang in zip(texts, langs, strict=True)]

    a, b, c = translate("a", "en"), translate("b", langs="fr"), translate(texts="c", langs="de")
    assert await a.__anext__() == "a-en-0"
    await b.aclose()
    assert await collect(a) == ["a-en-1", "a-en-2"]
    assert await collect(c) == ["c-de-0", "c-de-1", "c-de-2"]
    assert seen == [(["a", "b", "c"], ["en", "fr", "de"])] + [(["a", "c"], ["en", "de"])] * 2
    await translate.close()


async def test_batched_streaming_method_keeps_its_instance() -> None:
    class Model:
        def __init__(self, suffix: str) -> None:
            self.suffix = suffix

        @freight.batched(size=1)
        async def generate(self, prompts: list[str]) -> AsyncIterator[list[str]]:
            for n in range(2):
                yield [f"{p}{self.suffix}{n}" for p in prompts]

    assert await collect(Model("!").generate("x")) == ["x!0", "x!1"]
    model = Model("?")
    assert model.generate is model.generate
    assert [s async for s in model.generate.batch(["y"])] == [["y?0"], ["y?1"]]


def test_a_sync_generator_function_is_refused() -> None:
    with pytest.raises(ConfigError, match="async def"):

        @freight.batched(size=2)
        def steps(items: list[int]) -> Any:
            yield items


async def test_a_poison_item_before_the_first_step_is_isolated_and_the_halves_stream() -> None:
    calls: list[list[int]] = []

    async def handler(items: list[int]) -> AsyncIterator[list[int]]:
        calls.append(list(items))
        if 3 in items:
            raise ValueError("poison")
        for n in range(2):
            yield [item * 10 + n for item in items]

    async with Batcher(handler, BatchSpec(size=4), retry=Retry(attempts=1, isolate=True)) as b:
        streams = [b.stream(i) for i in range(4)]
        for i, stream in enumerate(streams[:3]):
            assert await collect(stream) == [i * 10, i * 10 + 1]
        with pytest.raises(ValueError, match="poison"):
            await streams[3].__anext__()
    assert calls == [[0, 1, 2, 3], [0, 1], [2, 3], [2], [3]]


def test_end_is_one_object_that_pickles_as_itself() -> None:
    assert repr(END) == "freight.END"
    assert pickle.loads(pickle.dumps(END)) is END


async def test_an_exception_entry_in_a_later_step_ends_that_caller_alone() -> None:
    async def handler(items: list[int]) -> AsyncIterator[list[Any]]:
        yield list(items)
        yield [KeyError(i) if i == 1 else i for i in items]
        yield list(items)

    async with Batcher(handler, BatchSpec(size=2)) as b:
        one, two = b.stream(1), b.stream(2)
        assert await one.__anext__() == 1
        with pytest.raises(KeyError):
            await one.__anext__()
        assert await collect(two) == [2, 2, 2]


async def test_a_first_step_of_the_wrong_length_fails_the_batch_and_closes_the_handler() -> None:
    closed = []

    async def handler(items: list[int]) -> AsyncIterator[list[int]]:
        try:
            yield [*items, 99]
        finally:
            closed.append(True)

    async with Batcher(handler, BatchSpec(size=2)) as b:
        streams = [b.stream(1), b.stream(2)]
        for stream in streams:
            with pytest.raises(HandlerContractError, match="3 entries for 2 items"):
                await stream.__anext__()
    assert closed == [True]


async def test_a_handler_that_ends_everyone_at_once_is_closed() -> None:
    closed = []

    async def handler(items: list[int]) -> AsyncIterator[list[Any]]:
        try:
            while True:
                yield [END] * len(items)
        finally:
            closed.append(True)

    async with Batcher(handler, BatchSpec(size=2)) as b:
        streams = [b.stream(1), b.stream(2)]
        assert [await collect(s) for s in streams] == [[], []]
    assert closed == [True]


class Boom(BaseException):
    """Not an Exception, and not a request to stop the program."""


@pytest.mark.parametrize("at_start", [True, False])
async def test_a_base_exception_from_the_handler_fails_the_streams_as_a_contract_error(
    at_start: bool,
) -> None:
    async def handler(items: list[int]) -> AsyncIterator[list[int]]:
        if not at_start:
            yield list(items)
        raise Boom("odd")

    async with Batcher(handler, BatchSpec(size=1)) as b:
        stream = b.stream(1)
        if not at_start:
            assert await stream.__anext__() == 1
        with pytest.raises(HandlerContractError, match="Boom"):
            await stream.__anext__()


async def test_a_batched_stream_of_one_list_called_by_keyword() -> None:
    @freight.batched(size=1)
    async def echo(items: list[int]) -> AsyncIterator[list[int]]:
        yield list(items)

    assert await collect(echo(items=5)) == [5]
    await echo.close()


async def test_a_reader_waiting_for_room_can_be_cancelled_or_find_the_batcher_closed() -> None:
    gate = asyncio.Event()

    async def handler(items: list[int]) -> AsyncIterator[list[int]]:
        await gate.wait()
        yield list(items)

    b = Batcher(handler, BatchSpec(size=1), max_pending=1)
    first = b.stream(1)
    waiting, closing = b.stream(2), b.stream(3)
    reader = asyncio.create_task(waiting.__anext__())
    await asyncio.sleep(0)
    reader.cancel()
    with pytest.raises(asyncio.CancelledError):
        await reader
    late = asyncio.create_task(closing.__anext__())
    await asyncio.sleep(0)
    closer = asyncio.create_task(b.close())
    await asyncio.sleep(0)
    gate.set()
    with pytest.raises(BatcherClosed):
        await late
    assert await collect(first) == [1]
    await closer
    assert b.pending == 0


async def test_a_stream_too_costly_alone_is_refused_at_stream_even_when_full() -> None:
    # Given a full streaming batcher with a cost limit (cost: the items' total length)
    clock = FakeClock()

    async def handler(items: list[str]) -> AsyncIterator[list[str]]:
        yield list(items)

    spec = BatchSpec(size=5, timeout=1, max_cost=3, cost=lambda items: sum(map(len, items)))
    async with Batcher(handler, spec, clock=clock, max_pending=1) as b:
        first = b.stream("ab")
        # When an item over max_cost alone is streamed while the batcher is full
        # Then stream() refuses it at once, as when there is room
        with pytest.raises(freight.ItemTooLarge, match=r"costs 4 alone, over max_cost=3"):
            b.stream("long")
        await clock.advance(1)
        assert await collect(first) == ["ab"]
        with pytest.raises(freight.ItemTooLarge, match=r"costs 4 alone, over max_cost=3"):
            b.stream("long")
        assert b.pending == 0


async def test_a_stream_whose_key_fails_once_it_has_room_ends_with_that_error() -> None:
    # Given a stream opened while the batcher is full, whose key= raises
    clock = FakeClock()

    async def handler(items: list[int]) -> AsyncIterator[list[int]]:
        yield list(items)

    def key(item: int) -> int:
        if item < 0:
            raise LookupError(f"no key for {item}")
        return 0

    async with Batcher(
        handler, BatchSpec(size=5, timeout=1), clock=clock, max_pending=1, key=key
    ) as b:
        first, bad = b.stream(1), b.stream(-1)
        reader = asyncio.create_task(collect(bad))
        await clock.advance(1)
        assert await collect(first) == [1]
        # When it gets room, its item cannot be buffered
        # Then its reader gets the key's error once, and the stream is over (no hang)
        with pytest.raises(LookupError, match="no key for -1"):
            await asyncio.wait_for(reader, timeout=1)
        with pytest.raises(StopAsyncIteration):
            await asyncio.wait_for(bad.__anext__(), timeout=1)
        assert b.pending == 0


# -- leaving: break with the iterator held, async with, a foreign GC thread ----------
# (review of issue 13, findings 5 and 6)


async def test_break_alone_does_not_leave_while_the_iterator_is_held() -> None:
    # As docs/streaming.md says: the caller leaves when its iterator is dropped or
    # closed; a `break` with the iterator still in a variable keeps it in the batch.
    held: list[list[int]] = []

    @freight.batched(size=2, timeout=None)
    async def gen(ids: list[int]) -> AsyncIterator[list[int]]:
        for step in range(3):
            held.append(list(ids))
            yield [i * 10 + step for i in ids]

    async def breaker() -> BatchStream[int]:
        stream = gen(1)
        async for _ in stream:
            break
        return stream  # still referenced: still in the batch

    kept, rest = await asyncio.gather(breaker(), collect(gen(2)))
    assert rest == [20, 21, 22]
    assert [sorted(ids) for ids in held] == [[1, 2], [1, 2], [1, 2]]
    await kept.aclose()


async def test_async_with_leaves_the_batch_at_the_end_of_the_block() -> None:
    held: list[list[int]] = []

    @freight.batched(size=2, timeout=None)
    async def gen(ids: list[int]) -> AsyncIterator[list[int]]:
        for step in range(4):
            held.append(list(ids))
            yield [i * 10 + step for i in ids]

    async def breaker() -> list[int]:
        out = []
        async with gen(1) as stream:
            async for value in stream:
                out.append(value)
                break
        await asyncio.sleep(0)  # the block is over; the stream object is still alive here
        assert stream is not None
        return out

    got = await asyncio.gather(breaker(), collect(gen(2)))
    assert list(got) == [[10], [20, 21, 22, 23]]
    assert [sorted(ids) for ids in held] == [[1, 2], [2], [2], [2]]


async def test_async_with_on_a_stream_that_ended_is_harmless() -> None:
    async def handler(items: list[int]) -> AsyncIterator[list[int]]:
        yield items

    async with Batcher(handler, BatchSpec(size=1)) as b:
        async with b.stream(5) as stream:
            assert await collect(stream) == [5]
        with pytest.raises(StopAsyncIteration):
            await stream.__anext__()
    assert b.stats().succeeded == 1


async def test_a_stream_collected_on_another_thread_leaves_on_the_loops_thread() -> None:
    threads: list[str] = []

    def sizer(item: str) -> int:
        threads.append(threading.current_thread().name)
        return 1

    async def handler(items: list[str]) -> AsyncIterator[list[str]]:
        yield items

    b = Batcher(handler, BatchSpec(size=10, timeout=100, max_bytes=1000, sizer=sizer))
    keep = b.stream("y")
    dropped = b.stream("x")
    box: list[Any] = [dropped]
    box.append(box)  # the stream sits in a reference cycle: only the GC frees it
    del dropped, box
    threads.clear()
    collector = threading.Thread(target=gc.collect, name="gc-thread")
    collector.start()
    collector.join()
    assert threads == []  # the buffer was not touched from the GC's thread
    assert b.pending == 2
    await asyncio.sleep(0)  # the loop runs the withdrawal it was handed
    assert threads == [threading.current_thread().name]
    assert b.pending == 1
    await b.close()
    assert await collect(keep) == ["y"]
