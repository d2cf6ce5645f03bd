"""``KafkaSink``: produce a batch, every record's delivery awaited, one outcome per record.

**The BatchSpec mapping.** The producer batches too (per partition, in its
accumulator); the sink's ``spec`` sets it so the two agree:

=====================  =========================  ===========================================
``BatchSpec``          aiokafka producer          why
=====================  =========================  ===========================================
``timeout`` (s)        ``linger_ms`` (ms)          a record waits in the producer at most as
                                                   long as freight lets an item wait for its
                                                   batch; no timeout: ``linger_ms=0``, a
                                                   write's records leave at once
``max_bytes``          ``max_batch_size``          bytes per partition batch; without it
                                                   aiokafka's 16 KiB
``size``               records in flight           a write sends at most ``size`` records
                                                   before awaiting their deliveries, so a
                                                   huge write never fills the producer's
                                                   buffer
=====================  =========================  ===========================================

Handed a freight batch by a :class:`~freight.Batcher`, keep the spec's ``timeout`` small
(or none): freight already waited for the batch, and every write awaits its records.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import Any

from freight._core._spec import BatchSpec
from freight._core._time import to_seconds
from freight._errors import ConfigTypeError, TargetError
from freight.connectors._brokerkit import (
    CONTENT_TYPE,
    JSON,
    Outgoing,
    encode,
    prepare,
    settled,
    to_key,
)
from freight.connectors._kafkaerrors import classify

try:
    from aiokafka import AIOKafkaProducer  # type: ignore[import-untyped]
except ImportError as exc:  # pragma: no cover - only without the extra
    raise ImportError(
        "freight.connectors.kafka needs aiokafka: pip install 'freight[kafka]'"
    ) from exc

__all__ = ["KafkaSink", "check_servers", "producer_options"]

DEFAULT_MAX_BATCH_SIZE = 16384  # aiokafka's own default, bytes per partition batch


def check_servers(servers: object, what: str) -> str:
    """``servers`` when it is a ``"host:port[,host:port]"`` string; else a
    :class:`~freight.ConfigTypeError` naming it (aiokafka failed only at the first fetch
    or write, with ``'int' object is not iterable``)."""
    if not isinstance(servers, str) or not servers.strip():
        raise ConfigTypeError(
            f"{what} bootstrap_servers must be a string such as '127.0.0.1:9092' (several "
            f"comma-separated), got {servers!r} ({type(servers).__name__})"
        )
    return servers


def producer_options(spec: BatchSpec | None) -> dict[str, int]:
    """The aiokafka producer settings ``spec`` maps to (see the module docstring)."""
    if spec is None:
        return {"linger_ms": 0, "max_batch_size": DEFAULT_MAX_BATCH_SIZE}
    if not isinstance(spec, BatchSpec):
        raise ConfigTypeError(f"KafkaSink(spec=) must be a freight.BatchSpec, got {spec!r}")
    linger = 0 if spec.timeout is None else round(spec.timeout * 1000)
    size = DEFAULT_MAX_BATCH_SIZE if spec.max_bytes is None else spec.max_bytes
    return {"linger_ms": linger, "max_batch_size": size}


class KafkaSink:
    """Produces items to Kafka, each record's delivery awaited (``acks="all"``).

    Args:
        bootstrap_servers: ``"host:port"`` (or several, comma-separated).
        topic: the topic, or ``item -> topic``.
        key: the record key, or ``item -> key`` (records of one key keep their order:
            they go to one partition); ``None``: no key.
        spec: the producer's batching (see the module docstring for the mapping).
        encode: ``item -> bytes`` (default: bytes as they are, text as UTF-8, else
            JSON, sent with the header ``content-type: application/json``).
        headers: ``item -> {name: value}`` for the record's headers.
        timeout: seconds a record may wait for its delivery (``request_timeout_ms``).

    ``write(items)`` returns ``None`` when every record was delivered, else one outcome
    per item (``None`` or the item's error): the handler contract.
    """

    def __init__(
        self,
        bootstrap_servers: str,
        topic: str | Callable[[Any], str],
        *,
        key: str | Callable[[Any], str | None] | None = None,
        spec: BatchSpec | None = None,
        encode: Callable[[Any], bytes] = encode,
        headers: Callable[[Any], Mapping[str, str] | None] | None = None,
        timeout: float = 30.0,
    ) -> None:
        self.bootstrap_servers = check_servers(bootstrap_servers, "KafkaSink")
        self._topic = to_key(topic, "KafkaSink(topic=)")
        self._key = to_key(key, "KafkaSink(key=)")
        self.options = producer_options(spec)
        self._in_flight = None if spec is None or spec.time_only else spec.size
        self._encode, self._headers = encode, headers
        self._timeout = to_seconds(timeout, "KafkaSink(timeout=)", allow_zero=False)
        self._producer: AIOKafkaProducer | None = None

    def __repr__(self) -> str:
        return f"KafkaSink({self.bootstrap_servers!r}, {self.options})"

    async def aclose(self) -> None:
        """Flush and stop the producer (a later write starts a new one)."""
        producer, self._producer = self._producer, None
        if producer is not None:
            await producer.stop()

    async def _started(self) -> AIOKafkaProducer:
        if self._producer is None:
            producer = AIOKafkaProducer(
                bootstrap_servers=self.bootstrap_servers,
                acks="all",
                request_timeout_ms=round(self._timeout * 1000),
                **self.options,
            )
            try:
                await producer.start()
            except BaseException as exc:  # cancelled too: never leave it running
                await producer.stop()
                if isinstance(exc, Exception):
                    raise classify(exc) from exc
                raise
            self._producer = producer
        return self._producer

    async def write(self, items: list[Any], context: object = None) -> list[Any] | None:
        """Produce ``items``; ``None`` when all were delivered, else one outcome per item.

        Raises :class:`~freight.TransientError` when no broker can be reached.
        """
        if not items:
            return None
        outcomes: list[Any] = prepare(
            items, encoder=self._encode, key=self._key, headers=self._headers
        )
        try:
            producer = await self._started()
        except TargetError as refused:
            return [refused] * len(items)
        sending = [(i, o) for i, o in enumerate(outcomes) if isinstance(o, Outgoing)]
        step = self._in_flight or len(sending) or 1
        for start in range(0, len(sending), step):
            group = sending[start : start + step]
            results = await asyncio.gather(
                *(self._produce(producer, items[i], o) for i, o in group),
                return_exceptions=True,
            )
            for (i, _), result in zip(group, results, strict=True):
                outcomes[i] = classify(result) if isinstance(result, BaseException) else None
        return settled(outcomes)

    async def _produce(self, producer: AIOKafkaProducer, item: Any, message: Outgoing) -> Any:
        assert self._topic is not None
        headers = [(k, v.encode("utf-8")) for k, v in message.headers.items()]
        if message.json:
            headers.append((CONTENT_TYPE, JSON.encode()))
        delivery = await producer.send(
            self._topic(item) or "",
            message.body,
            key=None if message.key is None else message.key.encode("utf-8"),
            headers=headers or None,
        )
        return await delivery
