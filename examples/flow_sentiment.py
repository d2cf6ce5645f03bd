"""Flow pattern 2, sentiment: reviews scored 10 per model call (or every 5 s); a review
the model cannot read fails alone and reaches the dead letters.

Run: python examples/flow_sentiment.py
"""

from __future__ import annotations

import asyncio

from pydantic import BaseModel

from freight import BatchSpec, Flow, Retry


class Review(BaseModel):
    id: int
    text: str


class Sentiment(BaseModel):
    review_id: int
    label: str


async def classify(batch: list[Review]) -> list[Sentiment | Exception]:
    await asyncio.sleep(0.02)  # one model call for ten reviews
    return [
        ValueError("empty review") if not r.text.strip()
        else Sentiment(review_id=r.id, label="positive" if "love" in r.text else "negative")
        for r in batch
    ]  # fmt: skip


async def main() -> None:
    flow = Flow()
    (flow.consumer("sentiment")
         .consumes(Review, batch=BatchSpec(size=10, timeout=5),
                   retry=Retry(attempts=2, backoff=0.01))
         .publishes(Sentiment)
         .does(classify))  # fmt: skip
    texts = ["love it", "broken on arrival", "   ", "would love a refund", "meh"]
    async with flow:
        for i in range(42):
            await flow.publish(Review(id=i, text=texts[i % len(texts)]))
    labels = [e.payload.label for e in flow.artifacts(Sentiment)]
    print(f"{len(labels)} reviews scored: {labels.count('positive')} positive")
    dead = flow.dead_letters()
    print(f"{len(dead)} dead letters ({dead[0].reason}), e.g. review {dead[0].artifacts[0].id}: "
          f"{dead[0].error}")  # fmt: skip


if __name__ == "__main__":
    asyncio.run(main())
