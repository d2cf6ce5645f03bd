"""Edges a hostile user finds: the exact end of a completion window, a handler that
answers ``None`` for a call some of whose requests were cancelled, an input file saved
with a byte-order mark."""

from __future__ import annotations

import asyncio
import io
import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from freight import (
    BatchManager,
    BatchRequest,
    BatchSpec,
    BatchStatus,
    ConfigError,
    InvalidBatch,
    Retry,
    TransientError,
)
from freight.cli import app as cli_app
from freight.cli._batch import read_input, write_results
from freight.manager import RequestState, UnknownBatch
from freight.store import BoardStore
from freight.testing import FakeClock
from tests.manager.test_cancel_expire_reclaim import numbered, until


@pytest.mark.parametrize(("window", "seconds"), [("24h", 86_400), ("1h", 3600), (60, 60)])
async def test_a_batch_expires_at_the_exact_end_of_its_completion_window(
    store: BoardStore, clock: FakeClock, window: str | int, seconds: int
) -> None:
    manager = BatchManager(store=store, clock=clock)
    manager.register("/x", lambda bodies: bodies)
    job = await manager.submit(numbered(2), endpoint="/x", completion_window=window)
    await clock.advance(seconds - 1)
    assert await manager.get_status(job.id) is BatchStatus.PENDING
    await clock.advance(1)  # now == expires_at: the window has passed
    batch = await manager.get(job.id)
    assert batch.status is BatchStatus.EXPIRED
    assert batch.request_counts.expired == 2


async def test_a_worker_sweeping_at_the_exact_end_of_the_window_expires_the_batch(
    store: BoardStore, clock: FakeClock
) -> None:
    manager = BatchManager(store=store, clock=clock)
    manager.register("/x", lambda bodies: bodies)
    job = await manager.submit(numbered(2), endpoint="/x", completion_window=60)
    await clock.advance(60)
    await manager.run(burst=True)
    [row] = store.query(f"SELECT status, completed FROM manager_batches WHERE id = '{job.id}'")
    assert (row["status"], row["completed"]) == ("expired", 0)


async def test_a_handler_answering_none_leaves_a_cancelled_batch_s_requests_cancelled(
    store: BoardStore, clock: FakeClock
) -> None:
    # None is "every item done" in the handler contract: only for the items it was given
    calls: list[list[str]] = []

    def handler(bodies: list[str]) -> None:
        calls.append(bodies)
        if len(calls) == 1:
            raise TransientError("busy")  # the whole call: retried after 1 s of the clock

    manager = BatchManager(store=store, clock=clock)
    manager.register(
        "/x", handler, spec=BatchSpec(size=4), retry=Retry(attempts=3, backoff=1, jitter=0)
    )
    a = await manager.submit([BatchRequest(id=i, body=f"a{i}") for i in "12"], endpoint="/x")
    b = await manager.submit([BatchRequest(id=i, body=f"b{i}") for i in "12"], endpoint="/x")
    async with manager:
        await until(lambda: len(calls) == 1, "the first call")
        await manager.cancel(a.id)
        await clock.advance(1)
        done_a, done_b = await manager.wait(a.id, timeout=10), await manager.wait(b.id, timeout=10)
    assert calls == [["a1", "a2", "b1", "b2"], ["b1", "b2"]]
    assert done_a.status is BatchStatus.CANCELLED
    assert (done_a.request_counts.cancelled, done_a.request_counts.completed) == (2, 0)
    assert [r.status for r in await manager.get_results(a.id)] == [RequestState.CANCELLED] * 2
    assert done_b.request_counts.completed == 2


def test_an_input_file_saved_with_a_byte_order_mark_is_read(tmp_path: Path) -> None:
    path = tmp_path / "requests.jsonl"
    lines = [
        '{"custom_id": "a", "method": "POST", "url": "/v1/x", "body": 1}',
        '{"custom_id": "b", "method": "POST", "url": "/v1/x", "body": 2}',
    ]
    path.write_bytes(b"\xef\xbb\xbf" + "\r\n".join(lines).encode() + b"\r\n")
    endpoint, requests = read_input(path, None)
    assert endpoint == "/v1/x"
    assert [(r.custom_id, r.body) for r in requests] == [("a", 1), ("b", 2)]


