"""What ``BatchManager.submit`` accepts: requests, bodies, metadata, a completion window.

Every rule is checked here, with a message that names the request, the value and the
fix (:class:`~freight.InvalidBatch`, :class:`~freight.ConfigError`). Requests are
checked one at a time as the store reads them (:func:`encode_requests` is a
generator), so a large batch is never held twice in memory.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from freight._core._time import to_seconds
from freight._errors import ConfigError, InvalidBatch
from freight.manager._models import BatchRequest
from freight.manager._store import is_text

__all__ = [
    "MAX_BODY_BYTES",
    "MAX_REQUESTS",
    "check_metadata",
    "completion_seconds",
    "encode_body",
    "encode_requests",
]

MAX_REQUESTS = 50_000
"""The most requests one batch may hold, by default (the OpenAI Batch API's limit)."""

MAX_BODY_BYTES = 1_000_000
"""The largest request body, as UTF-8 JSON, by default."""

_WINDOW = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd])\s*$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def completion_seconds(window: object) -> float:
    """A completion window in seconds: ``"24h"``, ``"30m"``, ``"90s"``, ``"2d"``, a number
    of seconds or a ``timedelta``; a :class:`~freight.ConfigError` names a bad one."""
    if isinstance(window, str):
        match = _WINDOW.match(window)
        if match is None:
            raise ConfigError(
                f"completion_window must be like '24h', '30m', '90s' or '2d' (or seconds), "
                f"got {window!r}"
            )
        seconds = float(match[1]) * _UNITS[match[2]]
    else:
        seconds = to_seconds(window, "completion_window", allow_zero=False)
    if seconds <= 0:
        raise ConfigError(f"completion_window must be more than 0, got {window!r}")
    return seconds


def encode_requests(
    requests: Iterable[BatchRequest | Mapping[str, Any]], *, max_requests: int, max_body_bytes: int
) -> Iterator[tuple[str, str]]:
    """``(id, body JSON)`` per request, every rule checked (see ``BatchManager.submit``)."""
    seen: dict[str, int] = {}
    for position, request in enumerate(requests):
        if position >= max_requests:
            raise InvalidBatch(
                f"the batch has more than {max_requests:,} requests, the most one batch "
                "may hold: split it into several batches (or raise BatchManager's "
                "max_requests)"
            )
        request_id, body = _parts(request, position)
        if request_id in seen:
            raise InvalidBatch(
                f"request id {request_id!r} is used twice (requests {seen[request_id]} "
                f"and {position}): ids must be unique in a batch"
            )
        seen[request_id] = position
        yield request_id, encode_body(request_id, body, max_body_bytes)
    if not seen:
        raise InvalidBatch("the batch is empty: submit at least one request")


def encode_body(request_id: str, body: Any, max_body_bytes: int) -> str:
    """A request's body as JSON text, refused when it is not JSON or too large."""
    try:
        text = json.dumps(body, separators=(",", ":"), allow_nan=False)
    except Exception as exc:  # TypeError, ValueError, RecursionError (too deep), or raising
        raise InvalidBatch(
            f"the body of request {request_id!r} is not JSON ({exc}): use dicts, lists, "
            "str, numbers, bool and None"
        ) from None
    size = len(text.encode())
    if size > max_body_bytes:
        raise InvalidBatch(
            f"the body of request {request_id!r} is {size:,} bytes as JSON, over the "
            f"limit of {max_body_bytes:,}: send less per request (or raise "
            "BatchManager's max_body_bytes)"
        )
    return text


def _parts(request: object, position: int) -> tuple[str, Any]:
    """A request's id and body, from a :class:`BatchRequest` or a dict."""
    if isinstance(request, BatchRequest):
        request_id, body = request.id, request.body
    elif isinstance(request, Mapping):
        request_id = request.get("custom_id", request.get("id"))
        if "body" not in request:
            raise InvalidBatch(f"request {position} has no 'body': {_excerpt(request)}")
        body = request["body"]
    else:
        raise InvalidBatch(
            f"request {position} is a {type(request).__name__}: pass freight.BatchRequest("
            "id=..., body=...) or a dict with 'custom_id' and 'body'"
        )
    if not isinstance(request_id, str) or not request_id:
        raise InvalidBatch(
            f"request {position} has id {request_id!r}: each request needs a non-empty str "
            "id (BatchRequest.id, or 'custom_id' in a dict)"
        )
    if not is_text(request_id):
        raise InvalidBatch(
            f"request {position} has id {request_id!r}: an id is stored as text, which "
            "holds no NUL character and no lone surrogate; use printable ids"
        )
    return request_id, body


def _excerpt(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def check_metadata(metadata: Mapping[str, Any] | None) -> dict[str, Any]:
    """A batch's metadata as a plain dict, refused when it is not a JSON object."""
    if metadata is None:
        return {}
    if not isinstance(metadata, Mapping):
        raise InvalidBatch(f"metadata must be a dict, got {type(metadata).__name__}")
    try:
        json.dumps(dict(metadata))
    except Exception as exc:  # TypeError, ValueError, RecursionError (too deep), or raising
        raise InvalidBatch(f"metadata must be JSON ({exc})") from None
    return dict(metadata)
