"""RabbitMQ (aio-pika) errors mapped to freight's classes, in one place.

- the server refuses an entity (no such exchange or queue, no access, a declared
  entity with other arguments): :class:`~freight.TargetError`, for every item: nothing
  can land until someone fixes the topology or the permissions;
- a message the broker nacks (an internal error, a queue at its ``x-max-length`` with
  ``reject-publish``): :class:`~freight.TransientError` for that message;
- a message returned as unroutable (``mandatory``: no queue is bound for its routing
  key): :class:`~freight.PermanentError` for that message;
- a lost connection or channel, a timeout: :class:`~freight.TransientError`; the next
  call reconnects.
"""

from __future__ import annotations

import asyncio

from freight._errors import FreightError, PermanentError, TargetError, TransientError

try:
    from aio_pika import exceptions as amqp
except ImportError as exc:  # pragma: no cover - only without the extra
    raise ImportError(
        "freight.connectors.rabbitmq needs aio-pika: pip install 'freight[rabbitmq]'"
    ) from exc

__all__ = ["classify"]

_REFUSED = (
    amqp.ChannelNotFoundEntity,
    amqp.ChannelPreconditionFailed,
    amqp.AuthenticationError,
    amqp.ProbableAuthenticationError,
)


def classify(exc: BaseException) -> FreightError:
    """The freight error for an aio-pika / aiormq exception (kept as ``__cause__``)."""
    if isinstance(exc, FreightError):
        return exc
    error: FreightError
    detail = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, _REFUSED) or "ACCESS_REFUSED" in str(exc):
        error = TargetError(
            f"RabbitMQ refused the operation ({detail}); check that the exchange or queue "
            "exists with these arguments and that the user may use it"
        )
    elif isinstance(exc, amqp.PublishError):  # returned: no queue bound for the key
        error = PermanentError(
            f"RabbitMQ returned the message as unroutable ({detail}); bind a queue for "
            "its routing key or publish with mandatory=False"
        )
    elif isinstance(exc, amqp.DeliveryError):
        error = TransientError(f"RabbitMQ did not confirm the message (nack: {detail})")
    elif isinstance(exc, (*amqp.CONNECTION_EXCEPTIONS, asyncio.TimeoutError)):
        error = TransientError(f"RabbitMQ connection lost or timed out ({detail})")
    else:
        error = PermanentError(f"RabbitMQ failed: {detail}")
    error.__cause__ = exc
    return error
