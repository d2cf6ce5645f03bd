"""The whole freight error tree.

Every error freight raises derives from :class:`FreightError`, so one ``except``
catches them all. Where a caller may reasonably catch a builtin instead, the
error inherits that builtin too::

    FreightError
    ├── ConfigError (ValueError)          bad configuration, raised at construction
    ├── BatcherClosed (RuntimeError)      submit after close
    ├── QueueFull                         no room and overflow="reject" (or *_nowait)
    ├── Skipped                           the ``where=`` predicate rejected the item
    ├── HandlerContractError (TypeError)  the handler broke the list-in/list-out rule
    ├── TransientError                    worth retrying: raise or return it from a handler
    └── PermanentError                    never retried, whatever ``retry_on`` says

``TransientError`` is how a handler asks for a retry; there is deliberately no
exception called ``Retry`` (in freight, :class:`~freight.Retry` is the policy).
"""

from __future__ import annotations

__all__ = [
    "BatcherClosed",
    "ConfigError",
    "FreightError",
    "HandlerContractError",
    "PermanentError",
    "QueueFull",
    "Skipped",
    "TransientError",
]


class FreightError(Exception):
    """Root of every error freight raises."""


class ConfigError(FreightError, ValueError):
    """A configuration value is wrong; the message names the parameter and the rule."""


class BatcherClosed(FreightError, RuntimeError):
    """The batcher is closed (or closing) and accepts no new items."""


class QueueFull(FreightError):
    """The batcher holds ``max_pending`` items and would have to wait for room."""


class Skipped(FreightError):
    """The batcher's ``where=`` predicate rejected this item; it was never buffered."""


class HandlerContractError(FreightError, TypeError):
    """The handler broke the contract: a list in, a list of the same length out."""


class TransientError(FreightError):
    """A failure worth retrying (a timeout, a dropped connection, a busy server).

    Raise it from a handler to fail the whole batch transiently, or return an
    instance at position *i* to fail item *i* alone.
    """


class PermanentError(FreightError):
    """A failure that retrying cannot fix; never retried, even if ``retry_on`` matches."""
