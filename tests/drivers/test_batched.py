"""@batched: one item in, its own result out; list form kept; methods get their own batcher."""

from __future__ import annotations

import asyncio
import copy
import gc
import pickle
import threading
import weakref
from collections.abc import AsyncIterator
from typing import Any, assert_type

import pytest

import freight
from freight import ConfigError, Retry
from freight.testing import FakeClock


@freight.batched(size=4, timeout=0.01)
async def shout(words: list[str]) -> list[str]:
    shout.calls.append(list(words))  # type: ignore[attr-defined]
    return [w.upper() for w in words]


shout.calls = []  # type: ignore[attr-defined]


@freight.batched(size=3, timeout=0.01)
def square(numbers: list[int]) -> list[int]:
    return [n * n for n in numbers]


class Repo:
    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.calls = 0

    @freight.batched(size=2, timeout=0.01)
    async def label(self, ids: list[int]) -> list[str]:
        self.calls += 1
        return [f"{self.prefix}{i}" for i in ids]

    @freight.batched(size=2, timeout=0.01)
    def label_sync(self, ids: list[int]) -> list[str]:
        self.calls += 1
        return [f"{self.prefix}{i}" for i in ids]


async def test_async_function_called_with_one_item() -> None:
    shout.calls.clear()  # type: ignore[attr-defined]
    results = await asyncio.gather(*(shout(w) for w in ["a", "b", "c", "d", "e"]))
    assert results == ["A", "B", "C", "D", "E"]
    assert shout.calls == [["a", "b", "c", "d"], ["e"]]  # type: ignore[attr-defined]
    one = await shout("x")
    assert_type(one, str)
    await shout.close()


async def test_list_form_stays_reachable() -> None:
    assert await shout.batch(["p", "q"]) == ["P", "Q"]
    assert square.batch([2, 3]) == [4, 9]


def test_sync_function_called_from_threads() -> None:
    results: dict[int, int] = {}

    def worker(n: int) -> None:
        results[n] = square(n)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(9)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == {n: n * n for n in range(9)}
    value = square(5)
    assert_type(value, int)
    assert value == 25
    assert square.submit(6).result(timeout=5) == 36
    square.close()


async def test_methods_get_one_batcher_per_instance() -> None:
    a, b = Repo("a-"), Repo("b-")
    got = await asyncio.gather(a.label(1), a.label(2), b.label(1))
    assert list(got) == ["a-1", "a-2", "b-1"]
    assert (a.calls, b.calls) == (1, 1)
    label = await a.label(3)
    assert_type(label, str)
    assert await a.label.batch([7]) == ["a-7"]
    assert a.label is a.label  # the same bound batcher every time
    assert a.label is not b.label


def test_sync_methods_too() -> None:
    repo = Repo("r")
    assert repo.label_sync(1) == "r1"
    assert repo.label_sync.batch([2, 3]) == ["r2", "r3"]
    repo.label_sync.close()


async def test_errors_and_retry_options_pass_through() -> None:
    @freight.batched(size=10, timeout=0.001, retry=Retry(attempts=1))
    async def risky(items: list[int]) -> list[int]:
        if 3 in items:
            raise ValueError("no threes")
        return items

    outcomes = await asyncio.gather(*(risky(i) for i in range(6)), return_exceptions=True)
    assert next(o for o in outcomes if isinstance(o, Exception)).args == ("no threes",)
    assert outcomes[:3] == [0, 1, 2]


def test_bad_arguments_fail_at_decoration() -> None:
    with pytest.raises(ConfigError, match="size"):
        freight.batched(size=0)
    with pytest.raises(ConfigError, match="timeout"):
        freight.batched(size=1, timeout=-1)
    with pytest.raises(ConfigError, match="list"):
        freight.batched(size=1)(42)  # type: ignore[call-overload]


async def test_each_event_loop_gets_its_own_batcher() -> None:
    first = shout.batcher()
    assert shout.batcher() is first

    def other_loop() -> freight.Batcher[str, str]:
        async def get() -> freight.Batcher[str, str]:
            return shout.batcher()

        return asyncio.run(get())

    result: list[freight.Batcher[str, str]] = []
    t = threading.Thread(target=lambda: result.append(other_loop()))
    t.start()
    t.join()
    assert result[0] is not first


