"""The lifecycle of a job run: its statuses and the legal moves between them.

Pure: no I/O, no clock. The store checks every status change against :data:`TRANSITIONS`
in the transaction that makes it; the job engine, the report and the CLI read the sets
derived from it. The rules:

1. A run is created ``pending``.
2. An execution *starts* a run (→ ``running``) that is pending, that ended early
   (``failed``, ``cancelled``: it resumes from its checkpoints), or that an owner left
   ``running`` or ``paused`` when it died (the new owner takes it over).
3. At a chunk boundary a running run *pauses* when asked (→ ``paused``); a paused run
   *starts* again when asked to resume.
4. An execution *ends* its run: ``completed`` (every item handled, none failed),
   ``completed_with_errors`` (some items dead-lettered), ``failed`` (a threshold or an
   error stopped it) or ``cancelled`` (asked to stop, or a signal). A paused run ends
   only early (``failed``, ``cancelled``): it is between chunks, never done.
5. A pending run may be given up before it starts: ``failed`` or ``cancelled``.
6. A run that ended *done* (``completed``, ``completed_with_errors``) never runs again
   (a fresh run is a new record); replaying its dead letters (``retry-failed``) may
   only *revise* it from ``completed_with_errors`` to ``completed``.

Each legal move says what it writes besides the status (a :class:`Move`), so the store
stamps the same fields for the same move, whatever backend it runs on.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from types import MappingProxyType
from typing import Final, Literal

from freight._errors import IllegalTransition

__all__ = [
    "DONE",
    "LIVE",
    "RESUMABLE",
    "STATUSES",
    "STOPPED",
    "TERMINAL",
    "TRANSITIONS",
    "JobStatus",
    "Move",
    "check_transition",
]

JobStatus = Literal[
    "pending", "running", "paused", "completed", "completed_with_errors", "failed", "cancelled"
]

STATUSES: Final[tuple[JobStatus, ...]] = (
    "pending", "running", "paused", "completed", "completed_with_errors", "failed", "cancelled"
)  # fmt: skip


class Move(enum.Enum):
    """What a legal transition writes besides the new status."""

    START = "start"
    """→ ``running``: ``started_at`` stamped unless set; ``completed_at``, the reason and
    any pending control request (a consumed ``resume``) cleared."""
    PAUSE = "pause"
    """→ ``paused``: the status alone."""
    END = "end"
    """→ an ending status: ``completed_at`` stamped, the reason recorded."""
    REVISE = "revise"
    """A done run re-judged after a replay: the status alone (times and reason kept)."""


_START, _PAUSE, _END, _REVISE = Move.START, Move.PAUSE, Move.END, Move.REVISE

# The one table: current status -> {next status: the move that gets there}.
TRANSITIONS: Final[Mapping[JobStatus, Mapping[JobStatus, Move]]] = MappingProxyType({
    "pending": {"running": _START, "failed": _END, "cancelled": _END},
    "running": {
        "running": _START,  # taken over from an owner that died
        "paused": _PAUSE,
        "completed": _END,
        "completed_with_errors": _END,
        "failed": _END,
        "cancelled": _END,
    },
    "paused": {"running": _START, "failed": _END, "cancelled": _END},
    "completed": {},
    "completed_with_errors": {"completed": _REVISE},
    "failed": {"running": _START},
    "cancelled": {"running": _START},
})  # fmt: skip

TERMINAL: Final[frozenset[JobStatus]] = frozenset(
    {"completed", "completed_with_errors", "failed", "cancelled"}
)
"""Where an execution leaves its run: nothing works on it until a next execution."""

RESUMABLE: Final[frozenset[JobStatus]] = frozenset(
    status for status, moves in TRANSITIONS.items() if "running" in moves
)
"""From where an execution may start the run (again): running the job resumes it."""

DONE: Final[frozenset[JobStatus]] = TERMINAL - RESUMABLE
"""Ended with every item handled: reported, never run again."""

STOPPED: Final[frozenset[JobStatus]] = TERMINAL & RESUMABLE
"""Ended early (``failed``, ``cancelled``): running the job again resumes it."""

LIVE: Final[frozenset[JobStatus]] = frozenset({"running", "paused"})
"""Held by an execution, alive as long as its owner's heartbeat is fresh."""


def check_transition(current: str, to: JobStatus, *, run: str = "the run") -> Move:
    """The move from ``current`` to ``to``; raises :class:`IllegalTransition` if none.

    ``run`` names the run in the message (its id).
    """
    moves = TRANSITIONS.get(current)  # type: ignore[call-overload]
    if moves is None:
        raise IllegalTransition(
            f"{run} has status {current!r}, which is not a job status "
            f"({', '.join(STATUSES)}): the store holds a row this freight did not write"
        )
    move: Move | None = moves.get(to)
    if move is not None:
        return move
    if current in DONE:
        fix = "a done run never runs again: run the job with fresh=True for a new run"
    elif to not in STATUSES:
        fix = f"{to!r} is not a job status ({', '.join(STATUSES)})"
    else:
        legal = ", ".join(sorted(moves)) or "none"
        fix = f"from {current} a run may go to: {legal}"
    raise IllegalTransition(f"{run} cannot go from {current} to {to}: {fix}")
