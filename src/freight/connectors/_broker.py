"""The broker source port and the consume driver: batches from a broker, at least once.

A broker (Redis Streams, RabbitMQ, NATS JetStream, Kafka, the in-memory twin
:class:`freight.testing.MemoryBroker`) is reached through one narrow port,
:class:`BrokerSource`: fetch up to *n* deliveries, then settle each of them once with
``ack`` (done), ``retry`` (deliver again later) or ``dead_letter`` (give up, with the
reason). :func:`consume` is the driver on top of it: it decides nothing about
execution, it runs each fetched batch through the one executor
(:func:`~freight._drivers._runner.settle_async`: the :class:`~freight.Retry` policy, poison
isolation by bisection, per-item retries) and settles every message from its outcome.

The guarantee, precisely (at-least-once):

1. A message is acknowledged only after its outcome is final and a success: the handler
   returned a result for it, the sink wrote it, the batcher's caller got a result, or the
   flow's ``publish_many`` returned (the artifact is routed, or durable on a durable board).
2. A message whose outcome is a permanent error is dead-lettered with its reason; one
   whose transient error outlived the policy's attempts is handed back (``retry``, after
   the policy's backoff or the error's ``retry_after``) until the broker has delivered it
   ``max_deliveries`` times, then dead-lettered too. A message that arrives already
   delivered more than ``max_deliveries`` times (its consumers died handling it) is
   dead-lettered without being handled again.
3. Between handling and acknowledging there is a window: a consumer that dies in it (or
   whose ``ack`` fails) leaves its batch unacknowledged, and the broker delivers it again
   to another consumer. So a message may be handled more than once, and at most one batch
   per consumer death is handled twice; none is lost. With an idempotent target (an upsert
   on the message id: a sink receives the ids as ``context.keys``) the effect is
   exactly once.
4. :func:`consume` settles a batch completely (ack, retry, dead letters) before it fetches
   the next; within a batch, messages are handled in the order fetched, so a broker that
   keeps order per stream or partition keeps it through freight (a message handed back
   for a retry is, of course, delivered again later than those after it).
"""

from __future__ import annotations

import asyncio
import inspect
import math
import random as _random
from collections.abc import Awaitable, Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from freight._core._clock import Clock
from freight._core._plan import Reply
from freight._core._retry import Retry
from freight._core._spec import BatchSpec
from freight._drivers._asyncio import Batcher
from freight._drivers._clocks import LoopClock
from freight._drivers._runner import call_sync, settle_async
from freight._drivers._streams import is_async_callable
from freight._errors import BatcherClosed, ConfigError, PermanentError
from freight._ratelimit import RateLimiter

__all__ = [
    "DEFAULT_SPEC",
    "BrokerSource",
    "ConsumeReport",
    "Message",
    "consume",
    "reason",
]

DEFAULT_SPEC = BatchSpec(size=100, timeout=1.0)
"""The batches :func:`consume` fetches when given no spec: up to 100 messages, 1 s wait."""

_IDLE_WAIT = 1.0  # seconds a fetch waits when the spec has no timeout
_EMPTY_PAUSE = 0.05  # seconds between empty fetches that do not wait (timeout=0): no spinning


@dataclass(slots=True)
class Message:
    """One delivery from a broker.

    Attributes:
        body: the decoded payload; what the handler, sink, batcher or flow receives.
        id: the broker's id for this message, the same on every delivery (the key for
            an idempotent target): a stream entry id (Redis), the AMQP ``message_id``
            (RabbitMQ), a stream sequence (NATS), ``"topic/partition/offset"`` (Kafka).
        attempts: how many times the broker has delivered it, this time included
            (1 = first delivery), as far as the broker tells.
        key: the message's key or routing key, if it has one.
        headers: the message's headers.
        raw: the client library's own object, which the source needs to settle it.
    """

    body: Any
    id: str
    attempts: int = 1
    key: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    raw: Any = None


