"""Replaying a run's dead letters (``Job.retry_failed``): read again in one pass, write once.

The rules:

1. The run's open dead letters that have a position are read again in file order: in one
   pass when the source can (:class:`ReadsAt`), else one ``read(position)`` per letter.
   A position that no longer starts a record leaves its letter open.
2. The records go through the run's chunk handler in batches of the job's chunk size
   (``process``, the sink, retries and bad-item isolation, as in the run), never one
   call per record.
3. Each batch commits on its own, when its rows are written: the marking of its dead
   letters as replayed, the new dead letters of what failed again, and the counters.

   - With a shared transaction (a :class:`~freight.store.TransactionalSink` writing into
     the store's own database) the batch's rows and all of that are **one
     transaction**: killed at any point, a batch is wholly done or not at all, and a
     rerun replays exactly the letters still open. No row is written twice, no key
     needed: the run's own exactly-once guarantee.
   - Otherwise the sink commits the rows, then the store records the batch. A kill
     between the two leaves that batch's letters open and a rerun writes them again:
     at least once (at most the batch in flight), exactly once in effect with an
     idempotent sink (an upsert on a key), like the run itself.
4. Letters at the same position are one record: it is written once, and all of them
   are marked replayed.
5. With a ``key`` (a keyed load, whose chunks were written in order so that the file's
   last value of a key wins), the source is read once from the earliest letter, noting
   the last line of each key. A letter whose key a later line carries is **superseded**:
   it is resolved (marked replayed, an event ``superseded`` names the line that holds its
   key's value), never written, so a replay never puts an older line over a newer one.
   Only a key's last line is written again.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Hashable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from freight.jobs._chunk import ChunkHandler
from freight.jobs._report import SUPERSEDED
from freight.jobs._sources import Position, ReadAtSource, Record, Source
from freight.store import DeadLetter, SharedTransactionStore, Store, TransactionalSink
from freight.store._records import ReplayTarget

__all__ = ["ReadsAt", "Replay", "ReplayOutcome", "records_at"]


ReadsAt = ReadAtSource
"""A source that reads the records at many positions in one pass (``read_at``): the
sources' own optional port, :class:`~freight.jobs._sources.ReadAtSource`."""


def records_at(source: Source, positions: Sequence[Position]) -> Iterator[Record]:
    """The records of ``source`` at ``positions`` (ascending), in one pass when it can."""
    if isinstance(source, ReadsAt):
        return source.read_at(positions)
    return _one_by_one(source, positions)


def _one_by_one(source: Source, positions: Sequence[Position]) -> Iterator[Record]:
    """The slow path for a source without ``read_at``: one ``read(position)`` each."""
    for position in positions:
        record = next(iter(source.read(position)), None)
        if record is not None and record.position == position:
            yield record


@dataclass(frozen=True, slots=True)
class ReplayOutcome:
    """What a replay did: letters marked replayed, records written, new dead letters,
    and letters left open because their position no longer starts a record."""

    replayed: int = 0
    succeeded: int = 0
    failed: int = 0
    unread: int = 0
    superseded: int = 0


