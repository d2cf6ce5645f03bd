"""Ordered writes (``Job(ordered_writes=True)``): a chunk's writes wait for the chunks
before it, and with a sink's ``conflict_keys`` only for those sharing a key with it."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from freight import FreightError, Job
from freight.jobs import WriteContext
from freight.jobs._chunk import WriteOrder
from freight.store import ChunkCheckpoint, DeadLetter, JobRecord, SqliteStore


class SlowCheckpoints(SqliteStore):
    """A store whose checkpoint of chunk 0 waits (at most ``patience`` seconds) for a
    write of chunk 1 to begin: one that begins before chunk 0 is checkpointed shows."""

    def __init__(self, path: Path, wrote_one: threading.Event, patience: float) -> None:
        super().__init__(path)
        self.wrote_one = wrote_one
        self.patience = patience
        self.early: list[bool] = []

    def commit_chunk(
        self, job_id: str, checkpoint: ChunkCheckpoint, dead_letters: Sequence[DeadLetter] = ()
    ) -> JobRecord:
        if checkpoint.index == 0:
            self.early.append(self.wrote_one.wait(self.patience))
        return super().commit_chunk(job_id, checkpoint, dead_letters)


def test_a_chunk_writes_only_after_the_chunk_before_it_is_checkpointed(tmp_path: Path) -> None:
    """Chunk 0's rows are committed but its checkpoint is not yet when chunk 1 may
    write: a crash there redoes chunk 0 on resume, after chunk 1's newer value of a
    key, which it would put back to the older one. Chunk 1 must wait for the
    checkpoint, not only for the rows."""
    wrote_one = threading.Event()
    rows: dict[int, int] = {}

    def sink(items: list[dict[str, int]], context: WriteContext) -> None:
        if context.chunk_index == 1:
            wrote_one.set()
        for item in items:
            rows[item["id"]] = item["seq"]

    store = SlowCheckpoints(tmp_path / "s.db", wrote_one, patience=0.3)
    data = [{"id": seq % 5, "seq": seq} for seq in range(20)]
    job = Job("order", data, sink, chunk_size=10, workers=2, ordered_writes=True, store=store)
    assert job.run().status == "completed"
    assert store.early == [False]  # chunk 1 had not begun to write
    assert rows == {k: 15 + k for k in range(5)}


# -- keys: chunks of disjoint keys write at once -------------------------------------------


@settings(max_examples=300, deadline=None)
@given(
    chunks=st.lists(
        st.one_of(st.none(), st.frozensets(st.integers(0, 6), max_size=3)), min_size=1,
        max_size=12,
    ),
    picks=st.lists(st.integers(0, 1_000), min_size=40, max_size=40),
    declare_late=st.lists(st.booleans(), min_size=12, max_size=12),
)  # fmt: skip
def test_each_key_is_written_in_ticket_order_and_no_chunk_waits_forever(
    chunks: list[frozenset[int] | None], picks: list[int], declare_late: list[bool]
) -> None:
    """Any chunks' keys (``None``: unknown), declared in any order, written whenever
    :class:`WriteOrder` lets them, in any order it allows: the chunks writing one key
    write it in ticket order, a chunk of unknown keys writes after every chunk before
    it, and the chunks all write (the oldest open one is always free)."""
    order = WriteOrder()
    tickets = [order.ticket() for _ in chunks]
    for ticket, keys in zip(tickets, chunks, strict=True):
        if not declare_late[ticket]:
            order.declare(ticket, keys)
    written: list[int] = []
    open_ = list(tickets)
    late = [t for t in tickets if declare_late[t]]
    draws = iter(picks)
    while open_:
        if late and next(draws, 0) % 3 == 0:
            ticket = late.pop(0)
            order.declare(ticket, chunks[ticket])
            continue
        free = [t for t in open_ if t not in late and order._clear(t)]
        assert free or late, "no chunk may write, none left to declare: a deadlock"
        if not free:
            ticket = late.pop(0)
            order.declare(ticket, chunks[ticket])
            continue
        ticket = free[next(draws, 0) % len(free)]
        written.append(ticket)
        open_.remove(ticket)
        order.done(ticket)
    assert sorted(written) == tickets
    for at, ticket in enumerate(written):
        for earlier in tickets[:ticket]:
            if earlier in written[at:]:  # written after this chunk, though before it
                mine, theirs = chunks[ticket], chunks[earlier]
                assert mine is not None
                assert theirs is not None
                assert mine.isdisjoint(theirs)


@settings(max_examples=300, deadline=None)
@given(
    chunks=st.lists(
        st.one_of(st.none(), st.frozensets(st.integers(0, 6), max_size=3)), min_size=1,
        max_size=12,
    ),
    fails=st.lists(st.booleans(), min_size=12, max_size=12),
    picks=st.lists(st.integers(0, 1_000), min_size=40, max_size=40),
)  # fmt: skip
def test_no_chunk_writes_a_key_after_an_earlier_chunk_holding_it_failed(
    chunks: list[frozenset[int] | None], fails: list[bool], picks: list[int]
) -> None:
    """Chunks fail at random once free to write (their rows may be in the target): a
    later chunk that may share a key with a failed one gives up rather than write, the
    others still write, and none waits forever."""
    order = WriteOrder()
    tickets = [order.ticket() for _ in chunks]
    for ticket, keys in zip(tickets, chunks, strict=True):
        order.declare(ticket, keys)
    failed: list[int] = []
    written: list[int] = []
    open_ = list(tickets)
    draws = iter(picks)
    while open_:
        states = {t: order._clear(t) for t in open_}
        ready = [t for t, state in states.items() if state is not None]
        assert ready, "every open chunk waits: a deadlock"
        ticket = ready[next(draws, 0) % len(ready)]
        open_.remove(ticket)
        if states[ticket] is False:  # gave up: a failed chunk before it may clash
            with pytest.raises(FreightError, match="may share a key"):
                order.wait(ticket)
            order.abandon(ticket)  # as the run does for a chunk that raised
        elif fails[ticket]:
            failed.append(ticket)
            order.abandon(ticket)
        else:
            order.wait(ticket)  # returns at once
            written.append(ticket)
        order.done(ticket)
    for ticket in written:
        for gone in failed:
            if gone < ticket:
                mine, theirs = chunks[ticket], chunks[gone]
                assert mine is not None
                assert theirs is not None
                assert mine.isdisjoint(theirs)


class KeyedTable:
    """A sink that names the keys of its writes, noting which chunks write at once."""

    def __init__(self, hold_first: bool) -> None:
        self.rows: dict[int, int] = {}
        self.lock = threading.Lock()
        self.second_began = threading.Event()
        self.hold_first = hold_first
        self.overlapped = False

    def conflict_keys(self, items: list[dict[str, int]]) -> set[int]:
        return {item["id"] for item in items}

    def write(self, items: list[dict[str, int]], context: WriteContext) -> None:
        if context.chunk_index == 1:
            self.second_began.set()
        if context.chunk_index == 0 and self.hold_first:  # waits for chunk 1 to begin
            self.overlapped = self.second_began.wait(10)
        with self.lock:
            for item in items:
                self.rows[item["id"]] = item["seq"]


def test_chunks_of_disjoint_keys_write_at_once(tmp_path: Path) -> None:
    """Chunk 0 (keys 0-9) holds its write until chunk 1 (keys 10-19) begins its own:
    with a serial order that never happens (the wait ends after 10 s, failing)."""
    table = KeyedTable(hold_first=True)
    data = [{"id": seq, "seq": seq} for seq in range(40)]
    job = Job("disjoint", data, table, chunk_size=10, workers=2, ordered_writes=True,
              store=SqliteStore(tmp_path / "s.db"))  # fmt: skip
    assert job.run().status == "completed"
    assert table.overlapped
    assert table.rows == {seq: seq for seq in range(40)}


def test_chunks_sharing_a_key_still_write_in_order(tmp_path: Path) -> None:
    """Every chunk holds keys 0-9: each waits for the one before it, whatever the
    workers' timing (the even chunks are held back until the next is processed)."""
    from tests.jobs.test_job import hold_back_even_chunks

    table = KeyedTable(hold_first=False)
    data = [{"id": seq % 10, "seq": seq} for seq in range(200)]
    job = Job("shared", data, table, chunk_size=10, workers=4, ordered_writes=True,
              process_chunk=hold_back_even_chunks(20),
              store=SqliteStore(tmp_path / "s.db"))  # fmt: skip
    assert job.run().status == "completed"
    assert table.rows == {k: 190 + k for k in range(10)}


