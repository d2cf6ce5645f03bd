"""``RabbitMQSource``: a queue consumed in batches, at least once (the broker source port).

How each settlement maps to AMQP:

- **prefetch** is sized to the batch (``basic.qos`` with ``prefetch_count`` = the
  batch size asked for), so the broker sends one batch ahead and no consumer hoards;
- **ack**: one ``basic.ack`` with ``multiple`` when the batch holds every delivery
  still unsettled on the channel up to its last tag (the usual case: :func:`consume`
  settles a whole batch before the next fetch), else one per message;
- **retry** (transient): the message is published again to the queue, confirmed,
  with its delivery count in the header ``x-freight-attempts``, then the original is
  acknowledged. A plain requeue would do the same, but a classic queue counts no
  deliveries (only a ``redelivered`` flag), so ``max_deliveries`` could never end a
  message that always fails. RabbitMQ cannot delay a message by itself: it comes
  back at once (the in-process :class:`~freight.Retry` already waited its backoff);
- **dead letter** (permanent): with ``dead_letter_exchange``, the message is
  published there (routing key: the queue's name) with the reason in the header
  ``x-freight-reason``, confirmed, then acknowledged; without one it is rejected
  without requeue, and the queue's own ``x-dead-letter-exchange`` argument (if any)
  takes it, with RabbitMQ's ``x-death`` header but no freight reason.
  ``declare=True`` declares all of it: the queue with ``x-dead-letter-exchange``
  set, the exchange (direct) and a queue ``<queue>.dead`` bound to it.

``Message.id`` is the AMQP ``message_id`` (:class:`RabbitMQSink` gives each message a
unique one, kept by the copies above), the same on every delivery, so an idempotent
target can key on it; a message published without one gets ``delivery-<tag>``, which
changes when it is delivered again.

A lost connection or channel is noticed at the next call: deliveries of the old
channel are dropped (the broker has requeued them: they come back, counted as
redelivered) and a new connection is opened.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from freight._core._time import to_seconds
from freight._errors import ConfigError, RecordError, TargetError, TransientError
from freight.connectors._broker import Message, reason
from freight.connectors._brokerkit import check_url
from freight.connectors._brokerkit import decode as default_decode
from freight.connectors._rabbiterrors import classify
from freight.connectors._rabbitsink import AMQP_EXAMPLE

try:
    import aio_pika
    from aio_pika.abc import (
        AbstractChannel,
        AbstractConnection,
        AbstractExchange,
        AbstractIncomingMessage,
        AbstractQueue,
    )
    from aiormq.abc import DeliveredMessage
except ImportError as exc:  # pragma: no cover - only without the extra
    raise ImportError(
        "freight.connectors.rabbitmq needs aio-pika: pip install 'freight[rabbitmq]'"
    ) from exc

__all__ = ["ATTEMPTS", "REASON", "RabbitMQSource", "declare_queue"]

ATTEMPTS = "x-freight-attempts"
"""The header counting a message's deliveries across freight's retries."""

REASON = "x-freight-reason"
"""The header holding a dead letter's reason (``"PermanentError: ..."``)."""

_log = logging.getLogger("freight")

_MAX_PREFETCH = 65535  # basic.qos prefetch_count is a short: a bigger batch gets this many
_GAP = 0.002  # seconds a fetch waits for the next delivery once it holds one


def _text(value: Any) -> str:
    """A header value as text (a byte-array header as UTF-8, not ``"b'...'"``)."""
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8", "replace")
    return str(value)


def _count(value: str | None, default: int) -> int:
    """A delivery-count header as an int; ``default`` when absent or not a count (any
    publisher may set these headers: one that is not a number must not make the
    message a poison that stops every consumer at fetch, before any handler)."""
    if value is None:
        return default
    try:
        return max(int(value), 0)
    except ValueError:
        return default


