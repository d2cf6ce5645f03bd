"""Redis: a sink that writes a batch in one pipeline, and a Redis Streams source.

``pip install 'freight[redis]'`` (redis-py; ``redis[hiredis]`` parses replies in C).

:class:`RedisSink` (sync) and :class:`AsyncRedisSink` take items that are commands, name
first (``("SET", key, value)``, ``("HSET", key, {field: value})``, ``("XADD", stream,
{field: value})``, ``("LPUSH", key, *values)``, ``("ZADD", key, {member: score})``, any
other write command; a pair ``(key, value)`` is a plain ``SET``) and send a batch as one
pipeline: one round trip for the batch instead of one per command, and each command's
reply or error as its item's outcome. Plain key/values go as ``MSET`` on their own (see
:mod:`freight.connectors._redisplan`). ``ttl`` expires every key written.

:class:`RedisStreamSource` consumes a stream through a consumer group for
:func:`~freight.connectors.consume` (at least once; see ``docs/connectors.md``).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from freight._core._time import to_seconds
from freight.connectors._rediskit import async_client, classify, sync_client
from freight.connectors._redisplan import Planned, outcomes, plan
from freight.connectors._redisstream import RedisStreamSource

import redis  # isort: skip  (after _rediskit, which names the extra when it is missing)
import redis.asyncio  # isort: skip

__all__ = ["AsyncRedisSink", "RedisSink", "RedisStreamSource", "classify"]


def _ttl_ms(ttl: float | timedelta | None) -> int | None:
    if ttl is None:
        return None
    return max(1, round(to_seconds(ttl, "RedisSink.ttl", allow_zero=False) * 1000))


def _settled(planned: Planned, replies: Sequence[Any]) -> list[Any]:
    each = outcomes(planned, replies)
    if any(isinstance(r, BaseException) for r in replies):
        return [classify(o) if isinstance(o, BaseException) else o for o in each]
    return each


class RedisSink:
    """Writes each batch of commands to Redis in one pipeline (sync; redis-py's client).

    Args:
        url: a ``redis://`` URL, or a ``redis.Redis`` client (left open on close).
        ttl: seconds (or ``timedelta``) after which every key written expires.

    ``write(items)`` returns one outcome per item: the command's reply, or the error
    (mapped by :func:`classify`) for that item alone; a connection that fails raises a
    :class:`~freight.TransientError` for the whole batch (retried by the policy; the
    pipeline is not a transaction, so a retried batch may apply a command twice: make
    them idempotent, ``SET``/``HSET``/``ZADD`` are).
    """

    def __init__(self, url: str | redis.Redis, *, ttl: float | timedelta | None = None) -> None:
        self._client, self._owned = sync_client(url)
        self._ttl_ms = _ttl_ms(ttl)

    def write(self, items: list[Any], context: object = None) -> list[Any]:
        """Send ``items`` as one pipeline; their outcomes, in order."""
        planned = plan(items, self._ttl_ms)
        client: Any = self._client
        try:
            if len(planned.commands) == 1:  # one MSET: no pipeline needed
                try:
                    replies = [client.execute_command(*planned.commands[0])]
                except redis.ResponseError as exc:
                    replies = [exc]
            else:
                pipe = client.pipeline(transaction=False)
                for command in planned.commands:
                    pipe.execute_command(*command)
                replies = pipe.execute(raise_on_error=False)
        except Exception as exc:
            raise classify(exc) from exc
        return _settled(planned, replies)

    def close(self) -> None:
        """Close the client if this sink opened it."""
        if self._owned:
            self._client.close()


class AsyncRedisSink:
    """:class:`RedisSink` on redis-py's asyncio client: ``await sink.write(items)``."""

    def __init__(
        self, url: str | redis.asyncio.Redis, *, ttl: float | timedelta | None = None
    ) -> None:
        self._client, self._owned = async_client(url)
        self._ttl_ms = _ttl_ms(ttl)

    async def write(self, items: list[Any], context: object = None) -> list[Any]:
        """Send ``items`` as one pipeline; their outcomes, in order."""
        planned = plan(items, self._ttl_ms)
        client: Any = self._client
        try:
            if len(planned.commands) == 1:  # one MSET: no pipeline needed
                try:
                    replies = [await client.execute_command(*planned.commands[0])]
                except redis.ResponseError as exc:
                    replies = [exc]
            else:
                pipe = client.pipeline(transaction=False)
                for command in planned.commands:
                    pipe.execute_command(*command)
                replies = await pipe.execute(raise_on_error=False)
        except Exception as exc:
            raise classify(exc) from exc
        return _settled(planned, replies)

    async def close(self) -> None:
        """Close the client if this sink opened it."""
        if self._owned:
            await self._client.aclose()
