"""``RabbitMQSink``: publish a batch with publisher confirms, one outcome per message.

A write publishes every message of the batch on one confirming channel without
waiting in between, then waits for all the confirms together: one round trip's wait
per batch instead of one per message. Each message gets its own outcome (see
:func:`~freight.connectors._rabbiterrors.classify`): confirmed, nacked (transient),
returned as unroutable (permanent). A connection lost mid-batch fails only the
messages not confirmed yet (transient), and the next write reconnects.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from freight._core._time import to_seconds
from freight._errors import TargetError, TransientError
from freight.connectors._brokerkit import (
    JSON,
    Outgoing,
    check_url,
    encode,
    prepare,
    settled,
    to_key,
)
from freight.connectors._rabbiterrors import classify

try:
    import aio_pika
    from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractExchange
    from aiormq.abc import DeliveredMessage
except ImportError as exc:  # pragma: no cover - only without the extra
    raise ImportError(
        "freight.connectors.rabbitmq needs aio-pika: pip install 'freight[rabbitmq]'"
    ) from exc

__all__ = ["AMQP_EXAMPLE", "RabbitMQSink"]

AMQP_EXAMPLE = "amqp://guest:guest@127.0.0.1:5672/"
"""The URL form the RabbitMQ connectors take (``amqps://`` for TLS)."""


class RabbitMQSink:
    """Publishes items to a RabbitMQ exchange, waiting for the broker's confirms.

    Args:
        url: the AMQP URL, ``amqp://guest:guest@127.0.0.1:5672/``.
        exchange: the exchange's name; ``""`` (the default exchange) routes by queue
            name. A named exchange must exist (a missing one is a
            :class:`~freight.TargetError` for every item).
        routing_key: a routing key, or ``item -> routing key``.
        mandatory: ask the broker to return a message no queue takes; it then fails
            alone with a :class:`~freight.PermanentError` instead of vanishing.
        persistent: delivery mode 2 (the message survives a broker restart in a
            durable queue).
        encode: ``item -> bytes`` (default: bytes as they are, text as UTF-8, else JSON).
        headers: ``item -> {name: value}`` for the message's headers.
        timeout: seconds to wait for a batch's confirms before failing the messages
            still unconfirmed (transient).

    Each message gets a unique ``message_id`` (a freight source's ``Message.id``, the
    same on every delivery: the key for an idempotent consumer).

    ``write(items)`` returns ``None`` when every message was confirmed, else one
    outcome per item (``None`` or the item's error), the handler contract: use it as a
    :class:`~freight.Batcher` handler or a job's sink (``executor="async"``).
    """

    def __init__(
        self,
        url: str,
        *,
        exchange: str = "",
        routing_key: str | Callable[[Any], str] = "",
        mandatory: bool = True,
        persistent: bool = True,
        encode: Callable[[Any], bytes] = encode,
        headers: Callable[[Any], Mapping[str, str] | None] | None = None,
        timeout: float = 30.0,
    ) -> None:
        self.url = check_url(url, "RabbitMQSink", ("amqp", "amqps"), AMQP_EXAMPLE)
        self.exchange = exchange
        self._key = to_key(routing_key, "RabbitMQSink(routing_key=)")
        self._mandatory, self._persistent = mandatory, persistent
        self._encode, self._headers = encode, headers
        self._timeout = to_seconds(timeout, "RabbitMQSink(timeout=)", allow_zero=False)
        self._conn: AbstractConnection | None = None
        self._channel: AbstractChannel | None = None
        self._target: AbstractExchange | None = None

    def __repr__(self) -> str:
        return f"RabbitMQSink(exchange={self.exchange!r})"

    async def aclose(self) -> None:
        """Close the connection (a later write opens a new one)."""
        conn, self._conn, self._channel, self._target = self._conn, None, None, None
        if conn is not None and not conn.is_closed:
            await conn.close()

    async def _exchange(self) -> AbstractExchange:
        channel = self._channel
        if self._target is not None and channel is not None and not channel.is_closed:
            return self._target
        try:
            if self._conn is None or self._conn.is_closed:
                self._conn = await aio_pika.connect(self.url, timeout=self._timeout)
            self._channel = await self._conn.channel(publisher_confirms=True)
            if self.exchange:
                self._target = await self._channel.get_exchange(self.exchange, ensure=True)
            else:
                self._target = self._channel.default_exchange
        except Exception as exc:
            await self.aclose()
            raise classify(exc) from exc
        return self._target

    async def write(self, items: list[Any], context: object = None) -> list[Any] | None:
        """Publish ``items``; ``None`` when all were confirmed, else one outcome per item.

        Raises :class:`~freight.TransientError` when the broker cannot be reached (no
        message was sent); a connection lost mid-batch fails the unconfirmed messages.
        """
        if not items:
            return None
        outcomes: list[Any] = prepare(
            items, encoder=self._encode, key=self._key, headers=self._headers
        )
        try:
            target = await self._exchange()
        except TargetError as refused:
            return [refused] * len(items)
        sending = [(i, o) for i, o in enumerate(outcomes) if isinstance(o, Outgoing)]
        publishes = [asyncio.ensure_future(self._publish(target, o)) for _, o in sending]
        try:
            if publishes:  # asyncio.wait refuses an empty set (every item unsendable)
                await asyncio.wait(publishes, timeout=self._timeout)
        finally:
            # The late ones (and all of them when this write is cancelled) are cancelled
            # and awaited: a cancel only lands at the task's next step, so reading its
            # outcome at once raised InvalidStateError, and a cancelled write left its
            # publishes running, reported later as "Task exception was never retrieved".
            for future in publishes:
                future.cancel()
            await asyncio.gather(*publishes, return_exceptions=True)
        for (i, _), future in zip(sending, publishes, strict=True):
            outcomes[i] = self._outcome(future)
        if any(isinstance(o, TargetError | TransientError) for o in outcomes):
            await self.aclose()  # a refusal or a loss closes the channel: start afresh
        return settled(outcomes)

    async def _publish(self, target: AbstractExchange, message: Outgoing) -> Any:
        return await target.publish(
            aio_pika.Message(
                message.body,
                headers=dict(message.headers) or None,
                content_type=JSON if message.json else None,
                message_id=uuid.uuid4().hex,
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT
                if self._persistent
                else aio_pika.DeliveryMode.NOT_PERSISTENT,
            ),
            routing_key=message.key or "",
            mandatory=self._mandatory,
        )

    def _outcome(self, future: asyncio.Future[Any]) -> Any:
        if future.cancelled():
            return TransientError(
                f"RabbitMQ did not confirm the message within {self._timeout} s; "
                "it may or may not have been published (retried: at-least-once)"
            )
        exc = future.exception()
        if exc is not None:
            return classify(exc)
        confirmation = future.result()
        if isinstance(confirmation, DeliveredMessage):  # returned as unroutable
            return classify(aio_pika.exceptions.PublishError(confirmation, confirmation.delivery))
        return None
