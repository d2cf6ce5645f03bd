"""Flow pattern 1, payments: 25 transactions per payment call, or 30 seconds.

Run: python examples/flow_payments.py
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from pydantic import BaseModel

from freight import BatchSpec, Flow
from freight.flow import ForBatch, Span


class Transaction(BaseModel):
    id: int
    amount: float


class PaymentBatchReport(BaseModel):
    count: int
    total: float


async def process_payments(batch: list[Transaction]) -> ForBatch:
    await asyncio.sleep(0.01)  # one call to the payment provider for the whole batch
    # one report for the batch as a whole (a plain list would mean one outcome per item)
    return ForBatch(
        PaymentBatchReport(count=len(batch), total=round(sum(t.amount for t in batch), 2))
    )


async def main() -> None:
    flushes: list[Span] = []
    flow = Flow(subscribers=[lambda s: flushes.append(s) if s.name == "flush" else None])
    (flow.consumer("payments")
         .consumes(Transaction, where=lambda t: t.amount > 0,
                   batch=BatchSpec(size=25, timeout=timedelta(seconds=30)))
         .publishes(PaymentBatchReport)
         .does(process_payments))  # fmt: skip

    async with flow:
        for i in range(107):
            await flow.publish(Transaction(id=i, amount=-5.0 if i % 11 == 0 else 12.5))
        await flow.run_until_idle()
        print(f"open batches waiting for their 30 s: {[p.items for p in flow.pending()]}")
    # leaving `async with` drained the last partial batch (reason "close")
    for envelope in flow.artifacts(PaymentBatchReport):
        print(f"payment call: {envelope.payload.count} transactions, {envelope.payload.total}")
    for span in flushes:
        a = span.attributes
        print(f"  flush: {a['batch_size']} items, reason {a['flush_reason']}, "
              f"efficiency {a['efficiency']:.0%}")  # fmt: skip


if __name__ == "__main__":
    asyncio.run(main())