# -- defaults, several arguments, instances kept alive (issue 13, items 4 and 5) --------


@freight.batched
async def lower(words: list[str]) -> list[str]:
    return [w.lower() for w in words]


async def test_bare_decorator_takes_rays_defaults_size_10_timeout_10_ms() -> None:
    batcher = lower.batcher()
    assert (batcher.spec.size, batcher.spec.timeout) == (10, 0.01)
    assert await lower("HI") == "hi"
    assert await asyncio.gather(*(lower(w) for w in "ABCDEFGHIJ")) == list("abcdefghij")
    assert batcher.stats().flushes["size"] == 1
    empty_parens = freight.batched()(shout.__wrapped__)  # type: ignore[attr-defined]
    assert empty_parens.batcher().spec == freight.BatchSpec(size=10, timeout=0.01)


def test_bare_decorator_on_a_plain_function_and_a_method() -> None:
    @freight.batched
    def double(numbers: list[int]) -> list[int]:
        return [2 * n for n in numbers]

    class Doubler:
        @freight.batched
        def double(self, numbers: list[int]) -> list[int]:
            return [2 * n for n in numbers]

    assert double(4) == 8
    assert Doubler().double(5) == 10
    assert double.batcher().spec.size == 10
    double.close()


async def test_a_method_on_a_temporary_instance_keeps_it_alive_until_its_result() -> None:
    class Model:
        @freight.batched(size=2, timeout=0.001)
        async def predict(self, xs: list[int]) -> list[int]:
            await asyncio.sleep(0)
            gc.collect()  # the instance has no other reference while its batch runs
            return [x + 1 for x in xs]

    assert await Model().predict(1) == 2
    assert list(await asyncio.gather(Model().predict(1), Model().predict(2))) == [2, 3]


def test_a_sync_method_on_a_temporary_instance_keeps_it_alive() -> None:
    class Model:
        @freight.batched(size=1)
        def predict(self, xs: list[int]) -> list[int]:
            gc.collect()
            return [x * 3 for x in xs]

    assert Model().predict(2) == 6


async def test_an_instance_is_collected_once_its_calls_are_done() -> None:
    class Model:
        @freight.batched(size=1)
        async def predict(self, xs: list[int]) -> list[int]:
            return xs

    model = Model()
    assert await model.predict(1) == 1
    await model.predict.close()
    gone = weakref.ref(model)
    del model
    gc.collect()
    assert gone() is None


async def test_a_copy_or_a_pickle_of_an_instance_binds_its_own_batcher() -> None:
    model = Pickled(3)
    assert await model.scale(2) == 6
    twin = copy.copy(model)
    twin.factor = 5
    assert await twin.scale(2) == 10
    assert twin.scale is not model.scale
    revived = pickle.loads(pickle.dumps(model))
    assert await revived.scale(2) == 6


class Pickled:
    def __init__(self, factor: int) -> None:
        self.factor = factor

    @freight.batched(size=1)
    async def scale(self, xs: list[int]) -> list[int]:
        return [x * self.factor for x in xs]


async def test_an_instance_with_slots_gets_one_batcher_too() -> None:
    class Slotted:
        __slots__ = ("__weakref__", "n")

        def __init__(self, n: int) -> None:
            self.n = n

        @freight.batched(size=2, timeout=0.001)
        async def add(self, xs: list[int]) -> list[int]:
            return [x + self.n for x in xs]

    s = Slotted(10)
    assert list(await asyncio.gather(s.add(1), s.add(2))) == [11, 12]
    assert s.add is s.add
    assert s.add.batcher() is s.add.batcher()  # one batcher per instance, across accesses
    s.add.reconfigure(size=3)
    assert s.add.spec.size == 3
    assert s.add.batcher().spec.size == 3


# -- a slotted instance is kept alive by its pending calls (review of issue 13, 4) --


