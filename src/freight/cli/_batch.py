"""``freight batch`` and ``freight worker``: managed batches from the command line.

- ``batch submit FILE.jsonl --endpoint E --app MODULE:MANAGER``: one request per line
  in the OpenAI batch input format, ``{"custom_id", "method", "url", "body"}``; prints
  the new batch's id alone (``ID=$(freight batch submit …)``);
- ``batch status|get|cancel|wait ID``, ``batch list``: what the store says of a batch
  (``get`` and ``--json``: the batch as JSON);
- ``batch results ID [-o out.jsonl]``: one line per request, in submission order, in
  the OpenAI batch output format ``{"id", "custom_id", "response": {"status_code",
  "body"}, "error"}``;
- ``worker --app MODULE:MANAGER``: serve the manager's endpoints in this process until
  SIGTERM or Ctrl-C, which drain the requests in flight (any number of workers may
  share a PostgreSQL store; a killed one loses nothing: its lease lapses and another
  worker takes its requests again).

``--app MODULE:ATTR`` names a :class:`~freight.manager.BatchManager` (or a function
returning one) in the user's code: its store says where batches are kept and its
endpoints which handlers serve them. Commands that only read or control batches take
``--store URL`` instead. The file is read and checked whole before anything is
submitted: a bad line is one error naming the file and the line (the ``freight``
command's boundary prints the raised ``ConfigError`` as one line, exit 2).
"""

from __future__ import annotations

import asyncio
import importlib
import json
import logging
import os
import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from freight._errors import ConfigError
from freight.cli._errors import EXIT_LANDED, EXIT_STOPPED
from freight.store import DEFAULT_PATH

if TYPE_CHECKING:  # imported where used: the other commands do not pay for the manager
    from freight.manager import Batch, BatchManager

__all__ = ["InputLine", "batch_app", "read_input", "worker"]

_log = logging.getLogger("freight.worker")
T = TypeVar("T")

EXAMPLE_LINE = (
    '{"custom_id": "r1", "method": "POST", "url": "/v1/embeddings", "body": {"input": "hi"}}'
)
"""An input line as the OpenAI batch format has it, shown by the errors."""


@dataclass(frozen=True, slots=True)
class InputLine:
    """One request read from a batch input file, and the line it came from."""

    line: int
    custom_id: str
    url: str | None
    body: Any


def read_input(path: Path, endpoint: str | None) -> tuple[str, list[InputLine]]:
    """The endpoint and the requests of a JSONL batch input file, checked whole.

    ``endpoint`` (``--endpoint``) defaults to the first line's ``url``; every line's
    ``url``, where given, must be it (one batch serves one endpoint, as in the OpenAI
    batch API). Blank lines are skipped. Raises :class:`ConfigError` naming the file
    and the line for a line that is not a JSON object, has no ``custom_id`` string or
    no ``body``, repeats an earlier ``custom_id`` or names another endpoint; and for a
    file with no request at all.
    """
    requests: list[InputLine] = []
    seen: dict[str, int] = {}
    for number, text in _lines(path):
        request = _parse(path, number, text)
        endpoint = endpoint or request.url
        if endpoint is None:
            raise ConfigError(
                f"{path}:{number}: no url on the first request; give the endpoint with "
                "--endpoint E (e.g. --endpoint /v1/embeddings)"
            )
        if request.url is not None and request.url != endpoint:
            raise ConfigError(
                f"{path}:{number}: url {request.url!r} is not the batch's endpoint "
                f"{endpoint!r}; one batch serves one endpoint: submit these lines apart"
            )
        if request.custom_id in seen:
            raise ConfigError(
                f"{path}:{number}: custom_id {request.custom_id!r} repeats line "
                f"{seen[request.custom_id]}; custom_id must be unique in a batch"
            )
        seen[request.custom_id] = number
        requests.append(request)
    if not requests or endpoint is None:
        raise ConfigError(f"{path}: no requests; one JSON object a line, e.g. {EXAMPLE_LINE}")
    return endpoint, requests


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    """The non-blank lines of ``path`` with their 1-based numbers, decoded as UTF-8
    (a byte-order mark opening the file, as Windows editors save it, is dropped)."""
    with path.open("rb") as file:
        for number, raw in enumerate(file, start=1):
            try:
                text = raw.decode("utf-8-sig" if number == 1 else "utf-8")
            except UnicodeDecodeError as exc:
                raise ConfigError(
                    f"{path}:{number}: not UTF-8 (byte {exc.start + 1}); save the file as UTF-8"
                ) from None
            if text.strip():
                yield number, text


