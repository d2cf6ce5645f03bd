"""The flow board's schema is versioned: a store of the previous version (whose board made
``flow_consumers`` itself, or not yet) is migrated, its open deliveries kept."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pydantic import BaseModel

from freight import BatchSpec, Flow
from freight.store import SqliteStore
from freight.store._dialect import SQLITE
from freight.store._migrations import MIGRATIONS
from freight.testing import FakeClock

FIRST_PASS_CONSUMERS = (
    "CREATE TABLE IF NOT EXISTS flow_consumers (flow TEXT NOT NULL, name TEXT NOT NULL,"
    " declaration TEXT NOT NULL, declared_at TEXT NOT NULL, PRIMARY KEY (flow, name))"
)


class Item(BaseModel):
    n: int


def version_2_store(path: Path, *, with_consumers: bool) -> None:
    """A store as freight left it at schema version 2, with one open delivery."""
    with sqlite3.connect(path) as db:
        for template in MIGRATIONS[:2]:
            db.executescript(SQLITE.render(template))
        if with_consumers:  # what the board of version 2 made when its flow started
            db.execute(FIRST_PASS_CONSUMERS)
            db.execute(
                "INSERT INTO flow_consumers VALUES ('default', 'b', '{}', '2025-01-01T00:00:00')"
            )
        db.execute(
            "INSERT INTO flow_artifacts VALUES ('default', 'a-1', 1, 'Item', '{\"n\": 7}', NULL,"
            " '{\"kind\": \"public\"}', NULL, NULL, 0, '2025-01-01T00:00:00+00:00')"
        )
        arrived = datetime.now(UTC).isoformat()  # its batch's deadline still ahead
        db.execute(
            "INSERT INTO flow_deliveries VALUES ('default', 'b', 'a-1', 1, ?, 'open')", (arrived,)
        )
        db.execute("PRAGMA user_version = 2")


@pytest.mark.parametrize("with_consumers", [True, False], ids=["board-made", "none"])
async def test_a_version_2_store_is_migrated_and_its_open_delivery_resumed(
    tmp_path: Path, with_consumers: bool
) -> None:
    path = tmp_path / "flow.db"
    version_2_store(path, with_consumers=with_consumers)
    store = SqliteStore(path)
    assert store.schema_version == len(MIGRATIONS) >= 3  # migrated to the latest
    [index] = store.query("SELECT sql FROM sqlite_master WHERE name = 'flow_deliveries_open'")
    assert "WHERE status = 'open'" in index["sql"]  # open deliveries alone

    flow = Flow(store=store, clock=FakeClock())
    got: list[int] = []

    @flow.consumer("b").consumes(Item, batch=BatchSpec(size=2, timeout=30))
    async def b(items: list[Item]) -> None:
        got.extend(i.n for i in items)

    await flow.publish(Item(n=8))  # the restored open delivery and this one: a batch of 2
    await flow.run_until_idle()
    assert got == [7, 8]
    [declared] = store.query("SELECT name FROM flow_consumers WHERE flow = 'default'")
    assert declared["name"] == "b"
    await flow.close()
    assert (
        store.query("SELECT count(*) AS n FROM flow_deliveries WHERE status = 'open'")[0]["n"] == 0
    )
    store.close()