class _Slotted:
    __slots__ = ("__weakref__", "k")

    def __init__(self, k: int = 2) -> None:
        self.k = k

    @freight.batched(size=4, timeout=0.001)
    async def predict(self, items: list[int]) -> list[int]:
        await asyncio.sleep(0)
        gc.collect()  # the instance has no other reference while its batch runs
        return [i * self.k for i in items]

    @freight.batched(size=4, timeout=0.001)
    async def generate(self, items: list[int]) -> AsyncIterator[list[str]]:
        for step in range(3):
            gc.collect()
            await asyncio.sleep(0)
            yield [f"{i * self.k}:{step}" for i in items]

    @freight.batched(size=1)
    def triple(self, items: list[int]) -> list[int]:
        gc.collect()
        return [i * 3 * self.k for i in items]


async def test_a_method_on_a_temporary_slotted_instance_keeps_it_alive() -> None:
    assert await _Slotted().predict(2) == 4
    assert list(await asyncio.gather(_Slotted(3).predict(1), _Slotted(5).predict(1))) == [3, 5]


async def test_a_stream_on_a_temporary_slotted_instance_keeps_it_alive() -> None:
    assert [x async for x in _Slotted().generate(1)] == ["2:0", "2:1", "2:2"]


def test_a_sync_method_on_a_temporary_slotted_instance_keeps_it_alive() -> None:
    assert _Slotted().triple(1) == 6
    future = _Slotted(10).triple.submit(2)
    gc.collect()
    assert future.result(timeout=5) == 60


async def test_a_slotted_instance_is_collected_once_its_calls_are_done() -> None:
    model = _Slotted()
    assert await model.predict(1) == 2
    assert [x async for x in model.generate(1)] == ["2:0", "2:1", "2:2"]
    assert model.triple(1) == 6
    gone = weakref.ref(model)
    del model
    gc.collect()
    assert gone() is None


def test_a_coroutine_made_before_the_loop_runs_is_submitted_when_awaited() -> None:
    coroutine = lower("LATE")  # no event loop runs yet: asyncio.run(f(x)) must work
    assert asyncio.run(coroutine) == "late"


async def test_several_arguments_each_get_a_list_and_calls_naming_others_batch_apart() -> None:
    calls: list[tuple[list[str], Any]] = []

    @freight.batched(size=2, timeout=0.001)
    async def greet(names: list[str], greetings: Any = "hello") -> list[str]:
        calls.append((list(names), greetings))
        if isinstance(greetings, str):
            return [f"{greetings} {n}" for n in names]
        return [f"{g} {n}" for n, g in zip(names, greetings, strict=True)]

    got = await asyncio.gather(
        greet("ann"), greet("bob", "hi"), greet("cy"), greet(greetings="yo", names="dee")
    )
    assert list(got) == ["hello ann", "hi bob", "hello cy", "yo dee"]
    assert sorted(calls, key=str) == sorted(
        [(["ann", "cy"], "hello"), (["bob", "dee"], ["hi", "yo"])], key=str
    )
    with pytest.raises(TypeError, match="argument"):
        await greet("a", "b", "c")
    with pytest.raises(TypeError, match="names"):
        await greet(greetings="x")


def test_several_arguments_from_threads_with_a_positional_only_parameter() -> None:
    @freight.batched(size=4, timeout=0.001)
    def join(left: list[str], /, right: list[str]) -> list[str]:
        return [a + b for a, b in zip(left, right, strict=True)]

    assert join("a", "b") == "ab"
    assert join("c", right="d") == "cd"
    assert join.submit("e", "f").result(timeout=5) == "ef"
    join.close()


async def test_key_and_where_see_a_call_as_a_dict_of_its_arguments() -> None:
    seen: list[list[str]] = []

    @freight.batched(
        size=2,
        timeout=0.001,
        key=lambda call: call["lang"],
        where=lambda call: call["text"] != "",
    )
    async def translate(text: list[str], lang: list[str]) -> list[str]:
        seen.append(list(text))
        return [f"{t}:{lang[0]}" for t in text]

    got = await asyncio.gather(
        translate("a", "fr"), translate("b", "de"), translate("c", "fr"), translate("d", "de")
    )
    assert list(got) == ["a:fr", "b:de", "c:fr", "d:de"]
    assert sorted(seen) == [["a", "c"], ["b", "d"]]
    with pytest.raises(freight.Skipped):
        await translate("", "fr")


