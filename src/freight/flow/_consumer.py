"""Consumers: what a consumer reads, how it batches or joins, what it publishes.

Declared fluently, ending with ``.does(handler)``::

    (flow.consumer("payments")
         .consumes(Transaction, where=lambda t: t.amount > 0,
                   batch=BatchSpec(size=25, timeout=timedelta(seconds=30)))
         .publishes(PaymentBatchReport)
         .does(process_payments))

or as a decorator (the builder is callable and returns the function unchanged)::

    @flow.consumer("payments").consumes(Transaction, batch=...).publishes(Report)
    async def process_payments(batch: list[Transaction]) -> Report: ...
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from freight._core._join import JoinSpec
from freight._core._retry import Retry
from freight._core._spec import BatchSpec
from freight._errors import ConfigError
from freight._ratelimit import RateLimiter
from freight.flow._artifacts import is_artifact_type
from freight.flow._visibility import Visibility, check_visibility

if TYPE_CHECKING:
    from freight.flow._flow import Flow

__all__ = ["ConsumerBuilder", "ConsumerSpec", "Group"]

F = TypeVar("F", bound=Callable[..., Any])
OnPartial = Literal["dead_letter", "emit"]


class Group:
    """One correlated group of a join: one artifact per consumed type, in declared order.

    ``group[Temperature]`` or ``group[0]`` gives a member; a partial group (handed over
    with ``on_partial="emit"``) has ``None`` where a type is missing.
    """

    __slots__ = ("_types", "artifacts", "complete", "key")

    def __init__(
        self, key: Any, artifacts: tuple[Any, ...], types: tuple[type, ...], complete: bool
    ) -> None:
        self.key = key
        self.artifacts = artifacts
        self.complete = complete
        self._types = types

    def __getitem__(self, which: int | type) -> Any:
        if isinstance(which, int):
            return self.artifacts[which]
        for kind, artifact in zip(self._types, self.artifacts, strict=True):
            if issubclass(kind, which) or issubclass(which, kind):
                return artifact
        raise KeyError(f"this group joins {[t.__name__ for t in self._types]}, not {which!r}")

    def __iter__(self) -> Iterator[Any]:
        return iter(self.artifacts)

    def __len__(self) -> int:
        return len(self.artifacts)

    @property
    def missing(self) -> list[type]:
        """The types with no artifact in this group."""
        return [t for t, a in zip(self._types, self.artifacts, strict=True) if a is None]

    def __repr__(self) -> str:
        state = "complete" if self.complete else "partial"
        return f"Group(key={self.key!r}, {state}, {list(self.artifacts)!r})"


@dataclass(slots=True)
class ConsumerSpec:
    """A declared consumer (what the builder collected)."""

    name: str
    types: tuple[type, ...] = ()
    where: Callable[[Any], bool] | None = None
    batch: BatchSpec | None = None
    join: JoinSpec | None = None
    on_partial: OnPartial = "dead_letter"
    retry: Retry | None = None
    rate_limit: RateLimiter | None = None
    publishes: tuple[type, ...] = ()
    visibility: Visibility | None = None
    tenant: str | None = None
    labels: frozenset[str] = field(default_factory=frozenset)
    handler: Callable[[Any], Any] | None = None
    is_async: bool = False
    max_concurrent: int | None = None

    def slot_of(self, artifact: Any) -> int | None:
        """Which consumed type ``artifact`` is (its slot in a join), or ``None``."""
        for slot, kind in enumerate(self.types):
            if isinstance(artifact, kind):
                return slot
        return None


class ConsumerBuilder:
    """Collects a consumer's declaration; ``does(handler)`` registers it with the flow."""

    def __init__(self, flow: Flow, spec: ConsumerSpec) -> None:
        self._flow = flow
        self.spec = spec

    def consumes(
        self,
        *types: type,
        where: Callable[[Any], bool] | None = None,
        batch: BatchSpec | None = None,
        join: JoinSpec | None = None,
        on_partial: OnPartial = "dead_letter",
        retry: Retry | None = None,
        rate_limit: RateLimiter | float | None = None,
    ) -> ConsumerBuilder:
        """What this consumer reads.

        Args:
            types: artifact types (pydantic models or dataclasses); with ``join``, one
                artifact of each is correlated into a :class:`Group`.
            where: ``artifact -> bool``, run before batching: only matching artifacts
                reach the batch.
            batch: group artifacts (or join groups: the size counts groups) into lists.
            join: correlate the types by key within a window.
            on_partial: what a join group that expires incomplete becomes:
                ``"dead_letter"`` (reason ``join_timeout``) or ``"emit"`` (handed to
                the handler as a partial group).
            retry: the handler's retry policy (with ``isolate``, a poison artifact
                fails alone).
            rate_limit: a :class:`~freight.RateLimiter` (or batches per second) the
                handler's calls wait for.
        """
        spec = self.spec
        rate_limit = _check_consumes(
            f"consumer {spec.name!r}: consumes()", types, where, batch, join, on_partial,
            retry, rate_limit,
        )  # fmt: skip
        spec.types, spec.where, spec.batch, spec.join = tuple(types), where, batch, join
        spec.on_partial, spec.retry, spec.rate_limit = on_partial, retry, rate_limit
        return self

    def publishes(self, *types: type, visibility: Visibility | None = None) -> ConsumerBuilder:
        """What this consumer's handler returns (and the visibility it gets)."""
        for kind in types:
            if not is_artifact_type(kind):
                raise ConfigError(
                    f"consumer {self.spec.name!r}: publishes({kind!r}): not an artifact type"
                )
        self.spec.publishes += tuple(types)
        self.spec.visibility = check_visibility(visibility, f"consumer {self.spec.name!r}")
        return self

    def max_concurrent(self, limit: int) -> ConsumerBuilder:
        """Run at most ``limit`` handler calls of this consumer at once (the others wait)."""
        if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
            raise ConfigError(
                f"consumer {self.spec.name!r}: max_concurrent must be an int >= 1, got {limit!r}"
            )
        self.spec.max_concurrent = limit
        return self

    def tenant(self, tenant_id: str) -> ConsumerBuilder:
        """Limit this consumer to one tenant's artifacts (and public ones)."""
        if not isinstance(tenant_id, str) or not tenant_id:
            raise ConfigError(f"tenant must be a non-empty string, got {tenant_id!r}")
        self.spec.tenant = tenant_id
        return self

    def labels(self, *labels: str | Iterable[str]) -> ConsumerBuilder:
        """The labels this consumer holds (it sees ``Labelled`` artifacts within them)."""
        names: set[str] = set()
        for label in labels:
            names.update([label] if isinstance(label, str) else label)
        self.spec.labels = self.spec.labels | names
        return self

    def does(self, handler: Callable[..., Any]) -> ConsumerSpec:
        """Register the consumer with ``handler``; return its declaration.

        The handler takes one artifact (or one group), or a list of them with ``batch=``;
        it may be ``async``. Without ``batch=`` it returns ``None``, an artifact, or a
        list of artifacts (published). With ``batch=`` it returns ``None``, one outcome
        per item (``None``, an artifact, a list of them, or an ``Exception`` instance
        failing that item alone), or :class:`~freight.flow.ForBatch` to publish for
        the batch as a whole; anything else is a ``contract`` dead letter.
        """
        if not callable(handler):
            raise ConfigError(f"consumer {self.spec.name!r}: does() needs a callable")
        if not self.spec.types:
            raise ConfigError(
                f"consumer {self.spec.name!r}: declare what it consumes, "
                ".consumes(Type, ...), before .does(handler)"
            )
        self.spec.handler = handler
        self.spec.is_async = inspect.iscoroutinefunction(handler)
        self._flow._register(self.spec)
        return self.spec

    def __call__(self, handler: F) -> F:
        """Decorator form of :meth:`does`: registers and returns ``handler`` unchanged."""
        self.does(handler)
        return handler


