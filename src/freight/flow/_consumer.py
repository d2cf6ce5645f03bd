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

Each ``.consumes(...)`` is one *subscription* (Flock's meaning, since its users bring
it):

1. ``.consumes(A)``: each ``A`` is handled (one by one, or in batches with ``batch=``).
2. ``.consumes(A, B)``: an **AND gate**: the handler runs when one ``A`` and one ``B``
   of a tenant are both there and gets both, as a :class:`Group`;
   ``.consumes(A, A, A)`` waits for three ``A`` s. With ``join=`` the gate is
   correlated by key within a window (``.consumes(T, T, join=...)`` pairs two ``T`` s of
   one key). Items wait in arrival order: none is dropped for a newer one.
3. Calling ``.consumes(...)`` again adds a subscription: the handler runs for
   either (**OR**). An artifact that two subscriptions take reaches each.
4. ``where=`` is one predicate or a list (all must hold); ``from_=["name"]`` (Flock:
   ``from_agents=``) takes only what the named consumers published.
5. What Flock accepts and freight does not support (``text=``, ``channels=``,
   ``delivery=``, ``mode=``, ``priority=``...) is refused here with a
   :class:`~freight.ConfigError` naming the missing feature, never accepted with
   another meaning.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Iterable, Sequence
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

__all__ = ["ConsumerBuilder", "ConsumerSpec", "Group", "Subscription"]

F = TypeVar("F", bound=Callable[..., Any])
OnPartial = Literal["dead_letter", "emit"]
Predicate = Callable[[Any], bool]

# Flock's consumes() arguments freight has no feature for: refused by name (rule 5).
_UNSUPPORTED = {
    "text": "semantic text matching (text=, min_p=); filter with where=",
    "min_p": "semantic text matching (text=, min_p=); filter with where=",
    "channels": "channel (tag) routing (channels=): artifacts carry no tags in freight; "
    "filter with where= or from_=, or restrict who sees them with Labelled(...)",
    "tags": "channel (tag) routing (tags=): artifacts carry no tags in freight; "
    "filter with where= or from_=, or restrict who sees them with Labelled(...)",
    "delivery": "delivery modes (delivery=): every consumer that takes an artifact gets it "
    "once; there is no exclusive delivery among consumers",
    "mode": "subscription modes (mode=): a consumer reads what is published to the flow; "
    "there are no direct invocations",
    "priority": "subscription priorities (priority=): consumers run as artifacts arrive",
    "semantic_match": "semantic matching (semantic_match=); filter with where=",
    "semantic_threshold": "semantic matching (semantic_threshold=); filter with where=",
    "activation": "activation conditions (activation=); filter with where=",
}
# Flock's publishes() arguments freight has no feature for: refused by name (rule 5).
_UNSUPPORTED_PUBLISHES = {
    "fan_out": "fan-out (fan_out=): a handler publishes several artifacts by returning "
    "a list of them",
    "where": "filtered publishing (where=): return only the artifacts to publish",
    "validate": "publish validation (validate=): validate in the handler (a pydantic "
    "model validates itself)",
    "description": "publish descriptions (description=); describe the consumer with "
    ".description(...)",
}
_LANE = re.compile(r".*\[\d+\]\Z")


class Group(list[Any]):
    """One group of an AND gate or a join: one artifact per consumed type, in declared
    order (``.consumes(A, A, B)``: two ``A`` s, then a ``B``).

    It is a ``list`` of the artifacts (Flock hands a gate's artifacts over as a list:
    ``group == [a, b]`` holds), with more: ``group[Temperature]`` gives the first member
    of that type, ``group.key`` the join key (``None`` for a gate without ``join=``),
    ``group.complete``, ``group.missing`` and ``group.artifacts`` (a tuple). A partial
    group (handed over with ``on_partial="emit"``) has ``None`` where a type is missing.
    """

    __slots__ = ("_types", "complete", "key")

    def __init__(
        self, key: Any, artifacts: tuple[Any, ...], types: tuple[type, ...], complete: bool
    ) -> None:
        super().__init__(artifacts)
        self.key = key
        self.complete = complete
        self._types = types

    def __getitem__(self, which: Any) -> Any:
        if not isinstance(which, type):
            return super().__getitem__(which)
        for kind, artifact in zip(self._types, self, strict=True):
            if issubclass(kind, which) or issubclass(which, kind):
                return artifact
        raise KeyError(f"this group joins {[t.__name__ for t in self._types]}, not {which!r}")

    @property
    def artifacts(self) -> tuple[Any, ...]:
        """The members, in declared order."""
        return tuple(self)

    @property
    def missing(self) -> list[type]:
        """The types with no artifact in this group."""
        return [t for t, a in zip(self._types, self, strict=True) if a is None]

    def __repr__(self) -> str:
        state = "complete" if self.complete else "partial"
        return f"Group(key={self.key!r}, {state}, {list(self)!r})"


