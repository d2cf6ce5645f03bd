"""The consumer graph: who feeds whom, the cycles in it, and the names it refers to."""

from __future__ import annotations

from freight._errors import ConfigError
from freight.flow._consumer import ConsumerSpec

__all__ = ["check_producers", "find_cycle"]


def feeds(producer: ConsumerSpec, consumer: ConsumerSpec) -> bool:
    """Does ``producer`` publish something a subscription of ``consumer`` takes from it?"""
    return any(
        (sub.producers is None or producer.name in sub.producers)
        and any(issubclass(p, t) for p in producer.publishes for t in sub.types)
        for sub in consumer.subscriptions
    )


def check_producers(consumers: list[ConsumerSpec]) -> None:
    """Refuse a ``from_=`` naming no declared consumer (it would never match: a typo)."""
    names = {c.name for c in consumers}
    for consumer in consumers:
        for sub in consumer.subscriptions:
            unknown = sorted((sub.producers or frozenset()) - names)
            if unknown:
                raise ConfigError(
                    f"consumer {consumer.name!r}: consumes(from_={unknown}) names no declared "
                    f"consumer (declared: {sorted(names)}); artifacts published from outside "
                    "have no producer"
                )


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
