"""At least once under consumer death, on Redis Streams: consumer processes are killed
with SIGKILL mid-batch, then a consumer in this process finishes the stream.

Each victim logs every message its handler receives (before the batch is acknowledged),
and is killed once it has logged a random number of them: the kill lands while a batch
is being handled, or between two batches. The rescuer claims what the victims left
pending (``XAUTOCLAIM`` past ``claim_idle``) and consumes the rest. Counting every
handling: each message is handled at least once, and the duplicates are at most one
batch per kill (the batch in flight when its consumer died).

Real processes in real time: marked ``slow``.
"""

from __future__ import annotations

import asyncio
import json
import random
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import redis

from freight import BatchSpec
from freight.connectors import consume
from freight.connectors.redis import RedisStreamSource
from tests.connectors.test_redis_source import REDIS_URL, need_redis

pytestmark = [pytest.mark.slow, pytest.mark.service]

N = 400
BATCH = 20
KILLS = 2
CLAIM_IDLE = 0.5
RNG = random.Random(20261130)

VICTIM = """
import asyncio, sys
from freight import BatchSpec
from freight.connectors import consume
from freight.connectors.redis import RedisStreamSource

url, stream, name, log = sys.argv[1:5]
stop_at = int(sys.argv[5])

async def main():
    source = RedisStreamSource(url, stream, "workers", name, claim_idle=%(claim)s)
    out = open(log, "a")
    handled = 0

    async def handle(items):
        nonlocal handled
        out.write("".join(f"{item['n']}\\n" for item in items))
        out.flush()
        handled += len(items)
        if handled >= stop_at:  # mid-batch, handled and not acknowledged: killed here
            await asyncio.Event().wait()

    await consume(source, handle, spec=BatchSpec(size=%(batch)d, timeout=0.05))

asyncio.run(main())
""".replace("%(claim)s", str(CLAIM_IDLE)).replace("%(batch)d", str(BATCH))


def handled_by(log: Path) -> list[int]:
    """The messages a victim logged (a line cut by the kill is not one)."""
    text = log.read_text() if log.exists() else ""
    return [int(line) for line in text.split("\n")[:-1]]


def kill_after(client: Any, stream: str, log: Path, name: str, at_least: int) -> int:
    """Start a victim; SIGKILL it once its log has ``at_least`` lines; return how many
    entries it left pending (handled or not, never acknowledged)."""
    victim = subprocess.Popen(
        [sys.executable, "-c", VICTIM, REDIS_URL, stream, name, str(log), str(at_least)]
    )
    deadline = time.monotonic() + 20
    try:
        while len(handled_by(log)) < at_least and time.monotonic() < deadline:
            assert victim.poll() is None, "the victim exited on its own"
            time.sleep(0.005)  # watching the victim's log, not waiting out a timeout
    finally:
        victim.send_signal(signal.SIGKILL)
        victim.wait()
    assert len(handled_by(log)) >= at_least
    consumers = client.xpending(stream, "workers")["consumers"]
    return sum(int(c["pending"]) for c in consumers if c["name"] == name.encode())


def test_sigkilled_consumers_lose_nothing_and_repeat_at_most_a_batch_each(
    tmp_path: Path,
) -> None:
    need_redis()
    client: Any = redis.Redis.from_url(REDIS_URL)
    stream = f"freight-test:{uuid.uuid4().hex}"
    try:
        pipe = client.pipeline(transaction=False)
        for n in range(N):
            pipe.xadd(stream, {"body": json.dumps({"n": n})})
        pipe.execute()
        logs = [tmp_path / f"victim{k}.log" for k in range(KILLS)]
        marks = sorted(RNG.sample(range(BATCH, N - 2 * BATCH), KILLS))
        pending_at_kills = 0
        for k, log in enumerate(logs):
            already = sum(len(handled_by(p)) for p in logs[:k])
            left = kill_after(client, stream, log, f"victim{k}", max(marks[k] - already, 1))
            assert left <= BATCH  # a consumer holds one batch at a time
            pending_at_kills += left
        rescued = asyncio.run(rescue(stream))
        handled = Counter(n for log in logs for n in handled_by(log)) + rescued
        assert set(handled) == set(range(N)), "a message was never handled"
        duplicates = sum(handled.values()) - N
        assert duplicates <= BATCH * KILLS
        assert duplicates <= pending_at_kills
        assert client.xpending(stream, "workers")["pending"] == 0
    finally:
        client.delete(stream, f"{stream}:dead")
        client.close()


async def rescue(stream: str) -> Counter[int]:
    """Consume with a fresh consumer until every entry of the group is acknowledged."""
    seen: Counter[int] = Counter()

    async def handle(items: list[Any]) -> None:
        seen.update(item["n"] for item in items)

    source = RedisStreamSource(REDIS_URL, stream, "workers", "rescuer", claim_idle=CLAIM_IDLE)
    client: Any = source._client
    deadline = time.monotonic() + 20
    try:
        while time.monotonic() < deadline:
            await consume(source, handle, spec=BatchSpec(size=BATCH, timeout=0.1), until_idle=True)
            info = await client.xinfo_groups(stream)
            if info[0]["pending"] == 0 and info[0]["lag"] == 0:
                break
    finally:
        await source.close()
    return seen