def test_results_on_stdout_are_the_exported_lines_even_for_a_lone_surrogate(
    tmp_path: Path,
) -> None:
    # JSON text may hold "\ud800" (a lone surrogate): it has no UTF-8 encoding, so a
    # line written with ensure_ascii=False cannot reach stdout (it raised a traceback)
    manager = BatchManager(store=tmp_path / "freight.db")
    manager.register("/x", lambda bodies: bodies)
    job = manager.submit_sync(
        [BatchRequest(id="a", body="x\ud800y"), BatchRequest(id="b", body="été")], endpoint="/x"
    )
    manager.run_sync(burst=True)
    stdout = io.TextIOWrapper(io.BytesIO(), encoding="utf-8", newline="")
    assert asyncio.run(write_results(manager, job.id, stdout)) == 2
    stdout.flush()
    exported = tmp_path / "out.jsonl"
    manager.export_results_sync(job.id, exported)
    manager.close()
    assert stdout.buffer.getvalue() == exported.read_bytes()
    bodies = [json.loads(line)["response"]["body"] for line in exported.read_text().splitlines()]
    assert bodies == ["x\ud800y", "été"]


@pytest.mark.parametrize("bad_id", ["a\x00b", "a\ud800"])
async def test_an_id_the_store_cannot_hold_as_text_is_refused_before_anything_is_stored(
    store: BoardStore, bad_id: str
) -> None:
    # NUL: PostgreSQL text refuses it; a lone surrogate has no UTF-8 (either store).
    # Both came out as the driver's own errors (psycopg.DataError, UnicodeEncodeError)
    manager = BatchManager(store=store)
    manager.register("/x", lambda bodies: bodies)
    requests = [BatchRequest(id="ok", body=0), BatchRequest(id=bad_id, body=1)]
    with pytest.raises(InvalidBatch, match=r"request 1 has id .*: an id is stored as text"):
        await manager.submit(requests, endpoint="/x")
    assert await manager.list() == []


def test_a_jsonl_custom_id_with_a_lone_surrogate_is_one_line_and_exit_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # --app is looked up from the current directory
    app = tmp_path / "surrogate_app.py"
    app.write_text(
        "from freight import BatchManager\n"
        f"manager = BatchManager({str(tmp_path / 'freight.db')!r})\n"
        "manager.register('/v1/x', lambda bodies: bodies)\n"
    )
    lines = tmp_path / "in.jsonl"
    lines.write_text('{"custom_id": "a\\ud800", "method": "POST", "url": "/v1/x", "body": 1}\n')
    result = CliRunner().invoke(
        cli_app, ["batch", "submit", str(lines), "--app", "surrogate_app:manager"]
    )
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("freight: error: request 0 has id 'a\\ud800'")
    assert len(result.stderr.strip().splitlines()) == 1


async def test_an_error_message_quoting_a_nul_or_a_lone_surrogate_is_stored_escaped(
    store: BoardStore,
) -> None:
    # The message of a request's error often quotes its body. Stored as it was, a NUL
    # (PostgreSQL) or a lone surrogate (no UTF-8) failed the chunk's write, so the
    # chunk was redone after every lease, forever, its other results never written.
    def handler(bodies: list[str]) -> list[object]:
        return [b if b == "ok" else ValueError(f"cannot do {b}") for b in bodies]

    manager = BatchManager(store=store)
    manager.register("/x", handler)
    job = await manager.submit(
        [BatchRequest(id="1", body="ok"), BatchRequest(id="2", body="a\x00"),
         BatchRequest(id="3", body="b\ud800")],
        endpoint="/x",
    )  # fmt: skip
    await manager.run(burst=True)
    batch = await manager.get(job.id)
    assert batch.status is BatchStatus.COMPLETED
    assert (batch.request_counts.completed, batch.request_counts.failed) == (1, 2)
    ok, nul, surrogate = await manager.get_results(job.id)
    assert ok.response == "ok"
    assert nul.error is not None
    assert surrogate.error is not None
    assert (nul.error.type, nul.error.message) == ("ValueError", "cannot do a\\x00")
    assert surrogate.error.message == "cannot do b\\ud800"


@pytest.mark.parametrize("bad_id", ["a\x00b", "\udcff", 7])
async def test_a_batch_id_no_store_can_hold_is_an_unknown_batch(
    store: BoardStore, bad_id: str
) -> None:
    # "\udcff": what a command line's undecodable byte becomes (freight batch status $'\xff')
    manager = BatchManager(store=store)
    manager.register("/x", lambda bodies: bodies)
    for call in (manager.get, manager.get_status, manager.cancel, manager.get_results):
        with pytest.raises(UnknownBatch, match="no managed batch"):
            await call(bad_id)
    with pytest.raises(ConfigError, match="after must be a batch id"):
        await manager.list(after=bad_id)