def test_a_sink_that_cannot_name_its_keys_is_written_in_order(tmp_path: Path) -> None:
    """``conflict_keys`` raising (an item it cannot read) counts as unknown keys."""

    class Failing(KeyedTable):
        def conflict_keys(self, items: list[dict[str, int]]) -> set[int]:
            raise ValueError("cannot read")

    table = Failing(hold_first=False)
    data = [{"id": seq % 10, "seq": seq} for seq in range(100)]
    job = Job("unknown", data, table, chunk_size=10, workers=3, ordered_writes=True,
              store=SqliteStore(tmp_path / "s.db"))  # fmt: skip
    assert job.run().status == "completed"
    assert table.rows == {k: 90 + k for k in range(10)}


class FailingCheckpoint(SqliteStore):
    """A store whose first checkpoint of chunk 0 fails (a store briefly unavailable),
    once chunk 1 has been handed out (so that it is waiting its turn)."""

    def __init__(self, path: Path, submitted: threading.Event) -> None:
        super().__init__(path)
        self.submitted = submitted
        self.failed = False

    def commit_chunk(
        self, job_id: str, checkpoint: ChunkCheckpoint, dead_letters: Sequence[DeadLetter] = ()
    ) -> JobRecord:
        if checkpoint.index == 0 and not self.failed:
            self.failed = True
            self.submitted.wait(10)
            raise OSError("disk I/O error")
        return super().commit_chunk(job_id, checkpoint, dead_letters)


def test_a_chunk_that_failed_after_writing_keeps_the_chunks_sharing_its_keys_out(
    tmp_path: Path,
) -> None:
    """Chunk 0's rows are committed, its checkpoint fails: the run fails, and chunk 1
    (the same keys, newer values) must not write, or the resume would redo chunk 0 over
    its values. After the resume each key holds its last value."""
    submitted = threading.Event()
    rows: dict[int, int] = {}

    def process_chunk(chunk: list[dict[str, int]]) -> list[dict[str, int]]:
        if chunk[0]["seq"] == 10:
            submitted.set()
        return chunk

    def sink(items: list[dict[str, int]]) -> None:
        for item in items:
            rows[item["id"]] = item["seq"]

    store = FailingCheckpoint(tmp_path / "s.db", submitted)
    data = [{"id": seq % 5, "seq": seq} for seq in range(20)]

    def job() -> Job:
        return Job("order", data, sink, chunk_size=10, workers=2, ordered_writes=True,
                   process_chunk=process_chunk, store=store)  # fmt: skip

    with pytest.raises(OSError, match="disk I/O"):
        job().run()
    assert rows == {k: 5 + k for k in range(5)}  # chunk 1 did not write
    assert job().run().status == "completed"
    assert rows == {k: 15 + k for k in range(5)}
