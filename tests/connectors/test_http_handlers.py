"""The HTTP batch handlers against a real HTTP server on 127.0.0.1 (a thread in this
process), and the status/error mapping on httpx's MockTransport.

The server's routes script what a real API does: a bulk endpoint answering one entry per
item, one that refuses a whole request for one bad item, one that is rate limited
(429 with ``Retry-After``) for its first requests, and a per-item endpoint that records
how many requests were in flight at once and over how many connections.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from freight import Batcher, BatchSpec, PermanentError, Retry, TransientError
from freight._core._plan import Reply
from freight._drivers._runner import settle_async
from freight._errors import ConfigError, ConfigTypeError
from freight.connectors import consume
from freight.connectors._httpkit import retry_after, status_error
from freight.connectors.http import Bulk, Fanout, bulk, classify, fanout
from freight.testing import MemoryBroker


class Api:
    """What the server saw: requests per route, in-flight peak, client connections."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.requests: dict[str, int] = {}
        self.in_flight = 0
        self.peak = 0
        self.peers: set[int] = set()
        self.busy_for = 0  # /busy answers 429 to this many requests first


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: the client's pool is visible as peers
    api: Api

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def reply(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self) -> None:
        api = self.api
        length = int(self.headers.get("Content-Length", 0))
        payload = json.loads(self.rfile.read(length) or b"null")
        route = self.path.split("?")[0]
        with api.lock:
            api.requests[route] = api.requests.get(route, 0) + 1
            api.peers.add(self.client_address[1])
            count = api.requests[route]
        if route == "/bulk":
            self.reply(200, [{"error": "odd"} if x % 2 else x * 10 for x in payload])
        elif route == "/strict":
            bad = [x for x in payload if x == 13]
            self.reply(400, {"error": "13 is refused"}) if bad else self.reply(200, payload)
        elif route == "/short":
            self.reply(200, payload[:-1])
        elif route == "/busy":
            if count <= api.busy_for:
                self.reply(429, {"error": "slow down"}, {"Retry-After": "30"})
            else:
                self.reply(200, {"results": payload})
        elif route == "/item":
            with api.lock:
                api.in_flight += 1
                api.peak = max(api.peak, api.in_flight)
            time.sleep(0.01)  # the server's work, so requests overlap (no timeout tested)
            with api.lock:
                api.in_flight -= 1
            if payload == "gone":
                self.reply(404, {"error": "no such thing"})
            elif payload == "later":
                self.reply(503, {"error": "maintenance"}, {"Retry-After": "7"})
            else:
                self.reply(200, {"echo": payload})
        else:
            self.reply(404, {"error": route})


@pytest.fixture
def server() -> Iterator[tuple[str, Api]]:
    api = Api()
    handler = type("ScriptedHandler", (Handler,), {"api": api})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", api
    httpd.shutdown()
    httpd.server_close()


async def test_bulk_sends_one_request_per_batch_and_maps_each_item(
    server: tuple[str, Api],
) -> None:
    base, api = server
    async with bulk(f"{base}/bulk") as handler:
        outcomes = await handler([0, 1, 2, 3])
    assert api.requests == {"/bulk": 1}
    assert [o if not isinstance(o, Exception) else repr(o) for o in outcomes] == [
        0, "PermanentError('the server refused this item: odd')", 20,
        "PermanentError('the server refused this item: odd')",
    ]  # fmt: skip


async def test_a_bulk_request_refused_for_one_item_is_bisected_to_that_item(
    server: tuple[str, Api],
) -> None:
    base, api = server
    broker = MemoryBroker()
    for n in range(16):
        broker.publish(n)
    async with Bulk(f"{base}/strict") as handler:
        report = await consume(broker, handler, spec=BatchSpec(size=16, timeout=0), until_idle=True)
    assert (report.acked, report.dead_lettered) == (15, 1)
    [(message, why)] = broker.dead
    assert message.body == 13
    assert why.startswith("PermanentError: POST http://127.0.0.1:")
    assert 'answered 400: {"error": "13 is refused"}' in why
    assert api.requests["/strict"] <= 1 + 2 * 4  # 2·log2(16) bisection requests at most


async def test_a_bulk_answer_of_the_wrong_length_fails_the_batch_permanently(
    server: tuple[str, Api],
) -> None:
    base, _ = server
    async with bulk(f"{base}/short") as handler:
        with pytest.raises(PermanentError, match="answered 2 entries for 3 items"):
            await handler([1, 2, 3])


async def test_429_retry_after_goes_through_the_retry_policy(server: tuple[str, Api]) -> None:
    base, api = server
    api.busy_for = 1
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    async with bulk(f"{base}/busy") as handler:

        async def call(items: list[Any]) -> Reply:
            try:
                return Reply(value=await handler(items))
            except Exception as exc:
                return Reply(error=exc)

        outcomes, attempts = await settle_async(
            [1, 2], call, Retry(attempts=3, backoff=0.1, jitter=0), random=lambda: 0.0,
            sleep=sleep,
        )  # fmt: skip
    assert outcomes == [1, 2]
    assert attempts == [2, 2]
    assert slept == [30.0]  # Retry-After, not the policy's 0.1 s


