"""@batched: one item in, its own result out; list form kept; methods get their own batcher."""

from __future__ import annotations

import asyncio
import threading
from typing import assert_type

import pytest

import freight
from freight import ConfigError, Retry


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