@dataclass(slots=True)
class Subscription:
    """One ``.consumes(...)`` of a consumer (module rules 1-4).

    Attributes:
        types: the artifact types; several make an AND gate (a :class:`Group`).
        where: predicates every taken artifact satisfies.
        batch: how its items (artifacts, or groups) are batched, if at all.
        join: how a gate is correlated (key and window); ``None`` for a plain AND gate.
        on_partial: what a gate's group that cannot complete becomes.
        producers: only artifacts these consumers published (``from_=``), or ``None``.
        index: its place among the consumer's subscriptions.
    """

    types: tuple[type, ...]
    where: tuple[Predicate, ...] = ()
    batch: BatchSpec | None = None
    join: JoinSpec | None = None
    on_partial: OnPartial = "dead_letter"
    producers: frozenset[str] | None = None
    index: int = 0

    @property
    def gated(self) -> bool:
        """An AND gate: several artifacts make one group (with or without ``join``)."""
        return len(self.types) > 1

    def slots_of(self, artifact: Any) -> tuple[int, ...]:
        """The slots of a gate ``artifact`` may fill, its own type's first."""
        kind = type(artifact)
        exact = [i for i, t in enumerate(self.types) if t is kind]
        wider = [i for i, t in enumerate(self.types) if t is not kind and isinstance(artifact, t)]
        return (*exact, *wider)


@dataclass(slots=True)
class ConsumerSpec:
    """A declared consumer (what the builder collected).

    Attributes:
        name: its name.
        subscriptions: one per ``.consumes(...)``: the handler runs for any of them.
        retry, rate_limit, max_concurrent: how its handler is called.
        publishes, visibility: what it publishes, and who may see that.
        tenant: the one tenant it serves (``None``: no tenant's artifacts).
        prevent_self_trigger: it never receives what it published itself (Flock's
            option and default: on; ``.prevent_self_trigger(False)`` lets a consumer
            feed itself, which the cycle check then refuses unless
            ``Flow(allow_cycles=True)``).
        description: what it does, for people (metadata; Flock's ``.description``).
        all_tenants: it sees every tenant's artifacts (``.all_tenants()``).
        labels: the labels it holds, for ``Labelled`` artifacts.
        handler, is_async: the handler.
    """

    name: str
    subscriptions: list[Subscription] = field(default_factory=list)
    retry: Retry | None = None
    rate_limit: RateLimiter | None = None
    publishes: tuple[type, ...] = ()
    visibility: Visibility | None = None
    tenant: str | None = None
    all_tenants: bool = False
    labels: frozenset[str] = field(default_factory=frozenset)
    handler: Callable[[Any], Any] | None = None
    is_async: bool = False
    max_concurrent: int | None = None
    prevent_self_trigger: bool = True
    description: str | None = None

    @property
    def types(self) -> tuple[type, ...]:
        """Every type it consumes, over its subscriptions, each once."""
        return tuple(dict.fromkeys(t for sub in self.subscriptions for t in sub.types))

    @property
    def batch(self) -> BatchSpec | None:
        """The first ``BatchSpec`` among its subscriptions (``None`` if none batches)."""
        return next((s.batch for s in self.subscriptions if s.batch is not None), None)

    @property
    def join(self) -> JoinSpec | None:
        """The ``JoinSpec`` of its first subscription."""
        return self.subscriptions[0].join if self.subscriptions else None

    @property
    def where(self) -> Predicate | None:
        """The first predicate of its first subscription (``subscriptions`` has all)."""
        first = self.subscriptions[0].where if self.subscriptions else ()
        return first[0] if first else None

    @property
    def on_partial(self) -> OnPartial:
        """The ``on_partial`` of its first subscription."""
        return self.subscriptions[0].on_partial if self.subscriptions else "dead_letter"

    def delivery_name(self, lane: int) -> str:
        """The name a durable board records its deliveries under, for its subscription
        ``lane``: its own name for the first, ``name[i]`` for the others (an artifact
        two subscriptions take is two deliveries, each done once)."""
        return self.name if lane == 0 else f"{self.name}[{lane}]"


