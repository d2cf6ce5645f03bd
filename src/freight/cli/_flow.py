"""``freight flow``: look into a durable flow's store and its trace file.

- ``status``: the consumers (what they consume, how they batch and join), their open
  and done deliveries and dead letters, the open batches and joins with their
  deadlines, and the artifacts per type;
- ``dead-letters``: what did not make it, with reasons (``--json`` for scripts);
- ``artifacts TYPE``: the latest artifacts of a type, as stored (JSON);
- ``traces [QUERY]``: SQL on the span table of the DuckDB trace file (by default the
  guide's question: which batches flushed by timeout in the last hour, how full).

Everything is read from the store (``--store``, as the other commands) without the
flow's Python types: payloads are shown as the JSON they were stored as. Deadlines come
from the consumers' declarations, which a durable flow records each time it starts.
A user error (no such store, flow or type, no trace file) is one line and exit 2 (the
``freight`` command's boundary prints the raised ``FreightError``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from freight._errors import ConfigError, StoreError
from freight.store import DEFAULT_PATH, open_store

if TYPE_CHECKING:  # imported where used: the other commands do not pay for the flow
    from freight.flow._board import Board, BoardSummary

__all__ = ["DEFAULT_TRACES", "FLUSH_QUERY", "flow_app"]

DEFAULT_TRACES = Path(".freight") / "traces.duckdb"
"""Where a traced flow writes its spans by default."""

FLUSH_QUERY = """\
SELECT consumer, batch_size, efficiency, started_at FROM spans
WHERE name = 'flush' AND flush_reason = 'timeout'
  AND started_at > now() - INTERVAL 1 HOUR"""
"""The guide's question: which batches flushed by timeout in the last hour, how full."""

flow_app = typer.Typer(
    name="flow",
    help="Look into a durable Flow: status, dead letters, artifacts, traces.",
    no_args_is_help=True,
)

