"""Redis Streams through a consumer group: the broker source port on redis-py's asyncio client.

How each port method maps to Redis (every step one command, or one ``MULTI``):

- ``fetch``: first this consumer's own pending entries (a restarted consumer with the
  same name finishes what it held), then the entries it handed back whose delay is over
  (``XCLAIM`` to itself), then entries idle past ``claim_idle`` in *any* consumer's
  pending list (``XAUTOCLAIM``: a dead consumer's), then new ones (``XREADGROUP >``,
  blocking at most the fetch's timeout). Redis counts deliveries; a message's
  ``attempts`` is that count (``XPENDING``).
- ``ack``: ``XACK``.
- ``retry``: the entry stays pending to this consumer and is claimed again after the
  delay. Until then, before each ``XAUTOCLAIM`` pass, the consumer resets the idle time of
  the entries it holds back (``XCLAIM ... JUSTID``, which counts no delivery), so neither
  its own pass nor another consumer's takes them early or counts a delivery the handler
  never saw. (Streams have no "nack": if this consumer dies meanwhile, another claims the
  entry after ``claim_idle``.)
- ``dead_letter``: ``XADD`` to the dead-letter stream (the entry's fields, plus
  ``dead:reason``, ``dead:id``, ``dead:deliveries``, ``dead:consumer``) and ``XACK``, in
  one script per entry that acknowledges it only once its copy is written: an entry is
  never both dead and pending, nor acknowledged without its dead letter.

An entry deleted from the stream (``XDEL``, a trim) while pending has nothing left to
handle: it comes back without fields, and is acknowledged without reaching the handler.

A dropped connection (``CLIENT KILL``, a restart) is reconnected by redis-py's own retry
(the blocked read is sent again); an error it cannot get over reaches the caller as a
:class:`~freight.TransientError`.
"""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any

from freight._core._time import to_seconds
from freight._errors import ConfigError, ConfigTypeError, RecordError
from freight.connectors._broker import Message, reason
from freight.connectors._rediskit import async_client, classify

import redis.asyncio  # isort: skip  (after _rediskit, which names the extra when it is missing)
import redis.exceptions  # isort: skip

__all__ = ["RedisStreamSource"]

_MAX_BLOCK = 10.0  # seconds: under the client's socket timeout (_rediskit.SOCKET_TIMEOUT)
Entry = tuple[bytes, dict[bytes, bytes] | None]

# One entry's dead letter: its copy added to the dead-letter stream, and the entry
# acknowledged only if the copy was written. A MULTI cannot say "only if": its XACK runs
# even when the XADD before it fails (the dead-letter key holds a string, say), and the
# entry would leave the group with no dead letter. A script runs atomically, as MULTI does.
# KEYS: dead-letter stream, stream; ARGV: group, entry id, then the copy's fields/values.
_DEAD_LETTER = """
local added = redis.pcall('XADD', KEYS[1], '*', unpack(ARGV, 3))
if type(added) == 'table' and added.err then
  return added
end
redis.call('XACK', KEYS[2], ARGV[1], ARGV[2])
return added
"""
# Lua's unpack stops near 8,000 values: a copy with more fields and values than this is
# added by a plain XADD and its entry acknowledged after it. A death in between leaves
# that entry dead and still pending (delivered again, dead-lettered twice), never
# acknowledged without its copy.
_SCRIPT_FIELDS = 7000


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _default_consumer() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