async def declare_queue(
    channel: AbstractChannel, queue: str, dead_letter_exchange: str | None
) -> AbstractQueue:
    """Declare ``queue`` (durable), and with ``dead_letter_exchange`` that exchange
    (direct, durable), the queue ``<queue>.dead`` bound to it under the queue's name,
    and ``x-dead-letter-exchange`` on ``queue``."""
    arguments: dict[str, Any] = {}
    if dead_letter_exchange:
        dlx = await channel.declare_exchange(
            dead_letter_exchange, aio_pika.ExchangeType.DIRECT, durable=True
        )
        dead = await channel.declare_queue(f"{queue}.dead", durable=True)
        await dead.bind(dlx, routing_key=queue)
        arguments["x-dead-letter-exchange"] = dead_letter_exchange
    return await channel.declare_queue(queue, durable=True, arguments=arguments or None)


class RabbitMQSource:
    """Consumes a RabbitMQ queue in batches for :func:`~freight.connectors.consume`.

    Args:
        url: the AMQP URL (``?name=...`` names the connection in the management UI).
        queue: the queue to consume; it must exist unless ``declare=True``.
        dead_letter_exchange: where permanent failures go, with their reason (see the
            module docstring); ``None``: rejected to the queue's own dead-letter policy.
        declare: declare the queue, the dead-letter exchange and ``<queue>.dead``.
        decode: ``bytes -> body`` (default: JSON back to values when the message's
            content type is ``application/json``, as :class:`RabbitMQSink` sends
            JSON, else the bytes). A body that cannot be decoded is dead-lettered.
        timeout: seconds to wait for the broker when connecting or confirming.
    """

    def __init__(
        self,
        url: str,
        queue: str,
        *,
        dead_letter_exchange: str | None = None,
        declare: bool = False,
        decode: Callable[[bytes], Any] | None = None,
        timeout: float = 30.0,
    ) -> None:
        if not queue or not isinstance(queue, str):
            raise ConfigError(f"RabbitMQSource queue must be a queue name, got {queue!r}")
        self.url = check_url(url, "RabbitMQSource", ("amqp", "amqps"), AMQP_EXAMPLE)
        self.queue = queue
        self.dead_letter_exchange = dead_letter_exchange
        self._declare, self._decode = declare, decode
        self._timeout = to_seconds(timeout, "RabbitMQSource(timeout=)", allow_zero=False)
        self._conn: AbstractConnection | None = None
        self._channel: AbstractChannel | None = None
        self._inbox: asyncio.Queue[AbstractIncomingMessage] = asyncio.Queue()
        self._prefetch = 0
        self._queue: AbstractQueue | None = None
        self._tag: str | None = None
        self._generation = 0
        self._unsettled: set[int] = set()

    def __repr__(self) -> str:
        return f"RabbitMQSource(queue={self.queue!r})"

    async def close(self) -> None:
        """Close the connection; unsettled deliveries go back to the queue."""
        conn, self._conn, self._channel = self._conn, None, None
        self._forget()
        if conn is not None and not conn.is_closed:
            with contextlib.suppress(Exception):
                await conn.close()

    def _forget(self) -> None:
        self._generation += 1
        self._unsettled.clear()
        self._inbox = asyncio.Queue()
        self._prefetch = 0
        self._queue, self._tag = None, None

    async def _open(self, prefetch: int) -> AbstractChannel:
        channel = self._channel
        if channel is not None and not channel.is_closed:
            if self._prefetch < prefetch:  # a bigger batch asked for: more prefetch
                await self._consume(channel, prefetch)
            return channel
        await self.close()
        try:
            self._conn = await aio_pika.connect(self.url, timeout=self._timeout)
            channel = await self._conn.channel(publisher_confirms=True)
            await self._consume(channel, prefetch)
        except Exception as exc:
            await self.close()
            raise classify(exc) from exc
        self._channel = channel
        return channel

    async def _consume(self, channel: AbstractChannel, prefetch: int) -> None:
        """(Re)start the consumer with ``prefetch``: RabbitMQ applies ``basic.qos`` only
        to consumers started after it, so a bigger batch restarts the consumer (its
        deliveries in hand stay valid: they belong to the channel). The new consumer
        starts before the old one is cancelled, so an ``auto_delete`` queue is never
        left without one (it would be deleted)."""
        old = self._tag
        await channel.set_qos(prefetch_count=prefetch)
        if self._queue is None:
            if self._declare:
                self._queue = await declare_queue(channel, self.queue, self.dead_letter_exchange)
            else:
                self._queue = await channel.get_queue(self.queue, ensure=True)
        inbox, generation = self._inbox, self._generation
        self._tag = await self._queue.consume(
            functools.partial(self._arrived, inbox=inbox, generation=generation)
        )
        if old is not None:
            await self._queue.cancel(old)
        self._prefetch = prefetch

    async def _arrived(
        self,
        message: AbstractIncomingMessage,
        inbox: asyncio.Queue[AbstractIncomingMessage],
        generation: int,
    ) -> None:
        if generation == self._generation:
            inbox.put_nowait(message)

    async def fetch(self, max_items: int, timeout: float) -> list[Message]:  # noqa: ASYNC109
        """Up to ``max_items`` deliveries, waiting at most ``timeout`` s for the first."""
        await self._open(min(max_items, _MAX_PREFETCH))
        found = await self._collect(max_items, timeout)
        channel = self._channel
        if not found and (channel is None or channel.is_closed):
            # The connection went while this fetch waited: that is not an empty queue,
            # and an empty answer ended consume(until_idle=True) as drained with
            # messages still queued. Reconnect (a TransientError if the server is
            # gone) and wait once more.
            await self._open(min(max_items, _MAX_PREFETCH))
            found = await self._collect(max_items, timeout)
        return await self._received(found)

    async def _collect(self, max_items: int, timeout: float) -> list[AbstractIncomingMessage]:  # noqa: ASYNC109
        inbox, found = self._inbox, list[AbstractIncomingMessage]()
        deadline = time.monotonic() + timeout
        while len(found) < max_items:
            wait = deadline - time.monotonic() if not found else _GAP
            if not inbox.qsize() and len(found) + len(self._unsettled) >= self._prefetch:
                break  # the broker sends no more until something is settled
            try:
                incoming = inbox.get_nowait() if inbox.qsize() else None
                if incoming is None:
                    incoming = await asyncio.wait_for(inbox.get(), max(wait, 0))
            except TimeoutError:
                break
            found.append(incoming)
        return found

    async def _received(self, found: list[AbstractIncomingMessage]) -> list[Message]:
        messages, undecodable = [], []
        for incoming in found:
            self._unsettled.add(incoming.delivery_tag or 0)
            message, error = self._message(incoming)
            if error is None:
                messages.append(message)
            else:
                undecodable.append((message, error))
        if undecodable:  # poison before any handler: dead-lettered at once, with why
            await self.dead_letter(undecodable)
        return messages

    def _message(self, incoming: AbstractIncomingMessage) -> tuple[Message, RecordError | None]:
        headers = {str(k): _text(v) for k, v in (incoming.headers or {}).items()}
        counted = _count(headers.get(ATTEMPTS), 1)
        attempts = _count(headers.get("x-delivery-count"), counted - 1) + 1  # quorum queues
        attempts = max(attempts, counted) + (1 if incoming.redelivered else 0)
        message = Message(
            body=None,
            id=incoming.message_id or f"delivery-{incoming.delivery_tag}",
            attempts=attempts,
            key=incoming.routing_key,
            headers=headers,
            raw=(self._generation, incoming),
        )
        try:
            if self._decode is not None:
                message.body = self._decode(incoming.body)
            else:
                message.body = default_decode(incoming.body, incoming.content_type)
        except Exception as exc:
            error = RecordError(f"the message body cannot be decoded: {exc}")
            error.__cause__ = exc
            return message, error
        return message, None

    def _live(self, messages: Sequence[Message]) -> list[AbstractIncomingMessage]:
        """The deliveries of the current channel (older ones were requeued by the broker)."""
        return [m.raw[1] for m in messages if m.raw[0] == self._generation]

    async def ack(self, messages: Sequence[Message]) -> None:
        """Acknowledge ``messages`` (one ``multiple`` ack when they are all outstanding)."""
        live = self._live(messages)
        if not live:
            return
        tags = {m.delivery_tag or 0 for m in live}
        last = max(tags)
        try:
            if {t for t in self._unsettled if t <= last} <= tags:
                await max(live, key=lambda m: m.delivery_tag or 0).ack(multiple=True)
            else:
                for incoming in live:
                    await incoming.ack()
        except Exception as exc:
            self._lost(exc)
            return
        self._unsettled -= tags

    async def retry(self, messages: Sequence[Message], delay: float) -> None:
        """Publish each message again to the queue with its count, then ack it."""
        live = [m for m in messages if m.raw[0] == self._generation]
        if await self._republish(live, "", self.queue, lambda m: {ATTEMPTS: str(m.attempts + 1)}):
            await self.ack(live)

    async def dead_letter(self, failed: Sequence[tuple[Message, BaseException]]) -> None:
        """Move each message to the dead-letter exchange with its reason (or reject it)."""
        live = [(m, e) for m, e in failed if m.raw[0] == self._generation]
        if not live:
            return
        if self.dead_letter_exchange is None:
            try:
                for message, _ in live:
                    await message.raw[1].reject(requeue=False)
            except Exception as exc:
                self._lost(exc)
                return
            self._unsettled -= {m.raw[1].delivery_tag or 0 for m, _ in live}
            return
        reasons = {id(m): reason(e) for m, e in live}
        if await self._republish(
            [m for m, _ in live],
            self.dead_letter_exchange,
            self.queue,
            lambda m: {REASON: reasons[id(m)]},
        ):
            await self.ack([m for m, _ in live])

    async def _republish(
        self,
        messages: Sequence[Message],
        exchange: str,
        routing_key: str,
        extra: Callable[[Message], dict[str, str]],
    ) -> bool:
        """Publish copies of ``messages``, confirmed; ``False`` when the channel was lost
        (then the originals go back to the queue with it: nothing to settle)."""
        if not messages:
            return True
        channel = self._channel
        if channel is None:
            return False
        try:
            target = (
                await channel.get_exchange(exchange, ensure=False)
                if exchange
                else channel.default_exchange
            )
            confirms = await asyncio.gather(
                *(self._copy(target, m, routing_key, extra(m)) for m in messages)
            )
        except Exception as exc:
            self._lost(exc)
            return False
        if any(isinstance(c, DeliveredMessage) for c in confirms):
            raise TargetError(
                f"RabbitMQ routes nothing from exchange {exchange or '(default)'!r} with "
                f"routing key {routing_key!r}: bind a queue to it (declare=True does), or "
                "the messages freight hands back or dead-letters would be lost"
            )
        return True

    @staticmethod
    async def _copy(
        target: AbstractExchange, message: Message, routing_key: str, extra: dict[str, str]
    ) -> Any:
        incoming: AbstractIncomingMessage = message.raw[1]
        headers: dict[str, Any] = dict(incoming.headers or {})
        headers.update(extra)
        return await target.publish(
            aio_pika.Message(
                incoming.body,
                headers=headers,
                content_type=incoming.content_type,
                content_encoding=incoming.content_encoding,
                message_id=incoming.message_id,
                correlation_id=incoming.correlation_id,
                reply_to=incoming.reply_to,  # an RPC request handed back still answers
                priority=incoming.priority,  # and keeps its place in a priority queue
                # a TTL still expires a copy handed back; a dead letter drops it, as
                # RabbitMQ's own dead-lettering does, or it would expire from <queue>.dead
                expiration=None if REASON in extra else incoming.expiration,
                type=incoming.type,
                app_id=incoming.app_id,
                timestamp=incoming.timestamp,
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            ),
            routing_key=routing_key,
            mandatory=True,
        )

    def _lost(self, exc: BaseException) -> None:
        """A settlement failed. A lost connection or channel settles nothing and loses
        nothing: the broker requeues every delivery of that channel, so the batch comes
        back (at least once) and this source reconnects at its next fetch. Anything
        else (a refusal) is raised."""
        self._channel = None
        self._forget()
        error = classify(exc)
        if not isinstance(error, TransientError):
            raise error from exc
        _log.warning(
            "freight: %r lost its channel while settling (%s); the broker "
            "delivers the unsettled messages again",
            self,
            error,
        )