async def test_fanout_keeps_to_its_concurrency_over_one_pool(server: tuple[str, Api]) -> None:
    base, api = server
    async with fanout(f"{base}/item", concurrency=4) as handler:
        first = await handler(list(range(20)))
        second = await handler(list(range(20, 30)))
    assert first == [{"echo": n} for n in range(20)]
    assert second == [{"echo": n} for n in range(20, 30)]
    assert 1 < api.peak <= 4
    assert len(api.peers) <= 4  # connections reused across both batches


async def test_fanout_gives_each_item_its_own_outcome(server: tuple[str, Api]) -> None:
    base, _ = server
    async with Fanout(f"{base}/item", concurrency=3) as handler:
        outcomes = await handler(["a", "gone", "later", "b"])
    assert outcomes[0] == {"echo": "a"}
    assert isinstance(outcomes[1], PermanentError)
    assert "answered 404" in str(outcomes[1])
    assert isinstance(outcomes[2], TransientError)
    assert outcomes[2].retry_after == 7
    assert outcomes[3] == {"echo": "b"}


async def test_fanout_in_a_batcher_resolves_each_caller(server: tuple[str, Api]) -> None:
    base, _ = server
    handler = fanout(lambda item: f"{base}/item", concurrency=2)
    async with Batcher(handler, BatchSpec(size=3, timeout=0.01)) as batcher:
        assert await batcher.submit("x") == {"echo": "x"}
        with pytest.raises(PermanentError, match="404"):
            await batcher.submit("gone")
    await handler.aclose()


# -- the mapping alone, on httpx's MockTransport -----------------------------------------


def mock(handler: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.MockTransport(handler))