@pytest.mark.parametrize(
    "spec", [BatchSpec(size=100, max_bytes=20), BatchSpec(size=10, max_cost=3, cost=len)]
)
def test_a_spec_the_worker_would_not_apply_is_refused_at_register(spec: BatchSpec) -> None:
    # Calls are sized by spec.size alone: a max_bytes of 20 used to be ignored, and
    # calls of 100 requests (1,200 bytes) sent.
    manager = BatchManager()
    with pytest.raises(ConfigError, match=r"endpoint '/x': .* sized by spec.size"):
        manager.register("/x", lambda bodies: bodies, spec=spec)
    assert manager.endpoints == {}


def nested(depth: int) -> list[object]:
    """A list nested ``depth`` deep: past what ``json`` encodes (RecursionError)."""
    outer: list[object] = []
    inner = outer
    for _ in range(depth):
        deeper: list[object] = []
        inner.append(deeper)
        inner = deeper
    return outer


async def test_a_body_nested_too_deep_for_json_is_an_invalid_batch(store: BoardStore) -> None:
    manager = BatchManager(store=store)
    manager.register("/x", lambda bodies: bodies)
    with pytest.raises(InvalidBatch, match=r"the body of request 'deep' is not JSON"):
        await manager.submit([BatchRequest(id="deep", body=nested(100_000))], endpoint="/x")
    with pytest.raises(InvalidBatch, match=r"metadata must be JSON"):
        await manager.submit(
            [BatchRequest(id="a", body=1)], endpoint="/x", metadata={"m": nested(100_000)}
        )
    assert await manager.list() == []


async def test_a_response_nested_too_deep_for_json_fails_that_request_alone(
    store: BoardStore,
) -> None:
    # A RecursionError escaped the worker: the chunk was redone after every lease, forever
    deep = nested(100_000)
    manager = BatchManager(store=store)
    manager.register("/x", lambda bodies: [deep if b == "deep" else b for b in bodies])
    job = await manager.submit(
        [BatchRequest(id="1", body="ok"), BatchRequest(id="2", body="deep")], endpoint="/x"
    )
    await manager.run(burst=True)
    ok, failed = await manager.get_results(job.id)
    assert (ok.status, ok.response) == (RequestState.COMPLETED, "ok")
    assert failed.error is not None
    assert failed.error.type == "HandlerContractError"
    assert "is not JSON" in failed.error.message


def test_a_jsonl_line_nested_too_deep_is_a_config_error_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "deep.jsonl"
    path.write_text('{"custom_id": "a", "body": ' + "[" * 100_000 + "]" * 100_000 + "}\n")
    with pytest.raises(ConfigError, match=r"deep.jsonl:1: not JSON \(nested too deep"):
        read_input(path, "/x")


class Unprintable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no str for you")


async def test_an_error_whose_str_raises_fails_its_request_alone(store: BoardStore) -> None:
    manager = BatchManager(store=store)
    manager.register("/x", lambda bodies: [Unprintable() if b else b for b in bodies])
    job = await manager.submit(
        [BatchRequest(id="1", body=0), BatchRequest(id="2", body=1)], endpoint="/x"
    )
    await manager.run(burst=True)
    ok, failed = await manager.get_results(job.id)
    assert (ok.status, ok.response) == (RequestState.COMPLETED, 0)
    assert failed.error is not None
    assert failed.error.type == "Unprintable"
    assert "str() raised RuntimeError" in failed.error.message


class Unlistable(dict[str, int]):
    """A dict whose items cannot be read: json raises what items() raises."""

    def items(self) -> Any:
        raise RuntimeError("no items for you")


async def test_a_response_json_cannot_encode_for_any_reason_fails_that_request_alone(
    store: BoardStore,
) -> None:
    manager = BatchManager(store=store)
    manager.register("/x", lambda bodies: [Unlistable(a=1) if b else b for b in bodies])
    job = await manager.submit(
        [BatchRequest(id="1", body=0), BatchRequest(id="2", body=1)], endpoint="/x"
    )
    await manager.run(burst=True)
    ok, failed = await manager.get_results(job.id)
    assert (ok.status, ok.response) == (RequestState.COMPLETED, 0)
    assert failed.error is not None
    assert failed.error.type == "HandlerContractError"
    assert "no items for you" in failed.error.message
    with pytest.raises(InvalidBatch, match=r"the body of request 'b' is not JSON"):
        await manager.submit([BatchRequest(id="b", body=Unlistable(a=1))], endpoint="/x")
