"""``freight`` commands. User errors print one line and exit 2, never a traceback.

The commands raise; one boundary, :class:`_Commands`, decides what the user sees: a
usage mistake or a user error (a freight error, a file, a database, a missing extra)
is one line on stderr and exit code 2. A command that runs a job exits with what the
run came to (:func:`_exit_code_of`): 0 every item landed, 1 failed or stopped early,
3 finished with dead letters, 130 a second Ctrl-C (:data:`EXIT_CODES` is the table
the help and ``docs/guide.md`` show). Anything else is a bug in freight and keeps its
traceback. The boundary and the exit codes live in :mod:`freight.cli._errors`
(``_Commands`` is re-exported here). The job ``freight load`` runs is built (and its
file and target checked) in :mod:`freight.cli._load`, whose refusals reach this
boundary as a ``ConfigError``.
"""

from __future__ import annotations

import csv
import gc
import importlib
import logging
import os
import sys
from collections.abc import Callable, Hashable
from contextlib import closing
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from freight._errors import FreightError
from freight._process import alive, host
from freight.cli._batch import batch_app, worker
from freight.cli._errors import (
    EXIT_CODES,
    EXIT_DEAD_LETTERS,
    EXIT_INTERRUPTED,
    EXIT_LANDED,
    EXIT_STOPPED,
    _Commands,
    _error,
)
from freight.cli._flow import flow_app
from freight.cli._load import Load, default_chunk_size, default_workers, load_job
from freight.jobs import CsvSource, Job, JobReport, ProgressPrinter
from freight.jobs._report import ERROR_SAMPLE, WRITTEN, load_report
from freight.store import (
    DEFAULT_PATH,
    DONE,
    LIVE,
    STOPPED,
    Control,
    JobRecord,
    Store,
    open_store,
)
from freight.store._records import utcnow

__all__ = ["app", "main"]

# Seconds without a heartbeat after which a run's owner is dead (Job's stale_after default).
STALE_AFTER = 30.0


