"""Calling a consumer's handler, and checking what it returns.

The flow drives the core's batch plan; these are its effects and checks: the call
(async, or a plain function in a worker thread), the shape of a batch handler's return
(one outcome per item, or one return for the whole batch), and the declared types.
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

__all__ = ["Whole", "call", "check_outputs", "error_text", "outputs_of"]


@dataclass(frozen=True, slots=True)
class Whole:
    """A batch handler's single return for the whole batch (published once), placed at
    the first item of the call that returned it, with the items it speaks for."""

    value: Any
    works: tuple[Work, ...]


async def call(spec: ConsumerSpec, works: list[Work]) -> Reply:
    """Call ``spec``'s handler on ``works`` (one artifact or group without ``batch=``)."""
    handler = spec.handler
    assert handler is not None
    batched = spec.batch is not None
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
    if result is None or (isinstance(result, list) and len(result) == n):
        return Reply(value=result)
    # One return for the whole batch (a report, or several artifacts): published once.
    return Reply(value=[Whole(result, tuple(works))] + [None] * (n - 1))


def check_outputs(spec: ConsumerSpec, values: list[Any]) -> HandlerContractError | None:
    """Why ``values`` may not be published by ``spec`` (``None`` if they may)."""
    for value in values:
        if isinstance(value, spec.publishes):  # declared types are artifact types
            continue
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
    if isinstance(outcome, Whole):
        return outputs_of(outcome.value)
    if isinstance(outcome, list | tuple):
        return [v for v in outcome if v is not None]
    return [outcome]


def error_text(error: BaseException | str | None) -> str | None:
    """An error as stored: ``"Type: message"``."""
    if error is None or isinstance(error, str):
        return error
    return f"{type(error).__name__}: {error}"
