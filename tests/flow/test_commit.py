"""A durable board's routes are written in a worker thread, in order, before delivery;
routes queued together share a transaction, and one that cannot be written fails alone."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pydantic import BaseModel

from freight import BatchSpec, Flow
from freight.flow._artifacts import Envelope
from freight.flow._board import Board, Record
from freight.flow._commit import Committer
from freight.flow._visibility import Public
from freight.store import SqliteStore
from freight.testing import FakeClock


class Item(BaseModel):
    n: int


class Done(BaseModel):
    n: int


async def test_a_consumer_sees_an_artifact_only_once_it_is_on_the_board(tmp_path: Path) -> None:
    flow = Flow(store=tmp_path / "flow.db", clock=FakeClock())
    on_board: list[bool] = []
    reader = sqlite3.connect(tmp_path / "flow.db")

    def stored(kind: str) -> int:
        row = reader.execute("SELECT count(*) FROM flow_artifacts WHERE type = ?", (kind,))
        return int(row.fetchone()[0])

    @flow.consumer("double").consumes(Item, batch=BatchSpec(size=5)).publishes(Done)
    async def double(items: list[Item]) -> list[Done]:
        on_board.append(stored("Item") >= len(items))
        return [Done(n=2 * i.n) for i in items]

    @flow.consumer("check").consumes(Done, batch=BatchSpec(size=5))
    async def check(done: list[Done]) -> None:
        on_board.append(stored("Done") >= len(done))

    for n in range(20):
        await flow.publish(Item(n=n))
    await flow.close()
    reader.close()
    assert on_board == [True] * 8


async def test_the_board_is_written_off_the_event_loop_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    writers: set[str] = set()
    write = Board.write

    def spy(self: Board, *records: Record) -> None:
        writers.add(threading.current_thread().name)
        write(self, *records)

    monkeypatch.setattr(Board, "write", spy)
    flow = Flow(store=tmp_path / "flow.db", clock=FakeClock())
    got: list[int] = []

    @flow.consumer("c").consumes(Item, batch=BatchSpec(size=10)).publishes(Done)
    async def c(items: list[Item]) -> list[Done]:
        got.extend(i.n for i in items)
        return [Done(n=i.n) for i in items]

    await flow.publish_many(Item(n=n) for n in range(30))
    await flow.close()
    assert got == list(range(30))
    assert writers
    assert threading.current_thread().name not in writers
    assert len(flow.artifacts(Done)) == 30


async def test_routes_queued_together_share_a_transaction_and_a_bad_one_fails_alone(
    tmp_path: Path,
) -> None:
    store = SqliteStore(tmp_path / "flow.db")
    board = Board(store, "f")
    committer = Committer(board)
    now = datetime.now(UTC)

    def record(artifact_id: str, seq: int) -> Record:
        envelope = Envelope(artifact_id, "Item", Item(n=seq), None, 0.0, now, Public())
        return board.rows([(envelope, seq, ["c"])])

    delivered: list[str] = []
    first = committer.commit(record("a", 1), lambda: delivered.append("a"))
    again = committer.commit(record("a", 2), lambda: delivered.append("a again"))  # same id
    third = committer.commit(record("b", 3), lambda: delivered.append("b"))
    results = await asyncio.gather(first, again, third, return_exceptions=True)
    assert results[0] is None
    assert results[2] is None
    assert isinstance(results[1], sqlite3.IntegrityError)
    assert delivered == ["a", "b"]  # in order; the failed one never delivered
    rows = store.query("SELECT id, seq FROM flow_artifacts ORDER BY seq")
    assert [(r["id"], r["seq"]) for r in rows] == [("a", 1), ("b", 3)]
    assert committer.quiet
    store.close()


async def test_a_publish_whose_commit_cannot_reach_the_writer_thread_raises(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No worker thread to write in (an executor shut down): the publish fails, it does
    not wait forever."""
    flow = Flow(store=tmp_path / "flow.db", clock=FakeClock())
    flow.consumer("c").consumes(Item).does(lambda item: None)
    await flow.run_until_idle()

    async def no_thread(*args: object, **kwargs: object) -> None:
        raise RuntimeError("cannot schedule new futures after shutdown")

    monkeypatch.setattr(asyncio, "to_thread", no_thread)
    with pytest.raises(RuntimeError, match="after shutdown"):
        await flow.publish(Item(n=1))  # (pytest-timeout would catch a publish left waiting)
    monkeypatch.undo()
    await flow.close()