class ConsumerBuilder:
    """Collects a consumer's declaration; ``does(handler)`` registers it with the flow."""

    def __init__(self, flow: Flow, spec: ConsumerSpec) -> None:
        self._flow = flow
        self.spec = spec

    def consumes(
        self,
        *types: type,
        where: Predicate | Sequence[Predicate] | None = None,
        batch: BatchSpec | dict[str, Any] | None = None,
        join: JoinSpec | dict[str, Any] | None = None,
        on_partial: OnPartial = "dead_letter",
        retry: Retry | None = None,
        rate_limit: RateLimiter | float | None = None,
        from_: str | Iterable[str] | None = None,
        from_agents: str | Iterable[str] | None = None,
        **unsupported: Any,
    ) -> ConsumerBuilder:
        """Add a subscription: what this consumer reads (module rules). Calling it again
        adds another (OR): the handler runs for either.

        Args:
            types: artifact types (pydantic models or dataclasses). One: each artifact
                is handled. Several: an AND gate, one artifact of each (``A, A``: two
                ``A`` s) handed over together as a :class:`Group`, per tenant.
            where: ``artifact -> bool``, or a list of them (all must hold), run before
                batching and gating: only matching artifacts enter.
            batch: group artifacts (or gate groups: the size counts groups) into lists;
                ``BatchSpec(timeout=...)`` without a size is a time-only batch.
            join: correlate a gate by key within a window (``JoinSpec``: seconds, or an
                ``int``: a count of artifacts).
            on_partial: what a gate's group that expires (or is open at close)
                becomes: ``"dead_letter"`` (``join_timeout``, ``join_incomplete``) or
                ``"emit"`` (handed to the handler as a partial group).
            retry: the handler's retry policy (with ``isolate``, a poison artifact
                fails alone); the consumer's, for all its subscriptions.
            rate_limit: a :class:`~freight.RateLimiter` (or batches per second) the
                handler's calls wait for; the consumer's, for all its subscriptions.
            from_: only artifacts published by these consumers (a name or names);
                ``from_agents`` is Flock's spelling.

        Raises:
            ConfigError: an argument is wrong, or names a Flock feature freight does
                not support (``text=``, ``channels=``, ``delivery=``...).
        """
        spec = self.spec
        where_ = f"consumer {spec.name!r}: consumes()"
        _refuse_unsupported(where_, unsupported)
        batch, join = (
            _spec_of(where_, "batch", batch, BatchSpec),
            _spec_of(where_, "join", join, JoinSpec),
        )
        predicates = _check_consumes(where_, types, where, join, on_partial)
        rate_limit = _check_handler_options(where_, retry, rate_limit)
        if batch is not None and not isinstance(batch, BatchSpec):
            raise ConfigError(f"{where_}: batch must be a freight.BatchSpec, got {batch!r}")
        _refuse_tuned_batches(where_, batch)
        if join is not None and not isinstance(join, JoinSpec):
            raise ConfigError(f"{where_}: join must be a freight.JoinSpec, got {join!r}")
        producers = _check_producers(where_, from_, from_agents)
        for name, value in (("retry", retry), ("rate_limit", rate_limit)):
            current = getattr(spec, name)
            if value is not None and current is not None and value is not current:
                raise ConfigError(
                    f"{where_}: {name} is the consumer's, for all its subscriptions, and "
                    f"was already given ({current!r}); give it once"
                )
        spec.subscriptions.append(
            Subscription(tuple(types), predicates, batch, join, on_partial, producers,
                         len(spec.subscriptions))
        )  # fmt: skip
        spec.retry = retry if retry is not None else spec.retry
        spec.rate_limit = rate_limit if rate_limit is not None else spec.rate_limit
        return self

    def publishes(
        self, *types: type, visibility: Visibility | None = None, **unsupported: Any
    ) -> ConsumerBuilder:
        """What this consumer's handler returns (and the visibility it gets).

        Raises:
            ConfigError: a type is not an artifact type, is named twice (Flock's
                fan-out: freight publishes what the handler returns, a list for
                several), or an argument names a Flock feature freight does not
                support (``fan_out=``, ``where=``, ``validate=``, ``description=``).
        """
        where_ = f"consumer {self.spec.name!r}: publishes()"
        for name in unsupported:
            feature = _UNSUPPORTED_PUBLISHES.get(name)
            if feature is not None:
                raise ConfigError(f"{where_}: freight's Flow does not support {feature}")
            raise ConfigError(f"{where_}: unknown argument {name}=; it takes types and visibility")
        repeated = sorted({t.__name__ for t in types if types.count(t) > 1})
        if repeated:
            raise ConfigError(
                f"{where_}: {repeated} named more than once; freight's Flow does not support "
                "fan-out (Flock's publishes(A, A)): a handler publishes several artifacts "
                "by returning a list of them"
            )
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

    def max_concurrency(self, limit: int) -> ConsumerBuilder:
        """Flock's spelling of :meth:`max_concurrent`."""
        return self.max_concurrent(limit)

    def description(self, text: str) -> ConsumerBuilder:
        """Describe what this consumer does (metadata for people; Flock's
        ``.description``)."""
        if not isinstance(text, str):
            raise ConfigError(
                f"consumer {self.spec.name!r}: description must be a string, got {text!r}"
            )
        self.spec.description = text
        return self

    def prevent_self_trigger(self, enabled: bool = True) -> ConsumerBuilder:
        """Whether this consumer never receives the artifacts it published itself.

        On by default, as in Flock: its own artifacts still reach every other consumer,
        and a consumer that consumes what it publishes is no cycle (its self-edges are
        left out of the cycle check). ``.prevent_self_trigger(False)`` lets it receive
        its own artifacts: a feedback loop, refused when the flow starts unless
        ``Flow(allow_cycles=True)``.
        """
        if not isinstance(enabled, bool):
            raise ConfigError(
                f"consumer {self.spec.name!r}: prevent_self_trigger takes True or False, "
                f"got {enabled!r}"
            )
        self.spec.prevent_self_trigger = enabled
        return self

    def tenant(self, tenant_id: str) -> ConsumerBuilder:
        """Limit this consumer to one tenant's artifacts (and those of no tenant)."""
        if not isinstance(tenant_id, str) or not tenant_id:
            raise ConfigError(f"tenant must be a non-empty string, got {tenant_id!r}")
        if self.spec.all_tenants:
            raise ConfigError(
                f"consumer {self.spec.name!r}: it serves all tenants (.all_tenants()); "
                f"a consumer serves one tenant or all, not both"
            )
        self.spec.tenant = tenant_id
        return self

    def all_tenants(self) -> ConsumerBuilder:
        """See every tenant's artifacts (a consumer without a tenant sees none of them).

        Its batches and joins stay per tenant: a batch never mixes tenants, and what it
        publishes from one tenant's artifacts is that tenant's.
        """
        if self.spec.tenant is not None:
            raise ConfigError(
                f"consumer {self.spec.name!r}: it serves tenant {self.spec.tenant!r}; "
                f"a consumer serves one tenant or all, not both"
            )
        self.spec.all_tenants = True
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

        The handler takes one artifact (or one :class:`Group` of an AND gate), or a
        list of them with ``batch=``; it may be ``async``. Without ``batch=`` it
        returns ``None``, an artifact, or a list of artifacts (published). With
        ``batch=`` it returns ``None``, one outcome per item (``None``, an artifact, a
        list of them, or an ``Exception`` instance failing that item alone), or
        :class:`~freight.flow.ForBatch` to publish for the batch as a whole; anything
        else is a ``contract`` dead letter.
        """
        spec = self.spec
        if not callable(handler):
            raise ConfigError(f"consumer {spec.name!r}: does() needs a callable")
        if not spec.subscriptions:
            raise ConfigError(
                f"consumer {spec.name!r}: declare what it consumes, "
                ".consumes(Type, ...), before .does(handler)"
            )
        batched = {sub.batch is not None for sub in spec.subscriptions}
        if len(batched) > 1:
            raise ConfigError(
                f"consumer {spec.name!r}: some of its subscriptions batch= and some do not; "
                "its handler takes a list or one item, not either: give each subscription "
                "a batch= (BatchSpec(size=1) hands over one item at a time) or declare "
                "two consumers"
            )
        if _LANE.match(spec.name):
            raise ConfigError(
                f"consumer {spec.name!r}: a name ending in [<number>] is how a durable "
                "board names a consumer's further subscriptions; pick another name"
            )
        spec.handler = handler
        spec.is_async = inspect.iscoroutinefunction(handler)
        self._flow._register(spec)
        return spec

    def __call__(self, handler: F) -> F:
        """Decorator form of :meth:`does`: registers and returns ``handler`` unchanged."""
        self.does(handler)
        return handler


def _refuse_unsupported(where_: str, unsupported: dict[str, Any]) -> None:
    """Refuse Flock's arguments that freight has no feature for, naming the feature."""
    for name in unsupported:
        feature = _UNSUPPORTED.get(name)
        if feature is not None:
            raise ConfigError(f"{where_}: freight's Flow does not support {feature}")
        raise ConfigError(
            f"{where_}: unknown argument {name}=; it takes types, where, batch, join, "
            "on_partial, retry, rate_limit and from_"
        )


