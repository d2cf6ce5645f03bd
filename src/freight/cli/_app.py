"""``freight`` commands. User errors print one line and exit 2, never a traceback.

The commands raise; one boundary, :class:`_Commands`, decides what the user sees: a
usage mistake or a user error (a freight error, a file, a database, a missing extra)
is one line on stderr and exit code 2. Exit 1 is a run that failed or was cancelled,
130 a second Ctrl-C. Anything else is a bug in freight and keeps its traceback.
"""

from __future__ import annotations

import gc
import importlib
import itertools
import logging
import os
import sqlite3
import sys
from collections.abc import Callable, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from typer.core import TyperGroup

from freight._core._retry import Retry
from freight._errors import FreightError
from freight.connectors.sqlite import SqliteSink, sqlite_path
from freight.jobs import CsvSource, Job, JobReport, JsonlSource, ProgressPrinter
from freight.jobs._report import load_report
from freight.store import DEFAULT_PATH, DONE, LIVE, STOPPED, JobRecord, Store, open_store
from freight.store._records import utcnow

__all__ = ["app", "main"]

# The extra that provides a module, for an ImportError that does not say it itself.
_EXTRAS = {
    "psycopg": "postgres",
    "psycopg_pool": "postgres",
    "pyarrow": "parquet",
    "duckdb": "trace",
    "prometheus_client": "prometheus",
}


class _Commands(TyperGroup):
    """freight's commands with their one error boundary (see the module docstring).

    It wraps ``main``, which both the console command and ``CliRunner`` call, so the
    group's own usage errors ("No such command") pass through it as well.
    """

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        windows_expand_args: bool = True,
        **extra: Any,
    ) -> Any:
        try:
            code = super().main(args, prog_name, complete_var, False, windows_expand_args, **extra)
        except Exception as exc:
            code = _exit_code(exc)
            if code is None:
                raise  # a bug: its traceback is what a report needs
        if not standalone_mode:
            return code
        sys.exit(code if isinstance(code, int) else 0)


def _exit_code(exc: Exception) -> int | None:
    """Print the one line ``exc`` deserves and return the exit code; ``None`` for a bug."""
    if isinstance(exc, typer.Abort):
        typer.echo("freight: aborted", err=True)
        return 1
    # Typer's usage errors (its own copy of click's UsageError): duck-typed, since
    # the class is not part of typer's public API.
    if getattr(exc, "exit_code", None) == 2 and hasattr(exc, "format_message"):
        ctx = getattr(exc, "ctx", None)
        if type(exc).__name__ == "NoArgsIsHelpError" and ctx is not None:
            typer.echo(ctx.get_help())
            return 0
        where = ctx.command_path if ctx is not None else "freight"
        return _error(f"{exc.format_message()} (see `{where} --help`)")
    message = _user_error(exc)
    return None if message is None else _error(message)


def _user_error(exc: Exception) -> str | None:
    """The one line a user error prints, or ``None`` when ``exc`` is a bug."""
    if isinstance(exc, ImportError) and exc.name in _EXTRAS:
        return f"{exc}: pip install 'freight[{_EXTRAS[exc.name]}]'"
    if isinstance(exc, OSError) and exc.strerror and exc.filename is not None:
        return f"{exc.strerror}: {str(exc.filename)!r}"
    psycopg = sys.modules.get("psycopg")  # the database refused (imported if it was used)
    refused = psycopg is not None and isinstance(exc, psycopg.Error)
    if isinstance(exc, FreightError | ImportError | OSError | sqlite3.Error) or refused:
        return "; ".join(line.strip() for line in str(exc).splitlines() if line.strip())
    return None


