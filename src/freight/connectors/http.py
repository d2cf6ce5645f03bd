"""HTTP batch handlers on httpx: a batch as one bulk request, or fanned out under a limit.

``pip install 'freight[http]'``. Both are async batch handlers (``items -> outcomes``, the
handler contract), so they plug into a :class:`~freight.Batcher`, a Flow consumer, or
:func:`~freight.connectors.consume`, and their failures go through the one retry policy:

- :func:`bulk`: one request carries the whole batch (a JSON array by default); the
  response is mapped back to one outcome per item (a JSON array of the same length, or
  ``{"results": [...]}``; an entry ``{"error": ...}`` fails its item alone). A status
  that refuses the request fails the whole batch, and the policy retries it (transient)
  or bisects it to find the item the server refuses (permanent).
- :func:`fanout`: one request per item, at most ``concurrency`` at once over one shared
  connection pool; each item gets its own response's outcome.

Failures (:func:`classify`, :func:`~freight.connectors._httpkit.status_error`): 429 and 503
(and 408, 425, 500, 502, 504) are a :class:`~freight.TransientError` carrying the
``Retry-After`` wait, which :class:`~freight.Retry` honours; timeouts and dropped
connections are transient; any other 4xx is a :class:`~freight.PermanentError`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from datetime import timedelta
from types import TracebackType
from typing import Any, Self

from freight._core._time import to_positive_int, to_seconds
from freight._errors import ConfigError, ConfigTypeError, PermanentError, TransientError
from freight.connectors._httpkit import classify, status_error

import httpx  # isort: skip  (after _httpkit, which names the extra when it is missing)

__all__ = ["Bulk", "Fanout", "bulk", "classify", "fanout", "json_results"]

Results = Callable[[httpx.Response, list[Any]], Sequence[Any]]
"""``(response, items) -> one outcome per item``: how a bulk response maps back."""


def _entry(entry: Any) -> Any:
    """A bulk response entry: its value, or the item's error for ``{"error": ...}``
    (``"error": null`` or ``false`` beside a result, as JSON-RPC answers, is a success)."""
    if isinstance(entry, Mapping) and entry.get("error") not in (None, False):
        status = entry.get("status")
        text = f"the server refused this item: {entry['error']}"
        if isinstance(status, int) and status in (408, 425, 429, 500, 502, 503, 504):
            return TransientError(text)
        return PermanentError(text)
    return entry


def json_results(response: httpx.Response, items: list[Any]) -> list[Any]:
    """The default bulk mapping: a JSON array with one entry per item (or
    ``{"results": [...]}``), or no body at all (204: every item done, its outcome
    ``None``); an entry that is an object with an ``"error"`` key fails
    its item (transient if it also has a ``"status"`` of 429, 503, …), unless that
    error is ``null`` or ``false``."""
    if not response.content:  # 204, or a 200/202 that only accepts: every item done
        return [None] * len(items)
    try:
        body = response.json()
    except ValueError as exc:  # not JSON, or not text at all
        text = " ".join(response.text.split())[:200]
        raise PermanentError(
            f"{response.request.method} {response.request.url} answered "
            f"{response.status_code} with a body that is not JSON ({exc}): {text!r}; a bulk "
            "endpoint must answer JSON, or pass results=(response, items) -> list"
        ) from exc
    if isinstance(body, Mapping) and isinstance(body.get("results"), list):
        body = body["results"]
    if not isinstance(body, list) or len(body) != len(items):
        got = f"{len(body)} entries" if isinstance(body, list) else type(body).__name__
        raise PermanentError(
            f"{response.request.method} {response.request.url} answered {got} for "
            f"{len(items)} items; a bulk endpoint must answer a JSON array with one entry "
            'per item (or {"results": [...]}), or pass results=(response, items) -> list'
        )
    return [_entry(entry) for entry in body]


def _timeout(value: float | timedelta | httpx.Timeout, name: str) -> httpx.Timeout:
    if isinstance(value, httpx.Timeout):
        return value
    return httpx.Timeout(to_seconds(value, name, allow_zero=False))


def _check_url(url: object, name: str, client: httpx.AsyncClient | None) -> None:
    """Refuse a URL no request can go to when the handler is made: found at the first
    batch instead, it would fail every item permanently (a ``consume`` would dead-letter
    every message for a typo). A path is taken with a ``client`` that has a ``base_url``."""
    if not isinstance(url, str | httpx.URL):
        raise ConfigTypeError(
            f"{name} url must be a str, got {url!r} ({type(url).__name__}); "
            "pass 'https://host/path'"
        )
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as exc:
        raise ConfigError(f"{name} url {url!r} is not a URL: {exc}") from exc
    if parsed.scheme in ("http", "https") and parsed.host:
        return
    if not parsed.scheme and client is not None and str(client.base_url):
        return
    raise ConfigError(
        f"{name} url must be an absolute http:// or https:// URL (or a path, with a "
        f"client= that has a base_url), got {str(url)!r}; for example "
        "'http://localhost:8080/bulk'"
    )


def _unsendable(item: Any, error: Exception) -> Exception:
    """The outcome of an item whose request cannot be built (its ``url`` or ``body``
    function raised, JSON cannot encode it): that item's failure alone."""
    if isinstance(error, TransientError | PermanentError):
        return error
    mapped = PermanentError(
        f"item of type {type(item).__name__} cannot be sent: {error}; pass url= and body= "
        "functions that accept it (the body must be JSON-able)"
    )
    mapped.__cause__ = error
    return mapped


