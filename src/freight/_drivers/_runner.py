"""The runners: the one place a batch plan's effects are carried out.

The core's :func:`~freight._core._plan.plan_batch` decides everything about a batch
(calls, waits, bisection, which items come back for another try and when). A runner
only performs what the plan asks, on the clock it is given:

- a :class:`~freight._core._plan.Call`: wait for the rate limiter (if any), call the
  handler, send the reply back;
- a :class:`~freight._core._plan.Sleep`: sleep on the given clock.

There is one sync runner (:func:`run_sync`, for threads, jobs and connectors) and one
async runner (:func:`run_async`, for the asyncio :class:`~freight.Batcher` and Flow
consumers). A streaming batch (an async generator handler, one step per ``yield``) starts
through :func:`run_async` too (:func:`start_streams`: its first step is the plan's call),
then its later steps are driven by :class:`StreamRun`. Every shape runs its batches
through one of them, so the same :class:`~freight.Retry` means the same thing
everywhere. What a shape does with the items that come back (:attr:`Outcome.again`) is
the shape's: a batcher or a Flow consumer puts them back in its buffer; a job or a
connector, which has no buffer, calls :func:`settle_sync` (or :func:`settle_async`)
to try them again in follow-up calls.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

from freight._core._plan import Call, Outcome, Reply, plan_batch
from freight._core._retry import Retry
from freight._errors import BatcherClosed, HandlerContractError
from freight._ratelimit import RateLimiter

__all__ = [
    "END",
    "EXITS",
    "Started",
    "StreamCaller",
    "StreamRun",
    "call_handler",
    "call_lean",
    "call_sync",
    "close_stream",
    "drive_streams",
    "forget_frames",
    "handler_raised",
    "run_async",
    "run_sync",
    "settle_async",
    "settle_sync",
    "start_streams",
    "stopped_by",
]

_log = logging.getLogger("freight")

EXITS = (KeyboardInterrupt, SystemExit, asyncio.CancelledError)
"""What a batcher lets a handler's ``BaseException`` through as: a request to stop."""


def call_sync(handler: Callable[[list[Any]], Any], items: list[Any]) -> Reply:
    """Call ``handler`` on a copy of ``items``; an ``Exception`` becomes the reply's error."""
    try:
        return Reply(value=handler(list(items)))
    except Exception as exc:
        return Reply(error=exc)


def call_lean(handler: Callable[[list[Any]], Any], items: list[Any]) -> Reply:
    """:func:`call_sync` whose error keeps no traceback (:func:`forget_frames`): for a
    bulk job's stages and a sink's bisection, where an error is read for its type and
    message only, and thousands of them may come from one load."""
    reply = call_sync(handler, items)
    if reply.error is not None:
        forget_frames(reply.error)
    return reply


