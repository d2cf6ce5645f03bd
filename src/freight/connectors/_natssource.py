"""``NatsSource``: a JetStream pull consumer read in batches, at least once.

How each settlement maps to JetStream (a durable consumer, explicit acks):

- **fetch**: ``fetch(batch, timeout)`` on a pull subscription; the consumer's
  ``num_delivered`` is the message's delivery count (``Message.attempts``);
- **ack** after success: ``+ACK`` per message, then one flush (a round trip), so the
  server has them before the next fetch;
- **retry** (transient): ``nak(delay=...)``: JetStream delivers it again after the
  delay (the backoff of the :class:`~freight.Retry` policy, or the error's
  ``retry_after``);
- **dead letter** (permanent): with ``dead_letter_subject``, the message is published
  there first (awaiting its ack: a stream must take that subject) with the reason in
  the header ``x-freight-reason`` and where it came from in ``x-freight-subject`` and
  ``x-freight-sequence``; then ``term()``: never delivered again. Without one it is
  only terminated (JetStream emits a ``MSG_TERMINATED`` advisory).

Closing the source naks what it fetched and did not settle, so another consumer
gets it at once instead of after ``ack_wait``; a consumer that dies instead leaves
it to ``ack_wait``. nats-py reconnects by itself after a lost connection; an ack lost
with it only means a redelivery. A fetch while it reconnects waits for it up to
``timeout``, then raises :class:`~freight.TransientError`: never an empty answer, which
``consume(until_idle=True)`` would take for a drained stream.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Any

from freight._core._time import to_seconds
from freight._errors import ConfigError, RecordError, TargetError, TransientError
from freight.connectors._broker import Message, reason
from freight.connectors._brokerkit import check_url, content_type
from freight.connectors._brokerkit import decode as default_decode
from freight.connectors._natserrors import classify
from freight.connectors._natssink import connect

try:
    from nats.aio.client import Client
    from nats.aio.msg import Msg
    from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
    from nats.js.client import JetStreamContext
    from nats.js.errors import NoStreamResponseError, NotFoundError
except ImportError as exc:  # pragma: no cover - only without the extra
    raise ImportError("freight.connectors.nats needs nats-py: pip install 'freight[nats]'") from exc

__all__ = ["REASON", "NatsSource"]

REASON = "x-freight-reason"
"""The header holding a dead letter's reason (``"PermanentError: ..."``)."""

_log = logging.getLogger("freight")

_NO_STREAM = 10059  # JetStream's error code for "stream not found"
_RECONNECT_POLL = 0.05  # seconds between looks at a connection nats-py is re-establishing


