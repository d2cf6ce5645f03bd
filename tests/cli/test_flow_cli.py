"""``freight flow``: a durable flow's status, dead letters, artifacts and traces, read
from its store (and trace file) by another process, without the flow's Python types."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime
from pathlib import Path

import pytest
from pydantic import BaseModel
from typer.testing import CliRunner

from freight import BatchSpec, Flow, JoinSpec
from freight.cli import app
from freight.flow import Tenant
from freight.store import SqliteStore
from freight.testing import FakeClock

runner = CliRunner()


class Payment(BaseModel):
    id: int
    amount: float


class Report(BaseModel):
    count: int


class Temperature(BaseModel):
    device: str
    celsius: float


class Pressure(BaseModel):
    device: str
    hpa: float


def declare(flow: Flow) -> None:
    @(
        flow.consumer("payments")
        .consumes(Payment, batch=BatchSpec(size=5, timeout=30))
        .publishes(Report)
    )
    async def payments(batch: list[Payment]) -> list[Report | Exception]:
        return [ValueError("negative") if p.amount < 0 else Report(count=1) for p in batch]

    @(
        flow.consumer("devices")
        .all_tenants()
        .consumes(Temperature, Pressure, join=JoinSpec(by="device", within=60.0))
    )
    async def devices(group: object) -> None:
        pass


@pytest.fixture
def store(tmp_path: Path) -> Path:
    """A durable flow left with an open batch (3 payments), an open join (one reading
    of tenant north), 5 payments handled and one of them dead-lettered."""
    path = tmp_path / "flow.db"

    async def run() -> None:
        flow = Flow(store=SqliteStore(path), clock=FakeClock(), trace=tmp_path / "t.duckdb")
        declare(flow)
        await flow.publish_many(Payment(id=i, amount=-1.0 if i == 2 else 10.0) for i in range(8))
        await flow.publish(Temperature(device="d1", celsius=20), visibility=Tenant("north"))
        await flow.run_until_idle()
        flow._tracing.close()  # the process "dies" here, its batch and join open

    asyncio.run(run())
    return path


def invoke(*args: str) -> str:
    result = runner.invoke(app, ["flow", *args])
    assert result.exit_code == 0, result.output
    return result.stdout


def error(*args: str) -> str:
    result = runner.invoke(app, ["flow", *args])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("freight: error: ")
    return lines[0]


def test_status_shows_consumers_open_batches_and_joins_with_deadlines(store: Path) -> None:
    out = invoke("status", "--store", str(store))
    assert "flow 'default'" in out
    assert "payments" in out
    assert "Payment (batch 5 or 30.0 s)" in out
    assert "Temperature + Pressure (join within 60.0 s)" in out
    assert "batch" in out
    assert "join" in out
    assert "tenant north" in out
    assert "Payment 8" in out
    assert "Report 4" in out

    report = json.loads(invoke("status", "--store", str(store), "--json"))
    consumers = {c["name"]: c for c in report["consumers"]}
    assert (consumers["payments"]["open"], consumers["payments"]["done"]) == (3, 5)
    assert consumers["payments"]["dead"] == {"handler_error": 1}
    assert consumers["devices"]["open"] == 1
    waiting = {(w["consumer"], w["kind"]): w for w in report["open"]}
    batch, join = waiting["payments", "batch"], waiting["devices", "join"]
    assert batch["artifacts"] == 3
    opened = datetime.fromisoformat(batch["opened_at"])
    assert (datetime.fromisoformat(batch["deadline"]) - opened).total_seconds() == 30
    assert join["tenant"] == "north"
    joined = datetime.fromisoformat(join["opened_at"])
    assert (datetime.fromisoformat(join["deadline"]) - joined).total_seconds() == 60
    assert report["artifacts"] == {"Payment": 8, "Report": 4, "Temperature": 1}
    assert report["dead_letters"] == 1


def test_dead_letters_with_reasons_as_text_and_json(store: Path) -> None:
    out = invoke("dead-letters", "--store", str(store))
    assert "payments  handler_error: ValueError: negative" in out
    assert '"amount": -1.0' in out
    [letter] = json.loads(invoke("dead-letters", "--store", str(store), "--json"))
    assert letter["consumer"] == "payments"
    assert letter["reason"] == "handler_error"
    assert letter["error"] == "ValueError: negative"
    assert [a["payload"] for a in letter["artifacts"]] == [{"id": 2, "amount": -1.0}]
    assert (
        json.loads(invoke("dead-letters", "--store", str(store), "--consumer", "x", "--json")) == []
    )


def test_artifacts_of_a_type_as_stored(store: Path) -> None:
    out = invoke("artifacts", "Payment", "--store", str(store), "--limit", "2")
    lines = out.strip().splitlines()
    assert len(lines) == 2
    assert '{"id": 6, "amount": 10.0}' in lines[0]
    assert '{"id": 7, "amount": 10.0}' in lines[1]
    [reading] = json.loads(invoke("artifacts", "Temperature", "--store", str(store), "--json"))
    assert reading["tenant"] == "north"
    assert reading["payload"] == {"device": "d1", "celsius": 20.0}


def test_traces_run_the_guides_flush_query_by_default(tmp_path: Path) -> None:
    trace = tmp_path / "t.duckdb"

    async def run() -> None:
        clock = FakeClock()
        flow = Flow(clock=clock, trace=trace)

        @flow.consumer("payments").consumes(Payment, batch=BatchSpec(size=4, timeout=30))
        async def pay(items: list[Payment]) -> None:
            pass

        for i in range(6):
            await flow.publish(Payment(id=i, amount=1.0))
        await clock.advance(30)
        await flow.close()

    asyncio.run(run())
    out = invoke("traces", "--trace", str(trace))
    header, *rows = out.strip().splitlines()
    assert header.split() == ["consumer", "batch_size", "efficiency", "started_at"]
    assert len(rows) == 1
    assert rows[0].split()[:3] == ["payments", "2", "0.5"]
    counted = json.loads(
        invoke(
            "traces",
            "SELECT name, count(*) AS n FROM spans GROUP BY name ORDER BY name",
            "--trace",
            str(trace),
            "--json",
        )
    )
    assert counted == [
        {"name": "flush", "n": 2},
        {"name": "handler", "n": 2},
        {"name": "publish", "n": 6},
    ]


def test_user_errors_are_one_line(store: Path, tmp_path: Path) -> None:
    assert "no store at" in error("status", "--store", str(tmp_path / "missing.db"))
    message = error("status", "--store", str(store), "--flow", "other")
    assert "no flow named 'other'" in message
    assert "'default'" in message
    message = error("artifacts", "Nothing", "--store", str(store))
    assert "no artifacts of type 'Nothing'" in message
    assert "Payment" in message
    assert "no trace file at" in error("traces", "--trace", str(tmp_path / "none.duckdb"))
    (tmp_path / "t.duckdb").unlink(missing_ok=True)
    asyncio.run(_traced(tmp_path / "t.duckdb"))
    assert "the trace query failed" in error(
        "traces", "SELECT nothing FROM nowhere", "--trace", str(tmp_path / "t.duckdb")
    )


async def _traced(path: Path) -> None:
    flow = Flow(clock=FakeClock(), trace=path)
    flow.consumer("c").consumes(Payment).does(lambda p: None)
    await flow.publish(Payment(id=1, amount=1.0))
    await flow.close()


def test_a_stores_only_flow_needs_no_flow_option(tmp_path: Path) -> None:
    path = tmp_path / "named.db"

    async def run() -> None:
        flow = Flow(store=SqliteStore(path), clock=FakeClock(), trace=False, name="payments")
        declare(flow)
        await flow.publish(Payment(id=1, amount=5.0))
        await flow.close()

    asyncio.run(run())
    assert invoke("status", "--store", str(path)).startswith("flow 'payments'")
    assert "no dead letters in flow 'payments'" in invoke("dead-letters", "--store", str(path))
