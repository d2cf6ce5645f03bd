"""The consumer graph: who feeds whom, the cycles in it, and the names it refers to."""

from __future__ import annotations

import logging

from freight.flow._consumer import ConsumerSpec

__all__ = ["check_producers", "find_cycle"]

_log = logging.getLogger("freight.flow")


def feeds(producer: ConsumerSpec, consumer: ConsumerSpec) -> bool:
    """Does ``producer`` publish something a subscription of ``consumer`` takes from it?
    (Never itself when it prevents self-triggering.)"""
    if producer is consumer and consumer.prevent_self_trigger:
        return False
    return any(
        (sub.producers is None or producer.name in sub.producers)
        and any(issubclass(p, t) for p in producer.publishes for t in sub.types)
        for sub in consumer.subscriptions
    )


def check_producers(consumers: list[ConsumerSpec]) -> None:
    """Warn of a ``from_=`` naming no declared consumer: it matches only what an
    outside publisher names itself (``flow.publish(..., producer=name)``), as in Flock,
    where it matches nothing; it may be a typo."""
    names = {c.name for c in consumers}
    for consumer in consumers:
        for sub in consumer.subscriptions:
            unknown = sorted((sub.producers or frozenset()) - names)
            if unknown:
                _log.warning(
                    "consumer %r: consumes(from_=%s) names no declared consumer (declared: "
                    "%s); it takes only what an outside publish names as its producer "
                    "(flow.publish(..., producer=name))",
                    consumer.name, unknown, sorted(names),
                )  # fmt: skip


def find_cycle(consumers: list[ConsumerSpec]) -> list[str] | None:
    """A cycle of consumers (``["a", "b", "a"]``) where each publishes what the next
    consumes, or ``None``."""
    feeds_ = {c.name: [o.name for o in consumers if feeds(c, o)] for c in consumers}
    state: dict[str, int] = {}  # 1: on the path, 2: done

    def visit(name: str, path: list[str]) -> list[str] | None:
        state[name] = 1
        for nxt in feeds_[name]:
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt] if nxt in path else [name, nxt]
            if nxt not in state and (cycle := visit(nxt, [*path, nxt])):
                return cycle
        state[name] = 2
        return None

    for name in feeds_:
        if name not in state and (cycle := visit(name, [name])):
            return cycle
    return None
