"""Managed batch demo: submit three summarisation requests, poll, read the results.

The nagents / OpenAI batch shape with freight's ``BatchManager``: ``submit`` returns a
batch id at once; a worker (here in this process, ``async with manager``; in production
``freight worker --app module:manager`` processes) runs the requests through the
endpoint's handler in chunks; ``get_status`` polls; ``get_results`` gives one result per
request, in submission order. One request fails (its text is empty): it is reported with
its error, the two others succeed, and the batch completes.

No server needed: the store is SQLite in a temporary folder. Run it with
``python examples/managed_batch.py``.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
from pathlib import Path

from freight import BatchRequest, BatchSpec
from freight.manager import BatchManager


def summarise(bodies: list[dict[str, str]]) -> list[object]:
    """The handler contract: a list of request bodies in, one response (or an exception
    instance, for a request that fails alone) per body out."""
    return [
        {"summary": body["text"][:24] + "…"} if body["text"] else ValueError("empty text")
        for body in bodies
    ]


async def main(folder: Path) -> None:
    manager = BatchManager(folder / "batches.db", poll_interval=0.05)
    manager.register("/v1/summaries", summarise, spec=BatchSpec(size=64))
    requests = [
        BatchRequest(
            id="doc-1", body={"text": "Freight batches requests for you, in the background."}
        ),
        BatchRequest(id="doc-2", body={"text": ""}),
        BatchRequest(id="doc-3", body={"text": "Results come back per request, in order."}),
    ]
    async with manager:  # a worker runs in this process while the block lasts
        batch = await manager.submit(requests, endpoint="/v1/summaries")
        print(f"submitted {batch.id}: {batch.status}")
        print(f"polled: {await manager.get_status(batch.id)}")  # pending or processing
        batch = await manager.wait(batch.id, timeout=30)  # polls the store until it ends
        counts = batch.request_counts
        print(f"{batch.id}: {batch.status}; {counts.total} requests: {counts.completed} completed, "
              f"{counts.failed} failed")  # fmt: skip
        for result in await manager.get_results(batch.id):
            print(f"  {result.id}: {result.response or result.error}")
        lines = await manager.export_results(batch.id, folder / "results.jsonl")
        first = json.loads((folder / "results.jsonl").read_text().splitlines()[0])
        print(f"{lines} lines in results.jsonl, e.g. {json.dumps(first)}")


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(main(Path(tmp)))
