"""``KafkaSource``: a consumer group read in batches, offsets committed only after success.

Kafka acknowledges by offset, per partition: committing offset *o* says every record
before *o* is done. So this source keeps, per partition, what it fetched and what of
it is settled, and commits the lowest offset not settled yet:

- **fetch**: ``getmany(max_records=...)``; records of one partition stay in order;
- **ack** / **dead letter**: the records are settled; the commit point moves past
  every settled record with nothing unsettled before it, and is committed
  (``enable_auto_commit`` is off: nothing is ever committed ahead of the handler);
- **retry** (transient): Kafka cannot hand one record back, so the partition is
  rewound (``seek``) to the first record handed back; records after it that were
  settled meanwhile are skipped when read again, not handled twice. The commit
  point stays before the record until it is settled. (A record comes back at once:
  the in-process :class:`~freight.Retry` already waited its backoff.)
- **dead letter** (permanent): the record is produced to the dead-letter topic
  (default ``<topic>.dead``, created if missing) with its key and headers, the reason
  in ``x-freight-reason`` and where it came from in ``x-freight-topic``,
  ``x-freight-partition`` and ``x-freight-offset``, every delivery awaited, and only
  then settled.

**Rebalance-safe.** A :class:`ConsumerRebalanceListener` commits, for each partition
about to be revoked, what finished before it goes; records in flight there are not
committed and the partition's new owner reads them again (at most one batch twice).

**Delivery counts.** Kafka counts no deliveries: ``Message.attempts`` counts the
times this consumer read the record (a record handed back comes again with 2, 3, …),
so ``max_deliveries`` ends a record that keeps failing transiently; a record read
again by another member after a crash or a rebalance starts again at 1. (Commit
metadata could carry counts across members, but not every Kafka-protocol broker keeps
it: Tansu drops it.)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from freight._core._time import to_seconds
from freight._errors import ConfigError, RecordError
from freight.connectors._broker import Message, reason
from freight.connectors._brokerkit import content_type
from freight.connectors._brokerkit import decode as default_decode
from freight.connectors._kafkaerrors import classify
from freight.connectors._kafkasink import check_servers

try:
    from aiokafka import (  # type: ignore[import-untyped]
        AIOKafkaConsumer,
        AIOKafkaProducer,
        ConsumerRebalanceListener,
    )
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic  # type: ignore[import-untyped]
    from aiokafka.errors import (  # type: ignore[import-untyped]
        CommitFailedError,
        IllegalStateError,
        TopicAlreadyExistsError,
    )
    from aiokafka.structs import OffsetAndMetadata  # type: ignore[import-untyped]
except ImportError as exc:  # pragma: no cover - only without the extra
    raise ImportError(
        "freight.connectors.kafka needs aiokafka: pip install 'freight[kafka]'"
    ) from exc

__all__ = ["REASON", "KafkaSource"]

REASON = "x-freight-reason"
"""The header holding a dead letter's reason (``"PermanentError: ..."``)."""

_log = logging.getLogger("freight")

# The dead-letter producer's size guard. A record read from the topic was accepted by
# the broker already; aiokafka's default guard (1 MiB) refused a bigger one client-side,
# so a large poison record could never be dead-lettered and stopped its partition.
_DEAD_LETTER_MAX = 64 << 20