def forget_frames(error: BaseException) -> None:
    """Drop the traceback of ``error`` and of each error it chains. A traceback keeps
    the frames the error was raised through, their callers and their locals; a frame
    holding the error (``mapped = classify(exc); raise mapped from exc``, or a caller's
    reply) made a cycle only the cyclic collector frees, which ``freight load`` runs
    rarely: ~10 KB a refused row until then."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        current.__traceback__ = None
        current = current.__cause__ or current.__context__


def handler_raised(exc: BaseException) -> HandlerContractError:
    """The error a batcher's callers get when its handler raised ``exc``, a
    ``BaseException`` that is neither an ``Exception`` nor one of :data:`EXITS`.

    Such an exception (``class Boom(BaseException)``, a stray ``GeneratorExit``) is
    not a request to stop the program, so it fails the batch like any raising
    handler, and the batcher goes on with its next batch; it is named in the message
    and kept as ``__cause__``.
    """
    detail = f": {exc}"[:202] if str(exc) else ""
    error = HandlerContractError(
        f"the batch handler raised {type(exc).__qualname__} (a BaseException, not an "
        f"Exception){detail}; the whole batch failed with it. Raise an Exception subclass "
        "to fail a batch: only KeyboardInterrupt, SystemExit and cancellation stop a batcher"
    )
    error.__cause__ = exc
    return error


def stopped_by(name: str, exc: BaseException) -> BatcherClosed:
    """What the callers of a batch get when its handler raised one of :data:`EXITS`
    (which itself goes on propagating): their items were not handled."""
    return BatcherClosed(
        f"batcher {name!r} stopped this batch: its handler raised {type(exc).__qualname__}, "
        "a request to stop; this item was not handled"
    )


def call_handler(handler: Callable[[list[Any]], Any], items: list[Any]) -> Reply:
    """:func:`call_sync` for the batchers: a ``BaseException`` other than :data:`EXITS`
    also becomes the reply's error (:func:`handler_raised`).

    Jobs and connectors keep :func:`call_sync`: for them a ``BaseException`` stands
    for the process going away and must unwind the run.
    """
    try:
        return Reply(value=handler(list(items)))
    except Exception as exc:
        return Reply(error=exc)
    except EXITS:
        raise
    except BaseException as exc:
        return Reply(error=handler_raised(exc))


def _cost(rate_limit: RateLimiter, items: list[Any]) -> int:
    return len(items) if rate_limit.unit == "items" else 1


def run_sync(
    items: list[Any],
    call: Callable[[list[Any]], Reply],
    retry: Retry | None,
    *,
    random: Callable[[], float],
    sleep: Callable[[float], None],
    now: Callable[[], float] | None = None,
    rate_limit: RateLimiter | None = None,
    tried: Sequence[int] | None = None,
) -> tuple[Outcome, int]:
    """Carry out one batch's plan in this thread; return its outcome and the calls made.

    ``now`` is required with ``rate_limit`` (the limiter is paced on that clock).
    """
    plan = plan_batch(items, retry, random, tried)
    calls = 0
    effect = next(plan)
    while True:
        if type(effect) is Call:
            calls += 1
            if rate_limit is not None:
                assert now is not None
                delay = rate_limit.reserve(_cost(rate_limit, effect.items), now=now())
                if delay > 0:
                    sleep(delay)
            try:
                effect = plan.send(call(effect.items))
            except StopIteration as stop:
                return stop.value, calls
        else:
            sleep(effect.seconds)  # type: ignore[union-attr]
            effect = next(plan)


async def run_async(
    items: list[Any],
    call: Callable[[list[Any]], Awaitable[Reply]],
    retry: Retry | None,
    *,
    random: Callable[[], float],
    sleep: Callable[[float], Awaitable[None]],
    now: Callable[[], float] | None = None,
    rate_limit: RateLimiter | None = None,
    tried: Sequence[int] | None = None,
) -> tuple[Outcome, int]:
    """:func:`run_sync` for asyncio: the same plan, its calls and sleeps awaited."""
    plan = plan_batch(items, retry, random, tried)
    calls = 0
    effect = next(plan)
    while True:
        if type(effect) is Call:
            calls += 1
            if rate_limit is not None:
                assert now is not None
                delay = rate_limit.reserve(_cost(rate_limit, effect.items), now=now())
                if delay > 0:
                    await sleep(delay)
            reply = await call(effect.items)
            try:
                effect = plan.send(reply)
            except StopIteration as stop:
                return stop.value, calls
        else:
            await sleep(effect.seconds)  # type: ignore[union-attr]
            effect = next(plan)


class _Settlement:
    """What :func:`settle_sync` and :func:`settle_async` keep between calls: each item's
    latest outcome and attempts, and which items the next call takes."""

    __slots__ = ("attempts", "items", "outcomes", "pending", "tried")

    def __init__(self, items: list[Any]) -> None:
        self.items = items
        self.outcomes: list[Any] = []
        self.attempts: list[int] = []
        self.pending: Sequence[int] = range(len(items))
        self.tried: list[int] | None = None  # the pending items' attempts so far

    def batch(self) -> list[Any]:
        """The items of the next call."""
        if self.tried is None:  # the first call: every item, in order
            return list(self.items)
        return [self.items[i] for i in self.pending]

    def take(self, outcome: Outcome) -> bool:
        """Record a call's outcome; whether some items come back for another call (after
        ``outcome.again_after``)."""
        if self.tried is None:
            self.outcomes, self.attempts = list(outcome.outcomes), list(outcome.attempts)
        else:
            for j, i in enumerate(self.pending):
                self.outcomes[i] = outcome.outcomes[j]
                self.attempts[i] = outcome.attempts[j]
        if not outcome.again:
            return False
        self.pending = [self.pending[j] for j in outcome.again]
        self.tried = [self.attempts[i] for i in self.pending]
        return True


def settle_sync(
    items: list[Any],
    call: Callable[[list[Any]], Reply],
    retry: Retry | None,
    *,
    random: Callable[[], float],
    sleep: Callable[[float], None],
    now: Callable[[], float] | None = None,
    rate_limit: RateLimiter | None = None,
) -> tuple[list[Any], list[int]]:
    """Run ``items`` until each has a final outcome; return outcomes and attempts per item.

    For shapes without a buffer (a job's chunk, a connector): the items a plan sends
    back for another try are tried again together, after the plan's wait, in a
    follow-up call, exactly as a batcher would re-batch them.
    """
    settlement = _Settlement(items)
    while items:
        outcome, _ = run_sync(
            settlement.batch(), call, retry, random=random, sleep=sleep, now=now,
            rate_limit=rate_limit, tried=settlement.tried,
        )  # fmt: skip
        if not settlement.take(outcome):
            break
        sleep(outcome.again_after)
    return settlement.outcomes, settlement.attempts


async def settle_async(
    items: list[Any],
    call: Callable[[list[Any]], Awaitable[Reply]],
    retry: Retry | None,
    *,
    random: Callable[[], float],
    sleep: Callable[[float], Awaitable[None]],
    now: Callable[[], float] | None = None,
    rate_limit: RateLimiter | None = None,
) -> tuple[list[Any], list[int]]:
    """:func:`settle_sync` for asyncio (a broker source, a managed-batch worker): the same
    plans, their calls and waits awaited."""
    settlement = _Settlement(items)
    while items:
        outcome, _ = await run_async(
            settlement.batch(), call, retry, random=random, sleep=sleep, now=now,
            rate_limit=rate_limit, tried=settlement.tried,
        )  # fmt: skip
        if not settlement.take(outcome):
            break
        await sleep(outcome.again_after)
    return settlement.outcomes, settlement.attempts


# -- streaming batches -------------------------------------------------------------
#
# A streaming handler is an async generator over the batch: each ``yield`` is one step,
# a list with one entry per item (a value for that caller, an Exception instance that
# ends that caller with it, or END). Its first step goes through the batch plan like any
# handler call (rate limit, retries of a whole batch that fails before yielding, poison
# isolation, per-item retries of a transient error in the first step): until then
# nothing was delivered, so a stream is retried exactly as a batch is. Later steps are
# driven here, back to back, with one turn of the event loop between two steps: the
# callers an output woke read it first, and one that stops listening then (breaks, is
# cancelled, drops its iterator) is out of the next step and every later one. Outputs
# not read yet wait in their caller's queue, so a slow reader holds no one up.


class _End:
    """The type of :data:`END` (one instance, compared by identity)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "freight.END"

    def __reduce__(self) -> str:
        return "END"


END: Final = _End()
"""A streaming handler's entry that ends its caller's stream early (its iterator stops);
the batch's other callers go on. Ray's stop tokens (``StopAsyncIteration`` and
``StopIteration``, the classes or instances) mean the same."""


_STOPS = (StopIteration, StopAsyncIteration)


def _ends(entry: object) -> bool:
    return (
        entry is END
        or entry is StopAsyncIteration
        or entry is StopIteration
        or isinstance(entry, _STOPS)
    )


class StreamCaller(asyncio.Future[None]):
    """One caller of a streaming batch: its outputs not yet read, and how its stream ended.

    The future itself is the caller's ticket in the batcher, so the batcher's usual
    bookkeeping (cancelled callers dropped before a batch starts, callers failed by
    ``close(drain=False)``) applies unchanged. It is done once the stream is over: result
    ``None`` when it ended, an exception when it failed, cancelled when its caller left.
    Setting it wakes the caller, as an output does.
    """

    __slots__ = ("outputs", "waiter")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(loop=loop)
        self.outputs: deque[Any] = deque()
        self.waiter: asyncio.Future[None] | None = None

    def put(self, value: Any) -> None:
        """Hand the caller its next output."""
        self.outputs.append(value)
        self._wake()

    def end(self, error: BaseException | None = None) -> None:
        """End the stream (with ``error``), unless it is over already."""
        if not self.done():
            if error is None:
                self.set_result(None)
            else:
                self.set_exception(error)

    def set_result(self, result: None, /) -> None:
        super().set_result(result)
        self._wake()

    def set_exception(self, exception: type | BaseException, /) -> None:
        super().set_exception(exception)
        self._wake()

    def wait(self) -> asyncio.Future[None]:
        """A future set when an output arrives or the stream ends."""
        waiter: asyncio.Future[None] = self.get_loop().create_future()
        self.waiter = waiter
        return waiter

    def leave(self) -> None:
        """The caller stopped listening: drop it from every step that starts from now on."""
        self.cancel()

    def _wake(self) -> None:
        waiter = self.waiter
        if waiter is not None:
            self.waiter = None
            if not waiter.done():
                waiter.set_result(None)


@dataclass(slots=True)
class Started:
    """A first-step outcome of a streaming batch (see :func:`start_streams`): the item at
    ``index`` of ``run``'s batch got ``entry`` (a value or :data:`END`) in the first step."""

    run: StreamRun
    index: int
    entry: Any


class StreamRun:
    """One call of a streaming handler and the callers it serves.

    ``view`` is the list the handler was called with. Between steps (never during one)
    the items of callers that left are removed from it, so the handler sees the
    shrinking set; a caller the handler itself ended (with :data:`END` or an
    ``Exception``) keeps its place, and its later entries are ignored. A step has one
    entry per item of ``view`` as it is during that step, or, Ray's way, one per item
    of the original batch (the entries of callers that left are then ignored).
    """

    __slots__ = ("callers", "gen", "present", "view")

    def __init__(self, gen: AsyncGenerator[Any, None], view: list[Any]) -> None:
        self.gen = gen
        self.view = view
        # By original position; None: not served by this run (ended at its first step,
        # sent back for another try, or not bound yet).
        self.callers: list[StreamCaller | None] = [None] * len(view)
        self.present = list(range(len(view)))  # original positions still in the view

    def bind(self, index: int, caller: StreamCaller, entry: Any) -> None:
        """Make ``caller`` the caller of item ``index``; hand it its first-step ``entry``."""
        if _ends(entry):
            caller.end()
        else:
            self.callers[index] = caller
            caller.put(entry)

    def entries(self, value: Any) -> tuple[list[Any], Sequence[int]] | HandlerContractError:
        """A step's entries and the original positions they go to, or the contract error."""
        present = len(self.present)
        if value is None:
            return [None] * present, self.present
        if isinstance(value, list | tuple):
            if len(value) == present:
                return list(value), self.present
            if len(value) == len(self.callers):
                return list(value), range(len(self.callers))
            return HandlerContractError(
                f"the streaming batch handler yielded {len(value)} entries for {present} "
                "items; each step must be a list with one entry (a value, an Exception "
                "instance or freight.END) per item of the batch it holds, or None"
            )
        return HandlerContractError(
            f"the streaming batch handler yielded {type(value).__name__}; each step must "
            f"be a list with one entry (a value, an Exception instance or freight.END) per "
            f"item of the batch, {present} here, or None"
        )

    async def drive(self) -> None:
        """Take steps until every caller ended or left, or the handler is done."""
        try:
            while True:
                await asyncio.sleep(0)  # the callers the last step woke read, or leave
                self._prune()
                if not any(c is not None and not c.done() for c in self.callers):
                    return
                try:
                    value = await self.gen.__anext__()
                except StopAsyncIteration:
                    self._end_all(None)
                except Exception as exc:
                    self._end_all(exc)
                except EXITS:
                    raise
                except BaseException as exc:
                    self._end_all(handler_raised(exc))
                else:
                    self._deliver(value)
        finally:
            await close_stream(self.gen)

    def _prune(self) -> None:
        callers, present, view = self.callers, self.present, self.view
        for k in range(len(present) - 1, -1, -1):
            caller = callers[present[k]]
            if caller is not None and caller.cancelled():
                del present[k]
                del view[k]

    def _deliver(self, value: Any) -> None:
        found = self.entries(value)
        if isinstance(found, HandlerContractError):
            self._end_all(found)
            return
        callers = self.callers
        for i, entry in zip(found[1], found[0], strict=True):
            caller = callers[i]
            if caller is None or caller.done():
                continue
            if _ends(entry):
                caller.end()
            elif isinstance(entry, BaseException):
                caller.end(entry)
            else:
                caller.put(entry)

    def _end_all(self, error: BaseException | None) -> None:
        for caller in self.callers:
            if caller is not None:
                caller.end(error)


async def close_stream(gen: AsyncGenerator[Any, None]) -> None:
    """Close a streaming handler's generator; an error its cleanup raises is logged."""
    try:
        await gen.aclose()
    except Exception:
        _log.exception("freight: closing a streaming batch handler failed")


async def start_streams(
    items: list[Any],
    handler: Callable[[list[Any]], AsyncGenerator[Any, None]],
    retry: Retry | None,
    *,
    random: Callable[[], float],
    sleep: Callable[[float], Awaitable[None]],
    now: Callable[[], float] | None = None,
    rate_limit: RateLimiter | None = None,
    tried: Sequence[int] | None = None,
) -> tuple[Outcome, int, list[StreamRun]]:
    """Start a streaming batch: call ``handler`` and take its first step, through the plan.

    Returns the plan's outcome, the calls made and the runs started. An item's outcome is
    a :class:`Started` (its first-step entry and the run serving it: the driver binds its
    caller with :meth:`StreamRun.bind`) or the item's error, which the plan may send back
    for another try (:attr:`Outcome.again`), as for any batch. Drive the runs with
    :func:`drive_streams` once their callers are bound.
    """
    runs: list[StreamRun] = []

    async def call(batch: list[Any]) -> Reply:
        view = list(batch)
        try:
            gen = handler(view)
            value = await gen.__anext__()
        except StopAsyncIteration:
            return Reply(value=[END] * len(batch))
        except Exception as exc:
            return Reply(error=exc)
        except EXITS:
            raise
        except BaseException as exc:
            return Reply(error=handler_raised(exc))
        run = StreamRun(gen, view)
        found = run.entries(value)
        if isinstance(found, HandlerContractError):
            await close_stream(gen)
            return Reply(error=found)
        runs.append(run)
        return Reply(
            value=[
                entry
                if isinstance(entry, BaseException) and not _ends(entry)
                else Started(run, i, entry)
                for i, entry in enumerate(found[0])
            ]
        )

    try:
        outcome, calls = await run_async(
            items,
            call,
            retry,
            random=random,
            sleep=sleep,
            now=now,
            rate_limit=rate_limit,
            tried=tried,
        )
    except BaseException:
        for run in runs:
            await close_stream(run.gen)
        raise
    return outcome, calls, runs


async def drive_streams(runs: list[StreamRun]) -> None:
    """Drive started runs to their end, together; close the ones no caller is bound to."""
    live = [run for run in runs if any(c is not None for c in run.callers)]
    for run in runs:
        if run not in live:
            await close_stream(run.gen)
    if len(live) == 1:
        await live[0].drive()
    elif live:
        await asyncio.gather(*(run.drive() for run in live))
