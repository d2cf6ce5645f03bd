"""How one batch is executed: the handler contract, retries and poison isolation.

This is a generator that *asks* for effects and never performs them, so the
asyncio driver, the thread driver and the job engine all execute the same
decisions. It yields:

- :class:`Call` — "call the handler with these items, send me a :class:`Reply`";
- :class:`Sleep` — "wait this many seconds, then resume me";

and finally returns a :class:`Outcome`: one outcome per item (the item's result,
or an exception instance when that item failed) and how many times the whole
batch was tried.

The handler contract:

1. The handler takes a list and returns a list (or tuple) of the same length;
   element *i* is item *i*'s result, or an ``Exception`` instance when item *i*
   alone failed.
2. Returning ``None`` (a side-effect-only handler) means every item succeeded with
   result ``None``.
3. Raising means the whole batch failed.
4. Any other return (wrong length, wrong type) fails every item with
   :class:`~freight.HandlerContractError`, explaining the rule.

With a :class:`~freight.Retry` policy, a transient whole-batch failure is retried
after a backoff; a permanent one (or one that exhausted its attempts) is bisected
when ``isolate`` is set: each half is called once, healthy halves keep their
results and failing halves are split again, so one poison item among *n* costs
at most ``2·⌈log2 n⌉`` further calls. When *both* halves fail transiently the
failure is not an item's (an outage looks like that): bisection stops there and
every item keeps its half's error, so an outage costs two calls, not ``2n``.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any

from freight._core._retry import Retry
from freight._errors import HandlerContractError

__all__ = ["Call", "Outcome", "Plan", "Reply", "Sleep", "check_contract", "plan_batch"]


@dataclass(slots=True)
class Call:
    """Effect: call the handler with ``items``."""

    items: list[Any]


@dataclass(slots=True)
class Sleep:
    """Effect: wait ``seconds`` before resuming the plan."""

    seconds: float


@dataclass(slots=True)
class Reply:
    """What the driver sends back after a :class:`Call`: a return value or an error."""

    value: Any = None
    error: BaseException | None = None


@dataclass(slots=True)
class Outcome:
    """What a plan returns: per-item outcomes and the whole-batch tries they took."""

    outcomes: list[Any]
    tries: int


Plan = Generator[Call | Sleep, Reply | None, Outcome]


def check_contract(value: Any, n: int) -> list[Any]:
    """Normalise a handler's return to a list of ``n`` outcomes (see the module rules)."""
    if value is None:
        return [None] * n
    if type(value) is list or isinstance(value, list | tuple):
        if len(value) == n:
            return value if type(value) is list else list(value)
        error = HandlerContractError(
            f"the batch handler returned {len(value)} results for {n} items; it must "
            "return a list of the same length as its input (one result or Exception "
            "instance per item), or None"
        )
    else:
        error = HandlerContractError(
            f"the batch handler returned {type(value).__name__}; it must return a list "
            f"with one result (or Exception instance) per item, {n} here, or None"
        )
    return [error] * n


def plan_batch(items: list[Any], retry: Retry | None, random: Callable[[], float]) -> Plan:
    """Plan the execution of one batch; see the module docstring for the protocol."""
    n = len(items)
    attempt = 1
    while True:
        reply = yield Call(items)
        assert reply is not None
        if reply.error is None:
            return Outcome(check_contract(reply.value, n), attempt)
        error = reply.error
        if retry is None:
            return Outcome([error] * n, attempt)
        if attempt < retry.attempts and retry.is_transient(error):
            yield Sleep(retry.delay(attempt, random()))
            attempt += 1
            continue
        if not retry.isolate or n == 1:
            return Outcome([error] * n, attempt)
        outcomes: list[Any] = [None] * n
        yield from _bisect(items, 0, n, outcomes, retry)
        return Outcome(outcomes, attempt)


def _bisect(
    items: list[Any], lo: int, hi: int, outcomes: list[Any], retry: Retry
) -> Generator[Call | Sleep, Reply | None, None]:
    """Call each half of ``items[lo:hi]`` once; split the halves that raise."""
    mid = (lo + hi) // 2
    failed: list[tuple[int, int, BaseException]] = []
    for a, b in ((lo, mid), (mid, hi)):
        reply = yield Call(items[a:b])
        assert reply is not None
        if reply.error is None:
            outcomes[a:b] = check_contract(reply.value, b - a)
        else:
            outcomes[a:b] = [reply.error] * (b - a)
            failed.append((a, b, reply.error))
    if len(failed) == 2 and all(retry.is_transient(error) for _, _, error in failed):
        return  # both halves failing transiently: not an item's fault, stop here
    for a, b, _ in failed:
        if b - a > 1:
            yield from _bisect(items, a, b, outcomes, retry)
