"""Running a batch plan synchronously: the effect loop shared by threads and jobs."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from freight._core._plan import Call, Outcome, Reply, plan_batch
from freight._core._retry import Retry

__all__ = ["call_handler", "run_plan"]


def call_handler(handler: Callable[[list[Any]], Any], items: list[Any]) -> Reply:
    """Call ``handler`` on a copy of ``items``; an ``Exception`` becomes the reply's error."""
    try:
        return Reply(value=handler(list(items)))
    except Exception as exc:
        return Reply(error=exc)


def run_plan(
    items: list[Any],
    call: Callable[[list[Any]], Reply],
    retry: Retry | None,
    *,
    random: Callable[[], float],
    sleep: Callable[[float], None],
) -> tuple[Outcome, int]:
    """Execute :func:`plan_batch` in this thread; return its outcome and the calls made."""
    plan = plan_batch(items, retry, random)
    calls = 0
    effect = next(plan)
    while True:
        if type(effect) is Call:
            calls += 1
            try:
                effect = plan.send(call(effect.items))
            except StopIteration as stop:
                return stop.value, calls
        else:
            sleep(effect.seconds)  # type: ignore[union-attr]
            effect = next(plan)