@runtime_checkable
class BrokerSource(Protocol):
    """The port every broker source implements (see the module docstring's guarantee).

    Each message fetched is settled once by :func:`consume`, with exactly one of
    ``ack``, ``retry`` or ``dead_letter``; one never settled (the consumer died) is
    delivered again by the broker, to this consumer or another.
    """

    async def fetch(self, max_items: int, timeout: float) -> list[Message]:  # noqa: ASYNC109
        """Up to ``max_items`` messages, waiting at most ``timeout`` seconds for the first;
        an empty list when none came."""
        ...

    async def ack(self, messages: Sequence[Message]) -> None:
        """Mark ``messages`` done: the broker never delivers them again."""
        ...

    async def retry(self, messages: Sequence[Message], delay: float) -> None:
        """Hand ``messages`` back to be delivered again, not before ``delay`` seconds if
        the broker can wait (NATS ``nak(delay)``); at once otherwise (a requeue)."""
        ...

    async def dead_letter(self, failed: Sequence[tuple[Message, BaseException]]) -> None:
        """Move each message to the broker's dead-letter place with its error as the
        reason (:func:`reason`), and settle it there: it is not delivered again."""
        ...

    async def close(self) -> None:
        """Release the connection; messages fetched and not settled go back to the broker."""
        ...


@dataclass(slots=True)
class ConsumeReport:
    """What :func:`consume` did: batches handled and how their messages were settled.

    ``acked + retried + dead_lettered`` is the number of messages settled; a message
    delivered twice (after a retry) is counted each time.
    """

    batches: int = 0
    messages: int = 0
    acked: int = 0
    retried: int = 0
    dead_lettered: int = 0
    reasons: list[tuple[str, str]] = field(default_factory=list)
    """``(message id, reason)`` of the latest dead letters (at most 100 kept)."""


def reason(error: BaseException) -> str:
    """The reason a dead letter carries: the error's type and message, one line."""
    text = " ".join(str(error).split())
    name = type(error).__qualname__
    return f"{name}: {text}"[:1000] if text else name


Call = Callable[[list[Message]], Awaitable[Reply]]


@runtime_checkable
class _Writer(Protocol):
    """A sink as jobs take it (:class:`freight.jobs.Sink`), sync or ``async def write``."""

    def write(self, items: list[Any], context: Any) -> Any: ...


@runtime_checkable
class _Publisher(Protocol):
    """What :func:`consume` needs of a :class:`~freight.Flow`: publishing artifacts."""

    async def publish_many(self, artifacts: Iterable[Any]) -> Any: ...


@dataclass(frozen=True, slots=True)
class _Context:
    """The ``context`` a sink's ``write`` gets from :func:`consume`: the attributes of
    :class:`freight.jobs.WriteContext`, the message ids as the idempotency keys."""

    job_id: str
    chunk_index: int
    keys: list[Hashable] | None = None


def _target_call(target: Any, loop: asyncio.AbstractEventLoop) -> tuple[Call, bool]:
    """How to run a batch of messages on ``target``, and whether ``Retry`` applies to it.

    A :class:`~freight.Batcher` runs its own items through the executor with its own
    policy, so :func:`consume` does not retry what it reports (``False``).
    """
    if isinstance(target, Batcher):
        return _batcher_call(target), False
    if isinstance(target, _Publisher):
        return _flow_call(target), True
    if isinstance(target, _Writer):
        return _sink_call(target, loop), True
    if callable(target):
        return _handler_call(target, loop), True
    raise ConfigError(
        f"consume() target must be a batch handler (items -> list), a Sink (write(items, "
        f"context)), a freight.Batcher or a freight.Flow, got {target!r}"
    )


def _handler_call(handler: Callable[[list[Any]], Any], loop: asyncio.AbstractEventLoop) -> Call:
    if is_async_callable(handler):

        async def call_async(messages: list[Message]) -> Reply:
            try:
                return Reply(value=await handler([m.body for m in messages]))
            except Exception as exc:
                return Reply(error=exc)

        return call_async

    async def call_thread(messages: list[Message]) -> Reply:
        bodies = [m.body for m in messages]
        return await loop.run_in_executor(None, call_sync, handler, bodies)

    return call_thread


