"""Flow pattern 4, rate-limited API calls: 10 lookups per request, and never more than
20 requests a second, through one shared RateLimiter.

Run: python examples/flow_rate_limited.py
"""

from __future__ import annotations

import asyncio
import time

from pydantic import BaseModel

from freight import BatchSpec, Flow, RateLimiter
from freight.flow import ForBatch


class Lookup(BaseModel):
    user_id: int


class Profiles(BaseModel):
    user_ids: list[int]
    sent_at: float


async def fetch_profiles(batch: list[Lookup]) -> ForBatch:
    # one request carries 10 lookups: the API's limit counts requests, not lookups
    return ForBatch(Profiles(user_ids=[b.user_id for b in batch], sent_at=time.monotonic()))


async def main() -> None:
    flow = Flow()
    (flow.consumer("profiles")
         .consumes(Lookup, batch=BatchSpec(size=10, timeout=0.5),
                   rate_limit=RateLimiter(20, per=1, burst=1))
         .publishes(Profiles)
         .does(fetch_profiles))  # fmt: skip
    async with flow:
        for user in range(200):
            await flow.publish(Lookup(user_id=user))
    sent = sorted(e.payload.sent_at for e in flow.artifacts(Profiles))
    span = sent[-1] - sent[0]
    print(f"200 lookups in {len(sent)} requests over {span:.2f} s "
          f"({(len(sent) - 1) / span:.1f} requests/s, limit 20)")  # fmt: skip


if __name__ == "__main__":
    asyncio.run(main())