def _parse(path: Path, number: int, text: str) -> InputLine:
    """One input line, or a :class:`ConfigError` saying what is wrong with it."""
    where = f"{path}:{number}"
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"{where}: not JSON ({exc.msg} at column {exc.colno}); each line is one JSON "
            f"object, e.g. {EXAMPLE_LINE}"
        ) from None
    except RecursionError:
        raise ConfigError(
            f"{where}: not JSON (nested too deep for Python's json); flatten the body"
        ) from None
    if not isinstance(value, dict):
        raise ConfigError(
            f"{where}: expected a JSON object, got {type(value).__name__}; e.g. {EXAMPLE_LINE}"
        )
    custom_id = value.get("custom_id")
    if not isinstance(custom_id, str) or not custom_id:
        raise ConfigError(
            f"{where}: custom_id must be a non-empty string, got {custom_id!r}; e.g. {EXAMPLE_LINE}"
        )
    if "body" not in value:
        raise ConfigError(f"{where}: request {custom_id!r} has no body; e.g. {EXAMPLE_LINE}")
    url = value.get("url")
    if url is not None and not isinstance(url, str):
        raise ConfigError(f"{where}: url must be a string such as '/v1/embeddings', got {url!r}")
    return InputLine(number, custom_id, url, value["body"])


# -- the manager: the user's (--app) or one over a store (--store) -------------------------

AppOption = Annotated[
    str | None,
    typer.Option(
        "--app",
        envvar="FREIGHT_APP",
        help="MODULE:ATTR, your BatchManager (or a function returning one): its store and "
        "endpoints are used. Looked up from the current directory.",
    ),
]
StoreOption = Annotated[
    str | None,
    typer.Option(
        "--store",
        help="Without --app: where batches are kept, a path, sqlite:///PATH or "
        "postgresql://… (default: .freight/freight.db, the manager's default).",
    ),
]
BatchArgument = Annotated[str, typer.Argument(metavar="ID", help="A batch id.")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON alone, for scripts.")]


def import_manager(target: str) -> BatchManager:
    """The :class:`BatchManager` that ``MODULE:ATTR`` names (an instance, or a function
    of no argument returning one), imported with the current directory on the path."""
    from freight.manager import BatchManager  # noqa: PLC0415 (see the imports)

    module_name, _, attr = target.partition(":")
    if not module_name or not attr:
        raise ConfigError(f"--app expects MODULE:ATTR (e.g. myapp.batches:manager), got {target!r}")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"--app {target}: cannot import {module_name!r}: {exc}") from None
    if not hasattr(module, attr):
        raise ConfigError(f"--app {target}: module {module_name!r} has no attribute {attr!r}")
    found = getattr(module, attr)
    if not isinstance(found, BatchManager) and callable(found):
        found = found()
    if not isinstance(found, BatchManager):
        raise ConfigError(
            f"--app {target} is not a freight.BatchManager (got {type(found).__name__}); "
            "point it at one, e.g. manager = BatchManager('postgresql://…')"
        )
    return found


def _manager(app: str | None, store: str | None) -> BatchManager:
    """The user's manager (``--app``), else one over ``--store`` (else the default
    store), which must exist: reading a batch never creates an empty store."""
    if app is not None:
        return import_manager(app)
    url = store or str(DEFAULT_PATH)
    if "://" not in url or url.startswith("sqlite:///"):
        path = Path(url.removeprefix("sqlite:///") or DEFAULT_PATH)
        if not path.exists():
            raise ConfigError(
                f"no store at {path}; name your manager with --app MODULE:MANAGER, or its "
                "store with --store PATH or URL"
            )
    from freight.manager import BatchManager  # noqa: PLC0415 (see the imports)

    return BatchManager(url)


