"""The lifecycle of a managed batch: one table, one function, every move stamped."""

from __future__ import annotations

import itertools

import pytest

from freight import BatchStatus, IllegalTransition
from freight.manager._lifecycle import BATCH_TRANSITIONS, STAMPS, check_transition

S = BatchStatus


def test_the_nagents_path_and_the_issue_s_moves_are_legal() -> None:
    legal = {(a, b) for a, moves in BATCH_TRANSITIONS.items() for b in moves}
    assert legal == {
        (S.PENDING, S.PROCESSING), (S.PROCESSING, S.COMPLETED),
        (S.PENDING, S.FAILED), (S.PROCESSING, S.FAILED),
        (S.PENDING, S.CANCELLING), (S.PROCESSING, S.CANCELLING), (S.CANCELLING, S.CANCELLED),
        (S.PENDING, S.EXPIRED), (S.PROCESSING, S.EXPIRED),
    }  # fmt: skip


@pytest.mark.parametrize(("current", "to"), list(itertools.product(S, S)))
def test_every_move_is_stamped_or_refused_with_the_legal_ones(current: S, to: S) -> None:
    if to in BATCH_TRANSITIONS[current]:
        assert check_transition(current, to) == STAMPS[to]
        assert STAMPS[to].endswith("_at")
    else:
        with pytest.raises(IllegalTransition, match=f"cannot go from {current} to {to}"):
            check_transition(current, to, batch="batch b1")


def test_ended_statuses_go_nowhere() -> None:
    for status in S:
        assert status.terminal == (not BATCH_TRANSITIONS[status])
    with pytest.raises(IllegalTransition, match="none: it has ended"):
        check_transition("completed", S.CANCELLING)


def test_a_status_this_freight_did_not_write_is_named() -> None:
    with pytest.raises(IllegalTransition, match="'weird', which is not a batch status"):
        check_transition("weird", S.COMPLETED)
