"""The public API, pinned: what each public module exports is there on purpose.

Exporting a name is a decision: add it to its module's set below in the same change
(one literal set per module). Every exported name imports and has a docstring; a value
or a type alias has one as the string right after its assignment, as in ``_core/_source.py``::

    Position = tuple[int, int]
    \"\"\"``(offset, ordinal)``: where reading restarts, and the record number there.\"\"\"
"""

from __future__ import annotations

import ast
import functools
import importlib
import inspect
import itertools
import pkgutil
import textwrap
from pathlib import Path
from types import ModuleType

import pytest

import freight

FREIGHT = {
    # errors
    "BatcherClosed",
    "ConfigError",
    "ConfigTypeError",
    "FreightError",
    "HandlerContractError",
    "IllegalTransition",
    "ItemTooLarge",
    "UnknownJob",
    "JobAlreadyRunning",
    "PermanentError",
    "QueueFull",
    "RecordError",
    "Skipped",
    "StoreError",
    "TargetError",
    "TransientError",
    "InvalidBatch",
    "UnknownBatch",
    "UnknownEndpoint",
    # core
    "BatchBuffer",
    "BatchEvent",
    "BatchSpec",
    "BatcherStats",
    "Clock",
    "Flush",
    "FlushReason",
    "JoinSpec",
    "Percentiles",
    "RateLimiter",
    "Retry",
    # managed batches
    "Batch",
    "BatchManager",
    "BatchRequest",
    "BatchStatus",
    # bulk jobs
    "CsvSource",
    "Job",
    "JobReport",
    "JsonlSource",
    "ParquetSource",
    "Sink",
    "SqliteStore",
    # flow
    "Flow",
    # drivers
    "END",
    "AsyncBatched",
    "Batcher",
    "StreamBatched",
    "SyncBatched",
    "ThreadBatcher",
    "batched",
}

FLOW = {
    "After",
    "ConsumerBuilder",
    "ConsumerSpec",
    "DeadLetter",
    "DuckDBTracer",
    "Envelope",
    "Flow",
    "ForBatch",
    "Group",
    "JoinSpec",
    "Labelled",
    "OpenTelemetryTracer",
    "PendingBatch",
    "Private",
    "Public",
    "Span",
    "Tenant",
    "Visibility",
}

JOBS = {
    "CsvSource",
    "IterableSource",
    "Job",
    "JobAlreadyRunning",
    "JobReport",
    "JsonlSource",
    "ParquetSource",
    "Position",
    "Progress",
    "ProgressPrinter",
    "Record",
    "RecordError",
    "Sink",
    "Source",
    "SourceSize",
    "WriteContext",
    "as_source",
    "is_blank",
}

STORE = {
    "DEFAULT_PATH",
    "DONE",
    "LIVE",
    "RESUMABLE",
    "STATUSES",
    "STOPPED",
    "TERMINAL",
    "TRANSITIONS",
    "BoardStore",
    "ChunkCheckpoint",
    "ChunkStatus",
    "Control",
    "DeadLetter",
    "Event",
    "IllegalTransition",
    "UnknownJob",
    "JobRecord",
    "JobStatus",
    "Move",
    "PostgresStore",
    "SharedTransactionStore",
    "SqliteStore",
    "Store",
    "StoreError",
    "TransactionalSink",
    "open_store",
}

TESTING = {"Clock", "FakeClock", "MemoryBroker", "MemorySink"}

CONNECTORS = {"BrokerSource", "ConsumeReport", "Message", "consume"}

POSTGRES = {
    "AsyncPostgresSink",
    "Mode",
    "PostgresSink",
    "PostgresSource",
    "classify",
    "create_table",
    "table_types",
}

PGTYPES = {"TYPES", "converter", "infer_types", "parse_types"}

SQLITE = {
    "SQLITE_MAX_COLUMN",
    "AsyncSqliteSink",
    "SqliteSink",
    "classify",
    "create_table",
    "quote_identifier",
    "sqlite_path",
    "table_types",
}

METRICS = {"PrometheusSubscriber"}

MANAGER = {
    "MAX_BODY_BYTES",
    "MAX_REQUESTS",
    "BATCH_TRANSITIONS",
    "Batch",
    "BatchChange",
    "BatchManager",
    "BatchRequest",
    "BatchStatus",
    "InvalidBatch",
    "RequestCounts",
    "RequestState",
    "Result",
    "ResultError",
    "Results",
    "UnknownBatch",
    "UnknownEndpoint",
}

CLI = {"app", "main"}