@dataclass(slots=True)
class _Partition:
    """What this consumer fetched from one partition and how much of it is settled."""

    inflight: dict[int, int] = field(default_factory=dict)  # offset -> attempts
    again: dict[int, int] = field(default_factory=dict)  # handed back: offset -> attempts
    done: set[int] = field(default_factory=set)  # settled, at or past the commit point
    end: int = -1  # one past the highest offset fetched
    next_read: int = 0  # the consumer's position: after a rewind, below ``end``

    def take(self, offset: int) -> int | None:
        """Record a fetched record; its delivery count, or ``None`` when it was settled
        already (read again after a rewind: not handled twice)."""
        self.next_read = offset + 1
        if offset in self.done:
            return None
        attempts = self.again.pop(offset) + 1 if offset in self.again else 1
        self.inflight[offset] = attempts
        self.end = max(self.end, offset + 1)
        return attempts

    def settle(self, offset: int) -> None:
        """The record is done (handled, or dead-lettered)."""
        self.inflight.pop(offset, None)
        self.done.add(offset)

    def hand_back(self, offset: int, attempts: int) -> None:
        """The record is to be read again (the caller rewinds the partition to it)."""
        self.again[offset] = self.inflight.pop(offset, attempts)
        self.next_read = min(self.next_read, offset)

    def point(self) -> int | None:
        """The offset to commit: the first unsettled record (``None``: nothing fetched).
        Settled records before it and before the position are forgotten: they are
        never read again (after a rewind the position may be behind the commit point,
        and what lies between must still be skipped)."""
        open_ = [*self.inflight, *self.again]
        point = min(open_) if open_ else self.end if self.end >= 0 else None
        if point is not None:
            floor = min(point, self.next_read)
            self.done = {o for o in self.done if o >= floor}
        return point


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    """Commits what finished before partitions go."""

    def __init__(self, source: KafkaSource) -> None:
        self._source = source

    async def on_partitions_revoked(self, revoked: Any) -> None:
        await self._source._commit(list(revoked), quiet=True)
        for tp in revoked:
            self._source._parts.pop(tp, None)

    async def on_partitions_assigned(self, assigned: Any) -> None:
        """Nothing to do: a partition's state starts with its first fetch."""