def _with(manager: BatchManager, work: Callable[[BatchManager], T]) -> T:
    """``work(manager)``, the manager's store closed after it. No worker runs: these
    commands only read and control batches (``freight worker`` runs them)."""
    with closing(manager):
        return work(manager)


# -- freight batch ... ----------------------------------------------------------------------

batch_app = typer.Typer(
    name="batch",
    help="Managed batches: submit a JSONL file of requests, poll, fetch results, cancel.",
    no_args_is_help=True,
)
"""``freight batch``: the managed-batch commands (registered by :mod:`freight.cli._app`)."""


@batch_app.command()
def submit(
    file: Annotated[Path, typer.Argument(help="The requests: OpenAI batch input JSONL.")],
    endpoint: Annotated[
        str | None,
        typer.Option(
            "--endpoint",
            help="The endpoint that serves them, e.g. /v1/embeddings (default: the lines' url).",
        ),
    ] = None,
    app: AppOption = None,
    metadata: Annotated[
        list[str] | None,
        typer.Option("--metadata", help="KEY=VALUE kept with the batch (repeatable)."),
    ] = None,
    window: Annotated[
        str, typer.Option("--completion-window", help="Time to finish in, e.g. 24h.")
    ] = "24h",
    as_json: JsonOption = False,
) -> None:
    """Submit every request of a JSONL file as one batch; print its id.

    A line is {"custom_id", "method", "url", "body"} (the OpenAI batch input
    format); the file is checked whole before anything is stored.

    Example: freight batch submit prompts.jsonl --endpoint /v1/summaries --app app:manager
    """
    if app is None:
        raise ConfigError(
            "freight batch submit needs --app MODULE:MANAGER: the BatchManager whose "
            "registered endpoint serves the batch (e.g. --app myapp.batches:manager)"
        )
    from freight.manager import BatchRequest  # noqa: PLC0415 (see the imports)

    endpoint, lines = read_input(file, endpoint)
    requests = [BatchRequest(id=line.custom_id, body=line.body) for line in lines]
    meta = _metadata(metadata or [])
    batch = _with(
        import_manager(app),
        lambda m: m.submit_sync(
            requests, endpoint=endpoint, metadata=meta, completion_window=window
        ),
    )
    typer.echo(json.dumps(batch_json(batch)) if as_json else batch.id)


def _metadata(pairs: list[str]) -> dict[str, str] | None:
    found: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"--metadata expects KEY=VALUE, got {pair!r}")
        found[key] = value
    return found or None


@batch_app.command()
def status(
    batch_id: BatchArgument, app: AppOption = None, store: StoreOption = None,
    as_json: JsonOption = False,
) -> None:  # fmt: skip
    """Show a batch's status and request counts.

    Example: freight batch status batch_123 --store postgresql://…
    """
    batch = _with(_manager(app, store), lambda m: m.get_sync(batch_id))
    typer.echo(json.dumps(batch_json(batch)) if as_json else status_line(batch))


@batch_app.command()
def get(batch_id: BatchArgument, app: AppOption = None, store: StoreOption = None) -> None:
    """Print a batch as JSON: status, counts, timestamps of each transition, metadata.

    Example: freight batch get batch_123
    """
    batch = _with(_manager(app, store), lambda m: m.get_sync(batch_id))
    typer.echo(json.dumps(batch_json(batch), indent=2))


@batch_app.command()
def cancel(
    batch_id: BatchArgument, app: AppOption = None, store: StoreOption = None,
    as_json: JsonOption = False,
) -> None:  # fmt: skip
    """Cancel a batch: nothing starts after this returns; requests in flight finish.

    The requests that had not started are marked cancelled.

    Example: freight batch cancel batch_123
    """
    batch = _with(_manager(app, store), lambda m: m.cancel_sync(batch_id))
    typer.echo(json.dumps(batch_json(batch)) if as_json else status_line(batch))