app = typer.Typer(
    name="freight",
    cls=_Commands,
    help="Batch processing: run, load, watch and control bulk jobs.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
"""The ``freight`` command as a Typer app (``typer.testing.CliRunner`` invokes it)."""

StoreOption = Annotated[
    str,
    typer.Option(
        "--store",
        envvar="FREIGHT_STORE",
        help="Where runs are kept: a path, sqlite:///PATH or postgresql://….",
    ),
]
JobArgument = Annotated[str, typer.Argument(help="A run id, or a job name (its latest run).")]


def _error(message: str) -> int:
    """Print a user error's one line; return its exit code, 2."""
    typer.echo(f"freight: error: {message}", err=True)
    return 2


def _fail(message: str) -> NoReturn:
    """End the command with a user error (one line, exit 2)."""
    raise typer.Exit(_error(message))


def _find(store: Store, job: str) -> JobRecord:
    record = store.get_job(job) or store.latest_job(job)
    if record is None:
        _fail(f"no run with id or job name {job!r} in {store!r}; see `freight list`")
    return record


def _render(report: JobReport, as_json: bool) -> None:
    if as_json:
        typer.echo(report.to_json())
        return
    s = report.summary
    typer.echo(f"job {report['job_name']} ({report.job_id}): {report.status}")
    if report["reason"]:
        typer.echo(f"  reason: {report['reason']}")
    typer.echo(
        f"  processed {s['processed']:,}: succeeded {s['succeeded']:,}, failed {s['failed']:,}, "
        f"skipped {s['skipped']:,}"
    )
    if s["duration_seconds"]:
        typer.echo(f"  {s['duration_seconds']:.1f} s, {s['items_per_second']:,.0f} items/s")
    for error in report["errors"][:10]:
        typer.echo(
            f"  {error['item']}: {error['error_type']} ({error['category']}): {error['message']}"
        )
    if report["remediation"]["strategy"]:
        typer.echo(f"  next: {report['remediation']['strategy']}")


def _run_job(job: Job, fresh: bool) -> JobReport:
    """Run with a progress display; a second Ctrl-C ends the command with one line."""
    shown = job.on_progress is None
    try:
        with ProgressPrinter() as printer:
            if shown:
                job.on_progress = printer
            return job.run(fresh=fresh)
    except KeyboardInterrupt:
        typer.echo("freight: stopped at once; run the same command again to resume", err=True)
        raise typer.Exit(130) from None
    finally:
        if shown:  # the printer's stream is this command's: never leave it on the job
            job.on_progress = None


def _finish(report: JobReport, as_json: bool) -> None:
    _render(report, as_json)
    if report.status in STOPPED:  # ended early: exit 1
        raise typer.Exit(1)


@app.command()
def load(
    file: Annotated[Path, typer.Argument(help="A .csv or .jsonl file.")],
    into: Annotated[
        str,
        typer.Option(
            "--into", help="The target database: sqlite:///PATH or postgresql://USER@HOST:PORT/DB."
        ),
    ],
    table: Annotated[str, typer.Option("--table", help="Target table (taken literally).")],
    key: Annotated[str | None, typer.Option("--key", help="Upsert on this column.")] = None,
    schema: Annotated[
        str | None, typer.Option("--schema", help="PostgreSQL schema of the table.")
    ] = None,
    types: Annotated[
        str | None,
        typer.Option(
            "--types", help="PostgreSQL column types, e.g. amount=numeric,seen=timestamptz."
        ),
    ] = None,
    name: Annotated[str | None, typer.Option("--name", help="Job name (resume key).")] = None,
    chunk_size: Annotated[int, typer.Option("--chunk-size", min=1)] = 10_000,
    workers: Annotated[int, typer.Option("--workers", min=1, help="Chunks written at once.")] = 1,
    fresh: Annotated[
        bool, typer.Option("--fresh", help="Start over, ignoring checkpoints.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the JSON report alone.")] = False,
    store: StoreOption = str(DEFAULT_PATH),
) -> None:
    """Load a CSV or JSONL file into a SQLite or PostgreSQL table, checkpointed and resumable.

    The table is created if missing (for PostgreSQL with column types inferred from the
    first rows, --types overriding); rows are upserted on --key. Running it again with
    the same --name on the same file resumes.

    Example: freight load users.csv --into sqlite:///app.db --table users --key id
    """
    job = _load_job(file, into, table, key, name, chunk_size, store, schema, types)
    job.workers = workers
    _collect_less()
    _finish(_run_job(job, fresh), as_json)


def _collect_less() -> None:
    """A load makes a tuple per row, millions of them, nearly all short-lived. This
    process is the command's own (the library never retunes its host's collector), so
    the cyclic collector runs less often: what was imported is frozen out of its scans."""
    gc.freeze()
    gc.set_threshold(100_000, 50, 100)


def _load_job(
    file: Path, into: str, table: str, key: str | None, name: str | None, chunk_size: int,
    store: str, schema: str | None = None, types: str | None = None,
) -> Job:  # fmt: skip
    """The job behind ``freight load`` (also rebuilt by ``resume`` and ``retry-failed``)."""
    if not file.is_file():
        _fail(f"no such file {str(file)!r}")
    postgres = into.startswith(("postgresql://", "postgres://"))
    if not postgres:
        sqlite_path(into)  # a clear error for anything that is neither
    if (schema or types) and not postgres:
        _fail("--schema and --types apply to PostgreSQL targets (postgresql://…)")
    suffix = file.suffix.lower()
    source: CsvSource | JsonlSource
    if suffix == ".csv":
        csv_source = source = CsvSource(file)
        columns = csv_source.columns() or []
        if key is not None and key not in columns:
            _fail(f"--key {key!r} is not a column of {file.name} (columns: {', '.join(columns)})")
    elif suffix in (".jsonl", ".ndjson"):
        source = JsonlSource(file)
    else:
        _fail(f"cannot load {file.name}: give a .csv or .jsonl file")
    if postgres:
        csv_text = suffix == ".csv"
        sink, convert = _postgres_sink(source, into, table, schema, key, types, csv_text)
        # CSV goes to COPY as it is (the server types it); JSONL is typed here.
        source = CsvSource(file, raw=True) if csv_text else JsonlSource(file, convert=convert)
    else:
        sink = SqliteSink(sqlite_path(into), table, key=key)
    return Job(
        name or f"load {file.name} into {table}",
        source,
        sink,
        chunk_size=chunk_size,
        retry=Retry(attempts=3, backoff=0.05),
        store=open_store(store),
        metadata={
            "command": "load", "file": str(file.resolve()), "into": into, "table": table,
            "key": key, "chunk_size": chunk_size, "schema": schema, "types": types,
        },
    )  # fmt: skip


def _postgres_sink(
    source: CsvSource | JsonlSource, into: str, table: str, schema: str | None,
    key: str | None, types: str | None, csv_text: bool,
) -> tuple[Any, Callable[[Any], Any]]:  # fmt: skip
    """Create the table if missing (types inferred, --types first); return the sink and
    the converter that types every record (a value that does not fit dead-letters it)."""
    from freight.connectors import pgtypes  # noqa: PLC0415 (extra freight[postgres])
    from freight.connectors.postgres import (  # noqa: PLC0415
        PostgresSink,
        create_table,
        table_types,
    )

    overrides = pgtypes.parse_types(types)
    existing = table_types(into, table, schema)
    if existing is None:
        sample = [r.item for r in itertools.islice(source.read(), 1000) if r.error is None]
        columns = list(sample[0]) if sample and isinstance(sample[0], dict) else []
        if not columns:
            _fail("cannot infer the columns: the file has no readable record")
    else:
        columns = list(existing)
    unknown = set(overrides) - set(columns)
    if unknown:
        _fail(f"--types names unknown column(s) {sorted(unknown)}")
    if existing is None:
        column_types = {**pgtypes.infer_types(columns, sample), **overrides}
        create_table(into, table, column_types, schema=schema, key=[key] if key else [])
    else:
        column_types = {c: pgtypes.canonical(t) for c, t in existing.items()}
    if key is not None and key not in column_types:
        _fail(f"--key {key!r} is not a column of the table {table!r}")
    if csv_text and list(column_types) != list(source.columns() or []):  # type: ignore[union-attr]
        _fail(f"the columns of {table!r} are not the file's, in its order: {list(column_types)}")
    sink = PostgresSink(
        into, table, schema=schema, key=key, columns=list(column_types),
        format="csv" if csv_text else "rows",
    )  # fmt: skip
    return sink, pgtypes.converter(column_types)


def _import_job(target: str) -> Job:
    module_name, _, attr = target.partition(":")
    if not module_name or not attr:
        _fail(f"expected MODULE:JOB, got {target!r}")
    sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        _fail(f"cannot import {module_name!r}: {exc}")
    job: Any = getattr(module, attr, None)
    if not isinstance(job, Job):
        _fail(f"{target} is not a freight.Job (got {type(job).__name__})")
    job.metadata.setdefault("command", "run")
    job.metadata.setdefault("target", target)
    return job


def _rebuild(record: JobRecord, store: str) -> Job:
    """The job of a stored run, rebuilt from what the CLI recorded when it started it."""
    meta = record.config.get("metadata") or {}
    if meta.get("command") == "load":
        return _load_job(
            Path(meta["file"]), meta["into"], meta["table"], meta.get("key"), record.name,
            int(meta["chunk_size"]), store, meta.get("schema"), meta.get("types"),
        )  # fmt: skip
    if meta.get("command") == "run":
        return _import_job(str(meta["target"]))
    _fail(
        f"run {record.id} of {record.name!r} was started from Python; run that job again "
        "(job.run() or freight run MODULE:JOB) to resume it"
    )


@app.command()
def run(
    target: Annotated[str, typer.Argument(help="MODULE:JOB, a freight.Job defined in Python.")],
    fresh: Annotated[
        bool, typer.Option("--fresh", help="Start over, ignoring checkpoints.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the JSON report alone.")] = False,
) -> None:
    """Run (or resume) a job defined in Python.

    Example: freight run myproject.jobs:import_users
    """
    _finish(_run_job(_import_job(target), fresh), as_json)


@app.command("list")
def list_runs(store: StoreOption = str(DEFAULT_PATH)) -> None:
    """List recent runs, newest first.

    Example: freight list
    """
    for job in open_store(store).list_jobs():
        typer.echo(f"{job.id}  {job.status:<22} {job.processed:>10,} items  {job.name}")


@app.command()
def status(job: JobArgument, store: StoreOption = str(DEFAULT_PATH)) -> None:
    """Show a run's status and counters.

    Example: freight status "load users.csv into users"
    """
    record = _find(open_store(store), job)
    typer.echo(
        f"{record.name} ({record.id}): {record.status}; processed {record.processed:,}, "
        f"succeeded {record.succeeded:,}, failed {record.failed:,}, skipped {record.skipped:,}"
        + (f"; requested: {record.control}" if record.control else "")
    )


@app.command()
def report(
    job: JobArgument,
    as_json: Annotated[bool, typer.Option("--json", help="Print the JSON report alone.")] = False,
    store: StoreOption = str(DEFAULT_PATH),
) -> None:
    """Print a run's report (with --json: the JSON report alone, on stdout).

    Example: freight report import-users --json
    """
    opened = open_store(store)
    _render(load_report(opened, _find(opened, job).id), as_json)


def _control(job: str, store: str, action: str) -> None:
    opened = open_store(store)
    record = _find(opened, job)
    if record.finished:
        _fail(f"run {record.id} of {record.name!r} is already {record.status}")
    opened.request(record.id, action)  # type: ignore[arg-type]
    typer.echo(f"asked run {record.id} of {record.name!r} to {action}")


@app.command()
def pause(job: JobArgument, store: StoreOption = str(DEFAULT_PATH)) -> None:
    """Ask a running job to pause at its next chunk boundary.

    Example: freight pause import-users
    """
    _control(job, store, "pause")


@app.command()
def resume(
    job: JobArgument,
    as_json: Annotated[bool, typer.Option("--json", help="Print the JSON report alone.")] = False,
    store: StoreOption = str(DEFAULT_PATH),
) -> None:
    """Let a paused job go on, or continue a stopped or crashed run from its checkpoints.

    Example: freight resume import-users
    """
    opened = open_store(store)
    record = _find(opened, job)
    stale_before = utcnow() - timedelta(seconds=30)
    live = record.heartbeat_at is not None and record.heartbeat_at > stale_before
    if record.status in LIVE and live:
        _control(job, store, "resume")
        return
    if record.status in DONE:
        _fail(f"run {record.id} of {record.name!r} is already {record.status}")
    _finish(_run_job(_rebuild(record, store), fresh=False), as_json)


@app.command("retry-failed")
def retry_failed(
    job: JobArgument,
    as_json: Annotated[bool, typer.Option("--json", help="Print the JSON report alone.")] = False,
    store: StoreOption = str(DEFAULT_PATH),
) -> None:
    """Replay only the dead letters of a run (after fixing their cause).

    Example: freight retry-failed import-users
    """
    record = _find(open_store(store), job)
    _finish(_rebuild(record, store).retry_failed(record.id), as_json)


@app.command()
def cancel(job: JobArgument, store: StoreOption = str(DEFAULT_PATH)) -> None:
    """Ask a running job to stop after the chunks in flight (it can be resumed later).

    Example: freight cancel import-users
    """
    _control(job, store, "cancel")


def main() -> None:
    """Entry point of the ``freight`` command (errors: see :class:`_Commands`)."""
    logging.basicConfig(level=logging.INFO, format="freight: %(message)s", stream=sys.stderr)
    app()
