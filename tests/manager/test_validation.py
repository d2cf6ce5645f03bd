"""Bad input is refused at submit, with a clear error, before anything is stored."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from freight import (
    BatchManager,
    BatchRequest,
    ConfigError,
    InvalidBatch,
    StoreError,
    UnknownEndpoint,
)
from freight.manager import MAX_REQUESTS
from freight.store import BoardStore, SqliteStore


def manager_on(store: BoardStore, **options: Any) -> BatchManager:
    manager = BatchManager(store=store, **options)
    manager.register("/echo", lambda bodies: bodies)
    return manager


def stored(store: BoardStore) -> tuple[int, int]:
    [b] = store.query("SELECT count(*) AS n FROM manager_batches")
    [r] = store.query("SELECT count(*) AS n FROM manager_requests")
    return int(b["n"]), int(r["n"])


def reqs(*ids: str) -> list[BatchRequest]:
    return [BatchRequest(id=i, body={"i": i}) for i in ids]


@pytest.mark.parametrize(
    ("requests", "options", "message"),
    [
        (reqs("a", "b", "a"), {}, r"request id 'a' is used twice \(requests 0 and 2\)"),
        ([], {}, "the batch is empty"),
        (
            [BatchRequest(id="big", body="x" * 2_000)],
            {"max_body_bytes": 1_000},
            "the body of request 'big' is 2,002 bytes as JSON, over the limit of 1,000",
        ),
        (reqs(*map(str, range(6))), {"max_requests": 5}, "more than 5 requests"),
        ([BatchRequest(id="nan", body=float("nan"))], {}, "the body of request 'nan' is not JSON"),
        ([BatchRequest(id="obj", body=object())], {}, "the body of request 'obj' is not JSON"),
        ([{"custom_id": "a"}], {}, "request 0 has no 'body'"),
        ([{"custom_id": 7, "body": 1}], {}, "request 0 has id 7"),
        (["just a string"], {}, "request 0 is a str"),
        ("abc", {}, "requests must be a list"),
    ],
)
async def test_bad_input_is_refused_before_anything_is_stored(
    store: BoardStore, requests: Any, options: dict[str, Any], message: str
) -> None:
    manager = manager_on(store, **options)
    with pytest.raises(InvalidBatch, match=message):
        await manager.submit(requests, endpoint="/echo")
    assert stored(store) == (0, 0)
    assert issubclass(InvalidBatch, ValueError)


async def test_an_unknown_endpoint_names_the_registered_ones(store: BoardStore) -> None:
    manager = manager_on(store)
    with pytest.raises(UnknownEndpoint, match=r"endpoint '/nope' \(registered: '/echo'\)"):
        await manager.submit(reqs("a"), endpoint="/nope")
    assert stored(store) == (0, 0)


def test_the_default_request_limit_is_50_000(store: BoardStore) -> None:
    assert MAX_REQUESTS == 50_000
    manager = manager_on(store)
    with pytest.raises(InvalidBatch, match="more than 50,000 requests"):
        manager.submit_sync(
            ({"custom_id": str(i), "body": i} for i in range(50_001)), endpoint="/echo"
        )
    assert stored(store) == (0, 0)


@pytest.mark.parametrize("window", ["0h", "soon", -1, "24x"])
def test_a_bad_completion_window_is_a_config_error(store: BoardStore, window: Any) -> None:
    manager = manager_on(store)
    with pytest.raises(ConfigError, match="completion_window"):
        manager.submit_sync(reqs("a"), endpoint="/echo", completion_window=window)
    assert stored(store) == (0, 0)


def test_register_refuses_what_cannot_serve() -> None:
    manager = BatchManager(store=":memory:")
    with pytest.raises(ConfigError, match="endpoint must be a non-empty str"):
        manager.register("", lambda b: b)
    with pytest.raises(TypeError, match="handler must be callable"):
        manager.register("/x", "nope")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="max_concurrent_batches"):
        manager.register("/x", lambda b: b, max_concurrent_batches=0)
    with pytest.raises(ConfigError, match="workers must be >= 1"):
        BatchManager(workers=0)


def test_requests_stream_in_and_a_bad_one_found_late_leaves_nothing(store: BoardStore) -> None:
    manager = manager_on(store)

    def requests(bad_at: int | None) -> Iterator[dict[str, Any]]:
        for i in range(12_000):
            yield {"custom_id": "dup" if i == bad_at else f"r{i}", "body": i}
        yield {"custom_id": "dup", "body": -1}

    with pytest.raises(InvalidBatch, match=r"'dup' is used twice \(requests 11000 and 12000\)"):
        manager.submit_sync(requests(11_000), endpoint="/echo")
    assert stored(store) == (0, 0)
    batch = manager.submit_sync(requests(None), endpoint="/echo")
    assert batch.request_counts.total == 12_001
    assert stored(store) == (1, 12_001)


def test_an_unknown_endpoint_is_a_value_error_and_a_key_error() -> None:
    assert issubclass(UnknownEndpoint, ValueError)
    assert issubclass(UnknownEndpoint, KeyError)
    assert str(UnknownEndpoint("no handler serves '/x'")) == "no handler serves '/x'"


def test_an_old_sqlite_is_refused_with_what_to_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite3, "sqlite_version_info", (3, 31, 1))
    monkeypatch.setattr(sqlite3, "sqlite_version", "3.31.1")
    store = SqliteStore(tmp_path / "old.db")
    with pytest.raises(StoreError, match=r"need SQLite 3\.35 or newer .* has SQLite 3\.31\.1"):
        BatchManager(store=store)
    store.close()