class RedisStreamSource:
    """A Redis stream read through a consumer group, for :func:`~freight.connectors.consume`.

    Args:
        url: a ``redis://`` URL, or a ``redis.asyncio.Redis`` client (left open on close).
        stream: the stream's key.
        group: the consumer group; created (from ``start``) if missing.
        consumer: this consumer's name within the group (default: host, pid and a random
            suffix). Restarting with the same name resumes its own pending entries at once.
        claim_idle: seconds after which an entry pending to a consumer that stopped
            settling it (it died) is claimed by this one (``XAUTOCLAIM``).
        dead_letter: the dead-letter stream (default ``"<stream>:dead"``).
        field: the entry field holding the body; an entry without it has the dict of its
            fields (as ``str``) as body.
        decode: ``bytes -> body`` (default ``json.loads``); an entry it cannot decode is
            dead-lettered at once with the reason (it could never succeed).
        start: where a new group starts reading: ``"0"`` (the whole stream) or ``"$"``.
    """

    def __init__(
        self,
        url: str | redis.asyncio.Redis,
        stream: str,
        group: str,
        consumer: str | None = None,
        *,
        claim_idle: float | timedelta = 30.0,
        dead_letter: str | None = None,
        field: str = "body",
        decode: Callable[[bytes], Any] = json.loads,
        start: str = "0",
    ) -> None:
        for name, value in (("stream", stream), ("group", group), ("field", field)):
            if not isinstance(value, str) or not value:
                kind = ConfigError if isinstance(value, str) else ConfigTypeError
                raise kind(f"RedisStreamSource {name} must be a non-empty str, got {value!r}")
        if not isinstance(start, str) or not isinstance(consumer, str | None):
            raise ConfigTypeError(
                "RedisStreamSource start must be a stream id as a str ('0', '$', "
                f"'1700000000000-0') and consumer a str or None, got {start!r}, {consumer!r}"
            )
        client, self._owned = async_client(url, "RedisStreamSource")
        self._client: Any = client  # redis-py's stubs type replies as unions of every shape
        self.stream, self.group = stream, group
        self.consumer = consumer or _default_consumer()
        self.claim_idle = to_seconds(claim_idle, "RedisStreamSource.claim_idle", allow_zero=False)
        self.dead_stream = dead_letter or f"{stream}:dead"
        self._field = field.encode()
        self._decode = decode
        self._start = start
        self._ready = False
        self._own_from: bytes | None = b"0"  # own pending still to resume; None: done
        self._later: dict[str, float] = {}  # handed back: id -> when it is due
        self._claim_from = b"0-0"
        self._claimed_at = float("-inf")

    async def _setup(self) -> None:
        if self._ready:
            return
        try:
            await self._client.xgroup_create(self.stream, self.group, self._start, mkstream=True)
        except redis.exceptions.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                error = classify(exc)
                raise type(error)(
                    f"RedisStreamSource cannot create group {self.group!r} on stream "
                    f"{self.stream!r} from start {self._start!r}: {error}"
                ) from exc
        self._ready = True

    async def fetch(self, max_items: int, timeout: float) -> list[Message]:  # noqa: ASYNC109
        """Up to ``max_items`` entries (see the module docstring for where they come from)."""
        try:
            await self._setup()
            entries, counted = await self._pending(max_items)
            if not entries:
                entries = await self._new(max_items, timeout)
            counts = await self._deliveries(entries) if counted and entries else {}
        except (redis.exceptions.RedisError, OSError) as exc:
            raise classify(exc) from exc
        return await self._messages(entries, counts, 2 if counted else 1)

    async def _present(self, entries: list[Entry]) -> list[Entry]:
        """``entries`` without those deleted from the stream while pending (they come back
        with no fields: XADD never writes an entry without one), which are acknowledged."""
        gone = [entry_id for entry_id, fields in entries if not fields]
        if gone:
            await self._client.xack(self.stream, self.group, *gone)
            return [e for e in entries if e[1]]
        return entries

    async def _pending(self, max_items: int) -> tuple[list[Entry], bool]:
        """Entries delivered before: own (resumed), handed back and due, idle elsewhere."""
        if self._own_from is not None:
            reply = await self._client.xreadgroup(
                self.group, self.consumer, {self.stream: self._own_from}, count=max_items
            )
            entries = reply[0][1] if reply else []
            self._own_from = entries[-1][0] if entries else None
            entries = await self._present([e for e in entries if e[0].decode() not in self._later])
            if entries:
                return entries, True
        now = time.monotonic()
        due = [i for i, at in self._later.items() if at <= now][:max_items]
        if due:
            claimed = await self._client.xclaim(self.stream, self.group, self.consumer, 0, due)
            for i in due:
                del self._later[i]
            return await self._present(claimed), True
        if now - self._claimed_at < self.claim_idle / 2:
            return [], False
        if self._later:  # held back, so not idle: no XAUTOCLAIM (this one or another
            # consumer's) takes them early and counts a delivery the handler never saw
            await self._client.xclaim(
                self.stream, self.group, self.consumer, 0, list(self._later), justid=True
            )
        reply = await self._client.xautoclaim(
            self.stream,
            self.group,
            self.consumer,
            int(self.claim_idle * 1000),
            self._claim_from,
            count=max_items,
        )
        self._claim_from = reply[0]
        if reply[0] in (b"0-0", "0-0"):
            self._claimed_at = now  # a full pass: the next one after claim_idle / 2
        entries = [e for e in reply[1] if e[0].decode() not in self._later]
        return await self._present(entries), True

    async def _new(self, max_items: int, timeout: float) -> list[Entry]:  # noqa: ASYNC109
        block = None if timeout <= 0 else max(1, int(min(timeout, _MAX_BLOCK) * 1000))
        reply = await self._client.xreadgroup(
            self.group, self.consumer, {self.stream: ">"}, count=max_items, block=block
        )
        return list(reply[0][1]) if reply else []

    async def _deliveries(self, entries: list[Entry]) -> dict[bytes, int]:
        """Each entry's delivery count: one ``XPENDING`` per entry, in one round trip. (One
        range from the lowest id to the highest would also list every other entry pending
        to this consumer in between, and a bounded count of rows could miss some.)"""
        pipe = self._client.pipeline(transaction=False)
        for entry_id, _ in entries:
            pipe.xpending_range(self.stream, self.group, entry_id, entry_id, 1, self.consumer)
        return {
            row["message_id"]: int(row["times_delivered"])
            for rows in await pipe.execute()
            for row in rows
        }

    async def _messages(
        self, entries: list[Entry], counts: dict[bytes, int], default: int
    ) -> list[Message]:
        messages: list[Message] = []
        unreadable: list[tuple[Message, BaseException]] = []
        for entry_id, fields in entries:
            assert fields is not None
            message = Message(None, entry_id.decode(), counts.get(entry_id, default), raw=fields)
            try:
                if self._field in fields:
                    message.body = self._decode(fields[self._field])
                else:
                    message.body = {_text(k): _text(v) for k, v in fields.items()}
            except Exception as exc:
                error = RecordError(f"cannot decode the entry's {self._field.decode()!r}: {exc}")
                error.__cause__ = exc
                unreadable.append((message, error))
                continue
            messages.append(message)
        if unreadable:
            await self.dead_letter(unreadable)
        return messages

    async def ack(self, messages: Sequence[Message]) -> None:
        """``XACK`` the entries: the group never delivers them again."""
        if not messages:
            return
        try:
            await self._client.xack(self.stream, self.group, *[m.id for m in messages])
        except (redis.exceptions.RedisError, OSError) as exc:
            raise classify(exc) from exc

    async def retry(self, messages: Sequence[Message], delay: float) -> None:
        """Keep the entries pending; this consumer claims them again after ``delay``."""
        due = time.monotonic() + max(0.0, delay)
        for message in messages:
            self._later[message.id] = due

    async def dead_letter(self, failed: Sequence[tuple[Message, BaseException]]) -> None:
        """Copy each entry to the dead-letter stream with its reason, and ``XACK`` it."""
        if not failed:
            return
        pipe = self._client.pipeline(transaction=False)
        big: list[tuple[int, str]] = []  # (reply index, entry id) of copies sent by XADD alone
        for index, (message, error) in enumerate(failed):
            fields: dict[Any, Any] = dict(message.raw or {})
            fields.update({
                "dead:reason": reason(error),
                "dead:id": message.id,
                "dead:deliveries": message.attempts,
                "dead:consumer": self.consumer,
            })  # fmt: skip
            pairs = [part for pair in fields.items() for part in pair]
            if len(pairs) > _SCRIPT_FIELDS:
                big.append((index, message.id))
                pipe.xadd(self.dead_stream, fields)
                continue
            keys = (self.dead_stream, self.stream)
            pipe.eval(_DEAD_LETTER, 2, *keys, self.group, message.id, *pairs)
        try:
            replies = await pipe.execute(raise_on_error=False)
            written = [i for index, i in big if not isinstance(replies[index], Exception)]
            if written:
                await self._client.xack(self.stream, self.group, *written)
        except (redis.exceptions.RedisError, OSError) as exc:
            raise classify(exc) from exc
        refused = next((r for r in replies if isinstance(r, Exception)), None)
        if refused is not None:  # those entries stay pending; the others are dead and acked
            raise classify(refused) from refused

    async def close(self) -> None:
        """Close the client if this source opened it; unsettled entries stay pending (and
        are claimed by another consumer after ``claim_idle``)."""
        if self._owned:
            await self._client.aclose()