def _refuse_tuned_batches(where_: str, batch: BatchSpec | None) -> None:
    """Refuse what a flow's lanes would drop: adaptive sizing and batch cost."""
    if batch is None:
        return
    if batch.auto:
        feature = "adaptive sizing (BatchSpec(size='auto'))"
    elif batch.max_cost is not None:
        feature = "batch cost (BatchSpec(max_cost=, cost=))"
    else:
        return
    raise ConfigError(
        f"{where_}: a Flow consumer does not support {feature}: adaptive sizing / batch "
        "cost is for Batcher, ThreadBatcher and @batched; give the flow a fixed size "
        "(BatchSpec(size=25, timeout=...))"
    )


def _spec_of(where_: str, name: str, value: Any, kind: type) -> Any:
    """A ``batch=``/``join=`` given as a dict (Flock accepts those) made the spec."""
    if not isinstance(value, dict):
        return value
    try:
        return kind(**value)
    except TypeError as exc:
        raise ConfigError(f"{where_}: {name}={value!r}: {exc}") from exc


def _check_consumes(
    where_: str,
    types: tuple[type, ...],
    where: object,
    join: object,
    on_partial: str,
) -> tuple[Predicate, ...]:
    """Check the types, predicates and gate options; return the predicates."""
    if not types:
        raise ConfigError(f"{where_} must declare at least one type: .consumes(ArtifactType, ...)")
    for kind in types:
        if not is_artifact_type(kind):
            raise ConfigError(
                f"{where_}: {kind!r} is not an artifact type (a pydantic model or a dataclass)"
            )
    if join is not None and len(types) < 2:
        raise ConfigError(
            f"{where_}: a join correlates at least two types (.consumes(A, B, join=...), "
            ".consumes(T, T, join=...) for two of one type)"
        )
    if len(types) < 2 and on_partial != "dead_letter":
        raise ConfigError(f"{where_}: on_partial applies to joins and AND gates (several types)")
    if on_partial not in ("dead_letter", "emit"):
        raise ConfigError(f"{where_}: on_partial must be 'dead_letter' or 'emit'")
    if where is None:
        return ()
    predicates = (where,) if callable(where) else where
    if isinstance(predicates, str | bytes) or not isinstance(predicates, Sequence | set):
        raise ConfigError(
            f"{where_}: where must be a callable (artifact -> bool) or a list of them, "
            f"got {where!r}"
        )
    found = tuple(predicates)  # an empty list: no filter (as in Flock)
    if not all(callable(p) for p in found):
        raise ConfigError(
            f"{where_}: where must be a callable (artifact -> bool) or a list of them, "
            f"got {where!r}"
        )
    return found


