"""The manager's claims on PostgreSQL: concurrent workers take disjoint chunks.

Four connections claim and write at once from four threads (``FOR UPDATE SKIP LOCKED``):
every request is claimed exactly once, each claim holds at most its limit, and the
batch ends with every result written once.
"""

from __future__ import annotations

import threading
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from freight.manager._models import Batch, BatchStatus, RequestCounts, RequestState
from freight.manager._store import Claimed, ManagerStore, Outcome, batch_id_at
from freight.store import BoardStore

WORKERS = 4
REQUESTS = 2_000
LIMIT = 7


@pytest.fixture
def stores(pg_store: BoardStore) -> Iterator[list[ManagerStore]]:
    from freight.store._postgres import PostgresStore

    conninfo = str(pg_store.path)  # type: ignore[attr-defined]
    others = [PostgresStore(conninfo) for _ in range(WORKERS - 1)]
    yield [ManagerStore(s) for s in (pg_store, *others)]
    for s in others:
        s.close()


def test_concurrent_claims_are_disjoint_and_every_request_ends_once(
    stores: list[ManagerStore],
) -> None:
    now = datetime.now(UTC)
    batch = Batch(
        id=batch_id_at(int(now.timestamp() * 1e6), uuid.uuid4().hex[:8]),
        endpoint="/e",
        status=BatchStatus.PENDING,
        request_counts=RequestCounts(total=0),
        created_at=now,
        expires_at=now + timedelta(hours=1),
    )
    stores[0].create(batch, ((f"r{i}", str(i)) for i in range(REQUESTS)))
    claimed: list[list[Claimed]] = [[] for _ in stores]
    sizes: list[int] = []

    def work(n: int) -> None:
        store = stores[n]
        while True:
            token = uuid.uuid4().hex
            chunk = store.claim(
                "/e", LIMIT, token=token, owner=(f"w{n}", "host", n),
                lease_until=now.timestamp() + 60, now=datetime.now(UTC),
            )  # fmt: skip
            if not chunk:
                return
            sizes.append(len(chunk))
            claimed[n].extend(chunk)
            outcomes = [
                Outcome(c.batch_id, c.idx, RequestState.COMPLETED, response=c.body, attempts=1)
                for c in chunk
            ]
            written, _ = store.write(token, outcomes, worker=f"w{n}", now=datetime.now(UTC))
            assert written == len(chunk)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(WORKERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=50)
    every = Counter(c.idx for chunk in claimed for c in chunk)
    assert sorted(every) == list(range(REQUESTS))
    assert set(every.values()) == {1}  # none claimed twice
    assert max(sizes) <= LIMIT
    assert sum(1 for chunk in claimed if chunk) >= 2  # the work was shared
    done = stores[0].get(batch.id)
    assert done.status is BatchStatus.COMPLETED
    assert done.request_counts.completed == REQUESTS
    assert sum(stores[0].workers(batch.id).values()) == REQUESTS
