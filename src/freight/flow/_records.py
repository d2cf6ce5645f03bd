"""What a flow reports and holds: dead letters, open batches, a consumer's state."""

from __future__ import annotations

import asyncio
import functools
import operator
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NamedTuple, Protocol

from freight._core._clock import TimerHandle
from freight._core._dispatch import DispatchQueue
from freight.flow._artifacts import Envelope
from freight.flow._consumer import ConsumerSpec

__all__ = [
    "DeadLetter",
    "PendingBatch",
    "Route",
    "Runtime",
    "Work",
    "dead_letter",
    "new_work",
    "work_tenant",
]


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """What did not make it through a consumer, and why.

    Attributes:
        consumer: the consumer.
        reason: ``handler_error`` (the handler failed it, after retries),
            ``join_timeout`` (a join group expired incomplete), ``join_incomplete``
            (open at close), ``contract`` (the handler broke the handler contract:
            a batch handler's return that is neither one outcome per item nor a
            ``ForBatch``, or a type the consumer does not publish), ``where_error``
            (its predicate raised), ``join_key_error`` (its join key could not be
            read), ``max_depth`` (a cycle went deeper than allowed).
        artifacts: the artifacts concerned (a partial group's members).
        envelopes: the same, as the board holds them.
        error: the exception, when there was one.
        created_at: when, UTC.
    """

    consumer: str
    reason: str
    artifacts: list[Any]
    envelopes: list[Envelope]
    error: BaseException | str | None
    created_at: datetime


@dataclass(frozen=True, slots=True)
class PendingBatch:
    """An open batch or join group, waiting for its size or deadline.

    Attributes:
        consumer: the consumer.
        kind: ``"batch"`` or ``"join"``.
        key: the batch key (the tenant, or ``None``) or the join key.
        items: how many artifacts (or groups, for a batch of groups) wait.
        artifacts: those artifacts (or groups).
        opened_at: the flow clock's time of the first.
        deadline: when it flushes (or expires) if nothing else happens first.
    """

    consumer: str
    kind: str
    key: Hashable
    items: int
    artifacts: tuple[Any, ...]
    opened_at: float
    deadline: float | None


class Work(NamedTuple):
    """What a handler gets for one item: an artifact or a group, with its envelopes.

    A tuple (one per artifact and subscription taking it, made with
    :func:`new_work`: no Python-level ``__init__``)."""

    item: Any
    envelopes: tuple[Envelope, ...]
    tenant: str | None
    tried: int = 0  # tries in earlier batches, for an item sent back by the plan
    lane: int = 0  # the consumer's subscription it came through (ConsumerSpec.subscriptions)


new_work: Callable[[tuple[Any, tuple[Envelope, ...], str | None, int, int]], Work] = (
    functools.partial(tuple.__new__, Work)
)
"""``new_work((item, envelopes, tenant, tried, lane))``: a :class:`Work` without the
NamedTuple's Python-level ``__new__`` (the hot path: once per artifact)."""

work_tenant: Callable[[Work], Hashable] = operator.itemgetter(2)
"""A work's tenant, in C (the batch buffers' key: batches never mix tenants)."""


class Runtime:
    """A registered consumer and its state: one lane of buffers per subscription and a
    timer (scheduling: ``_scheduling.Lane``), handler runs admitted under
    ``max_concurrent`` by the core's dispatch queue (execution)."""

    __slots__ = ("lanes", "queue", "spec", "timer", "timer_at")

    def __init__(self, spec: ConsumerSpec) -> None:
        self.spec = spec
        self.lanes: list[Any] = []  # built by the scheduler (``_scheduling.Lane``)
        self.timer: TimerHandle | None = None
        self.timer_at: float | None = None
        # The core's concurrency rule, as in a Batcher (None: no limit declared).
        self.queue: DispatchQueue[Work] | None = (
            DispatchQueue(spec.max_concurrent) if spec.max_concurrent is not None else None
        )


def dead_letter(
    consumer: str, reason: str, envelopes: Sequence[Envelope], error: BaseException | str | None
) -> DeadLetter:
    """A dead letter of ``envelopes`` for ``consumer``, dated now (UTC)."""
    return DeadLetter(
        consumer, reason, [e.payload for e in envelopes], list(envelopes), error, datetime.now(UTC)
    )


class Route(Protocol):
    """Records and delivers what a step produced (``Router.route``): published
    artifacts, a handled batch's deliveries done, dead letters, in one transaction;
    on a durable board, returns the future of that transaction and delivery."""

    def __call__(
        self,
        envelopes: Sequence[Envelope],
        *,
        done: tuple[str, Sequence[str]] | None = None,
        dead: Sequence[DeadLetter] = (),
    ) -> asyncio.Future[None] | None: ...
