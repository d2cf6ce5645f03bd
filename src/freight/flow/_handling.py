"""The handler contract of a Flow consumer: calling the handler, checking its return.

One rule for every shape (the one of ``freight``'s core batch plan):

1. **With** ``batch=`` the handler takes a list and returns either ``None`` (nothing
   to publish, every item succeeded) or a list (or tuple) with exactly one outcome
   per input item, in order. An outcome is ``None`` (nothing published for that
   item), an artifact, a list of artifacts (fan-out), or an ``Exception`` instance
   (that item alone failed).
2. To publish something for the batch *as a whole* (one report, several artifacts)
   the handler says so: it returns :class:`ForBatch` ``(*artifacts)``. Their sources
   are every item of that call; under bisection each successful call publishes its
   own.
3. Anything else from a batch handler (a bare artifact, a list of the wrong length,
   another type) is never guessed at: each item of the call fails with a
   :class:`~freight.HandlerContractError` saying what came back and how to write it,
   and the flow dead-letters it with reason ``contract``.
4. **Without** ``batch=`` the handler takes one artifact (or one group of an AND
   gate or join) and returns ``None``, an artifact, or a list of artifacts.
5. Raising fails the call (the batch plan retries, or bisects, from there).

What is published must be declared with ``.publishes(...)``; an undeclared type is a
``contract`` dead letter too (:func:`check_outputs`).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from freight._core._plan import Reply
from freight._errors import HandlerContractError
from freight.flow._artifacts import is_artifact
from freight.flow._consumer import ConsumerSpec
from freight.flow._records import Work

__all__ = ["BatchOutput", "ForBatch", "call", "check_outputs", "error_text", "outputs_of"]


@dataclass(frozen=True, slots=True, init=False)
class ForBatch:
    """What a batch handler publishes for its batch as a whole, not for one item.

    ``return ForBatch(report)`` publishes one report whose sources are every artifact
    of the call (its tenant, correlation id and depth are derived from them);
    ``ForBatch(a, b)`` publishes several. A plain list is always read as one outcome
    per item, so this wrapper is how a batch handler says "for the batch".

    Attributes:
        artifacts: the artifacts to publish, in order.
    """

    artifacts: tuple[Any, ...]

    def __init__(self, *artifacts: Any) -> None:
        object.__setattr__(self, "artifacts", artifacts)

    def __repr__(self) -> str:
        return f"ForBatch({', '.join(map(repr, self.artifacts))})"


@dataclass(frozen=True, slots=True)
class BatchOutput:
    """A :class:`ForBatch` as an outcome: placed at the first item of the call that
    returned it, with the items it speaks for (the others' outcomes are ``None``)."""

    value: ForBatch
    works: tuple[Work, ...]


async def call(spec: ConsumerSpec, works: list[Work]) -> Reply:
    """Call ``spec``'s handler on ``works`` and normalise its return (module rules).

    The reply is one outcome per work (rules 1-4), or the error the handler raised.
    """
    handler = spec.handler
    assert handler is not None
    batched = spec.subscriptions[works[0].lane].batch is not None  # a run is one lane's
    argument: Any = [w.item for w in works] if batched else works[0].item
    try:
        if spec.is_async:
            result = await handler(argument)
        else:
            result = await asyncio.to_thread(handler, argument)
    except Exception as exc:
        return Reply(error=exc)
    if not batched:
        return Reply(value=[result])
    n = len(works)
    if result is None:
        return Reply(value=None)
    if isinstance(result, list | tuple) and len(result) == n:
        return Reply(value=result)
    if isinstance(result, ForBatch):
        return Reply(value=[BatchOutput(result, tuple(works))] + [None] * (n - 1))
    return Reply(value=[contract_error(spec.name, result, n)] * n)


def contract_error(consumer: str, result: Any, n: int) -> HandlerContractError:
    """The error for a batch handler's return that breaks rule 1, saying how to fix it."""
    if isinstance(result, list | tuple):
        what = f"a {type(result).__name__} of {len(result)} outcomes for {n} items"
    else:
        what = f"a {type(result).__name__}"
    return HandlerContractError(
        f"consumer {consumer!r} (batch=) returned {what}; a batch handler returns None, "
        f"or one outcome per item in order ({n} here: an artifact, a list of them, None, "
        "or an Exception instance), or ForBatch(*artifacts) to publish for the batch as "
        "a whole (from freight.flow import ForBatch)"
    )


def check_outputs(spec: ConsumerSpec, values: list[Any]) -> HandlerContractError | None:
    """Why ``values`` may not be published by ``spec`` (``None`` if they may)."""
    for value in values:
        if isinstance(value, spec.publishes):  # declared types are artifact types
            continue
        if isinstance(value, ForBatch):
            if spec.batch is not None:
                return HandlerContractError(
                    f"consumer {spec.name!r} returned ForBatch as one item's outcome; "
                    "ForBatch is a batch handler's whole return: return ForBatch(...), "
                    "not a list holding it"
                )
            return HandlerContractError(
                f"consumer {spec.name!r} returned ForBatch, which is for batch handlers "
                "(batch=); a handler of one artifact returns None, an artifact or a list "
                "of them"
            )
        if not is_artifact(value):
            return HandlerContractError(
                f"consumer {spec.name!r} returned {type(value).__name__}; a handler returns "
                "None, an artifact (pydantic model or dataclass) or a list of them"
            )
        declared = [k.__name__ for k in spec.publishes] or "nothing"
        return HandlerContractError(
            f"consumer {spec.name!r} returned a {type(value).__name__} but declares "
            f".publishes({declared}); declare every type it publishes"
        )
    return None


def outputs_of(outcome: Any) -> list[Any]:
    """The artifacts in one outcome: none, one, or a list of them."""
    if outcome is None:
        return []
    if isinstance(outcome, list | tuple):
        return [v for v in outcome if v is not None]
    if isinstance(outcome, BatchOutput):
        return [v for v in outcome.value.artifacts if v is not None]
    return [outcome]


def error_text(error: BaseException | str | None) -> str | None:
    """An error as stored: ``"Type: message"``."""
    if error is None or isinstance(error, str):
        return error
    return f"{type(error).__name__}: {error}"
