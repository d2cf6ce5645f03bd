"""How one batch is executed: the handler contract, retries and poison isolation.

This is a generator that *asks* for effects and never performs them, so the
asyncio driver, the thread driver and the job engine all execute the same
decisions. It yields:

- :class:`Call` — "call the handler with these items, send me a :class:`Reply`";
- :class:`Sleep` — "wait this many seconds, then resume me";

and finally returns an :class:`Outcome`: one outcome per item (the item's result,
or an exception instance when that item failed), how many times the whole batch
was tried, and which items come back for another try, after what wait.

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
after a backoff (or the error's ``retry_after``, if longer: :meth:`~freight.Retry.wait`);
a permanent one (or one that exhausted its attempts) is bisected when ``isolate`` is
set: each half is called once, healthy halves keep their results and failing halves
are split again, so one poison item among *n* costs at most ``2·⌈log2 n⌉`` further
calls. When *both* halves fail transiently the failure is not an item's (an outage
looks like that): bisection stops there and every item keeps its half's error, so an
outage costs two calls, not ``2n``.

Per-item retries are decided here too, so every shape retries alike. An item whose
final outcome is a transient error (:meth:`~freight.Retry.is_transient`) comes back
for another try while its attempts (the tries of earlier batches it was in, handed
in as ``tried``, plus this batch's whole-batch tries) stay below ``Retry.attempts``.
The plan names those items (:attr:`Outcome.again`) and one wait for all of them
(:attr:`Outcome.again_after`, the policy's backoff after the most attempts among
them, or the longest ``retry_after`` their errors ask for); the driver puts them back
(into its buffer, or into its next call) after that wait. Every other outcome is final.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field
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
    """What a plan returns: per-item outcomes, and what comes back for another try.

    Attributes:
        outcomes: per item, its result or an exception instance. For an item in
            :attr:`again` it is its latest (transient) error, final only if the
            driver cannot try again (it is closing without draining).
        tries: how many times the whole batch was tried (the first call included).
        again: indices of the items to try again, in order.
        again_after: seconds to wait before trying them again.
        attempts: per item, its tries so far: earlier batches' and this one's.
    """

    outcomes: list[Any]
    tries: int
    again: list[int] = field(default_factory=list)
    again_after: float = 0.0
    attempts: list[int] = field(default_factory=list)


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


def plan_batch(
    items: list[Any],
    retry: Retry | None,
    random: Callable[[], float],
    tried: Sequence[int] | None = None,
) -> Plan:
    """Plan the execution of one batch; see the module docstring for the protocol.

    ``tried`` gives, per item, the tries it already had in earlier batches (its
    per-item retries so far); ``None`` means none.
    """
    n = len(items)
    attempt = 1
    # An item's attempts count its earlier batches too: the whole batch is tried again
    # only while the most-tried item has attempts left (the others come back alone).
    limit = retry.attempts - max(tried, default=0) if retry is not None and tried else None
    while True:
        reply = yield Call(items)
        assert reply is not None
        if reply.error is None:
            return _final(check_contract(reply.value, n), attempt, tried, retry, random)
        error = reply.error
        if retry is None:
            return Outcome([error] * n, attempt, attempts=_attempts(n, attempt, tried))
        if attempt < (retry.attempts if limit is None else limit) and retry.is_transient(error):
            yield Sleep(retry.wait(attempt, random(), (error,)))
            attempt += 1
            continue
        if not retry.isolate or n == 1:
            return _final([error] * n, attempt, tried, retry, random)
        outcomes: list[Any] = [None] * n
        yield from _bisect(items, 0, n, outcomes, retry)
        return _final(outcomes, attempt, tried, retry, random)


def _attempts(n: int, tries: int, tried: Sequence[int] | None) -> list[int]:
    if tried is None:
        return [tries] * n
    return [before + tries for before in tried]


def _final(
    outcomes: list[Any],
    tries: int,
    tried: Sequence[int] | None,
    retry: Retry | None,
    random: Callable[[], float],
) -> Outcome:
    """Decide which items come back for another try, and after what wait."""
    attempts = _attempts(len(outcomes), tries, tried)
    if retry is None or outcomes.count(None) == len(outcomes):  # nothing to try again
        return Outcome(outcomes, tries, attempts=attempts)
    again = [
        i
        for i, outcome in enumerate(outcomes)
        if isinstance(outcome, BaseException)
        and attempts[i] < retry.attempts
        and retry.is_transient(outcome)
    ]
    if not again:
        return Outcome(outcomes, tries, attempts=attempts)
    most = max(attempts[i] for i in again)
    wait = retry.wait(most, random(), [outcomes[i] for i in again])
    return Outcome(outcomes, tries, again, wait, attempts)


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
