"""Kafka (aiokafka) errors mapped to freight's classes, in one place.

- a record over ``max_request_size`` or the topic's ``max.message.bytes``, an invalid
  topic name: :class:`~freight.PermanentError` for that record;
- no permission on the topic or group: :class:`~freight.TargetError`;
- what Kafka itself marks retriable (``KafkaError.retriable``: a lost or slow broker,
  a leader election, stale metadata) and timeouts: :class:`~freight.TransientError`;
  aiokafka reconnects and refreshes metadata by itself.
"""

from __future__ import annotations

import asyncio

from freight._errors import FreightError, PermanentError, TargetError, TransientError

try:
    from aiokafka import errors as kafka  # type: ignore[import-untyped]
except ImportError as exc:  # pragma: no cover - only without the extra
    raise ImportError(
        "freight.connectors.kafka needs aiokafka: pip install 'freight[kafka]'"
    ) from exc

__all__ = ["classify"]

_REFUSED = (
    kafka.TopicAuthorizationFailedError,
    kafka.GroupAuthorizationFailedError,
    kafka.ClusterAuthorizationFailedError,
)
_TOO_LARGE = (kafka.MessageSizeTooLargeError, kafka.RecordListTooLargeError)
_TRANSIENT = (
    kafka.KafkaTimeoutError,
    kafka.KafkaConnectionError,
    kafka.NoBrokersAvailable,
    kafka.NodeNotReadyError,
    kafka.RequestTimedOutError,
    asyncio.TimeoutError,
    ConnectionError,
)


def classify(exc: BaseException) -> FreightError:
    """The freight error for an aiokafka exception (kept as ``__cause__``)."""
    if isinstance(exc, FreightError):
        return exc
    detail = f"{type(exc).__name__}: {exc}"
    error: FreightError
    if isinstance(exc, _REFUSED):
        error = TargetError(
            f"Kafka refused the operation ({detail}); grant this client the topic or "
            "group ACLs it needs"
        )
    elif isinstance(exc, _TOO_LARGE):
        error = PermanentError(
            f"Kafka refused the record as too large ({detail}); raise the producer's "
            "max_request_size and the topic's max.message.bytes, or send smaller records"
        )
    elif isinstance(exc, _TRANSIENT) or getattr(exc, "retriable", False):
        error = TransientError(f"Kafka timed out or lost a broker ({detail})")
    else:
        error = PermanentError(f"Kafka failed: {detail}")
    error.__cause__ = exc
    return error
