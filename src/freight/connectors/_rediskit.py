"""How the Redis connector meets its server: clients opened the same way, and redis-py's
errors mapped to freight's classes in one place (:func:`classify`)."""

from __future__ import annotations

from typing import Any

from freight._errors import ConfigError, ConfigTypeError, PermanentError, TransientError

try:
    import redis
    import redis.asyncio
    import redis.asyncio.retry
    import redis.backoff
    import redis.exceptions as rex
    import redis.retry
except ImportError as exc:  # pragma: no cover - only without the extra
    raise ImportError(
        "freight.connectors.redis needs redis-py: pip install 'freight[redis]'"
    ) from exc

__all__ = ["RECONNECTS", "SOCKET_TIMEOUT", "async_client", "classify", "sync_client"]

# Replies that say "not now" rather than "never": the server is loading its data, busy
# running a script, out of memory, read-only during a failover, or the cluster moves.
_TRANSIENT_PREFIXES = ("LOADING", "BUSY", "TRYAGAIN", "CLUSTERDOWN", "MASTERDOWN", "OOM",
                       "READONLY", "NOREPLICAS")  # fmt: skip

SOCKET_TIMEOUT = 30.0
"""Seconds a client opened from a URL waits on its socket (a blocking read asks less)."""


def classify(error: BaseException) -> BaseException:
    """Map a redis-py error to freight's classes, the original as ``__cause__``.

    - A dropped or refused connection, a timeout, and the replies that mean "not now"
      (``LOADING``, ``BUSY``, ``TRYAGAIN``, ``OOM``, ``READONLY``, …) are transient.
    - Any other error reply (``WRONGTYPE``, a wrong number of arguments, an unknown
      command) is permanent: the same command fails the same way again.
    - Anything else is returned unchanged (the retry policy classifies it).
    """
    if isinstance(error, TransientError | PermanentError):
        return error
    mapped: BaseException
    if isinstance(error, rex.ConnectionError | rex.TimeoutError | ConnectionError | TimeoutError):
        mapped = TransientError(f"Redis connection: {error}")
    elif isinstance(error, rex.BusyLoadingError | rex.TryAgainError | rex.ClusterDownError):
        mapped = TransientError(f"Redis is not ready: {error}")
    elif isinstance(error, rex.ResponseError):
        text = str(error)
        if text.startswith(_TRANSIENT_PREFIXES) or isinstance(error, rex.OutOfMemoryError):
            mapped = TransientError(f"Redis refused for now: {text}")
        else:
            mapped = PermanentError(f"Redis refused: {text}")
    elif isinstance(error, rex.DataError):
        mapped = PermanentError(f"Redis cannot send this value: {error}")
    else:
        return error
    mapped.__cause__ = error
    return mapped


RECONNECTS = 5
"""Times a client opened from a URL reconnects and sends a command again after its
connection dropped (``CLIENT KILL``, a server restart), with a backoff of 50 ms doubling
up to 1 s; then the error reaches the caller as a :class:`~freight.TransientError`."""

_RETRY_ON = [rex.ConnectionError, rex.TimeoutError]


def _options(options: dict[str, Any], retry: Any) -> dict[str, Any]:
    options.setdefault("socket_timeout", SOCKET_TIMEOUT)
    options.setdefault("retry_on_error", _RETRY_ON)
    options.setdefault("retry", retry)
    return options


def _from_url(opener: Any, url: str, what: str, options: dict[str, Any]) -> Any:
    try:
        return opener(url, **options)
    except ValueError as exc:  # redis-py: a scheme it does not know, a bad port or db
        raise ConfigError(
            f"{what} url {url!r} cannot be opened: {exc}; pass 'redis://host:6379/0' "
            "(rediss:// for TLS, unix:///path/to/socket)"
        ) from exc


def _refuse(url: object, what: str, client: str) -> ConfigTypeError:
    return ConfigTypeError(
        f"{what} url must be a 'redis://' URL or a {client} client, got {url!r} "
        f"({type(url).__name__})"
    )


def sync_client(
    url: str | redis.Redis, what: str = "RedisSink", **options: Any
) -> tuple[redis.Redis, bool]:
    """A client for ``url`` (and whether we own it), or the caller's client as is.

    A client freight opens reconnects on its own (:data:`RECONNECTS`); redis-py's
    clients do not unless given ``retry_on_error``, so a caller's client should be.
    ``what`` names the connector in the error for a ``url`` that is neither.
    """
    if isinstance(url, str):
        backoff = redis.backoff.ExponentialBackoff(cap=1.0, base=0.05)
        retry = redis.retry.Retry(backoff, RECONNECTS)
        return _from_url(redis.Redis.from_url, url, what, _options(options, retry)), True
    if not isinstance(url, redis.Redis | redis.RedisCluster):
        raise _refuse(url, what, "redis.Redis")
    return url, False


def async_client(
    url: str | redis.asyncio.Redis, what: str = "AsyncRedisSink", **options: Any
) -> tuple[redis.asyncio.Redis, bool]:
    """:func:`sync_client` for redis-py's asyncio client."""
    if isinstance(url, str):
        backoff = redis.backoff.ExponentialBackoff(cap=1.0, base=0.05)
        retry = redis.asyncio.retry.Retry(backoff, RECONNECTS)
        opener = redis.asyncio.Redis.from_url
        return _from_url(opener, url, what, _options(options, retry)), True
    if not isinstance(url, redis.asyncio.Redis | redis.asyncio.RedisCluster):
        raise _refuse(url, what, "redis.asyncio.Redis")
    return url, False