def _sink_call(sink: _Writer, loop: asyncio.AbstractEventLoop) -> Call:
    batches = iter(range(1 << 62))

    def context(messages: list[Message]) -> _Context:
        return _Context("consume", next(batches), [m.id for m in messages])

    if inspect.iscoroutinefunction(sink.write):

        async def write_async(messages: list[Message]) -> Reply:
            try:
                bodies = [m.body for m in messages]
                return Reply(value=await sink.write(bodies, context(messages)))
            except Exception as exc:
                return Reply(error=exc)

        return write_async

    async def write_thread(messages: list[Message]) -> Reply:
        ctx = context(messages)
        bodies = [m.body for m in messages]
        return await loop.run_in_executor(
            None, call_sync, lambda items: sink.write(items, ctx), bodies
        )

    return write_thread


def _batcher_call(batcher: Batcher[Any, Any]) -> Call:
    async def submit_all(messages: list[Message]) -> Reply:
        futures = [batcher.submit(m.body) for m in messages]
        results = await asyncio.gather(*futures, return_exceptions=True)
        return Reply(value=results)

    return submit_all


def _flow_call(flow: _Publisher) -> Call:
    async def publish(messages: list[Message]) -> Reply:
        try:
            await flow.publish_many([m.body for m in messages])
        except Exception as exc:
            return Reply(error=exc)
        return Reply(value=None)

    return publish


@dataclass(slots=True)
class _Settled:
    """One batch's messages, sorted by how they are to be settled."""

    done: list[Message] = field(default_factory=list)
    again: list[Message] = field(default_factory=list)  # handed back after ``again_after``
    again_after: float = 0.0
    released: list[Message] = field(default_factory=list)  # not handled: handed back now
    dead: list[tuple[Message, BaseException]] = field(default_factory=list)
    stop: BaseException | None = None


def _sort(
    messages: list[Message],
    outcomes: list[Any],
    policy: Retry,
    max_deliveries: int | None,
    draw: Callable[[], float],
) -> _Settled:
    settled = _Settled()
    errors: list[BaseException] = []
    for message, outcome in zip(messages, outcomes, strict=True):
        if not isinstance(outcome, BaseException):
            settled.done.append(message)
        elif isinstance(outcome, BatcherClosed | asyncio.CancelledError):
            settled.released.append(message)  # not handled: another consumer will
            settled.stop = outcome
        elif not policy.is_transient(outcome):
            settled.dead.append((message, outcome))
        elif max_deliveries is not None and message.attempts >= max_deliveries:
            error = PermanentError(
                f"delivered {message.attempts} times (max_deliveries={max_deliveries}); "
                f"last error: {reason(outcome)}"
            )
            error.__cause__ = outcome
            settled.dead.append((message, error))
        else:
            settled.again.append(message)
            errors.append(outcome)
    if settled.again:  # one wait for them all, as the plan gives one for items sent back
        most = max(m.attempts for m in settled.again)
        settled.again_after = policy.wait(most, draw(), errors)
    return settled


async def _settle(source: BrokerSource, settled: _Settled, report: ConsumeReport) -> None:
    """Dead letters first, then hand-backs, then acks: each message settled once."""
    if settled.dead:
        await source.dead_letter(settled.dead)
        report.dead_lettered += len(settled.dead)
        report.reasons.extend((m.id, reason(e)) for m, e in settled.dead)
        del report.reasons[:-100]
    if settled.released:
        await source.retry(settled.released, 0.0)
        report.retried += len(settled.released)
    if settled.again:
        await source.retry(settled.again, settled.again_after)
        report.retried += len(settled.again)
    if settled.done:
        await source.ack(settled.done)
        report.acked += len(settled.done)


def _split_overdelivered(
    messages: list[Message], max_deliveries: int | None
) -> tuple[list[Message], list[tuple[Message, BaseException]]]:
    if max_deliveries is None:
        return messages, []
    fresh: list[Message] = []
    dead: list[tuple[Message, BaseException]] = []
    for message in messages:
        if message.attempts > max_deliveries:
            dead.append(
                (
                    message,
                    PermanentError(
                        f"delivered {message.attempts} times (max_deliveries="
                        f"{max_deliveries}) without being settled: a consumer died "
                        "handling it each time; not handled again"
                    ),
                )
            )
        else:
            fresh.append(message)
    return fresh, dead


