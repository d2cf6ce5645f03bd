"""How the HTTP connector reads what a server says: statuses and httpx's errors mapped to
freight's classes in one place (:func:`classify`, :func:`status_error`), and
``Retry-After`` read into seconds for the retry policy."""

from __future__ import annotations

import email.utils
import math
from datetime import UTC, datetime

from freight._errors import PermanentError, TransientError

try:
    import httpx
except ImportError as exc:  # pragma: no cover - only without the extra
    raise ImportError("freight.connectors.http needs httpx: pip install 'freight[http]'") from exc

__all__ = ["MAX_RETRY_AFTER", "TRANSIENT_STATUSES", "classify", "retry_after", "status_error"]

TRANSIENT_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})
"""Statuses worth another try: a timeout, too early, too many requests, a server error or
an unavailable/overloaded gateway. Every other 4xx is permanent (the same request fails
the same way); every other 5xx is too (501 Not Implemented, 505, …)."""


MAX_RETRY_AFTER = 3600.0
"""The longest ``Retry-After`` honoured, in seconds: a server asking for more (a date
years ahead, a typo) gets an hour, after which the retry policy decides again."""


def retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds a ``Retry-After`` header asks for (delay-seconds or an HTTP date), at most
    :data:`MAX_RETRY_AFTER`, or None."""
    if value is None:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
    if not math.isfinite(seconds):
        return None
    return min(max(0.0, seconds), MAX_RETRY_AFTER)


def _excerpt(response: httpx.Response) -> str:
    try:
        text = " ".join(response.text.split())
    except Exception:  # an undecodable body: say nothing of it
        return ""
    return f": {text[:200]}" if text else ""


def status_error(response: httpx.Response) -> BaseException | None:
    """The error a non-2xx response stands for (``None`` for a success).

    429, 503 (and 408, 425, 500, 502, 504) are :class:`~freight.TransientError`, carrying
    the ``Retry-After`` wait if the server sent one; any other status is a
    :class:`~freight.PermanentError`.
    """
    if response.is_success:
        return None
    request = response.request
    what = f"{request.method} {request.url} answered {response.status_code}"
    if response.status_code in TRANSIENT_STATUSES:
        wait = retry_after(response.headers.get("retry-after"))
        after = f" (Retry-After: {wait:g} s)" if wait is not None else ""
        return TransientError(f"{what}{after}{_excerpt(response)}", retry_after=wait)
    if response.is_redirect:  # not followed: a POST redirected would lose its body
        what += f" (a redirect to {response.headers['location']}: use that url)"
    return PermanentError(f"{what}{_excerpt(response)}")


def classify(error: BaseException) -> BaseException:
    """Map an httpx error to freight's classes, the original as ``__cause__``.

    Timeouts and transport failures (refused, reset, a dropped connection) are transient;
    an ``HTTPStatusError`` is classified by its status (:func:`status_error`); a request
    that cannot be built (a bad URL) is permanent; anything else is returned unchanged.
    """
    if isinstance(error, TransientError | PermanentError):
        return error
    mapped: BaseException | None
    if isinstance(error, httpx.TimeoutException):
        mapped = TransientError(f"HTTP timeout ({type(error).__name__}): {error}")
    elif isinstance(error, httpx.InvalidURL | httpx.UnsupportedProtocol):
        mapped = PermanentError(f"HTTP request cannot be sent: {error}")
    elif isinstance(error, httpx.TransportError):
        mapped = TransientError(f"HTTP transport ({type(error).__name__}): {error}")
    elif isinstance(error, httpx.HTTPStatusError):
        mapped = status_error(error.response)
    else:
        return error
    if mapped is None:  # an HTTPStatusError raised for a 2xx: nothing wrong with it
        return error
    mapped.__cause__ = error
    return mapped
