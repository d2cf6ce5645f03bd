"""``NatsSink``: publish a batch to JetStream awaiting every ack, one outcome per message.

The messages of a write are published at once (concurrent requests on one
connection, up to 1,000 at a time) and their acks awaited together: one round trip's
wait per batch instead of one per message. A message is done when JetStream acknowledged it (it is
stored in a stream); each failure is its own (see
:func:`~freight.connectors._natserrors.classify`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from typing import Any

from freight._core._time import to_seconds
from freight._errors import TargetError
from freight.connectors._brokerkit import (
    CONTENT_TYPE,
    JSON,
    Outgoing,
    check_url,
    encode,
    prepare,
    settled,
    to_key,
)
from freight.connectors._natserrors import classify

try:
    import nats
    from nats.aio.client import Client
    from nats.js import JetStreamContext
except ImportError as exc:  # pragma: no cover - only without the extra
    raise ImportError("freight.connectors.nats needs nats-py: pip install 'freight[nats]'") from exc

__all__ = ["NatsSink", "connect"]

_log = logging.getLogger("freight")

_IN_FLIGHT = 1000  # publishes awaited at once: a huge write never floods the client's buffer


async def connect(url: str, wait: float) -> Client:
    """A nats-py connection to ``url`` (failing fast, with a freight error, when down)."""
    try:
        return await asyncio.wait_for(
            nats.connect(
                url,
                connect_timeout=wait,
                allow_reconnect=True,
                max_reconnect_attempts=-1,
                error_cb=_quiet,
            ),
            wait,
        )
    except Exception as exc:
        raise classify(exc) from exc


async def _quiet(exc: Exception) -> None:
    """nats-py reports each failed (re)connect attempt here; it retries by itself."""
    _log.debug("freight: NATS connection: %s", exc)


class NatsSink:
    """Publishes items to NATS JetStream, each message awaited until stored.

    Args:
        url: the NATS URL, ``nats://127.0.0.1:4222``.
        subject: the subject, or ``item -> subject``; a stream must take it (a subject
            no stream takes fails its messages with a :class:`~freight.PermanentError`).
        encode: ``item -> bytes`` (default: bytes as they are, text as UTF-8, else
            JSON, sent with the header ``content-type: application/json``).
        headers: ``item -> {name: value}`` for the message's headers.
        timeout: seconds to wait for each ack (a late one fails its message, transient).

    ``write(items)`` returns ``None`` when every message was stored, else one outcome
    per item (``None`` or the item's error): the handler contract.
    """

    def __init__(
        self,
        url: str,
        subject: str | Callable[[Any], str],
        *,
        encode: Callable[[Any], bytes] = encode,
        headers: Callable[[Any], Mapping[str, str] | None] | None = None,
        timeout: float = 10.0,
    ) -> None:
        self.url = check_url(
            url, "NatsSink", ("nats", "tls", "ws", "wss", ""), "nats://127.0.0.1:4222"
        )
        self._subject = to_key(subject, "NatsSink(subject=)")
        self._encode, self._headers = encode, headers
        self._timeout = to_seconds(timeout, "NatsSink(timeout=)", allow_zero=False)
        self._nc: Client | None = None
        self._js: JetStreamContext | None = None

    def __repr__(self) -> str:
        return f"NatsSink({self.url!r})"

    async def aclose(self) -> None:
        """Close the connection (a later write opens a new one)."""
        nc, self._nc, self._js = self._nc, None, None
        if nc is not None and not nc.is_closed:
            await nc.close()

    async def _jetstream(self) -> JetStreamContext:
        if self._js is None or self._nc is None or self._nc.is_closed:
            self._nc = await connect(self.url, self._timeout)
            self._js = self._nc.jetstream(timeout=self._timeout)
        return self._js

    async def write(self, items: list[Any], context: object = None) -> list[Any] | None:
        """Publish ``items``; ``None`` when all were stored, else one outcome per item.

        Raises :class:`~freight.TransientError` when NATS cannot be reached (nothing sent).
        """
        if not items:
            return None
        outcomes: list[Any] = prepare(
            items, encoder=self._encode, key=self._subject, headers=self._headers
        )
        try:
            js = await self._jetstream()
        except TargetError as refused:
            return [refused] * len(items)
        sending = [(i, o) for i, o in enumerate(outcomes) if isinstance(o, Outgoing)]
        for start in range(0, len(sending), _IN_FLIGHT):
            group = sending[start : start + _IN_FLIGHT]
            results = await asyncio.gather(
                *(self._publish(js, o) for _, o in group), return_exceptions=True
            )
            for (i, _), result in zip(group, results, strict=True):
                outcomes[i] = classify(result) if isinstance(result, BaseException) else None
        return settled(outcomes)

    async def _publish(self, js: JetStreamContext, message: Outgoing) -> Any:
        headers = dict(message.headers)
        if message.json:
            headers[CONTENT_TYPE] = JSON
        return await js.publish(
            message.key or "", message.body, timeout=self._timeout, headers=headers or None
        )
