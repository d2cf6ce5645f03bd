"""Ray Serve's ``@serve.batch`` unit tests, written against ``@freight.batched``.

Ported from ray-project/ray ``python/ray/serve/tests/unit/test_batching.py`` (the
decorator, timeout, argument, cancellation, streaming and defaults tests; the setter
and ``batch_size_fn`` tests live in ``test_reconfigure.py`` and ``test_cost.py``).
The names map as: ``@serve.batch(max_batch_size=n, batch_wait_timeout_s=t)`` is
``@freight.batched(size=n, timeout=t)``; a streaming handler's stop token is
``freight.END`` (Ray's ``StopAsyncIteration``/``StopIteration`` are accepted too);
Ray's ``RayServeException`` for a step of the wrong length is freight's
``HandlerContractError``; ``set_max_batch_size(n)`` is ``reconfigure(size=n)``.
Where Ray waits real seconds, these tests move a FakeClock (nothing sleeps).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

import freight
from freight import END, ConfigError, HandlerContractError
from freight.testing import FakeClock

MODES = ["args", "kwargs", "mixed", "out-of-order"]


async def turns(n: int = 5) -> None:
    """Let the event loop run ``n`` rounds (what Ray's short real waits are for)."""
    for _ in range(n):
        await asyncio.sleep(0)


def pairs(func: Callable[..., Any], mode: str) -> list[Any]:
    """Ray's two calls of a two-parameter batched function, in each argument style."""
    if mode == "args":
        return [func("hi1", "hi2"), func("hi3", "hi4")]
    if mode == "kwargs":
        return [func(key1="hi1", key2="hi2"), func(key1="hi3", key2="hi4")]
    if mode == "mixed":
        return [func("hi1", key2="hi2"), func("hi3", key2="hi4")]
    return [func(key2="hi2", key1="hi1"), func(key2="hi4", key1="hi3")]


# -- the decorator ----------------------------------------------------------------------


def test_decorator_validation() -> None:
    @freight.batched
    async def function() -> None:
        pass

    @freight.batched(size=10, timeout=1.5)
    async def function2() -> None:
        pass

    class Class:
        @freight.batched
        async def method(self) -> None:
            pass

    class Class2:
        @freight.batched(size=10, timeout=1.5)
        async def method(self) -> None:
            pass

    with pytest.raises(ConfigError, match="size"):
        freight.batched(size=0)
    with pytest.raises(ConfigError, match="size"):
        freight.batched(size=1.1)  # type: ignore[call-overload]
    assert freight.batched(size=1.0).__call__  # type: ignore[call-overload]  # Ray's 1.0
    with pytest.raises(ConfigError, match="timeout"):
        freight.batched(timeout=-0.1)
    freight.batched(timeout=0.0)
    freight.batched(timeout=0)
    with pytest.raises(ConfigError, match="timeout"):
        freight.batched(timeout="a")  # type: ignore[call-overload]


async def test_defaults_are_rays_10_items_and_10_ms() -> None:
    @freight.batched
    async def bare(items: list[int]) -> list[int]:
        return items

    @freight.batched()
    async def empty(items: list[int]) -> list[int]:
        return items

    class Model:
        @freight.batched
        async def predict(self, items: list[int]) -> list[int]:
            return [i * 2 for i in items]

    model = Model()
    for spec in (bare.spec, empty.spec, model.predict.spec):
        assert (spec.size, spec.timeout) == (10, 0.01)
    assert await bare(1) == 1
    assert await model.predict(2) == 4
    assert bare.batcher().spec == freight.BatchSpec(size=10, timeout=0.01)


# -- sizes and timeouts ---------------------------------------------------------------------


def long_timeout_pair(size: int, clock: FakeClock) -> tuple[Callable[..., Any], Any]:
    @freight.batched(size=size, timeout=1000, clock=clock)
    async def long_timeout(requests: list[str]) -> list[str]:
        if "raise" in requests:
            _ = 1 / 0
        return requests

    class LongTimeout:
        @freight.batched(size=size, timeout=1000, clock=clock)
        async def long_timeout(self, requests: list[str]) -> list[str]:
            if "raise" in requests:
                _ = 1 / 0
            return requests

    return long_timeout, LongTimeout()


@pytest.mark.parametrize("use_class", [True, False])
async def test_batch_size_one_long_timeout(use_class: bool, clock: FakeClock) -> None:
    function, instance = long_timeout_pair(1, clock)
    call = instance.long_timeout if use_class else function
    assert await call("hi") == "hi"
    with pytest.raises(ZeroDivisionError):
        await call("raise")


@pytest.mark.parametrize("use_class", [True, False])
async def test_batch_size_multiple_zero_timeout(use_class: bool, clock: FakeClock) -> None:
    block_execution_event = asyncio.Event()

    @freight.batched(size=2, timeout=0, clock=clock)
    async def zero_timeout(requests: list[str]) -> list[str]:
        await block_execution_event.wait()
        if "raise" in requests:
            _ = 1 / 0
        return requests

    class ZeroTimeout:
        @freight.batched(size=2, timeout=0, clock=clock)
        async def zero_timeout(self, requests: list[str]) -> list[str]:
            await block_execution_event.wait()
            if "raise" in requests:
                _ = 1 / 0
            return requests

    call = ZeroTimeout().zero_timeout if use_class else zero_timeout

    async def settle(task: asyncio.Task[Any]) -> Any:
        await clock.advance(0)  # a zero timeout falls due at the loop's next turn
        return await task

    block_execution_event.set()
    assert await settle(asyncio.create_task(call("hi"))) == "hi"
    with pytest.raises(ZeroDivisionError):
        await settle(asyncio.create_task(call("raise")))
    block_execution_event.clear()

    # Two requests are executed together if available: the first makes a batch of
    # one, the next two (both failing) wait for it and run together.
    t1 = asyncio.create_task(call("hi1"))
    await clock.advance(0)
    assert not t1.done()
    t2 = asyncio.create_task(call("hi2"))
    t3 = asyncio.create_task(call("raise"))
    await turns()
    block_execution_event.set()
    assert await t1 == "hi1"
    await clock.advance(0)
    with pytest.raises(ZeroDivisionError):
        await t2
    with pytest.raises(ZeroDivisionError):
        await t3


async def test_batch_timeout_empty_queue(clock: FakeClock) -> None:
    """The wait counts from the first request of the next batch, not from the last batch."""

    @freight.batched(size=10, timeout=0.25, clock=clock)
    async def no_op(requests: list[None]) -> list[str]:
        return ["No-op"] * len(requests)

    for _ in range(2):
        tasks = [asyncio.create_task(no_op(None)) for _ in range(9)]
        await clock.advance(0.05)
        assert not any(t.done() for t in tasks)  # the long timeout: waiting for a tenth
        tasks.append(asyncio.create_task(no_op(None)))
        await turns()
        assert all(t.done() and t.result() == "No-op" for t in tasks)
        await clock.advance(0.25)  # the queue stays empty for a whole timeout


async def test_batch_wait_queue_exceeds_batch_size_race_condition(clock: FakeClock) -> None:
    @freight.batched(size=2, timeout=10000, clock=clock)
    async def no_op(requests: list[None]) -> list[str]:
        return ["No-op"] * len(requests)

    tasks = [asyncio.create_task(no_op(None)) for _ in range(10)]
    await turns(20)
    assert all(t.done() for t in tasks)


@pytest.mark.parametrize("use_class", [True, False])
async def test_batch_size_multiple_long_timeout(use_class: bool, clock: FakeClock) -> None:
    function, instance = long_timeout_pair(3, clock)
    call = instance.long_timeout if use_class else function

    t1, t2 = asyncio.create_task(call("hi1")), asyncio.create_task(call("hi2"))
    await clock.advance(0.1)
    assert not t1.done()
    assert not t2.done()
    t3 = asyncio.create_task(call("hi3"))
    assert list(await asyncio.gather(t1, t2, t3)) == ["hi1", "hi2", "hi3"]

    t1, t2 = asyncio.create_task(call("hi1")), asyncio.create_task(call("raise"))
    await clock.advance(0.1)
    assert not t1.done()
    assert not t2.done()
    t3 = asyncio.create_task(call("hi3"))
    for task in (t1, t2, t3):
        with pytest.raises(ZeroDivisionError):
            await task


# -- several arguments -------------------------------------------------------------------------


def multiple_args(use_class: bool, clock: FakeClock) -> Callable[..., Any]:
    if use_class:

        class MultipleArgs:
            @freight.batched(size=2, timeout=1000, clock=clock)
            async def method(self, key1: list[str], key2: list[str]) -> list[tuple[str, str]]:
                return [(key1[i], key2[i]) for i in range(len(key1))]

        return MultipleArgs().method

    @freight.batched(size=2, timeout=1000, clock=clock)
    async def func(key1: list[str], key2: list[str]) -> list[tuple[str, str]]:
        return [(key1[i], key2[i]) for i in range(len(key1))]

    return func


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("use_class", [True, False])
async def test_batch_args_kwargs(mode: str, use_class: bool, clock: FakeClock) -> None:
    func = multiple_args(use_class, clock)
    result = await asyncio.gather(*pairs(func, mode))
    assert result == [("hi1", "hi2"), ("hi3", "hi4")]


# -- cancellation --------------------------------------------------------------------------------


class Blocked:
    """Ray's unary and streaming implementations, waiting for an event."""

    def __init__(self) -> None:
        self.block_requests = asyncio.Event()
        self.raise_error = asyncio.Event()
        self.request_was_cancelled = True

    async def unary(self, key1: list[str], key2: list[str]) -> list[tuple[str, str]]:
        await self.block_requests.wait()
        self.request_was_cancelled = False
        return [(key1[i], key2[i]) for i in range(len(key1))]

    async def streaming(
        self, key1: list[str], key2: list[str]
    ) -> AsyncIterator[list[tuple[str, str]]]:
        await self.block_requests.wait()
        self.request_was_cancelled = False
        yield [(key1[i], key2[i]) for i in range(len(key1))]

    async def unary_error(self, key1: list[str], key2: list[str]) -> list[tuple[str, str]]:
        if not self.raise_error.is_set():
            raise ValueError
        return [(key1[i], key2[i]) for i in range(len(key1))]

    async def streaming_error(
        self, key1: list[str], key2: list[str]
    ) -> AsyncIterator[list[tuple[str, str]]]:
        if not self.raise_error.is_set():
            raise ValueError
        yield [(key1[i], key2[i]) for i in range(len(key1))]


def blocked_func(blocked: Blocked, name: str, use_class: bool, clock: FakeClock) -> Any:
    """``blocked``'s implementation ``name`` batched as a function or a method."""
    if not use_class:
        return freight.batched(size=2, timeout=1000, clock=clock)(getattr(blocked, name))

    impl = getattr(Blocked, name)
    if "streaming" in name:

        class StreamingArgs:
            @freight.batched(size=2, timeout=1000, clock=clock)
            async def method(
                self, key1: list[str], key2: list[str]
            ) -> AsyncIterator[list[tuple[str, str]]]:
                async for value in impl(blocked, key1, key2):
                    yield value

        return StreamingArgs().method

    class UnaryArgs:
        @freight.batched(size=2, timeout=1000, clock=clock)
        async def method(self, key1: list[str], key2: list[str]) -> list[tuple[str, str]]:
            return await impl(blocked, key1, key2)  # type: ignore[no-any-return]

    return UnaryArgs().method


def start(func: Any, use_gen: bool) -> list[asyncio.Task[Any]]:
    if use_gen:
        gens = [func("hi1", "hi2"), func("hi3", "hi4")]
        return [asyncio.create_task(gen.__anext__()) for gen in gens]
    return [asyncio.create_task(func("hi1", "hi2")), asyncio.create_task(func("hi3", "hi4"))]


@pytest.mark.parametrize("use_class", [True, False])
@pytest.mark.parametrize("use_gen", [True, False])
async def test_batch_cancellation(use_class: bool, use_gen: bool, clock: FakeClock) -> None:
    blocked = Blocked()
    func = blocked_func(blocked, "streaming" if use_gen else "unary", use_class, clock)
    tasks = start(func, use_gen)
    await turns()
    assert not any(t.done() for t in tasks)  # blocked in the handler

    tasks[0].cancel()  # the second request is still blocked
    await turns()
    assert tasks[0].done()
    assert not tasks[1].done()
    tasks[1].cancel()
    await turns()
    assert all(t.done() for t in tasks)
    assert blocked.request_was_cancelled

    blocked.block_requests.set()  # new requests succeed
    result = await asyncio.gather(*start(func, use_gen))
    assert result == [("hi1", "hi2"), ("hi3", "hi4")]


@pytest.mark.parametrize("use_class", [True, False])
@pytest.mark.parametrize("use_gen", [True, False])
async def test_cancellation_after_error(use_class: bool, use_gen: bool, clock: FakeClock) -> None:
    """Cancelling a request after it errors is supported."""
    blocked = Blocked()
    func = blocked_func(blocked, "streaming_error" if use_gen else "unary_error", use_class, clock)
    for task in start(func, use_gen):
        task.cancel()
    blocked.raise_error.set()
    result = await asyncio.gather(*start(func, use_gen))
    assert result == [("hi1", "hi2"), ("hi3", "hi4")]


# -- streaming ----------------------------------------------------------------------------------


def generator(use_class: bool, length: int, clock: FakeClock) -> Callable[..., Any]:
    if use_class:

        class MultipleArgs:
            @freight.batched(size=2, timeout=1000, clock=clock)
            async def method(
                self, key1: list[str], key2: list[str]
            ) -> AsyncIterator[list[tuple[int, str, str]]]:
                for gen_idx in range(length):
                    yield [(gen_idx, key1[i], key2[i]) for i in range(len(key1))]

        return MultipleArgs().method

    @freight.batched(size=2, timeout=1000, clock=clock)
    async def func(key1: list[str], key2: list[str]) -> AsyncIterator[list[tuple[int, str, str]]]:
        for gen_idx in range(length):
            yield [(gen_idx, key1[i], key2[i]) for i in range(len(key1))]

    return func


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("use_class", [True, False])
@pytest.mark.parametrize("generator_length", [0, 2, 5])
async def test_batch_generator_basic(
    mode: str, use_class: bool, generator_length: int, clock: FakeClock
) -> None:
    generators = pairs(generator(use_class, generator_length, clock), mode)
    results = [
        [result async for result in generators[0]],
        [result async for result in generators[1]],
    ]
    assert results == [
        [(gen_idx, "hi1", "hi2") for gen_idx in range(generator_length)],
        [(gen_idx, "hi3", "hi4") for gen_idx in range(generator_length)],
    ]


@pytest.mark.parametrize("error_type", ["runtime_error", "mismatched_lengths"])
async def test_batch_generator_exceptions(error_type: str, clock: FakeClock) -> None:
    generator_length, error_idx, error_msg = 5, 2, "Testing error"

    @freight.batched(size=2, timeout=1000, clock=clock)
    async def func(key1: list[str], key2: list[str]) -> AsyncIterator[list[Any]]:
        for gen_idx in range(generator_length):
            results = [(gen_idx, key1[i], key2[i]) for i in range(len(key1))]
            if gen_idx == error_idx:
                if error_type == "runtime_error":
                    raise RuntimeError(error_msg)
                yield results * 2
            yield results

    generators = [func("hi1", "hi2"), func("hi3", "hi4")]
    for gen in generators:
        for _ in range(error_idx):
            await gen.__anext__()
        if error_type == "runtime_error":
            with pytest.raises(RuntimeError, match=error_msg):
                await gen.__anext__()
        else:
            with pytest.raises(HandlerContractError, match="4 entries for 2 items"):
                await gen.__anext__()
        with pytest.raises(StopAsyncIteration):
            await gen.__anext__()


@pytest.mark.parametrize("stop_token", [END, StopAsyncIteration, StopIteration])
async def test_batch_generator_early_termination(stop_token: Any, clock: FakeClock) -> None:
    num_callers = 4
    event = asyncio.Event()

    @freight.batched(size=num_callers, timeout=1000, clock=clock)
    async def sequential_terminator(ids: list[int]) -> AsyncIterator[list[Any]]:
        """Terminates callers one after another, in the order they called."""
        for num_finished_callers in range(1, num_callers + 1):
            event.clear()
            responses = [stop_token for _ in range(num_finished_callers)]
            responses += [ids[idx] for idx in range(num_finished_callers, num_callers)]
            yield responses
            await event.wait()

    ids = list(range(num_callers))
    generators = [sequential_terminator(i) for i in ids]
    for i, gen in zip(ids, generators, strict=True):
        async for result in gen:
            assert result == i
        event.set()  # each terminated caller frees the terminator for one more step


async def test_batch_generator_setters(clock: FakeClock) -> None:
    """Reconfiguring succeeds while the current batch streams; the next batch uses it."""

    @freight.batched(size=2, timeout=1000, clock=clock)
    async def yield_three_times(
        key1: list[str], key2: list[str]
    ) -> AsyncIterator[list[tuple[str, str]]]:
        for _ in range(3):
            yield [(key1[i], key2[i]) for i in range(len(key1))]

    assert (yield_three_times.spec.size, yield_three_times.spec.timeout) == (2, 1000)
    args_list = [("hi1", "hi2"), ("hi3", "hi4")]
    streams = [yield_three_times(*args) for args in args_list]
    for stream, expected in zip(streams, args_list, strict=True):
        for _ in range(2):
            assert await stream.__anext__() == expected

    yield_three_times.reconfigure(size=3, timeout=15000)
    assert (yield_three_times.spec.size, yield_three_times.spec.timeout) == (3, 15000)

    args_list_2 = [("hi1", "hi2"), ("hi3", "hi4"), ("hi5", "hi6")]
    streams_2 = [yield_three_times(*args) for args in args_list_2]
    for stream, expected in zip(streams, args_list, strict=True):
        assert await stream.__anext__() == expected
        with pytest.raises(StopAsyncIteration):
            await stream.__anext__()
    for stream, expected in zip(streams_2, args_list_2, strict=True):
        for _ in range(3):
            assert await stream.__anext__() == expected
        with pytest.raises(StopAsyncIteration):
            await stream.__anext__()
    batcher = yield_three_times.batcher()
    await yield_three_times.close()
    assert [batcher.stats().flushes, batcher.stats().mean_batch_size] == [{"size": 2}, 2.5]
