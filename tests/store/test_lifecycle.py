"""The job lifecycle table, with plain values: no store, no clock."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from freight import FreightError
from freight.store import (
    DONE,
    LIVE,
    RESUMABLE,
    STATUSES,
    STOPPED,
    TERMINAL,
    TRANSITIONS,
    IllegalTransition,
    JobStatus,
    Move,
)
from freight.store._lifecycle import check_transition

S, E, P, R = Move.START, Move.END, Move.PAUSE, Move.REVISE

# Every (from, to) pair: the move, or None where the lifecycle forbids it. Rows are the
# current status, columns the next, in STATUSES order:
#   pending running paused completed completed_with_errors failed cancelled
EXPECTED: dict[JobStatus, tuple[Move | None, ...]] = {
    "pending": (None, S, None, None, None, E, E),
    "running": (None, S, P, E, E, E, E),
    "paused": (None, S, None, None, None, E, E),
    "completed": (None, None, None, None, None, None, None),
    "completed_with_errors": (None, None, None, R, None, None, None),
    "failed": (None, S, None, None, None, None, None),
    "cancelled": (None, S, None, None, None, None, None),
}


@pytest.mark.parametrize("current", STATUSES)
@pytest.mark.parametrize("to", STATUSES)
def test_the_table_allows_exactly_these_moves(current: JobStatus, to: JobStatus) -> None:
    expected = EXPECTED[current][STATUSES.index(to)]
    assert TRANSITIONS[current].get(to) is expected
    if expected is None:
        with pytest.raises(IllegalTransition, match=f"cannot go from {current} to {to}"):
            check_transition(current, to)
    else:
        assert check_transition(current, to) is expected


def test_the_sets_the_cli_and_the_report_read() -> None:
    assert set(TRANSITIONS) == set(STATUSES)
    assert {"completed", "completed_with_errors"} == DONE
    assert {"failed", "cancelled"} == STOPPED
    assert {"pending", "running", "paused", "failed", "cancelled"} == RESUMABLE
    assert TERMINAL == DONE | STOPPED
    assert {"running", "paused"} == LIVE
    assert not LIVE & TERMINAL


def test_every_move_into_an_ending_status_is_an_end_or_a_revision() -> None:
    for moves in TRANSITIONS.values():
        for to, move in moves.items():
            if to in TERMINAL:
                assert move in (Move.END, Move.REVISE)
            else:
                assert move is {"running": Move.START, "paused": Move.PAUSE}[to]


def test_the_error_names_the_run_and_the_fix() -> None:
    with pytest.raises(IllegalTransition) as caught:
        check_transition("completed", "running", run="run abc")
    assert isinstance(caught.value, FreightError)
    assert str(caught.value) == (
        "run abc cannot go from completed to running: a done run never runs again: run the "
        "job with fresh=True for a new run"
    )
    with pytest.raises(IllegalTransition, match="from failed a run may go to: running"):
        check_transition("failed", "cancelled")
    with pytest.raises(IllegalTransition, match="status 'lost', which is not a job status"):
        check_transition("lost", "running")


@given(st.lists(st.sampled_from(STATUSES), max_size=30))
def test_any_walk_of_legal_moves_from_pending_keeps_the_rules(wanted: list[JobStatus]) -> None:
    """Follow the legal moves among the wanted ones: a done run never runs again, and
    a run only ends (or pauses) after it started."""
    status: JobStatus = "pending"
    started = False
    for to in wanted:
        if to not in TRANSITIONS[status]:
            continue
        if status in DONE:
            assert to in DONE
        if to == "paused" or to in DONE:
            assert started
        started = started or to == "running"
        status = to
    assert status in STATUSES


def test_every_status_is_reachable_from_pending() -> None:
    seen: set[JobStatus] = {"pending"}
    frontier: list[JobStatus] = ["pending"]
    while frontier:
        for to in TRANSITIONS[frontier.pop()]:
            if to not in seen:
                seen.add(to)
                frontier.append(to)
    assert seen == set(STATUSES)
