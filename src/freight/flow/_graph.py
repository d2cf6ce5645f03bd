"""The consumer graph: who feeds whom, and the cycles in it."""

from __future__ import annotations

from freight.flow._consumer import ConsumerSpec

__all__ = ["find_cycle"]


def find_cycle(consumers: list[ConsumerSpec]) -> list[str] | None:
    """A cycle of consumers (``["a", "b", "a"]``) where each publishes what the next
    consumes, or ``None``."""
    feeds = {
        c.name: [
            o.name for o in consumers if any(issubclass(p, t) for p in c.publishes for t in o.types)
        ]
        for c in consumers
    }
    state: dict[str, int] = {}  # 1: on the path, 2: done

    def visit(name: str, path: list[str]) -> list[str] | None:
        state[name] = 1
        for nxt in feeds[name]:
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt] if nxt in path else [name, nxt]
            if nxt not in state and (cycle := visit(nxt, [*path, nxt])):
                return cycle
        state[name] = 2
        return None

    for name in feeds:
        if name not in state and (cycle := visit(name, [name])):
            return cycle
    return None