def _check(max_deliveries: int | None, max_batches: int | None) -> None:
    for name, value in (("max_deliveries", max_deliveries), ("max_batches", max_batches)):
        if value is not None and (type(value) is not int or value < 1):
            raise ConfigError(f"consume() {name} must be an int >= 1 or None, got {value!r}")


async def consume(
    source: BrokerSource,
    target: Any,
    *,
    spec: BatchSpec | None = None,
    retry: Retry | None = None,
    rate_limit: RateLimiter | None = None,
    until_idle: bool = False,
    max_batches: int | None = None,
    max_deliveries: int | None = 5,
    clock: Clock | None = None,
    random: Callable[[], float] | None = None,
) -> ConsumeReport:
    """Consume ``source`` in batches into ``target``; settle each message from its outcome.

    Each round fetches up to ``spec.size`` messages (waiting at most ``spec.timeout``
    seconds), runs them through the executor under ``retry`` and ``rate_limit``, then
    acknowledges the successes, dead-letters the permanent failures with their reason
    and hands back the transient ones (see the module docstring for the guarantee).

    Args:
        source: a :class:`BrokerSource`. It stays open: the caller closes it.
        target: a batch handler (``bodies -> list`` of results or ``Exception``
            instances, ``async def`` or plain ``def``, which runs in a worker thread); a
            sink (``write(bodies, context)``; ``context.keys`` holds the message ids); a
            :class:`~freight.Batcher` (each body submitted, each caller's outcome is its
            message's; the batcher's own ``retry`` applies); or a :class:`~freight.Flow`
            (the bodies published as artifacts; acknowledged once published).
        spec: how many messages per batch and how long a fetch waits
            (default :data:`DEFAULT_SPEC`).
        retry: the policy for whole-batch retries, poison isolation and per-item retries
            in this process (default ``Retry()``); its backoff also spaces redeliveries.
        rate_limit: paces handler calls, as in a :class:`~freight.Batcher`.
        until_idle: return when a fetch comes back empty and no message this call handed
            back is still due to come again (drain mode, for jobs and tests).
        max_batches: return after this many batches.
        max_deliveries: a transiently failing message is dead-lettered once the broker
            has delivered it this many times; ``None`` hands it back forever.
        clock: a :class:`~freight.testing.FakeClock` in tests; the loop's clock otherwise.
        random: ``() -> float`` in ``[0, 1)`` for the backoff's jitter (seeded in tests).

    Returns:
        A :class:`ConsumeReport`. Without ``until_idle`` or ``max_batches`` it runs until
        cancelled (the batch in hand stays unacknowledged and is delivered again).
    """
    _check(max_deliveries, max_batches)
    spec = DEFAULT_SPEC if spec is None else spec
    size, wait = spec.size, _IDLE_WAIT if spec.timeout is None else spec.timeout
    loop = asyncio.get_running_loop()
    clock = LoopClock(loop) if clock is None else clock
    policy = Retry() if retry is None else retry
    call, retries = _target_call(target, loop)
    draw = _random.random if random is None else random
    report = ConsumeReport()
    due = -math.inf  # until_idle: when the messages handed back so far are all due again
    while max_batches is None or report.batches < max_batches:
        fetched = await source.fetch(size, wait)
        if not fetched:
            if until_idle:
                remaining = due - clock.now()
                if remaining <= 0:
                    break
                await clock.sleep(remaining)  # a message handed back is still to come
                continue
            if wait <= 0:
                await clock.sleep(_EMPTY_PAUSE)
            continue
        report.batches += 1
        report.messages += len(fetched)
        messages, overdelivered = _split_overdelivered(fetched, max_deliveries)
        outcomes, _ = await settle_async(
            messages,
            call,
            policy if retries else None,
            random=draw,
            sleep=clock.sleep,
            now=clock.now,
            rate_limit=rate_limit,
        )
        settled = _sort(messages, outcomes, policy, max_deliveries, draw)
        settled.dead[:0] = overdelivered
        await _settle(source, settled, report)
        if settled.again:  # redelivered after its wait (and the broker's few ms)
            due = max(due, clock.now() + settled.again_after + _EMPTY_PAUSE)
        if settled.stop is not None:
            raise settled.stop
    return report
