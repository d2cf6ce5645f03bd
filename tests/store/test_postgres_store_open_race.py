"""Several processes opening a new PostgreSQL store at the same instant all succeed."""

from __future__ import annotations

import multiprocessing
import uuid
from multiprocessing.synchronize import Barrier

import psycopg
import pytest
from psycopg import sql

from freight.store import PostgresStore
from tests.services import POSTGRES_URL, require


def _open(conninfo: str, barrier: Barrier, results: multiprocessing.Queue[str]) -> None:
    barrier.wait(30)
    try:
        PostgresStore(conninfo).close()
        results.put("ok")
    except Exception as exc:  # reported to the parent, which asserts on it
        results.put(f"{type(exc).__name__}: {exc}")


def test_four_processes_create_one_store_schema_at_once() -> None:
    require("127.0.0.1", 5432, "PostgreSQL")
    context = multiprocessing.get_context("spawn")
    for _ in range(2):  # the race lost 9 times in 10 before the schema lock
        schema = f"freight_race_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
        try:
            conninfo = f"{POSTGRES_URL}?options=-csearch_path%3D{schema}"
            barrier = context.Barrier(4)
            results: multiprocessing.Queue[str] = context.Queue()
            children = [
                context.Process(target=_open, args=(conninfo, barrier, results)) for _ in range(4)
            ]
            for child in children:
                child.start()
            outcomes = [results.get(timeout=60) for _ in children]
            for child in children:
                child.join(30)
            assert outcomes == ["ok"] * 4
        finally:
            with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
                conn.execute(
                    sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema))
                )


pytestmark = pytest.mark.slow
