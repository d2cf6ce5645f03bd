"""Flow pattern 3, database bulk insert: events written to PostgreSQL 500 at a time
(or every 2 s) with one COPY, through freight's PostgreSQL sink; a bad row fails alone.

Run: python examples/flow_db_insert.py [postgresql://postgres@127.0.0.1:5432/test]
(needs `pip install 'freight[postgres]'` and a PostgreSQL server).
"""

from __future__ import annotations

import asyncio
import sys
import uuid

import psycopg
from psycopg import sql
from pydantic import BaseModel

from freight import BatchSpec, Flow
from freight.connectors.postgres import AsyncPostgresSink


class PageView(BaseModel):
    id: int
    path: str
    ms: int | None


async def main(url: str) -> None:
    table = f"page_views_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("CREATE TABLE {} (id bigint PRIMARY KEY, path text, ms int NOT NULL)").format(
                sql.Identifier(table)
            )
        )
    sink = AsyncPostgresSink(url, table, mode="copy")

    async def insert(batch: list[PageView]) -> list[object] | None:
        return await sink.write([view.model_dump() for view in batch])

    flow = Flow()
    (flow.consumer("db")
         .consumes(PageView, batch=BatchSpec(size=500, timeout=2))
         .does(insert))  # fmt: skip
    try:
        async with flow:
            for i in range(2_000):
                await flow.publish(PageView(id=i, path=f"/p/{i % 7}", ms=None if i == 1234 else i))
        await sink.aclose()
        with psycopg.connect(url) as conn:
            count = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table)))
            print(f"rows in {table}: {count.fetchone()[0]}")  # type: ignore[index]
        for dead in flow.dead_letters():
            print(f"dead letter: page view {dead.artifacts[0].id}: {dead.error}")
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(table)))


if __name__ == "__main__":
    asyncio.run(
        main(sys.argv[1] if len(sys.argv) > 1 else "postgresql://postgres@127.0.0.1:5432/test")
    )