def _check_consumes(  # noqa: PLR0917 (the arguments of consumes(), checked in one place)
    where_: str,
    types: tuple[type, ...],
    where: object,
    batch: object,
    join: object,
    on_partial: str,
    retry: object,
    rate_limit: RateLimiter | float | None,
) -> RateLimiter | None:
    """Check ``consumes()``'s arguments; return the rate limiter (a number made one)."""
    if not types:
        raise ConfigError(f"{where_} needs at least one artifact type")
    for kind in types:
        if not is_artifact_type(kind):
            raise ConfigError(
                f"{where_}: {kind!r} is not an artifact type (a pydantic model or a dataclass)"
            )
    if join is not None and len(types) < 2:
        raise ConfigError(f"{where_}: a join correlates at least two types")
    if join is None and on_partial != "dead_letter":
        raise ConfigError(f"{where_}: on_partial applies to joins only")
    if on_partial not in ("dead_letter", "emit"):
        raise ConfigError(f"{where_}: on_partial must be 'dead_letter' or 'emit'")
    if where is not None and not callable(where):
        raise ConfigError(f"{where_}: where must be a callable (artifact -> bool)")
    checks = (("batch", batch, BatchSpec), ("join", join, JoinSpec), ("retry", retry, Retry))
    for name, value, kind in checks:
        if value is not None and not isinstance(value, kind):
            raise ConfigError(f"{where_}: {name} must be a freight.{kind.__name__}, got {value!r}")
    if isinstance(rate_limit, int | float) and not isinstance(rate_limit, bool):
        rate_limit = RateLimiter(rate_limit)
    if rate_limit is not None and not isinstance(rate_limit, RateLimiter):
        raise ConfigError(f"{where_}: rate_limit must be a RateLimiter or a number")
    return rate_limit