@batch_app.command()
def wait(
    batch_id: BatchArgument,
    app: AppOption = None,
    store: StoreOption = None,
    timeout: Annotated[
        float | None, typer.Option("--timeout", min=0.0, help="Give up after this many seconds.")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Wait until a batch ends; exit 0 if it completed, else 1 (also after --timeout).

    A worker must be running (freight worker). Exit 1: the batch failed, was cancelled
    or expired, or is still running after --timeout.

    Example: freight batch wait batch_123 --timeout 600
    """
    try:
        batch = _with(_manager(app, store), lambda m: m.wait_sync(batch_id, timeout=timeout))
    except TimeoutError:
        typer.echo(f"freight: batch {batch_id} has not ended after {timeout} s", err=True)
        raise typer.Exit(EXIT_STOPPED) from None
    typer.echo(json.dumps(batch_json(batch)) if as_json else status_line(batch))
    if str(batch.status) != "completed":
        raise typer.Exit(EXIT_STOPPED)


@batch_app.command()
def results(
    batch_id: BatchArgument,
    output: Annotated[
        Path | None, typer.Option("-o", "--output", help="Write the JSONL here (else stdout).")
    ] = None,
    app: AppOption = None,
    store: StoreOption = None,
) -> None:
    """Print or write a batch's results as JSONL, one line per request, in order.

    A line is {"id", "custom_id", "response": {"status_code", "body"}, "error"} (the
    OpenAI batch output format).

    Example: freight batch results batch_123 -o results.jsonl
    """
    manager = _manager(app, store)
    if output is None:
        _with(manager, lambda m: asyncio.run(write_results(m, batch_id, sys.stdout)))
        return
    count = _with(manager, lambda m: m.export_results_sync(batch_id, output))
    typer.echo(f"{count:,} results of batch {batch_id} written to {output}", err=True)


@batch_app.command("list")
def list_batches(
    app: AppOption = None,
    store: StoreOption = None,
    limit: Annotated[int, typer.Option("--limit", min=1)] = 20,
    after: Annotated[
        str | None, typer.Option("--after", help="List those after this batch id.")
    ] = None,
    only: Annotated[
        str | None, typer.Option("--status", help="Only batches in this status.")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """List batches, newest first.

    Example: freight batch list --status processing
    """
    found = _with(
        _manager(app, store), lambda m: m.list_sync(after=after, limit=limit, status=only)
    )
    if as_json:
        typer.echo(json.dumps([batch_json(b) for b in found]))
        return
    if not found:
        typer.echo("no batches")
    for batch in found:
        typer.echo(status_line(batch))


# -- rendering -----------------------------------------------------------------------------


def status_line(batch: Batch) -> str:
    """``ID: STATUS; endpoint E; N requests: C completed, F failed[, …]``."""
    counts = batch.request_counts
    done = [f"{counts.completed:,} completed", f"{counts.failed:,} failed"]
    done += [f"{n:,} {name}" for name, n in (("cancelled", counts.cancelled),
                                             ("expired", counts.expired)) if n]  # fmt: skip
    pending = counts.total - counts.finished
    if pending:
        done.append(f"{pending:,} to go")
    return (
        f"{batch.id}: {batch.status}; endpoint {batch.endpoint}; "
        f"{counts.total:,} requests: {', '.join(done)}"
    )


_STAMPS = (
    "created_at", "in_progress_at", "completed_at", "failed_at", "cancelling_at",
    "cancelled_at", "expired_at", "expires_at",
)  # fmt: skip


def batch_json(batch: Batch) -> dict[str, Any]:
    """A batch as JSON-ready values, with the OpenAI batch object's field names
    (timestamps as ISO 8601 UTC strings, ``null`` until reached)."""
    counts = batch.request_counts
    stamps = {name: getattr(batch, name) for name in _STAMPS}
    return {
        "id": batch.id,
        "object": "batch",
        "endpoint": batch.endpoint,
        "status": str(batch.status),
        "completion_window": batch.completion_window,
        **{name: None if at is None else at.isoformat() for name, at in stamps.items()},
        "request_counts": {
            "total": counts.total,
            "completed": counts.completed,
            "failed": counts.failed,
            "cancelled": counts.cancelled,
            "expired": counts.expired,
        },
        "metadata": dict(batch.metadata),
        "errors": list(batch.errors),
    }


async def write_results(manager: BatchManager, batch_id: str, out: IO[str]) -> int:
    """Write ``batch_id``'s results to ``out`` as OpenAI batch output lines, in
    submission order, a page at a time (a large batch is never held whole); return
    how many (``-o FILE`` writes the same lines with ``export_results``)."""
    count = 0
    async for result in manager.get_results(batch_id):
        # ASCII, as export_results writes it: a lone surrogate in a response is valid
        # JSON text but has no UTF-8 encoding, and stdout would refuse it
        out.write(json.dumps(result.to_json(batch_id)) + "\n")
        count += 1
    return count


# -- freight worker ------------------------------------------------------------------------


def worker(
    app: Annotated[
        str,
        typer.Option(
            "--app",
            envvar="FREIGHT_APP",
            help="MODULE:ATTR, your BatchManager (or a function returning one): the "
            "endpoints it registers are served, from its store.",
        ),
    ],
    burst: Annotated[
        bool, typer.Option("--burst", help="Exit once no request is left to claim.")
    ] = False,
    workers: Annotated[
        int | None,
        typer.Option(
            "--workers", min=1, help="Chunks run at once (default: the manager's workers=)."
        ),
    ] = None,
) -> None:
    """Serve a BatchManager's endpoints until SIGTERM or Ctrl-C drains it (exit 0).

    A signal lets the requests in flight finish and be written, then the worker exits.

    Start any number of them against a PostgreSQL store: each claims requests in
    chunks under a lease; a worker killed with SIGKILL loses nothing, its lease lapses
    and another worker takes its requests again.

    Example: freight worker --app myapp.batches:manager
    """
    manager = import_manager(app)
    if not manager.endpoints:
        raise ConfigError(
            f"--app {app} registers no endpoint: nothing to serve; call "
            "manager.register('/v1/…', handler) in that module"
        )
    if workers is not None:
        manager.workers = workers
    asyncio.run(_serve(manager, burst=burst))
    raise typer.Exit(EXIT_LANDED)


async def _serve(manager: BatchManager, *, burst: bool) -> None:
    """Run the manager's worker until SIGTERM or SIGINT (or, with ``burst``, until
    nothing is left to claim); a signal drains it: nothing more is claimed, the chunks
    in flight are written, then this returns."""
    loop = asyncio.get_running_loop()
    signalled = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, _stopper(manager, signalled, signum))
    _log.info("worker %d: serving %s, %d chunk(s) at once", os.getpid(),
              ", ".join(sorted(manager.endpoints)) or "no endpoint", manager.workers)  # fmt: skip
    try:
        running = asyncio.create_task(manager.run(burst=burst), name="freight-worker")
        await asyncio.sleep(0)  # the worker exists from its task's first step on
        if signalled.is_set():  # a signal that came before it did
            manager.stop()
        await running
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
        await asyncio.to_thread(manager.close)
    _log.info("worker %d: drained, exiting", os.getpid())


def _stopper(manager: BatchManager, signalled: asyncio.Event, signum: int) -> Callable[[], None]:
    """The handler of ``signum``: drain the worker (a second signal finds the drain
    under way; SIGKILL stops at once, and loses nothing accepted either)."""

    def on_signal() -> None:
        _log.info("worker %d: %s: draining the requests in flight", os.getpid(),
                  signal.Signals(signum).name)  # fmt: skip
        signalled.set()
        manager.stop()

    return on_signal