def _check_handler_options(
    where_: str, retry: object, rate_limit: RateLimiter | float | None
) -> RateLimiter | None:
    """Check ``retry`` and ``rate_limit``; return the rate limiter (a number made one)."""
    if retry is not None and not isinstance(retry, Retry):
        raise ConfigError(f"{where_}: retry must be a freight.Retry, got {retry!r}")
    if isinstance(rate_limit, int | float) and not isinstance(rate_limit, bool):
        rate_limit = RateLimiter(rate_limit)
    if rate_limit is not None and not isinstance(rate_limit, RateLimiter):
        raise ConfigError(f"{where_}: rate_limit must be a RateLimiter or a number")
    return rate_limit


def _check_producers(where_: str, from_: object, from_agents: object) -> frozenset[str] | None:
    """The producer filter (``from_=``, or Flock's ``from_agents=``), as names."""
    if from_ is not None and from_agents is not None:
        raise ConfigError(f"{where_}: from_ and from_agents are one filter; give it once")
    given = from_ if from_ is not None else from_agents
    if given is None:
        return None
    names = [given] if isinstance(given, str) else given
    if not isinstance(names, Iterable):
        raise ConfigError(f"{where_}: from_ takes consumer names, got {given!r}")
    found = frozenset(names)
    if not found or not all(isinstance(n, str) and n for n in found):
        raise ConfigError(
            f"{where_}: from_ takes the names of the consumers whose artifacts it reads "
            f"(non-empty strings), got {given!r}"
        )
    return found
