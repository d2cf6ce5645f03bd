"""The lifecycle of a managed batch: its statuses and the legal moves between them.

Pure: no I/O, no clock. The store checks every status change of a batch with
:func:`check_transition` in the transaction that makes it, and stamps the column the
move names. The rules:

1. A batch is created ``pending``.
2. A worker's first claim of one of its requests moves it to ``processing``.
3. When every request has its final result, it is ``completed`` (whatever each request's
   own outcome: a request's failure never fails its batch).
4. ``cancel`` moves a live batch (``pending``, ``processing``) to ``cancelling``: no
   request starts after that, the ones in flight finish; then it is ``cancelled``.
5. A live batch past its completion window is ``expired``; a batch being cancelled
   ends ``cancelled`` all the same.
6. ``failed``: the batch as a whole could not run. ``submit`` refuses such a batch
   before storing it (unknown endpoint, bad requests), so this freight writes it for
   none yet; the status is kept for stores shared with tools that do.
7. ``completed``, ``failed``, ``cancelled`` and ``expired`` are final.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

from freight._errors import IllegalTransition
from freight.manager._models import BatchStatus

__all__ = ["STAMPS", "BATCH_TRANSITIONS", "check_transition"]

_P, _R, _D = BatchStatus.PENDING, BatchStatus.PROCESSING, BatchStatus.COMPLETED
_F, _CI, _CD, _E = (
    BatchStatus.FAILED, BatchStatus.CANCELLING, BatchStatus.CANCELLED, BatchStatus.EXPIRED
)  # fmt: skip

# The one table: current status -> the statuses it may move to.
BATCH_TRANSITIONS: Final[Mapping[BatchStatus, frozenset[BatchStatus]]] = MappingProxyType({
    _P: frozenset({_R, _F, _CI, _E}),
    _R: frozenset({_D, _F, _CI, _E}),
    _CI: frozenset({_CD}),
    _D: frozenset(),
    _F: frozenset(),
    _CD: frozenset(),
    _E: frozenset(),
})  # fmt: skip
"""Each batch status and the statuses it may move to (final ones: none)."""

STAMPS: Final[Mapping[BatchStatus, str]] = MappingProxyType({
    _R: "in_progress_at",
    _D: "completed_at",
    _F: "failed_at",
    _CI: "cancelling_at",
    _CD: "cancelled_at",
    _E: "expired_at",
})  # fmt: skip
"""The timestamp column each move stamps (the status it reaches → the column)."""


def check_transition(current: str, to: BatchStatus, *, batch: str = "the batch") -> str:
    """The column to stamp when ``batch`` moves from ``current`` to ``to``.

    Raises :class:`~freight.IllegalTransition` naming the batch, both statuses and the
    legal moves when the lifecycle forbids it.
    """
    try:
        status = BatchStatus(current)
    except ValueError:
        raise IllegalTransition(
            f"{batch} has status {current!r}, which is not a batch status "
            f"({', '.join(BatchStatus)}): the store holds a row this freight did not write"
        ) from None
    if to in BATCH_TRANSITIONS[status]:
        return STAMPS[to]
    legal = ", ".join(sorted(BATCH_TRANSITIONS[status])) or "none: it has ended"
    raise IllegalTransition(
        f"{batch} cannot go from {status} to {to}: from {status} a batch may go to: {legal}"
    )