def test_var_arguments_are_refused_with_the_rule() -> None:
    @freight.batched(size=2)
    async def loose(*items: Any) -> list[Any]:
        return list(items)

    with pytest.raises(ConfigError, match="names its parameters"):
        loose(1)


async def test_reconfigure_changes_the_next_batches_and_is_checked_like_batchspec() -> None:
    clock = FakeClock()
    sizes: list[int] = []

    @freight.batched(size=2, timeout=1000, clock=clock)
    async def echo(items: list[int]) -> list[int]:
        sizes.append(len(items))
        return items

    assert list(await asyncio.gather(echo(1), echo(2))) == [1, 2]
    echo.reconfigure(size=3)
    assert (echo.spec.size, echo.spec.timeout) == (3, 1000)
    assert echo.batcher().spec.size == 3
    assert list(await asyncio.gather(echo(1), echo(2), echo(3))) == [1, 2, 3]
    pending = asyncio.create_task(echo(4))
    await clock.advance(1)
    assert not pending.done()
    echo.reconfigure(timeout=0.5)  # the open batch is older than the new timeout: due now
    await clock.advance(0)
    assert await pending == 4
    assert sizes == [2, 3, 1]
    with pytest.raises(ConfigError, match="size"):
        echo.reconfigure(size=0)
    assert echo.spec.size == 3


def test_reconfigure_a_sync_method_of_one_instance() -> None:
    class Model:
        @freight.batched(size=2, timeout=0.001)
        def predict(self, xs: list[int]) -> list[int]:
            return xs

    a, b = Model(), Model()
    assert a.predict(1) == 1
    a.predict.reconfigure(size=5)
    assert (a.predict.spec.size, a.predict.batcher().spec.size) == (5, 5)
    assert b.predict.spec.size == 2
    a.predict.close()


async def test_reconfigure_takes_the_batchers_arguments_and_rays_whole_float_size() -> None:
    @freight.batched(size=1, timeout=0.01)
    async def echo(items: list[int]) -> list[int]:
        return items

    echo.reconfigure(size=4.0)  # type: ignore[arg-type]  # Ray's set_max_batch_size(4.0)
    assert echo.spec.size == 4
    with pytest.raises(ConfigError, match="size"):
        echo.reconfigure(size=4.5)  # type: ignore[arg-type]
    # The same arguments as Batcher.reconfigure: a sizer is set with the spec, not here
    with pytest.raises(TypeError, match="sizer"):
        echo.reconfigure(max_bytes=100, sizer=len)  # type: ignore[call-arg]
    assert echo.spec == freight.BatchSpec(size=4, timeout=0.01)
    assert await echo(7) == 7
    assert echo.batcher().spec == echo.spec
    await echo.close()


# -- the fast path reads its loop and batcher as one (review of issue 13, finding 2) --


class _SwapLoop(asyncio.SelectorEventLoop):
    """A loop that runs ``hook`` (another thread's call) the next time its running
    thread is read: the moment between reading the cached loop and its batcher."""

    _tid: int | None = None

    def __init__(self) -> None:
        self.hook: list[Any] = []
        super().__init__()

    @property
    def _thread_id(self) -> int | None:
        if self.hook:
            self.hook.pop()()
        return self._tid

    @_thread_id.setter
    def _thread_id(self, value: int | None) -> None:
        self._tid = value


def test_another_thread_caching_its_loop_mid_call_cannot_divert_a_call() -> None:
    @freight.batched(size=1, timeout=0)
    async def echo(items: list[int]) -> list[int]:
        return items

    def other_thread_calls_once() -> None:  # caches its own loop and batcher
        thread = threading.Thread(target=lambda: asyncio.run(echo(0)))
        thread.start()
        thread.join()

    loop = _SwapLoop()

    async def main() -> int:
        assert await echo(1) == 1  # caches this loop and its batcher
        loop.hook.append(other_thread_calls_once)
        return await echo(2)  # must go to this loop's batcher, not the other's

    try:
        assert loop.run_until_complete(main()) == 2
        assert not loop.hook  # the swap did happen mid-call
    finally:
        loop.close()
