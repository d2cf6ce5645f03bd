"""NATS JetStream (nats-py) errors mapped to freight's classes, in one place.

- no stream takes the subject (no responders), a message over the server's
  ``max_payload``, a bad subject or header, a refused request (``400``):
  :class:`~freight.PermanentError` for that message;
- a missing stream or consumer (``404``), no permission: :class:`~freight.TargetError`;
- a timeout, a lost, draining or reconnecting connection, a busy server (``503``, a
  stream at its limits): :class:`~freight.TransientError`; nats-py reconnects by itself.
"""

from __future__ import annotations

import asyncio

from freight._errors import FreightError, PermanentError, TargetError, TransientError

try:
    import nats.errors
    import nats.js.errors
except ImportError as exc:  # pragma: no cover - only without the extra
    raise ImportError("freight.connectors.nats needs nats-py: pip install 'freight[nats]'") from exc

__all__ = ["classify"]

_TRANSIENT = (
    nats.errors.TimeoutError,
    nats.errors.ConnectionClosedError,
    nats.errors.ConnectionDrainingError,
    nats.errors.ConnectionReconnectingError,
    nats.errors.StaleConnectionError,
    nats.errors.OutboundBufferLimitError,
    nats.errors.NoServersError,
    nats.errors.FlushTimeoutError,
    nats.js.errors.ServiceUnavailableError,
    nats.js.errors.ServerError,
    asyncio.TimeoutError,
    ConnectionError,
    OSError,
)
_PERMANENT = (
    nats.js.errors.NoStreamResponseError,
    nats.errors.MaxPayloadError,
    nats.errors.BadSubjectError,
    nats.errors.BadHeaderError,
    nats.js.errors.BadRequestError,
)


def classify(exc: BaseException) -> FreightError:
    """The freight error for a nats-py exception (kept as ``__cause__``)."""
    if isinstance(exc, FreightError):
        return exc
    detail = f"{type(exc).__name__}: {exc}".rstrip(": ")
    error: FreightError
    if isinstance(exc, nats.js.errors.NoStreamResponseError):
        error = PermanentError(
            f"no JetStream stream takes this subject ({detail}); add the subject to a "
            "stream's subjects or publish to one a stream takes"
        )
    elif isinstance(exc, _PERMANENT):
        error = PermanentError(f"NATS refused the message ({detail})")
    elif isinstance(exc, _TRANSIENT):
        error = TransientError(f"NATS timed out or lost its connection ({detail})")
    elif isinstance(exc, nats.js.errors.NotFoundError | nats.errors.AuthorizationError):
        error = TargetError(
            f"NATS refused the operation ({detail}); check that the stream and consumer "
            "exist and that this user may use them"
        )
    elif isinstance(exc, nats.js.errors.APIError):
        # a stream at its limits (maximum messages or bytes, with discard new) clears up
        error = TransientError(f"JetStream refused the message for now ({detail})")
    else:
        error = PermanentError(f"NATS failed: {detail}")
    error.__cause__ = exc
    return error
