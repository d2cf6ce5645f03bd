"""Routing: which consumers get a published artifact, and the record of it.

Rules:

1. Every artifact gets an :class:`~freight.flow.Envelope` when it is published: an id
   unique across restarts, its type's name, the flow clock's time, its visibility
   (a ``Tenant`` extractor is resolved now) and tenant, correlation id and depth.
2. The candidates for an artifact are the subscriptions of its type or a base of it
   (cached per type: the consumers are fixed once the flow starts).
3. A subscription takes the artifact only if its consumer may see it (visibility,
   then tenant: a consumer without a tenant sees no tenant's artifacts unless it
   declared ``.all_tenants()``, a tenant's consumer never another tenant's), it was
   published by one of the subscription's ``from_`` producers (if given; an outside
   publish names its producer with ``producer=``), not by the consumer itself if it
   declared ``.prevent_self_trigger()``, every
   ``where`` accepts it, and, for a join, its join key can be read. A ``where`` or a
   join key that raises is that consumer's dead letter (``where_error``,
   ``join_key_error``), never a failed publish. Every subscription that takes it gets
   it: one consumer's two subscriptions are two deliveries.
4. A route is recorded before any consumer sees it: on a durable board, the artifacts
   with one delivery per taking subscription, a handled batch's deliveries done and
   its dead letters, in one transaction (the committer's, ``_commit``: in a worker
   thread, routes in the order they were made). Only then are the artifacts delivered
   (to the scheduler, which holds back an ``After`` artifact until its delay passed),
   in order, at the flow clock's time of their delivery.
5. Types are known by name: two declared types of one name are refused (the board
   stores types by name and reads back only declared ones).
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from freight._core._clock import Clock
from freight._drivers._clocks import LoopClock, ThreadClock
from freight._errors import ConfigError
from freight.flow._artifacts import Envelope, type_name
from freight.flow._board import Board
from freight.flow._commit import Committer
from freight.flow._consumer import ConsumerSpec, Subscription
from freight.flow._handling import error_text
from freight.flow._records import DeadLetter, Runtime, dead_letter
from freight.flow._tracing import Tracing
from freight.flow._visibility import Public, Tenant, Visibility, may_see, resolve, tenant_of

__all__ = ["PUBLIC", "Router"]

PUBLIC = Public()
_HISTORY = 10_000  # artifacts and dead letters an in-memory flow keeps for inspection

Deliver = Callable[[Runtime, int, Envelope, float], None]

# An envelope made from its fields in order, without the NamedTuple's Python-level
# __new__ (measured 0.19 against 0.30 us, once per artifact); the wall clock's time as
# the same C call without looking up its arguments.
_new_envelope: Callable[[tuple[Any, ...]], Envelope] = functools.partial(tuple.__new__, Envelope)
_utc_now = functools.partial(datetime.now, UTC)

Taker = tuple[Runtime, int, str]
"""A subscription that takes an artifact: ``(consumer, its index among the consumer's
subscriptions, its deliveries' name on a durable board)``."""

Candidate = tuple[Runtime, Subscription, tuple[Callable[[Any], bool], ...], bool, str | None, Taker]
"""A subscription of an artifact's type: ``(consumer, subscription, its where
predicates, plain, own name, the taker it is)``; ``plain``: no ``from_`` and no join key
to check (a public artifact then needs only its predicates, and not to be the
consumer's own: ``own name`` is the consumer's name when it prevents self-triggering,
else ``None``)."""


class Router:
    """Wraps, records and routes a flow's artifacts (module rules).

    ``deliver`` (the scheduler's) receives each accepted artifact; ``clock`` is set
    when the flow starts.
    """

    def __init__(
        self, consumers: dict[str, Runtime], board: Board | None, tracing: Tracing
    ) -> None:
        self.consumers = consumers
        self.board = board
        # a durable board's routes are written by the committer (in a worker thread)
        self.committer = Committer(board) if board is not None else None
        self.tracing = tracing
        self.clock: Clock | None = None
        self.now: Callable[[], float] = _unstarted
        self.deliver: Deliver | None = None
        self.history: deque[Envelope] = deque(maxlen=_HISTORY)
        self.dead: deque[DeadLetter] = deque(maxlen=_HISTORY)
        self.types: dict[str, type] = {}
        self.known: set[type] = set()
        self.seq = itertools.count(1)
        # Artifact ids: a random prefix per Flow object and a counter (unique across
        # restarts of a durable flow, ~20x cheaper than a uuid4 per artifact). The
        # newest id and its number are kept for the tracing (``Issuer``): an envelope
        # whose id is the newest continues a run of publish spans without its id being
        # formatted or parsed again.
        self.id_prefix = uuid.uuid4().hex[:16] + "-"
        self._ids = itertools.count(1)
        self.newest: str | None = None
        self.issued = 0
        tracing.issuer = self
        self._routes: dict[type, list[Candidate]] = {}

    def start(self, clock: Clock) -> None:
        """Run on ``clock`` (known when the flow starts)."""
        self.clock = clock
        self.now = clock.now
        # a monotonic clock keeps its distance to the wall clock (the tracing checks
        # it now and then, not at each publish)
        self.tracing.steady = isinstance(clock, LoopClock | ThreadClock)

    # -- types (rule 5) -------------------------------------------------------

    def learn_types(self) -> None:
        """Know every type the consumers consume or publish."""
        for rt in self.consumers.values():
            for kind in (*rt.spec.types, *rt.spec.publishes):
                self.learn(kind)

    def learn(self, kind: type) -> None:
        """Know ``kind`` by its name; refuse a second type of the same name."""
        self.known.add(kind)
        known = self.types.setdefault(type_name(kind), kind)
        if known is not kind:
            raise ConfigError(
                f"two artifact types are named {type_name(kind)} ({known.__module__} and "
                f"{kind.__module__}); the board stores types by name: rename one"
            )

    # -- envelopes (rule 1) ---------------------------------------------------

    def envelope(
        self,
        artifact: Any,
        producer: str | None,
        visibility: Visibility,
        depth: int,
        correlation_id: str | None,
    ) -> Envelope:
        """Wrap ``artifact`` for the board (positional: once per artifact)."""
        kind = type(artifact)
        if kind not in self.known:
            self.learn(kind)
        if type(visibility) is Public:
            tenant = None
        else:
            visibility = resolve(visibility, artifact)
            tenant = visibility.tenant_id if type(visibility) is Tenant else tenant_of(visibility)
        number = self.issued = next(self._ids)
        newest = self.newest = f"{self.id_prefix}{number:x}"
        # In the field order: (id, type, payload, producer, created_at, published_at,
        # visibility, tenant, correlation_id, depth).
        return _new_envelope((
            newest, kind.__qualname__, artifact, producer, self.now(), _utc_now(), visibility,
            tenant, correlation_id, depth,
        ))  # fmt: skip

    # -- routing (rules 2-4) --------------------------------------------------

    def route(
        self,
        envelopes: Sequence[Envelope],
        *,
        done: tuple[str, Sequence[str]] | None = None,
        dead: Sequence[DeadLetter] = (),
    ) -> asyncio.Future[None] | None:
        """Record ``envelopes`` (and a handled batch's ``done``/``dead``) in one
        transaction, then deliver them to the consumers that take them.

        In memory that is done when this returns (``None``); on a durable board the
        transaction is the committer's (``_commit``): the future is done once it has
        committed and the envelopes were delivered."""
        refused: list[DeadLetter] = list(dead) if dead else []
        if self.board is None and len(envelopes) == 1:
            # one artifact in memory (an outside publish, most often): no lists to build
            envelope = envelopes[0]
            self._deliver([(envelope, next(self.seq), self.takers(envelope, refused))], refused)
            return None
        takers = self.takers
        seq = self.seq
        routed = [(e, next(seq), takers(e, refused)) for e in envelopes]
        if self.board is None:
            self._deliver(routed, refused)
            return None
        assert self.committer is not None
        record = self.board.rows(
            [(e, seq, [name for _, _, name in takers]) for e, seq, takers in routed],
            done=done,
            dead=[(d.consumer, d.reason, [e.id for e in d.envelopes], error_text(d.error))
                  for d in refused],
        )  # fmt: skip
        return self.committer.commit(record, functools.partial(self._deliver, routed, refused))

    def _deliver(
        self, routed: list[tuple[Envelope, int, list[Taker]]], refused: list[DeadLetter]
    ) -> None:
        """Hand what a route recorded to the consumers (and its spans to the tracers)."""
        deliver = self.deliver
        assert deliver is not None
        now = self.now()
        if refused:
            self._refused(refused, now)
        tracing = self.tracing
        if routed and tracing.subscribers:
            tracing.published(routed, now)
        append = self.history.append
        for envelope, _, taken in routed:
            append(envelope)
            for rt, index, _ in taken:
                deliver(rt, index, envelope, now)

    def takers(self, envelope: Envelope, refused: list[DeadLetter]) -> list[Taker]:
        """The subscriptions that take ``envelope`` (rule 3); a predicate or join key
        that raised adds its dead letter to ``refused``."""
        payload = envelope.payload
        found = self._routes.get(type(payload))
        if found is None:
            found = self.candidates(type(payload))
        takers: list[Taker] = []
        public = type(envelope.visibility) is Public
        for rt, sub, where, plain, own, taker in found:
            if public and plain:
                # takes() for a public artifact and a plain subscription, inline (the
                # hot path: once per artifact and subscription)
                if own is not None and envelope.producer == own:
                    continue  # its own output (prevent_self_trigger)
                try:
                    for predicate in where:
                        if not predicate(payload):
                            break
                    else:
                        takers.append(taker)
                except Exception as exc:
                    refused.append(dead_letter(rt.spec.name, "where_error", [envelope], exc))
                continue
            verdict = takes(rt.spec, sub, envelope)
            if verdict is True:
                takers.append(taker)
            elif verdict:
                reason, error = verdict
                refused.append(dead_letter(rt.spec.name, reason, [envelope], error))
        return takers

    def _refused(self, letters: list[DeadLetter], now: float) -> None:
        """Keep ``letters`` (an in-memory flow lists them) and trace them."""
        span = self.tracing.span
        for letter in letters:
            self.dead.append(letter)
            span("dead_letter", letter.consumer, now, now, {
                "reason": letter.reason, "batch_size": len(letter.envelopes),
                "error": error_text(letter.error),
            })  # fmt: skip

    def candidates(self, kind: type) -> list[Candidate]:
        """The subscriptions that consume artifacts of type ``kind``, with their
        consumers (cached per type)."""
        found = self._routes.get(kind)
        if found is None:
            found = self._routes[kind] = [
                (
                    rt, sub, sub.where, sub.producers is None and sub.join is None,
                    rt.spec.name if rt.spec.prevent_self_trigger else None,
                    (rt, sub.index, rt.spec.delivery_name(sub.index)),
                )
                for rt in self.consumers.values()
                for sub in rt.spec.subscriptions
                if any(issubclass(kind, t) for t in sub.types)
            ]  # fmt: skip
        return found


def _unstarted() -> float:  # pragma: no cover - the flow starts the router first
    raise RuntimeError("the router has no clock yet: the flow has not started")


def sees(spec: ConsumerSpec, envelope: Envelope) -> bool:
    """May consumer ``spec`` see ``envelope`` (its visibility, then its tenant)?"""
    visibility = envelope.visibility
    if type(visibility) is not Public and not may_see(
        visibility, spec.name, spec.tenant, spec.labels, spec.all_tenants
    ):
        return False
    # never another tenant's (whatever the visibility says)
    return envelope.tenant is None or spec.all_tenants or envelope.tenant == spec.tenant


def takes(
    spec: ConsumerSpec, sub: Subscription, envelope: Envelope
) -> bool | tuple[str, BaseException]:
    """Does subscription ``sub`` of ``spec`` take ``envelope`` (rule 3)? Or why it
    fails: a predicate or a join key that raised, as ``(reason, error)``."""
    if type(envelope.visibility) is not Public and not sees(spec, envelope):
        return False  # (a public artifact has no tenant: every consumer sees it)
    producer = envelope.producer
    if (sub.producers is not None and producer not in sub.producers) or (
        spec.prevent_self_trigger and producer == spec.name
    ):
        return False
    for predicate in sub.where:
        try:
            if not predicate(envelope.payload):
                return False
        except Exception as exc:
            return ("where_error", exc)
    if sub.join is not None:
        try:
            hash(sub.join.key_of(envelope.payload))
        except Exception as exc:
            return ("join_key_error", exc)
    return True
