"""The join buffer: a pure state machine that correlates items of several kinds.

Rules (the flow's correlated consumers obey exactly these):

1. A join has ``arity`` slots, one per kind of item (a flow's ``.consumes(A, B)``
   has two). Items arrive with a key and a slot.
2. A *group* opens when an item arrives for a key and slot that no open group of
   that key has free; its deadline is that arrival plus ``spec.within``.
3. An item fills the oldest open group of its key whose slot is free and whose
   deadline has not passed. When every slot is filled the group leaves, complete,
   from ``add``.
4. ``tick(now)`` returns every group whose deadline is ``<= now``, incomplete,
   oldest deadline first: an expired group is *returned*, never dropped, so the
   caller decides (dead letter or partial delivery).
5. ``close()`` returns every open group, incomplete, and refuses further items.
6. Every added item leaves in exactly one group.

The buffer never reads a clock: ``now`` is handed in. Call ``tick(now)`` before
``add(..., now)`` so that a group past its deadline is never completed late.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from freight._core._time import to_seconds
from freight._errors import BatcherClosed, ConfigError

__all__ = ["JoinBuffer", "JoinGroup", "JoinSpec", "OpenGroup"]


class JoinSpec:
    """Correlate one item of each consumed kind sharing a key within a time window.

    Args:
        by: the correlation key: an attribute name (``"device_id"``) or a callable
            ``item -> hashable``.
        within: seconds (``float`` or ``timedelta``) from a group's first item until
            it expires incomplete.

    Raises:
        ConfigError: ``by`` is neither a name nor a callable, or ``within`` is not > 0.
    """

    __slots__ = ("by", "within")

    by: str | Callable[[Any], Hashable]
    within: float

    def __init__(self, by: str | Callable[[Any], Hashable], within: float | timedelta) -> None:
        if not (callable(by) or (isinstance(by, str) and by)):
            raise ConfigError(
                f"JoinSpec.by must be an attribute name or a callable (item -> key), got {by!r}"
            )
        self.by = by
        self.within = to_seconds(within, "JoinSpec.within", allow_zero=False)

    def key_of(self, item: Any) -> Hashable:
        """The correlation key of ``item``."""
        if callable(self.by):
            return self.by(item)
        return getattr(item, self.by)  # type: ignore[no-any-return]

    def __repr__(self) -> str:
        return f"JoinSpec(by={self.by!r}, within={self.within!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, JoinSpec):
            return NotImplemented
        return (self.by, self.within) == (other.by, other.within)

    def __hash__(self) -> int:
        return hash((self.by, self.within))


@dataclass(frozen=True, slots=True)
class JoinGroup:
    """A group leaving the buffer.

    Attributes:
        key: the correlation key.
        members: one entry per slot, ``None`` where the slot stayed empty.
        opened_at: the ``now`` of its first item.
        complete: every slot was filled.
    """

    key: Hashable
    members: tuple[Any, ...]
    opened_at: float
    complete: bool


@dataclass(frozen=True, slots=True)
class OpenGroup:
    """A group still waiting (for introspection): key, members so far, times."""

    key: Hashable
    members: tuple[Any, ...]
    opened_at: float
    deadline: float


class _Group:
    __slots__ = ("deadline", "filled", "members", "opened_at")

    def __init__(self, arity: int, opened_at: float, deadline: float) -> None:
        self.members: list[Any] = [None] * arity
        self.filled = [False] * arity
        self.opened_at = opened_at
        self.deadline = deadline


class JoinBuffer:
    """Pure state machine correlating items by key; see the module rules.

    Args:
        spec: the :class:`JoinSpec` (its ``within`` sets each group's deadline).
        arity: how many slots (kinds of item) a complete group has (≥ 2).
    """

    def __init__(self, spec: JoinSpec, arity: int) -> None:
        if not isinstance(spec, JoinSpec):
            raise ConfigError(f"spec must be a freight.JoinSpec, got {spec!r}")
        if arity < 2:
            raise ConfigError(f"a join correlates at least 2 kinds of item, got {arity}")
        self.spec = spec
        self.arity = arity
        self._open: dict[Hashable, list[_Group]] = {}
        self._deadlines: list[tuple[float, int, Hashable, _Group]] = []
        self._seq = 0
        self._count = 0
        self._closed = False

    def __len__(self) -> int:
        """Items waiting in open groups."""
        return self._count

    def next_deadline(self) -> float | None:
        """The earliest deadline of an open group, or ``None``."""
        heap = self._deadlines
        while heap:
            deadline, _, key, group = heap[0]
            if group in self._open.get(key, ()):
                return deadline
            heapq.heappop(heap)
        return None

    def open_groups(self) -> list[OpenGroup]:
        """The groups still waiting, oldest first."""
        groups = [
            OpenGroup(key, tuple(g.members), g.opened_at, g.deadline)
            for key, open_ in self._open.items()
            for g in open_
        ]
        return sorted(groups, key=lambda g: g.deadline)

    def add(self, key: Hashable, slot: int, item: Any, now: float) -> JoinGroup | None:
        """Put ``item`` in ``slot`` of the oldest open group of ``key`` that has it free;
        return the group if that completed it."""
        if self._closed:
            raise BatcherClosed("the join buffer is closed; it takes no more items")
        if not 0 <= slot < self.arity:
            raise ValueError(f"slot must be in 0..{self.arity - 1}, got {slot}")
        groups = self._open.setdefault(key, [])
        target = next(
            (g for g in groups if not g.filled[slot] and g.deadline > now),
            None,
        )
        if target is None:
            target = _Group(self.arity, now, now + self.spec.within)
            groups.append(target)
            self._seq += 1
            heapq.heappush(self._deadlines, (target.deadline, self._seq, key, target))
        target.members[slot] = item
        target.filled[slot] = True
        self._count += 1
        if not all(target.filled):
            return None
        self._remove(key, target)
        return JoinGroup(key, tuple(target.members), target.opened_at, True)

    def tick(self, now: float) -> list[JoinGroup]:
        """Every group whose deadline is ``<= now``, incomplete, oldest deadline first."""
        expired: list[JoinGroup] = []
        while (deadline := self.next_deadline()) is not None and deadline <= now:
            _, _, key, group = heapq.heappop(self._deadlines)
            self._remove(key, group)
            expired.append(JoinGroup(key, tuple(group.members), group.opened_at, False))
        return expired

    def close(self) -> list[JoinGroup]:
        """Every open group, incomplete (oldest first); later ``add`` calls are refused."""
        self._closed = True
        left = [JoinGroup(g.key, g.members, g.opened_at, False) for g in self.open_groups()]
        self._open.clear()
        self._deadlines.clear()
        self._count = 0
        return left

    def _remove(self, key: Hashable, group: _Group) -> None:
        groups = self._open[key]
        groups.remove(group)
        if not groups:
            del self._open[key]
        self._count -= sum(group.filled)