class _Client:
    """The shared client: the caller's (left open), or one opened here (closed by aclose)."""

    def __init__(
        self,
        client: httpx.AsyncClient | None,
        timeout: httpx.Timeout,
        headers: Mapping[str, str] | None,
        limits: httpx.Limits,
    ) -> None:
        self._owned = client is None
        self.client = client or httpx.AsyncClient(
            timeout=timeout, headers=dict(headers or {}), limits=limits
        )

    async def aclose(self) -> None:
        """Close the client if this handler opened it."""
        if self._owned:
            await self.client.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()


class Bulk(_Client):
    """An async batch handler sending each batch as one request (see :func:`bulk`)."""

    def __init__(
        self,
        url: str,
        *,
        method: str = "POST",
        client: httpx.AsyncClient | None = None,
        timeout: float | timedelta | httpx.Timeout = 30.0,
        headers: Mapping[str, str] | None = None,
        body: Callable[[list[Any]], Any] = list,
        results: Results = json_results,
    ) -> None:
        _check_url(url, "bulk", client)
        super().__init__(client, _timeout(timeout, "bulk timeout"), headers, httpx.Limits())
        self.url, self.method = url, method.upper()
        self._body, self._results = body, results

    async def __call__(self, items: list[Any]) -> list[Any]:
        """Send ``items`` in one request; one outcome per item."""
        try:
            response = await self.client.request(self.method, self.url, json=self._body(items))
        except httpx.HTTPError as exc:
            raise classify(exc) from exc
        error = status_error(response)
        if error is not None:
            raise error
        return list(self._results(response, items))


class Fanout(_Client):
    """An async batch handler sending one request per item, ``concurrency`` at once
    (see :func:`fanout`)."""

    def __init__(
        self,
        url: str | Callable[[Any], str],
        *,
        method: str = "POST",
        concurrency: int = 10,
        client: httpx.AsyncClient | None = None,
        timeout: float | timedelta | httpx.Timeout = 30.0,
        headers: Mapping[str, str] | None = None,
        body: Callable[[Any], Any] | None = None,
        result: Callable[[httpx.Response], Any] | None = None,
    ) -> None:
        if not callable(url):
            _check_url(url, "fanout", client)
        self.concurrency = to_positive_int(concurrency, "fanout concurrency")
        limits = httpx.Limits(
            max_connections=self.concurrency, max_keepalive_connections=self.concurrency
        )
        super().__init__(client, _timeout(timeout, "fanout timeout"), headers, limits)
        self.url, self.method = url, method.upper()
        self._body = body
        self._result = result or _json_or_none
        self._slots = asyncio.Semaphore(self.concurrency)

    async def _one(self, item: Any) -> Any:
        try:
            url = self.url(item) if callable(self.url) else self.url
            if self._body is not None:
                payload = self._body(item)
            else:
                payload = None if self.method in ("GET", "HEAD", "DELETE") else item
            request = self.client.build_request(self.method, url, json=payload)
        except Exception as exc:  # this item's alone: never the batch's (see _unsendable)
            return _unsendable(item, exc)
        async with self._slots:
            try:
                response = await self.client.send(request)
            except httpx.HTTPError as exc:
                return classify(exc)
        error = status_error(response)
        if error is not None:
            return error
        try:
            return self._result(response)
        except Exception as exc:
            return exc

    async def __call__(self, items: list[Any]) -> list[Any]:
        """One request per item (at most ``concurrency`` at once); one outcome per item."""
        return list(await asyncio.gather(*(self._one(item) for item in items)))


def _json_or_none(response: httpx.Response) -> Any:
    """The default fanout result: the response's JSON, or ``None`` for an empty body."""
    return response.json() if response.content else None


def bulk(url: str, **options: Any) -> Bulk:
    """An async batch handler that sends each batch as **one** request to ``url``.

    Args:
        url: the bulk endpoint.
        method: the HTTP method (default ``POST``).
        client: an ``httpx.AsyncClient`` to share (left open); else one is opened (close
            it with ``await handler.aclose()`` or ``async with``).
        timeout: seconds (or an ``httpx.Timeout``); a timeout is a transient failure.
        headers: headers for every request of a client opened here.
        body: ``items -> JSON-able`` request body (default: the list of items).
        results: ``(response, items) -> outcomes`` (default :func:`json_results`).

    A 429/503 with ``Retry-After`` fails the batch with a ``TransientError`` the retry
    policy waits out; a 4xx fails it permanently, and ``Retry(isolate=True)`` bisects it
    to find the item the server refuses (at most ``2·⌈log2 n⌉`` more requests).
    """
    return Bulk(url, **options)


def fanout(url: str | Callable[[Any], str], **options: Any) -> Fanout:
    """An async batch handler that sends **one request per item**, at most ``concurrency``
    (default 10) at once over one shared connection pool (``concurrency`` connections).

    Args:
        url: the endpoint, or ``item -> url``.
        method: the HTTP method (default ``POST``; the item is the JSON body unless the
            method is ``GET``, ``HEAD`` or ``DELETE``).
        concurrency: requests in flight at once, across every batch of this handler.
        client, timeout, headers: as for :func:`bulk`.
        body: ``item -> JSON-able`` request body.
        result: ``response -> result`` (default: the JSON body, ``None`` if empty).

    Each item's outcome is its own: a result, or the error its request met (a 429/503's
    ``TransientError`` carries the ``Retry-After`` wait), so one refused item never fails
    the batch.
    """
    return Fanout(url, **options)