StoreOption = Annotated[
    str,
    typer.Option(
        "--store",
        envvar="FREIGHT_STORE",
        help="The flow's store: a path, sqlite:///PATH or postgresql://….",
    ),
]
FlowOption = Annotated[
    str | None,
    typer.Option(
        "--flow", help="The flow's name (Flow(name=...)); default: 'default', or the only one."
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON alone, for scripts.")]


def _board(store: str, flow: str | None) -> Board:
    """The board of ``flow`` in ``store``, which must exist and hold that flow; without
    a name, the store's flow ``default``, or its only flow."""
    from freight.flow._board import Board  # noqa: PLC0415 (see the imports)

    if "://" not in store and not Path(store).exists():
        raise StoreError(f"no store at {store}; pass the flow's store with --store PATH or URL")
    opened = open_store(store)
    flows = Board(opened, flow or "default").flows()
    if flow is None and "default" not in flows and len(flows) == 1:
        flow = flows[0]
    name = flow or "default"
    if name not in flows:
        known = ", ".join(repr(f) for f in flows) or "none"
        raise ConfigError(
            f"no flow named {name!r} in the store at {store} (flows there: {known}); "
            "pick one with --flow NAME"
        )
    return Board(opened, name)


@flow_app.command()
def status(
    store: StoreOption = str(DEFAULT_PATH),
    flow: FlowOption = None,
    as_json: JsonOption = False,
) -> None:
    """Consumers, open batches and joins with their deadlines, and counts.

    Example: freight flow status --store .freight/freight.db
    """
    board = _board(store, flow)
    summary = board.summary()
    report = _status(summary)
    if as_json:
        typer.echo(json.dumps({"flow": board.flow, "store": store, **report}, indent=2))
        return
    consumers, waiting = report["consumers"], report["open"]
    typer.echo(
        f"flow {board.flow!r} in {store}: {len(consumers)} consumers, "
        f"{sum(summary.types.values()):,} artifacts, {report['dead_letters']:,} dead letters"
    )
    typer.echo("consumers:")
    for c in consumers:
        dead = ", ".join(f"{reason} {n}" for reason, n in c["dead"].items())
        typer.echo(
            f"  {c['name']:<16} {' | '.join(c['reads']) or '?':<40} "
            f"open {c['open']:>6,}  done {c['done']:>8,}  dead {sum(c['dead'].values()):>5,}"
            + (f" ({dead})" if dead else "")
        )
    typer.echo("open batches and joins:" if waiting else "open batches and joins: none")
    for w in waiting:
        deadline = w["deadline"] or w["window"] or "no deadline"
        typer.echo(
            f"  {w['consumer']:<16} {w['kind']:<6} tenant {w['tenant'] or '-':<10} "
            f"{w['artifacts']:>5,} artifacts  opened {w['opened_at']}  deadline {deadline}"
        )
    typer.echo(
        "artifacts: "
        + (", ".join(f"{kind} {n:,}" for kind, n in sorted(summary.types.items())) or "none")
    )


def _status(summary: BoardSummary) -> dict[str, Any]:
    """The status as JSON-ready values (the text output renders the same)."""
    subscriptions = {
        sub["delivery"]: (c["name"], sub) for c in summary.consumers for sub in c["subscriptions"]
    }
    consumers: dict[str, dict[str, Any]] = {}
    for c in summary.consumers:
        consumers[c["name"]] = {
            "name": c["name"],
            "reads": [_reads(sub) for sub in c["subscriptions"]],
            "tenant": c["tenant"],
            "all_tenants": c["all_tenants"],
            "publishes": c["publishes"],
            "open": 0,
            "done": 0,
            "dead": {},
        }
    for delivery, counts in summary.deliveries.items():
        name = subscriptions.get(delivery, (delivery, None))[0]
        entry = consumers.setdefault(name, _undeclared(name))
        entry["open"] += counts.get("open", 0)
        entry["done"] += counts.get("done", 0)
    for (consumer, reason), n in sorted(summary.dead.items()):
        consumers.setdefault(consumer, _undeclared(consumer))["dead"][reason] = n
    return {
        "consumers": list(consumers.values()),
        "open": _open_groups(summary, subscriptions),
        "artifacts": dict(sorted(summary.types.items())),
        "dead_letters": sum(summary.dead.values()),
    }


def _undeclared(name: str) -> dict[str, Any]:
    """A consumer the store has rows of, but no declaration (an older flow's)."""
    return {
        "name": name, "reads": [], "tenant": None, "all_tenants": False, "publishes": [],
        "open": 0, "done": 0, "dead": {},
    }  # fmt: skip


def _reads(sub: dict[str, Any]) -> str:
    """``Transaction (batch 25 or 30.0 s)``, ``A + B (join 30.0 s)``…"""
    how = []
    join = sub["join"]
    if join is not None:
        window = (
            f"{join['count']} artifacts" if join["count"] is not None else f"{join['seconds']} s"
        )
        how.append(f"join within {window}")
    elif sub["gate"]:
        how.append("AND gate")
    batch = sub["batch"]
    if batch is not None:
        parts = [str(batch["size"])] if batch["size"] is not None else []
        if batch["timeout"] is not None:
            parts.append(f"{batch['timeout']} s")
        how.append("batch " + " or ".join(parts))
    return " + ".join(sub["types"]) + (f" ({', '.join(how)})" if how else "")


def _open_groups(
    summary: BoardSummary, subscriptions: dict[str, tuple[str, dict[str, Any] | None]]
) -> list[dict[str, Any]]:
    """The open deliveries, grouped by subscription and tenant, with their deadline:
    a batch's is its first artifact's arrival plus its timeout; a join's, its window."""
    groups: dict[tuple[str, str | None], list[datetime]] = {}
    for delivery, arrived_at, _, _, tenant in summary.open:
        groups.setdefault((delivery, tenant), []).append(arrived_at)
    out = []
    for (delivery, tenant), arrivals in groups.items():
        name, sub = subscriptions.get(delivery, (delivery, None))
        opened = min(arrivals)
        kind, deadline, window = "run", None, None
        if sub is not None and sub["gate"]:
            kind = "join"
            join = sub["join"]
            if join is not None and join["seconds"] is not None:
                deadline = opened + timedelta(seconds=join["seconds"])
            elif join is not None:
                window = f"within {join['count']} artifacts"
        elif sub is not None and sub["batch"] is not None:
            kind = "batch"
            if sub["batch"]["timeout"] is not None:
                deadline = opened + timedelta(seconds=sub["batch"]["timeout"])
        out.append({
            "consumer": name,
            "delivery": delivery,
            "kind": kind,
            "tenant": tenant,
            "artifacts": len(arrivals),
            "opened_at": opened.isoformat(),
            "deadline": deadline.isoformat() if deadline is not None else None,
            "window": window,
        })  # fmt: skip
    return sorted(out, key=lambda g: str(g["opened_at"]))


@flow_app.command("dead-letters")
def dead_letters(
    store: StoreOption = str(DEFAULT_PATH),
    flow: FlowOption = None,
    consumer: Annotated[
        str | None, typer.Option("--consumer", help="Only this consumer's.")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """What did not make it through a consumer, and why (oldest first).

    Example: freight flow dead-letters --json
    """
    board = _board(store, flow)
    letters = [d for d in board.raw_dead_letters() if consumer is None or d["consumer"] == consumer]
    if as_json:
        typer.echo(json.dumps(letters, indent=2))
        return
    if not letters:
        typer.echo(f"no dead letters in flow {board.flow!r}")
    for d in letters:
        error = f": {d['error']}" if d["error"] else ""
        typer.echo(f"{d['created_at']}  {d['consumer']}  {d['reason']}{error}")
        for a in d["artifacts"]:
            payload = json.dumps(a.get("payload"))
            typer.echo(f"    {a.get('type', '?')} {a['id']} {payload}")


@flow_app.command()
def artifacts(
    kind: Annotated[str, typer.Argument(metavar="TYPE", help="The artifact type's name.")],
    store: StoreOption = str(DEFAULT_PATH),
    flow: FlowOption = None,
    limit: Annotated[int, typer.Option("--limit", min=1, help="Show the latest N.")] = 50,
    as_json: JsonOption = False,
) -> None:
    """The latest artifacts of one type, as stored (oldest of them first).

    Example: freight flow artifacts PaymentBatchReport --limit 10
    """
    board = _board(store, flow)
    found = board.raw_artifacts(kind, limit)
    if not found:
        types = board.summary().types
        if kind not in types:
            known = ", ".join(sorted(types)) or "none"
            raise ConfigError(
                f"no artifacts of type {kind!r} in flow {board.flow!r} (types there: {known})"
            )
    if as_json:
        typer.echo(json.dumps(found, indent=2))
        return
    for a in found:
        who = f" from {a['producer']}" if a["producer"] else ""
        tenant = f" tenant {a['tenant']}" if a["tenant"] else ""
        typer.echo(f"{a['published_at']}  {a['id']}{who}{tenant}  {json.dumps(a['payload'])}")


@flow_app.command()
def traces(
    query: Annotated[
        str | None,
        typer.Argument(help="SQL on the table spans (default: the guide's flush question)."),
    ] = None,
    trace: Annotated[
        Path, typer.Option("--trace", help="The DuckDB trace file a traced flow writes.")
    ] = DEFAULT_TRACES,
    as_json: JsonOption = False,
) -> None:
    """Query the spans a traced flow wrote (DuckDB SQL on the table ``spans``).

    Without a query: which batches flushed by timeout in the last hour, and how full.

    Example: freight flow traces "SELECT consumer, count(*) FROM spans GROUP BY 1"
    """
    sql = query or FLUSH_QUERY
    columns, rows = _query(trace, sql)
    if as_json:
        typer.echo(json.dumps([dict(zip(columns, r, strict=True)) for r in rows], default=str))
        return
    _table(columns, rows)


def _query(trace: Path, sql: str) -> tuple[list[str], list[tuple[Any, ...]]]:
    """Run ``sql`` on the trace file, read-only (waiting a moment for a writing flow)."""
    import duckdb  # noqa: PLC0415 (extra freight[trace])

    if not trace.exists():
        raise ConfigError(
            f"no trace file at {trace}; a flow writes one when traced (Flow(trace=...), "
            "on by default with freight[trace]); pass it with --trace PATH"
        )
    for attempt in range(20):  # a flow holds the file for the moment of a write
        try:
            with duckdb.connect(str(trace), read_only=True) as db:
                result = db.execute(sql)
                columns = [d[0] for d in result.description or ()]
                return columns, result.fetchall()
        except duckdb.IOException:
            if attempt == 19:
                raise ConfigError(f"the trace file {trace} stays locked by a writer") from None
            time.sleep(0.05)
        except duckdb.Error as exc:
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise ConfigError(f"the trace query failed: {first}") from None
    raise AssertionError("unreachable")  # pragma: no cover


def _table(columns: Sequence[str], rows: Sequence[tuple[Any, ...]]) -> None:
    """Columns aligned under their names; ``(no rows)`` when empty."""
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [max([len(c), *(len(r[i]) for r in cells)]) for i, c in enumerate(columns)]
    typer.echo("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip())
    for row in cells:
        typer.echo("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())
    if not rows:
        typer.echo("(no rows)")


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3g}"
    if isinstance(value, datetime):
        return value.isoformat(timespec="seconds")
    return str(value)
