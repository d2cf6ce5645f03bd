"""The whole freight error tree.

Every error freight raises derives from :class:`FreightError`, so one ``except``
catches them all. Where a caller may reasonably catch a builtin instead, the
error inherits that builtin too::

    FreightError
    ├── ConfigError (ValueError)          bad configuration, raised at construction
    │   ├── ConfigTypeError (TypeError)   a setting of the wrong type (``size=1.1``)
    │   └── StoreError                    a store that cannot be opened, or a newer schema
    ├── BatcherClosed (RuntimeError)      submit after close
    ├── QueueFull                         no room and overflow="reject" (or *_nowait)
    ├── Skipped                           the ``where=`` predicate rejected the item
    ├── ItemTooLarge (ValueError, RuntimeError)  an item costing over ``max_cost`` alone
    ├── HandlerContractError (TypeError)  the handler broke the list-in/list-out rule
    ├── TransientError                    worth retrying: raise or return it from a handler
    ├── PermanentError                    never retried, whatever ``retry_on`` says
    │   └── TargetError                   the target refuses every row: the job stops
    ├── RecordError (ValueError)          a source record that cannot be read or converted
    ├── JobAlreadyRunning                 another live process holds the job's run
    ├── UnknownJob (KeyError)             no run with that id in the store
    ├── IllegalTransition                 a run's status change its lifecycle forbids
    ├── InvalidBatch (ValueError)         a managed batch refused at submit, nothing stored
    │   └── UnknownEndpoint (KeyError)    submitted to an endpoint no handler serves
    └── UnknownBatch (KeyError)           no managed batch with that id in the store

``TransientError`` is how a handler asks for a retry; there is deliberately no
exception called ``Retry`` (in freight, :class:`~freight.Retry` is the policy).

Every class is defined here and nowhere else; the subpackages re-export the ones their
users meet (``freight.store.StoreError``, ``freight.jobs.RecordError``, …).
"""

from __future__ import annotations

__all__ = [
    "BatcherClosed",
    "ConfigError",
    "ConfigTypeError",
    "FreightError",
    "HandlerContractError",
    "IllegalTransition",
    "InvalidBatch",
    "ItemTooLarge",
    "JobAlreadyRunning",
    "PermanentError",
    "QueueFull",
    "RecordError",
    "Skipped",
    "StoreError",
    "TargetError",
    "TransientError",
    "UnknownBatch",
    "UnknownEndpoint",
    "UnknownJob",
]


class FreightError(Exception):
    """Root of every error freight raises."""


class ConfigError(FreightError, ValueError):
    """A configuration value is wrong; the message names the parameter and the rule."""


class ConfigTypeError(ConfigError, TypeError):
    """A setting of the wrong type (``size=1.1``, ``timeout="a"``, a ``sizer`` that is
    not callable); the message names the parameter and the type it takes.

    Also a ``TypeError``, as Ray Serve's ``@serve.batch`` raises for the same mistakes,
    and still a :class:`ConfigError`: a value of the right type but out of range
    (``size=0``, ``timeout=-1``) stays a plain :class:`ConfigError`.
    """


class BatcherClosed(FreightError, RuntimeError):
    """The batcher is closed (or closing) and accepts no new items."""


class QueueFull(FreightError):
    """The batcher holds ``max_pending`` items and would have to wait for room."""


class Skipped(FreightError):
    """The batcher's ``where=`` predicate rejected this item; it was never buffered."""


class ItemTooLarge(FreightError, ValueError, RuntimeError):
    """An item whose cost alone is over the batch's ``max_cost``: no batch can take it.

    Also a ``RuntimeError``, as Ray Serve raises for an item its ``batch_size_fn`` says
    cannot fit in any batch.

    Raised at submit, so the caller learns at once; the message names the item's
    cost and ``max_cost``. (A byte size over ``max_bytes`` is not refused: such an
    item is flushed alone.)
    """


class HandlerContractError(FreightError, TypeError):
    """The handler broke the contract: a list in, a list of the same length out."""


class TransientError(FreightError):
    """A failure worth retrying (a timeout, a dropped connection, a busy server).

    Raise it from a handler to fail the whole batch transiently, or return an
    instance at position *i* to fail item *i* alone.

    ``retry_after`` (seconds) is the wait the failing side asked for (an HTTP 429 or
    503's ``Retry-After``): the retry policy waits at least that long before the next
    try, even past its own backoff.
    """

    def __init__(self, *args: object, retry_after: float | None = None) -> None:
        super().__init__(*args)
        self.retry_after = retry_after


class PermanentError(FreightError):
    """A failure that retrying cannot fix; never retried, even if ``retry_on`` matches."""


class TargetError(PermanentError):
    """The target refuses the whole write, whatever its rows hold: a missing table,
    schema or column, no privilege, a read-only database, more columns than it allows.

    No row can land until someone fixes the target, so a job stops with this one
    reason instead of dead-lettering every row with it.
    """


class RecordError(FreightError, ValueError):
    """A record that could not be read or converted (a dead letter of category validation)."""


class StoreError(ConfigError):
    """The store cannot be opened or is newer than this freight knows."""


class JobAlreadyRunning(FreightError):
    """Another live process is running this job; it is never run twice at once."""


class IllegalTransition(FreightError):
    """A job run was asked to change status in a way its lifecycle forbids
    (``freight.store.TRANSITIONS``), such as running a completed run again."""


class UnknownJob(FreightError, KeyError):
    """The store holds no run with this id (check the id: ``freight list`` shows them)."""

    __str__ = Exception.__str__  # the message as written, not KeyError's quoted repr


class InvalidBatch(FreightError, ValueError):
    """A managed batch refused at submit (empty, duplicate ids, a body too large or not
    JSON, too many requests): the message names the request and the limit; nothing of
    the batch was stored."""


class UnknownEndpoint(InvalidBatch, KeyError):
    """A batch submitted to an endpoint no handler was registered for (the message
    lists the registered ones); nothing was stored. Also a ``KeyError``: a name not
    found."""

    __str__ = Exception.__str__  # the message as written, not KeyError's quoted repr


class UnknownBatch(FreightError, KeyError):
    """The store holds no managed batch with this id (``freight batch list`` shows them)."""

    __str__ = Exception.__str__  # the message as written, not KeyError's quoted repr
