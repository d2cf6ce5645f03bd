"""One executor: the same scripted handler and the same Retry on every shape.

Each shape (the asyncio ``Batcher``, the ``ThreadBatcher``, a ``Job``'s chunks and a
Flow batch consumer) runs its batches through the core's plan and the shared runners,
so a per-item transient error, a permanent per-item error, a poison item and a
whole-batch outage must end the same way everywhere: the same outcome per item, and
each item handled the same number of times.
"""

from __future__ import annotations

import asyncio
import math
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from freight import (
    Batcher,
    BatchSpec,
    Flow,
    Job,
    PermanentError,
    Retry,
    ThreadBatcher,
    TransientError,
)
from freight.store import SqliteStore
from freight.testing import FakeClock

N = 8
RETRY = Retry(attempts=3, backoff=0.5, jitter=0)


@dataclass
class Script:
    """A handler whose failures are written down in advance, counting what it handles."""

    transient_once: set[int] = field(default_factory=set)
    permanent: set[int] = field(default_factory=set)
    poison: set[int] = field(default_factory=set)
    outage_calls: int = 0
    handled: Counter[int] = field(default_factory=Counter)
    calls: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self, items: list[int]) -> list[Any]:
        with self.lock:
            self.calls += 1
            self.handled.update(items)
            if self.calls <= self.outage_calls:
                raise ConnectionError("the service is down")
            if self.poison.intersection(items):
                raise ValueError(f"poison in {sorted(self.poison.intersection(items))}")
            out: list[Any] = []
            for item in items:
                if item in self.permanent:
                    out.append(PermanentError(f"{item} is refused"))
                elif item in self.transient_once and self.handled[item] == 1:
                    out.append(TransientError(f"{item} was busy"))
                else:
                    out.append(item * 10)
            return out


Result = tuple[dict[int, str], dict[int, int]]


def ended(outcomes: dict[int, Any], script: Script) -> Result:
    """Per item: ``"ok"`` or the error's type name; and how often it was handled."""
    kinds = {
        i: type(o).__name__ if isinstance(o, BaseException) else "ok" for i, o in outcomes.items()
    }
    return kinds, dict(script.handled)


async def on_batcher(script: Script, tmp_path: Path) -> Result:
    clock = FakeClock()

    async def handler(items: list[int]) -> list[Any]:
        return script(items)

    async with Batcher(handler, BatchSpec(N, timeout=1.0), retry=RETRY, clock=clock) as batcher:
        futures = [batcher.submit_nowait(i) for i in range(N)]
        for _ in range(50):
            if all(f.done() for f in futures):
                break
            await clock.advance(0.5)
    outcomes = {i: f.exception() or f.result() for i, f in enumerate(futures)}
    return ended(outcomes, script)


class JumpingClock(FakeClock):
    """Virtual time that jumps ahead when a thread sleeps on it (trio's autojump clock):
    a worker thread's backoff passes at once, with the clock moved by exactly that much."""

    def sleep_sync(self, seconds: float) -> None:
        self.advance_sync(max(0.0, seconds))


async def on_thread_batcher(script: Script, tmp_path: Path) -> Result:
    clock = JumpingClock()
    batcher = ThreadBatcher(script, BatchSpec(N, timeout=1.0), retry=RETRY, clock=clock)
    futures = [batcher.submit(i) for i in range(N)]
    for _ in range(20):
        batcher.flush()  # blocks until the running batches are handled (no polling)
        if all(f.done() for f in futures):
            break
        clock.advance_sync(1.5)  # a sent-back item's 0.5 s wait, then its batch's 1 s timeout
    batcher.close()
    outcomes = {i: f.exception() or f.result() for i, f in enumerate(futures)}
    return ended(outcomes, script)


async def on_job(script: Script, tmp_path: Path) -> Result:
    store = SqliteStore(tmp_path / "freight.db")
    clock = JumpingClock()  # the job's backoffs are sleeps on its clock
    job = Job(
        "contract", list(range(N)), sink=script, chunk_size=N, retry=RETRY, store=store,
        clock=clock,
    )  # fmt: skip
    report = await asyncio.to_thread(job.run)
    failed = {int(d.payload): d.error_type for d in store.dead_letters(report.job_id)}
    store.close()
    kinds = {i: failed.get(i, "ok") for i in range(N)}
    return kinds, dict(script.handled)


@dataclass(frozen=True)
class Item:
    n: int


@dataclass(frozen=True)
class Done:
    n: int


async def on_flow(script: Script, tmp_path: Path) -> Result:
    clock = FakeClock()
    flow = Flow(clock=clock, trace=False)

    def handle(items: list[Item]) -> list[Any]:
        return [Done(o // 10) if isinstance(o, int) else o for o in script([i.n for i in items])]

    flow.consumer("contract", consumes=Item, batch=BatchSpec(N, timeout=1.0), retry=RETRY,
                  publishes=Done).does(handle)  # fmt: skip
    await flow.publish_many(Item(i) for i in range(N))
    for _ in range(50):
        await flow.run_until_idle()
        if len(flow.artifacts(Done)) + len(flow.dead_letters()) == N:
            break
        await clock.advance(0.5)
    await flow.close()
    outcomes: dict[int, Any] = {e.payload.n: "ok" for e in flow.artifacts(Done)}
    for letter in flow.dead_letters():
        assert isinstance(letter.error, BaseException)
        outcomes[letter.artifacts[0].n] = letter.error
    kinds = {i: o if o == "ok" else type(o).__name__ for i, o in outcomes.items()}
    return dict(sorted(kinds.items())), dict(script.handled)


SHAPES: dict[str, Callable[[Script, Path], Any]] = {
    "Batcher": on_batcher,
    "ThreadBatcher": on_thread_batcher,
    "Job": on_job,
    "Flow": on_flow,
}


def every_ok_but(failed: dict[int, str]) -> dict[int, str]:
    return {i: failed.get(i, "ok") for i in range(N)}


@pytest.mark.parametrize("shape", SHAPES)
async def test_a_per_item_transient_error_is_retried_and_succeeds(
    shape: str, tmp_path: Path
) -> None:
    script = Script(transient_once={3})
    kinds, handled = await SHAPES[shape](script, tmp_path)
    assert kinds == every_ok_but({})
    assert handled == {i: 2 if i == 3 else 1 for i in range(N)}


@pytest.mark.parametrize("shape", SHAPES)
async def test_a_permanent_per_item_error_fails_that_item_alone(shape: str, tmp_path: Path) -> None:
    script = Script(permanent={5})
    kinds, handled = await SHAPES[shape](script, tmp_path)
    assert kinds == every_ok_but({5: "PermanentError"})
    assert handled == dict.fromkeys(range(N), 1)


@pytest.mark.parametrize("shape", SHAPES)
async def test_a_poison_item_is_bisected_out(shape: str, tmp_path: Path) -> None:
    script = Script(poison={6})
    kinds, handled = await SHAPES[shape](script, tmp_path)
    assert kinds == every_ok_but({6: "ValueError"})
    assert script.calls <= 2 * math.ceil(math.log2(N)) + 1
    # one whole-batch call, then each half once, the poison's halves split again
    assert handled == {0: 2, 1: 2, 2: 2, 3: 2, 4: 3, 5: 3, 6: 4, 7: 4}


@pytest.mark.parametrize("shape", SHAPES)
async def test_a_whole_batch_outage_is_retried(shape: str, tmp_path: Path) -> None:
    script = Script(outage_calls=2)
    kinds, handled = await SHAPES[shape](script, tmp_path)
    assert kinds == every_ok_but({})
    assert handled == dict.fromkeys(range(N), 3)
