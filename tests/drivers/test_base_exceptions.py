"""A handler raising a ``BaseException`` that is not a request to stop.

``class Boom(BaseException)`` (or a stray ``GeneratorExit``) fails its batch like any
raising handler: each caller of that batch gets a :class:`~freight.HandlerContractError`
naming it (the original kept as ``__cause__``), and the batcher goes on with the next
batch and drains on close. ``KeyboardInterrupt``, ``SystemExit`` and cancellation still
propagate: the batch's callers get :class:`~freight.BatcherClosed`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

import pytest

from freight import (
    Batcher,
    BatcherClosed,
    BatchSpec,
    FreightError,
    HandlerContractError,
    Retry,
    ThreadBatcher,
)
from freight.testing import FakeClock

GUARD = 30.0  # real seconds before a stalled test fails instead of hanging


class Boom(BaseException):
    """Not an Exception, and not a request to stop the program either."""


def raised_list() -> list[BaseException]:
    return [Boom("bang"), GeneratorExit("stray")]


def assert_names(error: BaseException | None, raised: BaseException) -> None:
    assert isinstance(error, HandlerContractError)
    assert isinstance(error, FreightError)
    assert type(raised).__name__ in str(error)
    assert str(raised) in str(error)
    assert error.__cause__ is raised


def first_call_raises(raised: BaseException) -> Callable[[list[int]], list[int]]:
    calls: list[list[int]] = []

    def handler(items: list[int]) -> list[int]:
        calls.append(items)
        if len(calls) == 1:
            raise raised
        return [i + 1 for i in items]

    return handler


# -- asyncio Batcher ----------------------------------------------------------------


@pytest.mark.parametrize("raised", raised_list(), ids=lambda e: type(e).__name__)
async def test_batcher_async_handler_base_exception_is_named_to_each_caller_next_batch_works(
    clock: FakeClock, raised: BaseException
) -> None:
    sync = first_call_raises(raised)

    async def handler(items: list[int]) -> list[int]:
        return sync(items)

    b = Batcher(handler, BatchSpec(size=2, timeout=5), clock=clock)
    first = [b.submit_nowait(i) for i in (1, 2)]
    await clock.advance(0)
    for future in first:
        assert_names(future.exception(), raised)
    second = [b.submit_nowait(i) for i in (3, 4)]
    await clock.advance(0)
    assert [f.result() for f in second] == [4, 5]
    tail = b.submit_nowait(5)
    await b.close()  # drains: the open batch of one is handled
    assert tail.result() == 6
    assert b.pending == 0
    stats = b.stats()
    assert (stats.failed, stats.succeeded) == (2, 3)


async def test_batcher_sync_handler_base_exception_in_its_worker_thread_is_named_too() -> None:
    b = Batcher(first_call_raises(Boom("bang")), BatchSpec(size=2))
    first = await asyncio.wait_for(
        asyncio.gather(b.submit(1), b.submit(2), return_exceptions=True), GUARD
    )
    for error in first:
        assert isinstance(error, HandlerContractError)
        assert "Boom" in str(error)
        assert isinstance(error.__cause__, Boom)
    second = await asyncio.wait_for(asyncio.gather(b.submit(3), b.submit(4)), GUARD)
    assert list(second) == [4, 5]
    await b.close()


async def test_batcher_isolates_the_item_that_makes_the_handler_raise_a_base_exception(
    clock: FakeClock,
) -> None:
    async def handler(items: list[int]) -> list[int]:
        if 13 in items:
            raise Boom(13)
        return [i + 1 for i in items]

    retry = Retry(attempts=1, isolate=True)
    async with Batcher(handler, BatchSpec(size=4), retry=retry, clock=clock) as b:
        futures = [b.submit_nowait(i) for i in (11, 12, 13, 14)]
        await clock.advance(0)
    assert [f.result() for f in futures if f is not futures[2]] == [12, 13, 15]
    poison = futures[2].exception()
    assert isinstance(poison, HandlerContractError)
    assert isinstance(poison.__cause__, Boom)
    assert "raised Boom (a BaseException, not an Exception): 13;" in str(poison)


@pytest.mark.parametrize("exit_", [KeyboardInterrupt, SystemExit])
def test_batcher_lets_keyboard_interrupt_and_system_exit_propagate(
    exit_: type[BaseException],
) -> None:
    futures: list[asyncio.Future[int]] = []

    async def handler(items: list[int]) -> list[int]:
        raise exit_

    async def scenario() -> None:
        b = Batcher(handler, BatchSpec(size=1))
        futures.append(b.submit_nowait(1))
        await futures[0]

    with pytest.raises(exit_):
        asyncio.run(scenario())
    error = futures[0].exception()
    assert isinstance(error, BatcherClosed)
    assert exit_.__name__ in str(error)


async def test_batcher_handler_cancelled_from_inside_still_fails_its_callers_as_closed(
    clock: FakeClock,
) -> None:
    async def handler(items: list[int]) -> list[int]:
        raise asyncio.CancelledError

    async with Batcher(handler, BatchSpec(size=1), clock=clock) as b:
        future = b.submit_nowait(1)
        await clock.advance(0)
        assert isinstance(future.exception(), BatcherClosed)


# -- ThreadBatcher ------------------------------------------------------------------


@pytest.mark.parametrize("raised", raised_list(), ids=lambda e: type(e).__name__)
def test_thread_batcher_base_exception_is_named_to_each_caller_and_the_next_batch_works(
    clock: FakeClock, raised: BaseException
) -> None:
    b = ThreadBatcher(first_call_raises(raised), BatchSpec(size=2, timeout=5), clock=clock)
    first = [b.submit(i) for i in (1, 2)]
    for future in first:
        assert_names(future.exception(GUARD), raised)
    second = [b.submit(i) for i in (3, 4)]
    assert [f.result(GUARD) for f in second] == [4, 5]
    tail = b.submit(5)
    b.close(timeout=GUARD)  # drains: the open batch of one is handled
    assert tail.result(0) == 6
    assert b.pending == 0
    stats = b.stats()
    assert (stats.failed, stats.succeeded) == (2, 3)


def test_thread_batcher_keeps_working_after_many_batches_raise_a_base_exception(
    clock: FakeClock,
) -> None:
    def handler(items: list[int]) -> list[int]:
        if items[0] % 2:
            raise Boom(items[0])
        return items

    b = ThreadBatcher(handler, BatchSpec(size=1), max_concurrent_batches=2, clock=clock)
    futures = [b.submit(i) for i in range(40)]
    b.close(timeout=GUARD)
    outcomes: list[Any] = [f.exception(0) or f.result(0) for f in futures]
    assert [o for o in outcomes if isinstance(o, int)] == list(range(0, 40, 2))
    for o in outcomes:
        if not isinstance(o, int):
            assert isinstance(o, HandlerContractError)
            assert isinstance(o.__cause__, Boom)
    assert b.stats().failed == 20


@pytest.mark.parametrize("exit_", [KeyboardInterrupt, SystemExit])
def test_thread_batcher_callers_of_a_batch_stopped_by_an_exit_get_batcher_closed(
    clock: FakeClock, exit_: type[BaseException]
) -> None:
    def handler(items: list[int]) -> list[int]:
        if items == [1]:
            raise exit_
        return items

    b = ThreadBatcher(handler, BatchSpec(size=1), clock=clock)
    stopped: Future[int] = b.submit(1)
    error = stopped.exception(GUARD)
    assert isinstance(error, BatcherClosed)
    assert exit_.__name__ in str(error)
    assert b.submit(2).result(GUARD) == 2  # its worker thread is still there
    b.close(timeout=GUARD)