class KafkaSource:
    """Reads a Kafka topic as a consumer group member, for
    :func:`~freight.connectors.consume` (at least once; see the module docstring).

    Args:
        bootstrap_servers: ``"host:port"`` (or several, comma-separated).
        topic: the topic to read.
        group_id: the consumer group; members share the topic's partitions.
        dead_letter_topic: where permanent failures go (default ``<topic>.dead``).
        decode: ``bytes -> body`` (default: JSON back to values when the header
            ``content-type`` is ``application/json``, as :class:`KafkaSink` sends JSON,
            else the bytes). A body that cannot be decoded is dead-lettered.
        session_timeout: seconds without heartbeat before the group gives a dead
            member's partitions to the others.
        auto_offset_reset: where a group with no committed offset starts
            (``"earliest"`` or ``"latest"``).
        timeout: seconds a request to the broker may take; longer than
            ``session_timeout`` (a group join may take that long).
    """

    def __init__(
        self,
        bootstrap_servers: str,
        topic: str,
        group_id: str,
        *,
        dead_letter_topic: str | None = None,
        decode: Callable[[bytes], Any] | None = None,
        session_timeout: float = 10.0,
        auto_offset_reset: str = "earliest",
        timeout: float = 30.0,
    ) -> None:
        for name, value in (("topic", topic), ("group_id", group_id)):
            if not value or not isinstance(value, str):
                raise ConfigError(f"KafkaSource {name} must be a name, got {value!r}")
        if auto_offset_reset not in ("earliest", "latest"):
            raise ConfigError(
                f"KafkaSource auto_offset_reset must be 'earliest' or 'latest', "
                f"got {auto_offset_reset!r}"
            )
        self.bootstrap_servers = check_servers(bootstrap_servers, "KafkaSource")
        self.topic, self.group_id = topic, group_id
        self.dead_letter_topic = dead_letter_topic or f"{topic}.dead"
        self._decode, self._reset = decode, auto_offset_reset
        self._session = to_seconds(session_timeout, "KafkaSource(session_timeout=)")
        self._timeout = to_seconds(timeout, "KafkaSource(timeout=)", allow_zero=False)
        if self._timeout <= self._session:
            # aiokafka sends JoinGroup with this request timeout, and the broker may hold
            # a join up to the rebalance timeout (= the session timeout): a shorter one
            # times the join out again and again, and the consumer never starts.
            raise ConfigError(
                f"KafkaSource timeout ({self._timeout} s) must be longer than "
                f"session_timeout ({self._session} s): a group join may take up to the "
                "session timeout; raise timeout or lower session_timeout"
            )
        self._consumer: AIOKafkaConsumer | None = None
        self._producer: AIOKafkaProducer | None = None
        self._parts: dict[Any, _Partition] = {}

    def __repr__(self) -> str:
        return f"KafkaSource({self.topic!r}, group_id={self.group_id!r})"

    async def _started(self) -> AIOKafkaConsumer:
        if self._consumer is not None:
            return self._consumer
        session_ms = max(1000, round(self._session * 1000))
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap_servers,
            group_id=self.group_id,
            enable_auto_commit=False,
            auto_offset_reset=self._reset,
            session_timeout_ms=session_ms,
            heartbeat_interval_ms=max(100, session_ms // 4),
            request_timeout_ms=round(self._timeout * 1000),
        )
        try:
            await self._create_dead_letter_topic()
            consumer.subscribe([self.topic], listener=_Listener(self))
            await consumer.start()
        except BaseException as exc:
            # Cancelled too (start waits for the group's assignment, as long as it takes):
            # a consumer left running would go on joining the group, unclosed.
            await consumer.stop()
            await self.close()
            if isinstance(exc, Exception):
                raise classify(exc) from exc
            raise
        self._consumer = consumer
        return consumer

    async def _create_dead_letter_topic(self) -> None:
        """Create the dead-letter topic (as many partitions as the topic) if missing."""
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap_servers)
        try:
            await admin.start()
            partitions = await admin.describe_topics([self.topic])
            count = max(1, len(partitions[0].get("partitions", []) if partitions else []))
            await admin.create_topics([NewTopic(self.dead_letter_topic, count, 1)])
        except TopicAlreadyExistsError:
            pass
        finally:
            await admin.close()

    async def fetch(self, max_items: int, timeout: float) -> list[Message]:  # noqa: ASYNC109
        """Up to ``max_items`` records, waiting at most ``timeout`` s for the first."""
        consumer = await self._started()
        try:
            batches = await consumer.getmany(
                timeout_ms=max(1, round(timeout * 1000)), max_records=max_items
            )
        except Exception as exc:
            raise classify(exc) from exc
        messages, undecodable = [], []
        for tp, records in batches.items():
            part = self._parts.setdefault(tp, _Partition())
            for record in records:
                attempts = part.take(record.offset)
                if attempts is None:  # settled before a rewind: not again
                    continue
                message, error = self._message(tp, record, attempts)
                if error is None:
                    messages.append(message)
                else:
                    undecodable.append((message, error))
        if undecodable:  # poison before any handler: dead-lettered at once, with why
            await self.dead_letter(undecodable)
        return messages

    def _message(self, tp: Any, record: Any, attempts: int) -> tuple[Message, RecordError | None]:
        headers = {k: v.decode("utf-8", "replace") for k, v in record.headers or ()}
        message = Message(
            body=None,
            id=f"{tp.topic}/{tp.partition}/{record.offset}",
            attempts=attempts,
            key=None if record.key is None else record.key.decode("utf-8", "replace"),
            headers=headers,
            raw=(tp, record),
        )
        try:
            value = record.value or b""
            if self._decode is not None:
                message.body = self._decode(value)
            else:
                message.body = default_decode(value, content_type(headers))
        except Exception as exc:
            error = RecordError(f"the record's value cannot be decoded: {exc}")
            error.__cause__ = exc
            return message, error
        return message, None

    def _settle(self, messages: Sequence[Message]) -> set[Any]:
        touched = set()
        for message in messages:
            tp, record = message.raw
            part = self._parts.get(tp)
            if part is None:  # revoked meanwhile: its new owner reads it again
                continue
            part.settle(record.offset)
            touched.add(tp)
        return touched

    async def ack(self, messages: Sequence[Message]) -> None:
        """Settle ``messages`` and commit each partition's new commit point."""
        await self._commit(list(self._settle(messages)))

    async def retry(self, messages: Sequence[Message], delay: float) -> None:
        """Hand ``messages`` back: their partitions are rewound to the first of them."""
        consumer = self._consumer
        rewind: dict[Any, int] = {}
        for message in messages:
            tp, record = message.raw
            part = self._parts.get(tp)
            if part is None or consumer is None:
                continue
            part.hand_back(record.offset, message.attempts)
            rewind[tp] = min(rewind.get(tp, record.offset), record.offset)
        for tp, offset in rewind.items():
            assert consumer is not None
            consumer.seek(tp, offset)

    async def dead_letter(self, failed: Sequence[tuple[Message, BaseException]]) -> None:
        """Produce each record to the dead-letter topic with its reason, then settle it."""
        if not failed:
            return
        producer = await self._dead_letter_producer()
        deliveries = []
        try:
            for message, error in failed:
                tp, record = message.raw
                headers = [
                    (k, v) for k, v in record.headers or () if not k.startswith("x-freight-")
                ]
                headers += [
                    (REASON, reason(error).encode("utf-8")),
                    ("x-freight-topic", tp.topic.encode("utf-8")),
                    ("x-freight-partition", str(tp.partition).encode()),
                    ("x-freight-offset", str(record.offset).encode()),
                ]
                deliveries.append(
                    await producer.send(
                        self.dead_letter_topic, record.value, key=record.key, headers=headers
                    )
                )
            await asyncio.gather(*deliveries)
        except Exception as exc:  # not settled: read again and dead-lettered then
            await asyncio.gather(*deliveries, return_exceptions=True)
            raise classify(exc) from exc
        await self._commit(list(self._settle([m for m, _ in failed])))

    async def _dead_letter_producer(self) -> AIOKafkaProducer:
        if self._producer is None:
            producer = AIOKafkaProducer(
                bootstrap_servers=self.bootstrap_servers,
                acks="all",
                request_timeout_ms=round(self._timeout * 1000),
                max_request_size=_DEAD_LETTER_MAX,
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

    async def _commit(self, tps: list[Any], *, quiet: bool = False) -> None:
        """Commit the commit point of each of ``tps``."""
        consumer = self._consumer
        if consumer is None:
            return
        offsets = {}
        for tp in tps:
            part = self._parts.get(tp)
            point = None if part is None else part.point()
            if point is None:
                continue
            offsets[tp] = OffsetAndMetadata(point, "")
        if not offsets:
            return
        try:
            # Bounded: aiokafka retries a commit until it finds the group's coordinator,
            # so with the broker gone an ack waited forever and consume hung silently.
            await asyncio.wait_for(consumer.commit(offsets), self._timeout)
        except (CommitFailedError, IllegalStateError) as exc:
            # The group rebalanced: these partitions are someone else's now, and their
            # new owner reads the uncommitted records again (at least once).
            _log.warning("freight: %r could not commit after a rebalance (%s)", self, exc)
        except Exception as exc:
            if not quiet:
                raise classify(exc) from exc
            _log.warning("freight: %r could not commit (%s)", self, exc)

    async def close(self) -> None:
        """Leave the group (unsettled records are read again by whoever gets them)."""
        consumer, self._consumer = self._consumer, None
        producer, self._producer = self._producer, None
        self._parts.clear()
        for client in (consumer, producer):
            if client is not None:
                await _stop(client)


class _Connections(Protocol):
    async def close(self) -> None: ...


class _AiokafkaClient(Protocol):
    """aiokafka's consumer and producer as far as stopping goes: ``stop()`` and the
    connection pool they own, which aiokafka (0.14) names ``_client``. The pool is
    touched only when ``stop()`` was cut short (:func:`_stop`)."""

    _client: _Connections

    async def stop(self) -> None: ...


async def _stop(client: _AiokafkaClient) -> None:
    """Stop an aiokafka client, whatever state its broker is in.

    With the broker gone, aiokafka's fetcher awaits the fetch tasks it has just
    cancelled without suppressing their ``CancelledError``: ``stop()`` raised it to a
    caller nobody cancelled (a ``finally: await source.close()`` then looked like a
    cancellation) and skipped closing the client's connections, closed here instead.
    """
    try:
        await client.stop()
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise  # a real cancellation of ours: passed on
        with contextlib.suppress(Exception):
            await client._client.close()
    except Exception as exc:
        _log.debug("freight: stopping a Kafka client failed: %s", exc)