async def test_a_timeout_is_transient_and_keeps_the_cause() -> None:
    def timeout(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("read timed out", request=request)

    async with mock(timeout) as client:
        with pytest.raises(TransientError, match="HTTP timeout") as caught:
            await Bulk("http://api.test/b", client=client)([1])
        outcome = (await Fanout("http://api.test/f", client=client)([1]))[0]
    assert isinstance(caught.value.__cause__, httpx.ReadTimeout)
    assert isinstance(outcome, TransientError)


@pytest.mark.parametrize(
    ("status", "kind"),
    [(408, TransientError), (429, TransientError), (503, TransientError),
     (500, TransientError), (400, PermanentError), (404, PermanentError),
     (422, PermanentError), (501, PermanentError)],
)  # fmt: skip
def test_statuses_map_to_their_class(status: int, kind: type[Exception]) -> None:
    request = httpx.Request("POST", "http://api.test/x")
    error = status_error(httpx.Response(status, request=request, text="no"))
    assert isinstance(error, kind)
    assert f"POST http://api.test/x answered {status}: no" in str(error)
    assert status_error(httpx.Response(204, request=request)) is None


def test_retry_after_reads_seconds_and_http_dates() -> None:
    now = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
    assert retry_after("120") == 120.0
    assert retry_after(format_datetime(now + timedelta(seconds=90), usegmt=True), now=now) == 90
    assert retry_after(format_datetime(now - timedelta(seconds=90), usegmt=True), now=now) == 0
    assert retry_after("soon") is None
    assert retry_after("nan") is None
    assert retry_after(None) is None


def test_a_retry_after_past_the_cap_is_capped() -> None:
    """Found in review: ``Retry-After: Wed, 21 Oct 2099`` made a consumer wait ~73 years."""
    from freight.connectors._httpkit import MAX_RETRY_AFTER

    now = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
    far = format_datetime(datetime(2099, 10, 21, tzinfo=UTC), usegmt=True)
    assert retry_after(far, now=now) == MAX_RETRY_AFTER
    assert retry_after("1e12") == MAX_RETRY_AFTER
    assert retry_after(str(MAX_RETRY_AFTER - 1)) == MAX_RETRY_AFTER - 1


def test_classify_maps_transport_and_url_errors_and_keeps_the_rest() -> None:
    request = httpx.Request("GET", "http://api.test/")
    refused = classify(httpx.ConnectError("refused", request=request))
    assert isinstance(refused, TransientError)
    assert isinstance(classify(httpx.UnsupportedProtocol("ftp?")), PermanentError)
    status = httpx.HTTPStatusError(
        "x", request=request, response=httpx.Response(429, request=request)
    )
    assert isinstance(classify(status), TransientError)
    other = ValueError("x")
    assert classify(other) is other
    done = TransientError("already")
    assert classify(done) is done


async def test_an_unreachable_server_fails_each_fanout_item_transiently() -> None:
    async with Fanout("http://127.0.0.1:1/x", timeout=2) as handler:
        [outcome] = await handler(["x"])
    assert isinstance(outcome, TransientError)


async def test_a_fanout_item_that_cannot_be_sent_fails_alone_and_the_rest_go_once(
    server: tuple[str, Api],
) -> None:
    """An item JSON cannot encode, or whose url function raises, is that item's failure:
    the batch is not failed while its other requests go on unawaited (a retry of the
    batch would then send them twice)."""
    base, api = server

    def url(item: Any) -> str:
        if item == "no-url":
            raise KeyError(item)
        return f"{base}/item"

    async with fanout(url, concurrency=2) as handler:
        outcomes = await handler([1, {2}, "no-url", 3])
    assert outcomes[0] == {"echo": 1}
    assert isinstance(outcomes[1], PermanentError)
    assert "cannot be sent" in str(outcomes[1])
    assert "not JSON serializable" in str(outcomes[1])
    assert isinstance(outcomes[1].__cause__, TypeError)
    assert isinstance(outcomes[2], PermanentError)
    assert isinstance(outcomes[2].__cause__, KeyError)
    assert outcomes[3] == {"echo": 3}
    assert api.requests == {"/item": 2}


async def test_a_bulk_answer_that_is_not_json_fails_the_batch_permanently_naming_it() -> None:
    def garbage(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=b"<html>oops</html>")

    async with mock(garbage) as client:
        with pytest.raises(PermanentError, match="answered 200 with a body that is not JSON"):
            await Bulk("http://api.test/b", client=client)([1, 2])


@pytest.mark.parametrize("url", ["localhost:8080/bulk", "ftp://api.test/b", "/v1/embed", ""])
def test_a_url_that_cannot_be_requested_is_refused_when_the_handler_is_made(url: str) -> None:
    """Found at the first batch instead, it would fail every item permanently: a
    ``consume`` would dead-letter every message for a typo in its configuration."""
    with pytest.raises(ConfigError, match="absolute http:// or https:// URL"):
        bulk(url)
    with pytest.raises(ConfigError, match="absolute http:// or https:// URL"):
        fanout(url)


async def test_a_relative_url_is_taken_with_a_client_that_has_a_base_url() -> None:
    def echo(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=[str(request.url)])

    client = httpx.AsyncClient(transport=httpx.MockTransport(echo), base_url="http://api.test")
    async with client:
        assert await bulk("/v1/embed", client=client)([1]) == ["http://api.test/v1/embed"]


def test_a_url_of_the_wrong_type_is_refused() -> None:
    with pytest.raises(ConfigTypeError, match="bulk url must be"):
        bulk(5)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("client", "module", "extra"),
    [("httpx", "http", "http"), ("redis", "redis", "redis")],
)
def test_a_connector_imported_without_its_client_names_its_extra(
    client: str, module: str, extra: str
) -> None:
    code = f"import sys; sys.modules[{client!r}] = None; import freight.connectors.{module}"
    found = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert found.returncode != 0
    assert f"pip install 'freight[{extra}]'" in found.stderr


async def test_a_bulk_entry_with_a_null_error_is_a_success() -> None:
    """Many APIs (JSON-RPC among them) answer ``"error": null`` beside a success's result:
    only an error that is there fails its item."""

    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=[
            {"id": 1, "error": None}, {"id": 2, "error": "bad id"}, {"id": 3, "error": False},
        ])  # fmt: skip

    async with mock(answer) as client:
        outcomes = await Bulk("http://api.test/b", client=client)([1, 2, 3])
    assert outcomes[0] == {"id": 1, "error": None}
    assert isinstance(outcomes[1], PermanentError)
    assert outcomes[2] == {"id": 3, "error": False}


@pytest.mark.parametrize("status", [200, 202, 204])
async def test_a_bulk_answer_with_no_body_is_every_item_done(status: int) -> None:
    """A bulk endpoint that only accepts (204 No Content, 202 with nothing to say) answers
    every item: each one's outcome is ``None``, as a handler returning ``None``. (Read as
    "not JSON", it failed permanently, was bisected, every item sent again and
    dead-lettered.)"""
    calls: list[bytes] = []

    def accept(request: httpx.Request) -> httpx.Response:
        calls.append(request.content)
        return httpx.Response(status)

    async with mock(accept) as client:
        assert await Bulk("http://api.test/b", client=client)([1, 2, 3]) == [None, None, None]
    assert calls == [b"[1,2,3]"]


def test_a_redirect_names_where_it_points() -> None:
    request = httpx.Request("POST", "http://api.test/b")
    moved = httpx.Response(301, request=request, headers={"Location": "https://api.test/b"})
    error = status_error(moved)
    assert isinstance(error, PermanentError)
    assert "answered 301 (a redirect to https://api.test/b: use that url)" in str(error)