class NatsSource:
    """Reads a JetStream stream through a durable pull consumer, for
    :func:`~freight.connectors.consume`.

    Args:
        url: the NATS URL, ``nats://127.0.0.1:4222``.
        stream: the stream's name.
        durable: the durable consumer's name; consumers sharing it share the work
            (created when missing, explicit acks).
        subject: a filter subject within the stream (``None``: all of it).
        dead_letter_subject: where permanent failures are published, with their
            reason, before ``term()`` (a stream must take it); ``None``: term only.
        ack_wait: seconds before JetStream delivers again a message fetched and not
            settled (a consumer that died); keep it above a batch's handling time.
        decode: ``bytes -> body`` (default: JSON back to values when the header
            ``content-type`` is ``application/json``, as :class:`NatsSink` sends JSON,
            else the bytes). A body that cannot be decoded is dead-lettered.
        timeout: seconds to wait for the server on connect and publish.
    """

    def __init__(
        self,
        url: str,
        stream: str,
        durable: str,
        *,
        subject: str | None = None,
        dead_letter_subject: str | None = None,
        ack_wait: float = 30.0,
        decode: Callable[[bytes], Any] | None = None,
        timeout: float = 10.0,
    ) -> None:
        for name, value in (("stream", stream), ("durable", durable)):
            if not value or not isinstance(value, str):
                raise ConfigError(f"NatsSource {name} must be a name, got {value!r}")
        self.url = check_url(
            url, "NatsSource", ("nats", "tls", "ws", "wss", ""), "nats://127.0.0.1:4222"
        )
        self.stream, self.durable = stream, durable
        self.subject, self.dead_letter_subject = subject, dead_letter_subject
        self._ack_wait = to_seconds(ack_wait, "NatsSource(ack_wait=)", allow_zero=False)
        self._timeout = to_seconds(timeout, "NatsSource(timeout=)", allow_zero=False)
        self._decode = decode
        self._nc: Client | None = None
        self._js: JetStreamContext | None = None
        self._sub: JetStreamContext.PullSubscription | None = None
        self._unsettled: dict[str, Msg] = {}

    def __repr__(self) -> str:
        return f"NatsSource(stream={self.stream!r}, durable={self.durable!r})"

    @property
    def connection(self) -> Client | None:
        """The nats-py client in use (``None`` before the first fetch or after close)."""
        return self._nc

    async def _subscription(self) -> JetStreamContext.PullSubscription:
        if self._sub is not None and self._nc is not None and not self._nc.is_closed:
            return self._sub
        self._nc = await connect(self.url, self._timeout)
        self._js = self._nc.jetstream(timeout=self._timeout)
        config = ConsumerConfig(
            durable_name=self.durable,
            ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.ALL,
            ack_wait=self._ack_wait,
            max_deliver=-1,
            filter_subject=self.subject,
        )
        try:
            await self._js.add_consumer(self.stream, config)
            self._sub = await self._js.pull_subscribe_bind(self.durable, self.stream)
        except Exception as exc:
            await self.close()
            if isinstance(exc, NotFoundError) and exc.err_code == _NO_STREAM:
                raise TargetError(
                    f"NATS JetStream has no stream {self.stream!r}: create it with the "
                    "subjects it takes (nats stream add, or js.add_stream), or pass the "
                    "name of one that exists"
                ) from exc
            raise classify(exc) from exc
        return self._sub

    async def fetch(self, max_items: int, timeout: float) -> list[Message]:  # noqa: ASYNC109
        """Up to ``max_items`` messages, waiting at most ``timeout`` s for the first."""
        sub = await self._subscription()
        for _ in range(2):
            await self._reconnected()
            try:
                found = await sub.fetch(max_items, timeout=max(timeout, 0.001))
                break
            except TimeoutError:  # nats-py's own and asyncio's: nothing came, or
                if self._nc is None or self._nc.is_connected:  # the connection went
                    return []
            except Exception as exc:
                raise classify(exc) from exc
        else:  # down again while fetching, twice: not an empty stream
            raise TransientError(f"{self!r} lost its NATS connection while fetching, twice")
        return await self._received(found)

    async def _reconnected(self) -> None:
        """Wait (up to ``timeout``) for a connection nats-py is re-establishing.

        A fetch sent while it is down times out as if nothing came: ``consume`` with
        ``until_idle`` then ended as drained while the stream still held messages. A
        short drop is ridden out; a longer one is a :class:`~freight.TransientError`.
        """
        nc, waited = self._nc, 0.0
        while nc is not None and not nc.is_connected and not nc.is_closed:
            if waited >= self._timeout:
                raise TransientError(
                    f"{self!r} lost its NATS connection and did not get it back within "
                    f"{self._timeout} s (nats-py goes on reconnecting); nothing fetched"
                )
            await asyncio.sleep(_RECONNECT_POLL)
            waited += _RECONNECT_POLL

    async def _received(self, found: list[Msg]) -> list[Message]:
        messages, undecodable = [], []
        for msg in found:
            message, error = self._message(msg)
            self._unsettled[message.id] = msg
            if error is None:
                messages.append(message)
            else:
                undecodable.append((message, error))
        if undecodable:  # poison before any handler: dead-lettered at once, with why
            await self.dead_letter(undecodable)
        return messages

    def _message(self, msg: Msg) -> tuple[Message, RecordError | None]:
        meta = msg.metadata
        headers = dict(msg.headers or {})
        message = Message(
            body=None,
            id=str(meta.sequence.stream),
            attempts=meta.num_delivered or 1,
            key=msg.subject,
            headers=headers,
            raw=msg,
        )
        try:
            if self._decode is not None:
                message.body = self._decode(msg.data)
            else:
                message.body = default_decode(msg.data, content_type(headers))
        except Exception as exc:
            error = RecordError(f"the message body cannot be decoded: {exc}")
            error.__cause__ = exc
            return message, error
        return message, None

    async def _settled(self, messages: Sequence[Message]) -> None:
        for message in messages:
            self._unsettled.pop(message.id, None)
        if self._nc is not None and not self._nc.is_closed:
            try:
                await self._nc.flush(timeout=max(1, round(self._timeout)))
            except Exception as exc:  # the acks may be lost: then they come back
                _log.warning("freight: %r could not flush its acks (%s)", self, exc)

    async def ack(self, messages: Sequence[Message]) -> None:
        """Acknowledge ``messages`` (``+ACK`` each, one flush)."""
        await self._each(messages, lambda msg: msg.ack())
        await self._settled(messages)

    async def retry(self, messages: Sequence[Message], delay: float) -> None:
        """``nak`` each message: JetStream delivers it again after ``delay`` seconds."""
        await self._each(messages, lambda msg: msg.nak(delay=delay if delay > 0 else None))
        await self._settled(messages)

    async def dead_letter(self, failed: Sequence[tuple[Message, BaseException]]) -> None:
        """Publish each to ``dead_letter_subject`` with its reason, then ``term`` it."""
        js = self._js
        if self.dead_letter_subject is not None and js is not None:
            for message, error in failed:
                msg: Msg = message.raw
                headers = dict(msg.headers or {})
                headers[REASON] = reason(error)
                headers["x-freight-subject"] = msg.subject
                headers["x-freight-sequence"] = message.id
                try:
                    await js.publish(self.dead_letter_subject, msg.data, headers=headers)
                except NoStreamResponseError as exc:
                    raise TargetError(
                        f"no JetStream stream takes dead_letter_subject "
                        f"{self.dead_letter_subject!r}: add it to a stream's subjects; "
                        f"message {message.id} is not terminated, it comes back"
                    ) from exc
                except Exception as exc:
                    raise classify(exc) from exc  # not terminated: it comes back
        await self._each([m for m, _ in failed], lambda msg: msg.term())
        await self._settled([m for m, _ in failed])

    async def _each(self, messages: Sequence[Message], settle: Callable[[Msg], Any]) -> None:
        for message in messages:
            try:
                await settle(message.raw)
            except Exception as exc:
                error = classify(exc)
                if not isinstance(error, TransientError):
                    raise error from exc
                _log.warning(
                    "freight: %r could not settle message %s (%s); JetStream delivers "
                    "it again after ack_wait",
                    self,
                    message.id,
                    error,
                )

    async def close(self) -> None:
        """Hand back (``nak``) what was fetched and not settled, then disconnect."""
        nc, self._nc, self._js, self._sub = self._nc, None, None, None
        unsettled, self._unsettled = list(self._unsettled.values()), {}
        if nc is None or nc.is_closed:
            return
        for msg in unsettled:
            try:
                await msg.nak()
            except Exception as exc:  # then ack_wait brings it back
                _log.debug("freight: nak on close failed: %s", exc)
        try:
            await nc.flush(timeout=max(1, round(self._timeout)))
        except Exception as exc:  # lost or reconnecting: the naks may be lost too
            _log.debug("freight: flushing the naks on close failed: %s", exc)
        try:  # closed whatever the flush did, or nats-py goes on reconnecting forever
            await nc.close()
        except Exception as exc:
            _log.debug("freight: closing the NATS connection failed: %s", exc)