PUBLIC = {
    "freight": FREIGHT,
    "freight.cli": CLI,
    "freight.connectors": CONNECTORS,
    "freight.connectors.mysql": {
        "MAX_COLUMNS",
        "MysqlSink",
        "classify",
        "create_table",
        "quote_identifier",
        "table_types",
    },
    "freight.connectors.pgtypes": PGTYPES,
    "freight.connectors.http": {"Bulk", "Fanout", "bulk", "classify", "fanout", "json_results"},
    "freight.connectors.postgres": POSTGRES,
    "freight.connectors.redis": {"AsyncRedisSink", "RedisSink", "RedisStreamSource", "classify"},
    "freight.connectors.kafka": {
        "REASON",
        "KafkaSink",
        "KafkaSource",
        "classify",
        "producer_options",
    },
    "freight.connectors.nats": {"REASON", "NatsSink", "NatsSource", "classify"},
    "freight.connectors.rabbitmq": {
        "ATTEMPTS",
        "REASON",
        "RabbitMQSink",
        "RabbitMQSource",
        "classify",
        "declare_queue",
    },
    "freight.connectors.sqlite": SQLITE,
    "freight.flow": FLOW,
    "freight.jobs": JOBS,
    "freight.manager": MANAGER,
    "freight.metrics": METRICS,
    "freight.store": STORE,
    "freight.testing": TESTING,
}

# Exported values and type aliases still without a docstring, each for its module's
# owner to write; the test fails when one gets a docstring, so the list only shrinks.
UNDOCUMENTED = {
    "freight.FlushReason",
    "freight.store.ChunkStatus",
    "freight.store.Control",
    "freight.store.DEFAULT_PATH",
    "freight.flow.Visibility",
    "freight.store.JobStatus",
    "freight.store.STATUSES",
    "freight.store.TRANSITIONS",
}

SRC = Path(freight.__file__).parent


def exported(module: str) -> list[tuple[str, str]]:
    return [(module, name) for name in sorted(PUBLIC[module])]


EXPORTED = [pair for module in sorted(PUBLIC) for pair in exported(module)]


def test_every_public_module_is_pinned() -> None:
    found = {
        info.name
        for info in pkgutil.walk_packages(freight.__path__, "freight.")
        if not any(part.startswith("_") for part in info.name.split("."))
    }
    assert found | {"freight"} == set(PUBLIC)


@pytest.mark.parametrize("module", sorted(PUBLIC))
def test_a_module_exports_exactly_its_pinned_names(module: str) -> None:
    imported = importlib.import_module(module)
    names: list[str] = list(getattr(imported, "__all__", []))
    assert len(names) == len(set(names)), f"{module}.__all__ repeats a name"
    assert set(names) == PUBLIC[module]
    if not hasattr(imported, "__all__"):  # nothing but submodules
        assert [
            n
            for n, value in vars(imported).items()
            if not n.startswith("_") and not isinstance(value, ModuleType)
        ] == []


@pytest.mark.parametrize(("module", "name"), EXPORTED)
def test_every_exported_name_imports_and_has_a_docstring(module: str, name: str) -> None:
    value = getattr(importlib.import_module(module), name)  # what `from module import name` does
    if f"{module}.{name}" in UNDOCUMENTED:
        assert not docstring(value, name), f"{module}.{name} is documented: unlist it"
        return
    assert docstring(value, name), f"{module}.{name} needs a docstring"


def docstring(value: object, name: str) -> str:
    """The docstring written for ``value``: its own for a class or a function (never one
    inherited or generated, as a dataclass's), else the string after its assignment."""
    if inspect.isclass(value) or inspect.isroutine(value):
        node = ast.parse(textwrap.dedent(inspect.getsource(value))).body[0]
        assert isinstance(node, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        return ast.get_docstring(node) or ""
    return assigned_docstrings().get(name, "")


@functools.cache
def assigned_docstrings() -> dict[str, str]:
    """Every ``NAME = value`` followed by a string at the top of a freight module."""
    found: dict[str, str] = {}
    for path in sorted(SRC.rglob("*.py")):
        body = ast.parse(path.read_text()).body
        for statement, after in itertools.pairwise(body):
            targets = (
                statement.targets
                if isinstance(statement, ast.Assign)
                else [statement.target]
                if isinstance(statement, ast.AnnAssign)
                else []
            )
            if not isinstance(after, ast.Expr) or not isinstance(after.value, ast.Constant):
                continue
            text = after.value.value
            if not isinstance(text, str):
                continue
            for target in targets:
                if isinstance(target, ast.Name) and text.strip():
                    found.setdefault(target.id, text)
    return found


def test_import_freight_is_lazy_and_keeps_its_subpackages_reachable() -> None:
    """``import freight`` loads neither the flow nor the manager nor the job engine (the
    CLI's start-up), yet ``freight.Job``, ``freight.store.TRANSITIONS`` and the other
    subpackages a bare ``import freight`` reached before are still there."""
    import subprocess
    import sys

    probe = (
        "import sys, freight\n"
        "loaded = sorted(m for m in ('freight.flow', 'freight.manager', 'freight.jobs')"
        " if m in sys.modules)\n"
        "assert loaded == [], loaded\n"
        "assert freight.store.TRANSITIONS and freight.flow.Flow is freight.Flow\n"
        "assert freight.jobs.Job is freight.Job and freight.manager.Result\n"
        "assert 'Job' in dir(freight)\n"
        "try:\n    freight.Jobb\nexcept AttributeError as e:\n    print(e)\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "module 'freight' has no attribute 'Jobb'"