app = typer.Typer(
    name="freight",
    cls=_Commands,
    help="Batch processing: run, load, watch and control bulk jobs.",
    epilog=EXIT_CODES,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
"""The ``freight`` command as a Typer app (``typer.testing.CliRunner`` invokes it)."""
app.add_typer(flow_app, name="flow")
app.add_typer(batch_app, name="batch")
app.command()(worker)

StoreOption = Annotated[
    str,
    typer.Option(
        "--store",
        envvar="FREIGHT_STORE",
        help="Where runs are kept: a path, sqlite:///PATH or postgresql://….",
    ),
]
JobArgument = Annotated[str, typer.Argument(help="A run id, or a job name (its latest run).")]


def _fail(message: str) -> NoReturn:
    """End the command with a user error (one line, exit 2)."""
    raise typer.Exit(_error(message))


def _open(store: str) -> Store:
    """The store at ``store``, opened and read once before the command does anything
    else: a corrupt, truncated or read-only store (or one in a folder it cannot be made
    in) is a :class:`~freight.StoreError` naming it, one line (see :func:`_user_error`)."""
    opened = open_store(store)
    opened.list_jobs(limit=1)
    return opened


def _read(store: str) -> Store:
    """The store at ``store``, opened to be read (``list``, ``status``, ``report``):
    never created nor written; a missing one is one line, "no store at PATH"."""
    opened = open_store(store, read_only=True)
    opened.list_jobs(limit=1)
    return opened


def _stored(store: str) -> Store | None:
    """The store at ``store`` if it exists (opened to be read), else ``None``."""
    try:
        return _read(store)
    except FreightError as exc:
        if str(exc).startswith("no store at "):
            return None
        raise


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
    superseded = [r for r in report["resolved"] if r.get("reason", WRITTEN) != WRITTEN]
    for resolved in superseded[:10]:
        typer.echo(f"  {resolved['item']}: resolved, {resolved['reason']}")
    more = len(report["errors"]) - 10 + report.get("errors_omitted", 0)
    if more > 0:
        typer.echo(f"  … and {more:,} more errors (all of them: freight report JOB --json --all)")
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
        raise typer.Exit(EXIT_INTERRUPTED) from None
    finally:
        if shown:  # the printer's stream is this command's: never leave it on the job
            job.on_progress = None


def _finish(report: JobReport, as_json: bool) -> None:
    """Show the report; end the command with the exit code of what the run came to."""
    _render(report, as_json)
    code = _exit_code_of(report.status)
    if code != EXIT_LANDED:
        raise typer.Exit(code)


def _exit_code_of(status: str) -> int:
    """The exit code of a run that ended in ``status`` (see :data:`EXIT_CODES`).

    Dead letters are not success: a script that checks only the exit code must notice
    that rows did not land."""
    if status in STOPPED:
        return EXIT_STOPPED
    if status == "completed_with_errors":
        return EXIT_DEAD_LETTERS
    return EXIT_LANDED


@app.command(epilog=EXIT_CODES)
def load(
    file: Annotated[
        Path,
        typer.Argument(
            help="A .csv or .jsonl file (maybe .gz/.zst compressed) or a .parquet file."
        ),
    ],
    into: Annotated[
        str,
        typer.Option(
            "--into",
            help="The target database: sqlite:///PATH, postgresql://USER@HOST:PORT/DB or "
            "mysql://USER@HOST:PORT/DB.",
        ),
    ],
    table: Annotated[str, typer.Option("--table", help="Target table (taken literally).")],
    key: Annotated[
        str | None,
        typer.Option(
            "--key",
            help="Upsert on this column: the file's last value of a key wins, and a rerun "
            "after a crash writes nothing twice. Without --key a load is at least once (a "
            "kill -9 then a rerun can write a chunk twice); for exactly-once without a "
            "key, keep the store in the target PostgreSQL database "
            "(--store postgresql://…same db…).",
        ),
    ] = None,
    schema: Annotated[
        str | None, typer.Option("--schema", help="PostgreSQL schema of the table.")
    ] = None,
    types: Annotated[
        str | None,
        typer.Option(
            "--types",
            help="Column types of a new table, e.g. amount=numeric,seen=timestamptz "
            "(else inferred from the first rows, the same on SQLite and PostgreSQL).",
        ),
    ] = None,
    name: Annotated[str | None, typer.Option("--name", help="Job name (resume key).")] = None,
    chunk_size: Annotated[
        int | None,
        typer.Option(
            "--chunk-size",
            min=1,
            help="Rows per chunk, each checkpointed (default: 50,000 into PostgreSQL, "
            "where a chunk is one COPY; 10,000 otherwise).",
        ),
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(
            "--workers",
            min=1,
            help="Chunks written at once (default: 2 into PostgreSQL, 1 otherwise).",
        ),
    ] = None,
    max_failures: Annotated[
        int | None,
        typer.Option(
            "--max-failures", min=0, help="Stop the run (exit 1) once more rows than this failed."
        ),
    ] = None,
    max_failure_rate: Annotated[
        float | None,
        typer.Option(
            "--max-failure-rate",
            min=0.0,
            max=1.0,
            help="Stop the run (exit 1) once the failed fraction of rows exceeds this.",
        ),
    ] = None,
    file_format: Annotated[
        str | None,
        typer.Option(
            "--format",
            help="csv, jsonl or parquet (default: from the suffix, .gz/.zst looked through; "
            "the compression is found from the suffix or the file's first bytes).",
        ),
    ] = None,
    fresh: Annotated[
        bool, typer.Option("--fresh", help="Start over, ignoring checkpoints.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the JSON report alone.")] = False,
    store: StoreOption = str(DEFAULT_PATH),
) -> None:
    """Load a CSV, JSONL or Parquet file into a SQLite, PostgreSQL or MariaDB/MySQL table,
    checkpointed and resumable.

    The table is created if missing, with column types inferred from the first rows
    (--types overriding), the same on SQLite and PostgreSQL; rows are upserted on
    --key. Running it again with the same --name on the same file resumes. A header
    the target cannot take (a duplicate or empty column name, too many columns) is
    refused before anything is created. Rows that cannot be loaded are dead-lettered
    with their line: exit 3; fix the cause, then freight retry-failed JOB.

    Without --key a load is at least once: a kill -9 then a rerun can write a chunk
    twice. For exactly-once without a key, keep the store in the target PostgreSQL
    database (--store postgresql://…same db…): a chunk's rows and checkpoint then
    commit in one transaction.

    Example: freight load users.csv --into sqlite:///app.db --table users --key id
    """
    spec = Load(
        file=file, into=into, table=table, key=key, schema=schema, types=types,
        chunk_size=chunk_size or default_chunk_size(into),
        workers=workers or default_workers(into), max_failures=max_failures,
        max_failure_rate=max_failure_rate,
        format=file_format,
    )  # fmt: skip
    if not fresh:
        _check_same_target(spec, name or f"load {file.name} into {table}", store)
    job = load_job(spec, name, lambda: _open(store))
    _collect_less()
    _finish(_run_job(job, fresh), as_json)


_TARGET = ("into", "schema", "table", "key")  # what makes a load's target, as recorded


def _check_same_target(spec: Load, name: str, store: str) -> None:
    """Refuse a load whose job name's latest run loaded into another target (another
    database, schema, table or key): that run would be resumed, or taken for done, and
    nothing would be written where this one asks. Nothing is created (the store is only
    read, if it exists)."""
    opened = _stored(store)
    if opened is None:
        return
    try:
        latest = opened.latest_job(name)
    finally:
        opened.close()
    meta = (latest.config.get("metadata") or {}) if latest is not None else {}
    if latest is None or meta.get("command") != "load":
        return
    asked = spec.metadata()
    if all(meta.get(part) == asked[part] for part in _TARGET):
        return
    _fail(
        f"run {name!r} loaded {Path(str(meta.get('file'))).name} into "
        f"{_target(meta, asked)}; to load it into {_target(asked, meta)} give another --name"
    )


def _target(meta: dict[str, Any], other: dict[str, Any]) -> str:
    """Where a load wrote: its database, and its schema, table and key where they
    differ from ``other``'s."""
    parts = [str(meta.get("into"))]
    if (meta.get("schema"), meta.get("table")) != (other.get("schema"), other.get("table")):
        schema = meta.get("schema")
        parts.append(f"table {schema + '.' if schema else ''}{meta.get('table')}")
    if meta.get("key") != other.get("key"):
        parts.append(f"key {meta.get('key')}" if meta.get("key") else "no key")
    return ", ".join(parts)


def _collect_less() -> None:
    """A load makes a tuple per row, millions of them, nearly all short-lived. This
    process is the command's own (the library never retunes its host's collector), so
    the cyclic collector runs less often: what was imported is frozen out of its scans."""
    gc.freeze()
    gc.set_threshold(100_000, 50, 100)


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
        return load_job(Load.from_metadata(meta), record.name, lambda: _open(store))
    if meta.get("command") == "run":
        return _import_job(str(meta["target"]))
    _fail(
        f"run {record.id} of {record.name!r} was started from Python; run that job again "
        "(job.run() or freight run MODULE:JOB) to resume it"
    )


@app.command(epilog=EXIT_CODES)
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
    with closing(_read(store)) as opened:
        jobs = opened.list_jobs()
    for job in jobs:
        typer.echo(f"{job.id}  {job.status:<22} {job.processed:>10,} items  {job.name}")


@app.command()
def status(job: JobArgument, store: StoreOption = str(DEFAULT_PATH)) -> None:
    """Show a run's status and counters.

    Example: freight status "load users.csv into users"
    """
    with closing(_read(store)) as opened:
        record = _find(opened, job)
    typer.echo(
        f"{record.name} ({record.id}): {_status_of(record)}; processed {record.processed:,}, "
        f"succeeded {record.succeeded:,}, failed {record.failed:,}, skipped {record.skipped:,}"
        + (f"; requested: {record.control}" if record.control else "")
    )


@app.command()
def report(
    job: JobArgument,
    as_json: Annotated[bool, typer.Option("--json", help="Print the JSON report alone.")] = False,
    every: Annotated[
        bool,
        typer.Option(
            "--all",
            help=f"List every error (else the first {ERROR_SAMPLE}; the report's "
            "errors_omitted counts the others).",
        ),
    ] = False,
    store: StoreOption = str(DEFAULT_PATH),
) -> None:
    """Print a run's report (with --json: the JSON report alone, on stdout).

    Example: freight report import-users --json --all
    """
    with closing(_read(store)) as opened:
        sample = None if every else ERROR_SAMPLE
        report = load_report(opened, _find(opened, job).id, errors=sample)
    _render(report, as_json)


def _control(job: str, store: str, action: Control) -> None:
    opened = _open(store)
    record = _find(opened, job)
    if record.finished:
        _fail(f"run {record.id} of {record.name!r} is already {record.status}")
    _ask(opened, record, action)


def _ask(store: Store, record: JobRecord, action: Control) -> None:
    store.request(record.id, action)
    typer.echo(f"asked run {record.id} of {record.name!r} to {action}")


@app.command()
def pause(job: JobArgument, store: StoreOption = str(DEFAULT_PATH)) -> None:
    """Ask a running job to pause at its next chunk boundary.

    Example: freight pause import-users
    """
    _control(job, store, "pause")


@app.command(epilog=EXIT_CODES)
def resume(
    job: JobArgument,
    as_json: Annotated[bool, typer.Option("--json", help="Print the JSON report alone.")] = False,
    store: StoreOption = str(DEFAULT_PATH),
) -> None:
    """Let a paused job go on, or continue a stopped or crashed run from its checkpoints.

    A run whose process is gone (killed while it ran or while it was paused) is
    continued here, from its checkpoints, to its end.

    Example: freight resume import-users
    """
    opened = _open(store)
    record = _find(opened, job)
    if record.status in DONE:
        _fail(f"run {record.id} of {record.name!r} is already {record.status}")
    if record.status in LIVE and _owneralive(record):
        if record.status == "paused" or record.control == "pause":
            _ask(opened, record, "resume")  # its owner goes on
        else:
            typer.echo(
                f"run {record.id} of {record.name!r} is running in process {record.owner_pid} "
                f"on {record.owner_host}: nothing to resume"
            )
        return
    if record.control is not None:
        # asked of an owner that is gone: a pause would stop the continued run at once
        opened.request(record.id, None)
    _finish(_run_job(_rebuild(record, store), fresh=False), as_json)


def _status_of(record: JobRecord) -> str:
    """A run's status, saying when it is live only in the store: its owner is gone."""
    if record.status not in LIVE or record.owner_host is None or _owneralive(record):
        return record.status
    if record.owner_host == host() and not alive(record.owner_pid):
        gone = f"owner process {record.owner_pid} is gone"
    else:
        gone = (
            f"owner process {record.owner_pid} on {record.owner_host} is gone: no heartbeat "
            f"since {record.heartbeat_at}"
        )
    return f"{record.status} ({gone}; `freight resume` continues it)"


def _owneralive(record: JobRecord) -> bool:
    """Whether the run's owner still holds it: its heartbeat is fresh and, when it runs
    on this host, its process exists (a process killed a moment ago left a fresh
    heartbeat behind, and resuming it must not just ask a dead process to go on)."""
    stale_before = utcnow() - timedelta(seconds=STALE_AFTER)
    if record.owner_host is None or record.heartbeat_at is None:
        return False
    if record.heartbeat_at <= stale_before:
        return False
    return record.owner_host != host() or alive(record.owner_pid)


@app.command("retry-failed", epilog=EXIT_CODES)
def retry_failed(
    job: JobArgument,
    as_json: Annotated[bool, typer.Option("--json", help="Print the JSON report alone.")] = False,
    store: StoreOption = str(DEFAULT_PATH),
) -> None:
    """Replay only the dead letters of a run (after fixing their cause).

    Example: freight retry-failed import-users
    """
    record = _find(_open(store), job)
    rebuilt = _rebuild(record, store)
    meta = record.config.get("metadata") or {}
    _finish(rebuilt.retry_failed(record.id, key=_load_key(rebuilt, meta)), as_json)


def _load_key(job: Job, meta: dict[str, Any]) -> Callable[[Any], Hashable] | None:
    """The --key of a load as a function of its source's items, for its replay: the
    file's last value of a key wins, so a dead line whose key a later line carries is
    superseded, never written over the newer value (see :meth:`Job.retry_failed`)."""
    column = meta.get("key")
    if meta.get("command") != "load" or not column:
        return None
    source = job.source
    if isinstance(source, CsvSource) and source.raw:  # a line as COPY reads it
        index = (source.columns() or []).index(column)
        delimiter, quotechar = source.delimiter, source.quotechar

        def of_line(text: str) -> Hashable:
            return next(csv.reader([text], delimiter=delimiter, quotechar=quotechar))[index]

        return of_line

    def of_record(item: Any) -> Hashable:
        return item.get(column) if isinstance(item, dict) else None

    return of_record


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
