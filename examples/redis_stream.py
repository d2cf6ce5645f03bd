"""Redis Streams in, Redis out: consume a stream in batches, at least once.

1. A producer adds 1,000 sensor readings to a stream (one of them unreadable as a
   reading: it has no ``celsius``).
2. ``consume`` reads them through a consumer group in batches of 100, converts each
   batch and writes it back to Redis with ``AsyncRedisSink``: one pipeline per batch, the
   readings as plain ``SET`` (sent as one ``MSET``) plus one ``HSET`` per sensor.
3. Each message is acknowledged only once its batch is written; the bad one is bisected
   out of its batch and lands in the dead-letter stream ``<stream>:dead`` with its reason.

``python examples/redis_stream.py [redis://127.0.0.1:6379/0]``; everything it writes is
under ``freight-example:<random>`` and deleted at the end.
"""

from __future__ import annotations

import asyncio
import json
import sys
import uuid
from typing import Any

import redis.asyncio

from freight import BatchSpec, Retry
from freight.connectors import consume
from freight.connectors.redis import AsyncRedisSink, RedisStreamSource


async def main(url: str) -> None:
    prefix = f"freight-example:{uuid.uuid4().hex[:8]}"
    stream = f"{prefix}:readings"
    client: Any = redis.asyncio.Redis.from_url(url)
    pipe = client.pipeline(transaction=False)
    for n in range(1000):
        reading = {"sensor": f"s{n % 10}", "n": n, "celsius": 20 + n % 7}
        if n == 517:
            del reading["celsius"]
        pipe.xadd(stream, {"body": json.dumps(reading)})
    await pipe.execute()

    sink = AsyncRedisSink(url)

    async def store(readings: list[dict[str, Any]]) -> list[Any]:
        commands: list[tuple[Any, ...]] = []
        for r in readings:
            fahrenheit = r["celsius"] * 9 / 5 + 32  # KeyError for the bad one: its batch fails
            commands.append(("SET", f"{prefix}:reading:{r['n']}", fahrenheit))
        latest = {r["sensor"]: r["n"] for r in readings}
        commands += [("HSET", f"{prefix}:latest", latest)]
        return (await sink.write(commands))[: len(readings)]

    source = RedisStreamSource(url, stream, "converters")
    try:
        report = await consume(
            source,
            store,
            spec=BatchSpec(size=100, timeout=0.1),
            retry=Retry(attempts=2, backoff=0.01),
            until_idle=True,
        )
        dead = await client.xrange(f"{stream}:dead")
        stored = len(await client.keys(f"{prefix}:reading:*"))
    finally:
        await source.close()
        await sink.close()
        keys = await client.keys(f"{prefix}:*")
        if keys:
            await client.delete(*keys)
        await client.aclose()
    print(f"{report.messages} messages in {report.batches} batches: {report.acked} acknowledged")
    print(f"{stored} readings stored")
    for _, fields in dead:
        body, why = fields[b"body"].decode(), fields[b"dead:reason"].decode()
        print(f"dead letter: {body} ({why})")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else "redis://127.0.0.1:6379/0"))