class Replay:
    """Replays the open dead letters of one run (see the module docstring).

    Args:
        job_id: the run.
        store: its store.
        source: the job's source (unchanged since the run: the caller checked).
        handler: the run's chunk handler.
        shared: the sink and the store when they share a transaction, else ``None``.
        batch_size: records per batch (the job's chunk size).
        heartbeat: called after each batch (the owner is alive).
        key: ``item -> hashable`` of the source's items, for a load whose last value of a
            key wins: a letter a later line of its key supersedes is resolved, not written
            (rule 5).
    """

    def __init__(
        self,
        *,
        job_id: str,
        store: Store,
        source: Source,
        handler: ChunkHandler,
        shared: tuple[TransactionalSink, SharedTransactionStore] | None,
        batch_size: int,
        heartbeat: Callable[[], None],
        key: Callable[[Any], Hashable] | None = None,
    ) -> None:
        self.job_id = job_id
        self.store = store
        self.source = source
        self.handler = handler
        self.shared = shared
        self.batch_size = batch_size
        self.heartbeat = heartbeat
        self.key = key

    def run(self) -> ReplayOutcome:
        """Replay every open dead letter with a position; return what was done."""
        by_position: dict[Position, list[ReplayTarget]] = {}
        for target in self.store.replay_targets(self.job_id):  # in position order
            by_position.setdefault(target.position, []).append(target)
        superseded = 0
        records: Iterator[Record]
        if self.key is not None and by_position:
            kept, superseded = self._supersede(by_position)
            records = iter(kept)
        else:
            records = records_at(self.source, list(by_position))
        replayed = superseded
        succeeded = failed = 0
        while batch := list(itertools.islice(records, self.batch_size)):
            batch = [r for r in batch if r.position in by_position]
            if not batch:
                continue
            letters = [by_position.pop(r.position) for r in batch]
            ids, written, dead = self._commit(batch, letters)
            replayed += len(ids)
            succeeded += written
            failed += dead
            self.heartbeat()
        unread = sum(map(len, by_position.values()))
        return ReplayOutcome(
            replayed=replayed, succeeded=succeeded + superseded, failed=failed, unread=unread,
            superseded=superseded,
        )  # fmt: skip

    def _supersede(
        self, by_position: dict[Position, list[ReplayTarget]]
    ) -> tuple[list[Record], int]:
        """Rule 5: read the source once from the earliest letter, noting each key's last
        line; resolve the letters a later line of their key supersedes (removed from
        ``by_position``) and return the records still to replay, in file order, and how
        many letters were resolved."""
        key = self.key
        assert key is not None
        last: dict[Hashable, Record] = {}
        wanted: list[tuple[Record, Hashable | None]] = []
        for record in self.source.read(min(by_position)):
            k: Hashable | None = None
            if record.error is None:
                try:
                    k = key(record.item)
                except Exception:  # no key: nothing can supersede it
                    k = None
                if k is not None:
                    last[k] = record
            if record.position in by_position:
                wanted.append((record, k))
        kept: list[Record] = []
        resolved: list[ReplayTarget] = []
        lines: list[list[Any]] = []
        for record, k in wanted:
            newer = None if k is None else last.get(k)
            if newer is None or newer.position <= record.position:
                kept.append(record)
                continue
            group = by_position.pop(record.position)
            resolved.extend(group)
            lines.append([*record.position, newer.ordinal, newer.unit])
        if resolved:
            # the event first: killed before the commit, a rerun resolves them again
            self.store.add_event(self.job_id, SUPERSEDED, {"letters": lines})
            self.store.commit_replay(self.job_id, [t.id for t in resolved], [], len(resolved))
            self.heartbeat()
        return kept, len(resolved)

    def _commit(
        self, batch: list[Record], letters: list[list[ReplayTarget]]
    ) -> tuple[list[int], int, int]:
        """Write one batch and record it (one transaction when shared): its letters'
        ids, the records written, and the new dead letters."""
        ids = [letter.id for group in letters for letter in group]
        index = letters[0][0].chunk_index or 0
        if self.shared is None:
            _, written, dead = self.handler.handle(index, batch)
            again = _again(dead, batch, letters)
            self.store.commit_replay(self.job_id, ids, again, written)
            return ids, written, len(again)
        sink, store = self.shared
        with sink.transaction() as conn:
            _, written, dead = self.handler.handle(index, batch)
            again = _again(dead, batch, letters)
            store.commit_replay_on(conn, self.job_id, ids, again, written)
        return ids, written, len(again)


def _again(
    dead: list[DeadLetter], batch: list[Record], letters: list[list[ReplayTarget]]
) -> list[DeadLetter]:
    """The new dead letters of records that failed again, counting every attempt so far
    and keeping the chunk of the letter they replace."""
    if not dead:
        return []
    first = {record.position: group[0] for record, group in zip(batch, letters, strict=True)}
    again = []
    for d in dead:
        old = None if d.position is None else first.get(d.position)
        again.append(
            DeadLetter(
                record_id=d.record_id, position=d.position, payload=d.payload,
                error_type=d.error_type, message=d.message, category=d.category,
                attempts=d.attempts + (old.attempts if old else 0),
                chunk_index=old.chunk_index if old else d.chunk_index,
            )
        )  # fmt: skip
    return again
