"""The join buffer: a pure state machine that correlates items of several kinds.

Rules (the flow's correlated consumers and AND gates obey exactly these):

1. A join has ``arity`` slots (a flow's ``.consumes(A, B)`` has two,
   ``.consumes(A, A, A)`` three). Items arrive with a key and the slots they may
   fill, in order of preference (an ``A`` may fill any ``A`` slot).
2. A *group* opens when an item arrives for a key that has no open group with one
   of its slots free. Its window is one of:

   - a **time window** (``JoinSpec(within=30.0)`` or a ``timedelta``): its deadline
     is that arrival plus ``within`` seconds;
   - a **count window** (``JoinSpec(within=10)``, an ``int``): it must complete
     within the next ``within`` items that arrive in its *scope* (``scope(key)``:
     the whole buffer by default; a flow's tenant), the completing item included;
   - **none** (``spec=None``: an AND gate without a key): it waits until ``close``.
3. An item fills the oldest open group of its key that has one of its slots free and
   whose window is still open, in the first such slot. When every slot is filled the
   group leaves, complete, from ``add``.
4. ``tick(now)`` returns every group whose window closed (its deadline ``< now``:
   strictly after ``within`` seconds, as in Flock; or more than ``within`` items
   arrived in its scope since it opened), incomplete,
   in the order the windows closed: an expired group is *returned*, never dropped,
   so the caller decides (dead letter or partial delivery).
5. ``close()`` returns every open group (and every expired one not yet collected),
   incomplete, and refuses further items.
6. Every added item leaves in exactly one group.

The buffer never reads a clock: ``now`` is handed in. A group whose window closed is
never completed late: ``add`` skips it, and the next ``tick`` returns it (call
``tick`` after ``add`` to collect the groups a count window closed).
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from freight._core._time import to_seconds
from freight._errors import BatcherClosed, ConfigError

__all__ = ["JoinBuffer", "JoinGroup", "JoinSpec", "OpenGroup"]


class JoinSpec:
    """Correlate one item of each consumed kind sharing a key, within a window.

    Args:
        by: the correlation key: an attribute name (``"device_id"``) or a callable
            ``item -> hashable``.
        within: the window, as in Flock: seconds (a ``float`` or a ``timedelta``)
            from a group's first item until it expires incomplete (a *time window*),
            or an ``int``: the group must complete within that many further items of
            the joined kinds (a *count window*). ``30`` is a count, ``30.0`` seconds.

    Attributes:
        within: the window as given: float seconds, or an int count.
        seconds: the time window, or ``None`` for a count window.
        count: the count window, or ``None`` for a time window.

    Raises:
        ConfigError: ``by`` is neither a name nor a callable, or ``within`` is not a
            positive duration or count.
    """

    __slots__ = ("by", "within")

    by: str | Callable[[Any], Hashable]
    within: float | int

    def __init__(
        self, by: str | Callable[[Any], Hashable], within: float | int | timedelta
    ) -> None:
        if not (callable(by) or (isinstance(by, str) and by)):
            raise ConfigError(
                f"JoinSpec.by must be an attribute name or a callable (item -> key), got {by!r}"
            )
        self.by = by
        if isinstance(within, int) and not isinstance(within, bool):
            if within < 1:
                raise ConfigError(
                    f"JoinSpec.within as an int is a count window (items), which must be "
                    f">= 1, got {within!r}; pass seconds as a float or a timedelta"
                )
            self.within = within
        elif isinstance(within, bool):
            raise ConfigError(
                f"JoinSpec.within must be seconds (a float or a timedelta) or a count of "
                f"items (an int), got {within!r}"
            )
        else:
            self.within = to_seconds(within, "JoinSpec.within", allow_zero=False)

    @property
    def count(self) -> int | None:
        """The count window (items), or ``None`` for a time window."""
        return self.within if isinstance(self.within, int) else None

    @property
    def seconds(self) -> float | None:
        """The time window (seconds), or ``None`` for a count window."""
        return self.within if isinstance(self.within, float) else None

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
        return (self.by, self.within, type(self.within)) == (
            other.by,
            other.within,
            type(other.within),
        )

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
    """A group still waiting (for introspection): key, members so far, times.

    ``deadline`` is ``None`` for a count window or a gate without one.
    """

    key: Hashable
    members: tuple[Any, ...]
    opened_at: float
    deadline: float | None


class _Group:
    __slots__ = ("deadline", "filled", "limit", "members", "open", "opened_at", "seq")

    def __init__(
        self, arity: int, opened_at: float, deadline: float | None, limit: int | None, seq: int
    ) -> None:
        self.members: list[Any] = [None] * arity
        self.filled = [False] * arity
        self.opened_at = opened_at
        self.deadline = deadline  # time window: expires once now passes it
        self.limit = limit  # count window: the last arrival (in its scope) it may take
        self.seq = seq
        self.open = True


class JoinBuffer:
    """Pure state machine correlating items by key; see the module rules.

    Args:
        spec: the :class:`JoinSpec` (its ``within`` is each group's window), or
            ``None`` for groups without a window (an AND gate: they wait for close).
        arity: how many slots a complete group has (≥ 2).
        scope: ``key -> scope`` for count windows: items are counted per scope (a
            flow counts per tenant); one scope for the whole buffer by default.
    """

    def __init__(
        self,
        spec: JoinSpec | None,
        arity: int,
        *,
        scope: Callable[[Hashable], Hashable] | None = None,
    ) -> None:
        if spec is not None and not isinstance(spec, JoinSpec):
            raise ConfigError(f"spec must be a freight.JoinSpec or None, got {spec!r}")
        if arity < 2:
            raise ConfigError(f"a join correlates at least 2 items, got arity {arity}")
        self.spec = spec
        self.arity = arity
        self._seconds = spec.seconds if spec is not None else None
        self._window = spec.count if spec is not None else None
        self._scope = scope
        self._open: dict[Hashable, list[_Group]] = {}
        self._deadlines: list[tuple[float, int, Hashable, _Group]] = []
        self._windows: dict[Hashable, deque[tuple[int, Hashable, _Group]]] = {}
        self._arrivals: dict[Hashable, int] = {}
        self._expired: list[JoinGroup] = []  # closed by a count window, for tick()
        self._seq = 0
        self._count = 0
        self._closed = False

    def __len__(self) -> int:
        """Items waiting in open groups."""
        return self._count

    def next_deadline(self) -> float | None:
        """When ``tick`` next has a group to return: just after the earliest deadline of
        an open group with a time window (a window closes strictly after its deadline),
        or ``None``."""
        deadline = self._earliest()
        return None if deadline is None else math.nextafter(deadline, math.inf)

    def _earliest(self) -> float | None:
        """The earliest deadline of an open group with a time window, or ``None``."""
        heap = self._deadlines
        while heap:
            deadline, _, _, group = heap[0]
            if group.open:
                return deadline
            heapq.heappop(heap)
        return None

    def open_groups(self) -> list[OpenGroup]:
        """The groups still waiting, oldest first."""
        groups = sorted(
            ((key, g) for key, open_ in self._open.items() for g in open_),
            key=lambda kg: (kg[1].opened_at, kg[1].seq),
        )
        return [OpenGroup(key, tuple(g.members), g.opened_at, g.deadline) for key, g in groups]

    def add(
        self, key: Hashable, slots: int | Sequence[int], item: Any, now: float
    ) -> JoinGroup | None:
        """Put ``item`` in the first free of ``slots`` of the oldest open group of ``key``
        that has one (rule 3); return the group if that completed it."""
        if self._closed:
            raise BatcherClosed("the join buffer is closed; it takes no more items")
        wanted = (slots,) if isinstance(slots, int) else tuple(slots)
        if not wanted or not all(0 <= s < self.arity for s in wanted):
            raise ValueError(f"slots must be in 0..{self.arity - 1}, got {slots!r}")
        arrival = self._arrive(key) if self._window is not None else None
        target: _Group | None = None
        slot = wanted[0]
        for group in self._open.get(key, ()):
            if group.deadline is not None and group.deadline < now:
                continue  # its window closed: the next tick returns it
            free = next((s for s in wanted if not group.filled[s]), None)
            if free is not None:
                target, slot = group, free
                break
        if target is None:
            target = self._start(key, now, arrival)
        target.members[slot] = item
        target.filled[slot] = True
        self._count += 1
        if not all(target.filled):
            return None
        self._remove(key, target)
        return JoinGroup(key, tuple(target.members), target.opened_at, True)

    def tick(self, now: float) -> list[JoinGroup]:
        """Every group whose window closed (rule 4), incomplete: those a count window
        closed first, then those whose deadline is ``< now``, oldest deadline first."""
        expired, self._expired = self._expired, []
        while (deadline := self._earliest()) is not None and deadline < now:
            _, _, key, group = heapq.heappop(self._deadlines)
            self._remove(key, group)
            expired.append(JoinGroup(key, tuple(group.members), group.opened_at, False))
        return expired

    def close(self) -> list[JoinGroup]:
        """Every group not yet returned, incomplete (expired ones, then the open ones,
        oldest first); later ``add`` calls are refused."""
        self._closed = True
        left = self._expired + [
            JoinGroup(g.key, g.members, g.opened_at, False) for g in self.open_groups()
        ]
        self._open.clear()
        self._deadlines.clear()
        self._windows.clear()
        self._expired = []
        self._count = 0
        return left

    def _arrive(self, key: Hashable) -> int:
        """Count an arrival in ``key``'s scope; close the windows it exceeds."""
        assert self._window is not None
        scope = self._scope(key) if self._scope is not None else None
        arrival = self._arrivals.get(scope, 0) + 1
        self._arrivals[scope] = arrival
        window = self._windows.get(scope)
        while window and window[0][0] < arrival:  # limits grow in opening order
            _, group_key, group = window.popleft()
            if group.open:
                self._remove(group_key, group)
                self._expired.append(
                    JoinGroup(group_key, tuple(group.members), group.opened_at, False)
                )
        return arrival

    def _start(self, key: Hashable, now: float, arrival: int | None) -> _Group:
        self._seq += 1
        deadline = now + self._seconds if self._seconds is not None else None
        limit = arrival + self._window if arrival is not None and self._window else None
        group = _Group(self.arity, now, deadline, limit, self._seq)
        self._open.setdefault(key, []).append(group)
        if deadline is not None:
            heapq.heappush(self._deadlines, (deadline, self._seq, key, group))
        if limit is not None:
            scope = self._scope(key) if self._scope is not None else None
            self._windows.setdefault(scope, deque()).append((limit, key, group))
        return group

    def _remove(self, key: Hashable, group: _Group) -> None:
        group.open = False
        groups = self._open[key]
        groups.remove(group)
        if not groups:
            del self._open[key]
        self._count -= sum(group.filled)
