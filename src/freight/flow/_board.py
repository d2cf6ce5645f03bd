"""The durable board: a flow's artifacts and deliveries in the job store's database.

With ``Flow(store=...)`` every publish records the artifact and one *delivery* per
consumer that accepted it, in one transaction, before any consumer sees it. When a
consumer's handler has run for a batch, the batch's deliveries are marked done and
what the handler published (with its own deliveries) is recorded, again in one
transaction. After a crash, the deliveries not done are the open batches and joins
and the work in flight: they are re-buffered with their original arrival times, so
their deadlines hold. Each consumer's effect on the board is exactly once; a handler
that was running at the crash runs again (its outside effects are at least once).

Outside publishes are *group-committed* (:class:`GroupCommit`): the publishes that
arrive in one turn of the event loop (many concurrent publishers, or one
``publish_many``) are routed together, so they share one transaction, and each returns
only once that transaction has committed. A handled batch's deliveries are marked done
with one ``UPDATE ... IN (...)`` per few hundred ids rather than a statement per id.
Measured on SQLite (``bench/flow_overhead.py``, two durable stages, the development
machine's 2 shared cores): 50 concurrent publishers share one transaction per turn,
~9,000-15,000 artifacts/s (one transaction per publish before: ~2,300-7,900/s);
``publish_many`` of 100, ~12,000-18,000/s, SQLite's own inserts and updates being about
half of it (~22 us of CPU per artifact through both stages).

When the flow starts, the board also records what its consumers declare (types,
batches, joins, tenant: ``flow_consumers``), so ``freight flow status`` can tell the
deadlines of the open batches and joins from the store alone; :meth:`Board.summary`,
:meth:`Board.raw_artifacts` and :meth:`Board.raw_dead_letters` read the board without
the artifact types (the payloads stay JSON), for the command line.

The board reaches the store through its :class:`~freight.store.BoardStore` port
(``transaction()``, ``query()``); its statements are templates rendered once per SQL
dialect (SQLite, PostgreSQL); values are always bound parameters.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import json.encoder
import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NamedTuple

from freight._errors import ConfigError
from freight.flow._artifacts import Envelope, load
from freight.flow._visibility import Public, Visibility, from_json
from freight.store import BoardStore
from freight.store._dialect import Dialect

__all__ = ["Board", "BoardSummary", "Record", "StoredDeadLetter", "describe"]


class _Statements(NamedTuple):
    """The board's statements; the defaults are templates (``{p}``: a bound parameter)."""

    next_seq: str = "SELECT coalesce(max(seq), 0) AS seq FROM flow_artifacts WHERE flow = {p}"
    # Rows go in several to a statement ({values}: that many "(...)" of the row below):
    # one step of SQLite per statement, not one per row.
    insert_artifacts: str = (
        "INSERT INTO flow_artifacts (flow, id, seq, type, payload, producer, visibility,"
        " tenant, correlation_id, depth, published_at) VALUES {values}"
    )
    artifact_row: str = "({p}, {p}, {p}, {p}, {p}, {p}, {p}, {p}, {p}, {p}, {p})"
    insert_deliveries: str = (
        "INSERT INTO flow_deliveries (flow, consumer, artifact_id, seq, arrived_at, status)"
        " VALUES {values}"
    )
    delivery_row: str = "({p}, {p}, {p}, {p}, {p}, 'open')"
    delivered: str = (
        "UPDATE flow_deliveries SET status = 'done'"
        " WHERE flow = {p} AND consumer = {p} AND artifact_id IN ({ids})"
    )
    insert_dead_letter: str = (
        "INSERT INTO flow_dead_letters (flow, consumer, reason, artifact_ids, error,"
        " created_at) VALUES ({p}, {p}, {p}, {p}, {p}, {p})"
    )
    open_deliveries: str = (
        "SELECT d.consumer, d.arrived_at, a.* FROM flow_deliveries d"
        " JOIN flow_artifacts a ON a.flow = d.flow AND a.id = d.artifact_id"
        " WHERE d.flow = {p} AND d.status = 'open' ORDER BY d.seq, d.consumer"
    )
    artifacts: str = "SELECT * FROM flow_artifacts WHERE flow = {p} ORDER BY seq"
    dead_letters: str = "SELECT * FROM flow_dead_letters WHERE flow = {p} ORDER BY id"
    # The consumers' declarations (flow_consumers: migration 3 of the store).
    forget_consumers: str = "DELETE FROM flow_consumers WHERE flow = {p}"
    insert_consumer: str = (
        "INSERT INTO flow_consumers (flow, name, declaration, declared_at)"
        " VALUES ({p}, {p}, {p}, {p})"
    )
    consumers: str = "SELECT * FROM flow_consumers WHERE flow = {p} ORDER BY name"
    flows: str = (
        "SELECT DISTINCT flow FROM flow_artifacts UNION SELECT DISTINCT flow FROM flow_consumers"
    )
    delivery_counts: str = (
        "SELECT consumer, status, count(*) AS n FROM flow_deliveries WHERE flow = {p}"
        " GROUP BY consumer, status"
    )
    open_raw: str = (
        "SELECT d.consumer, d.arrived_at, a.id, a.type, a.tenant FROM flow_deliveries d"
        " JOIN flow_artifacts a ON a.flow = d.flow AND a.id = d.artifact_id"
        " WHERE d.flow = {p} AND d.status = 'open' ORDER BY d.seq"
    )
    type_counts: str = (
        "SELECT type, count(*) AS n FROM flow_artifacts WHERE flow = {p} GROUP BY type"
    )
    dead_counts: str = (
        "SELECT consumer, reason, count(*) AS n FROM flow_dead_letters WHERE flow = {p}"
        " GROUP BY consumer, reason"
    )
    artifacts_of: str = (
        "SELECT * FROM flow_artifacts WHERE flow = {p} AND type = {p} ORDER BY seq DESC LIMIT {p}"
    )


@functools.cache
def _statements(dialect: Dialect) -> _Statements:
    return _Statements._make(
        dialect.render(template.replace("{ids}", "{{ids}}").replace("{values}", "{{values}}"))
        for template in _Statements()
    )


# Rows per statement at most (256 rows of 11 values stay far below SQLite's 32,766 and
# PostgreSQL's 65,535 bound parameters). Each statement is one trip into the database
# with the GIL released and taken back (the board is written in a worker thread while
# the event loop runs: taking the GIL back can wait for the loop's switch interval), so
# a transaction has as few as it can: one per table for all its routes' rows.
_MOST = 256


@functools.cache
def _many(template: str, row: str, count: int) -> str:
    """``template`` with ``count`` rows of ``row`` as its ``{values}`` (each text made
    once; the database prepares it once too, for the sizes that recur)."""
    return template.format(values=", ".join([row] * count))


@functools.cache
def _in(template: str, dialect: Dialect, count: int) -> str:
    """``template`` with ``count`` placeholders as its ``{ids}``."""
    return template.format(ids=dialect.placeholders(count))


class Record(NamedTuple):
    """One transaction's rows (``Board.rows``), written by ``Board.write``."""

    artifacts: list[tuple[Any, ...]]
    deliveries: list[tuple[Any, ...]]
    done: tuple[str, Sequence[str]] | None
    dead: list[tuple[Any, ...]]


@dataclass(frozen=True, slots=True)
class StoredDeadLetter:
    """A dead letter as the board records it (artifact ids, not artifacts)."""

    consumer: str
    reason: str
    artifact_ids: list[str]
    error: str | None
    created_at: datetime


@dataclass(frozen=True, slots=True)
class BoardSummary:
    """What a durable flow's store says about it (``freight flow status``).

    Attributes:
        consumers: each consumer's declaration as :func:`describe` wrote it when the
            flow last started (empty for a flow that never started).
        deliveries: per delivery name (a consumer, ``name[i]`` for its other
            subscriptions), the number of ``open`` and ``done`` deliveries.
        open: the open deliveries, oldest first: ``(delivery name, arrived_at,
            artifact id, type, tenant)``.
        types: artifacts per type name.
        dead: dead letters per ``(consumer, reason)``.
    """

    consumers: list[dict[str, Any]]
    deliveries: dict[str, dict[str, int]]
    open: list[tuple[str, datetime, str, str, str | None]]
    types: dict[str, int]
    dead: dict[tuple[str, str], int]


class Board:
    """Reads and writes one flow's rows in ``store`` (a SqliteStore or PostgresStore)."""

    def __init__(self, store: object, flow: str) -> None:
        if not isinstance(store, BoardStore):
            raise ConfigError(
                f"Flow(store=...) needs a freight store (SqliteStore, PostgresStore, a path "
                f"or a URL), got {store!r}"
            )
        self.store: BoardStore = store
        self.flow = flow
        self._sql = _statements(store.dialect)

    def next_seq(self) -> int:
        rows = self.store.query(self._sql.next_seq, (self.flow,))
        return int(rows[0]["seq"]) + 1

    def record(
        self,
        published: Sequence[tuple[Envelope, int, Sequence[str]]],
        *,
        done: tuple[str, Sequence[str]] | None = None,
        dead: Sequence[tuple[str, str, Sequence[str], str | None]] = (),
    ) -> None:
        """One transaction: artifacts with their deliveries (``(envelope, seq,
        consumers)``), deliveries done (``(consumer, artifact ids)``), dead letters
        (``(consumer, reason, artifact ids, error)``)."""
        self.write(self.rows(published, done=done, dead=dead))

    def rows(
        self,
        published: Sequence[tuple[Envelope, int, Sequence[str]]],
        *,
        done: tuple[str, Sequence[str]] | None = None,
        dead: Sequence[tuple[str, str, Sequence[str], str | None]] = (),
    ) -> Record:
        """The rows :meth:`record` writes (made where the envelopes are: the JSON of
        each artifact is Python's work; :meth:`write` is the database's)."""
        now = datetime.now(UTC).isoformat()
        flow = self.flow
        # (id, type, payload, producer, created_at, published_at, visibility, tenant,
        # correlation_id, depth)
        artifacts = [
            (
                flow, e[0], seq, e[1], _dump(e[2]), e[3],
                _PUBLIC_JSON if type(e[6]) is Public else _visibility_json(e[6]),
                e[7], e[8], e[9], e[5].isoformat(),
            )
            for e, seq, _ in published
        ]  # fmt: skip
        deliveries = [(flow, c, e[0], seq, now) for e, seq, names in published for c in names]
        letters = [
            (flow, consumer, reason, json.dumps(list(ids)), error, now)
            for consumer, reason, ids, error in dead
        ]
        return Record(artifacts, deliveries, done, letters)

    def write(self, *records: Record) -> None:
        """Write ``records`` in one transaction, in few statements: the rows of all of
        them several to a statement (artifacts, then deliveries), deliveries done by
        one ``UPDATE ... IN`` per consumer (any thread: the store serialises its
        connection)."""
        artifacts = [row for record in records for row in record.artifacts]
        deliveries = [row for record in records for row in record.deliveries]
        done: dict[str, list[str]] = {}
        for record in records:
            if record.done is not None:
                consumer, ids = record.done
                done.setdefault(consumer, []).extend(ids)
        dead = [row for record in records for row in record.dead]
        sql = self._sql
        with self.store.transaction() as db:
            _insert(db, sql.insert_artifacts, sql.artifact_row, artifacts)
            _insert(db, sql.insert_deliveries, sql.delivery_row, deliveries)
            for consumer, ids in done.items():
                for first in range(0, len(ids), _MOST):
                    chunk = ids[first : first + _MOST]
                    db.execute(
                        _in(sql.delivered, self.store.dialect, len(chunk)),
                        (self.flow, consumer, *chunk),
                    )
            if dead:
                db.executemany(sql.insert_dead_letter, dead)

    # -- the consumers' declarations and reads without types (the command line) --------

    def declare(self, consumers: Sequence[Any]) -> None:
        """Record what ``consumers`` (``ConsumerSpec`` s) declare, replacing what an
        earlier start of this flow recorded."""
        sql = self._sql
        now = datetime.now(UTC).isoformat()
        rows = [(self.flow, c.name, json.dumps(describe(c)), now) for c in consumers]
        with self.store.transaction() as db:
            db.execute(sql.forget_consumers, (self.flow,))
            if rows:
                db.executemany(sql.insert_consumer, rows)

    def flows(self) -> list[str]:
        """The names of the flows this store holds."""
        return sorted(row["flow"] for row in self.store.query(self._sql.flows, ()))

    def summary(self) -> BoardSummary:
        """Consumers, delivery counts, open deliveries, artifact and dead-letter counts."""
        sql, flow = self._sql, (self.flow,)
        deliveries: dict[str, dict[str, int]] = {}
        for row in self.store.query(sql.delivery_counts, flow):
            deliveries.setdefault(row["consumer"], {"open": 0, "done": 0})[row["status"]] = int(
                row["n"]
            )
        return BoardSummary(
            consumers=[json.loads(r["declaration"]) for r in self.store.query(sql.consumers, flow)],
            deliveries=deliveries,
            open=[
                (r["consumer"], _parse(r["arrived_at"]), r["id"], r["type"], r["tenant"])
                for r in self.store.query(sql.open_raw, flow)
            ],
            types={r["type"]: int(r["n"]) for r in self.store.query(sql.type_counts, flow)},
            dead={
                (r["consumer"], r["reason"]): int(r["n"])
                for r in self.store.query(sql.dead_counts, flow)
            },
        )

    def raw_artifacts(self, kind: str, limit: int) -> list[dict[str, Any]]:
        """The newest ``limit`` artifacts of the type named ``kind``, oldest first, as
        stored (the payload parsed from its JSON)."""
        rows = self.store.query(self._sql.artifacts_of, (self.flow, kind, limit))
        return [_raw_artifact(row) for row in reversed(rows)]

    def raw_dead_letters(self) -> list[dict[str, Any]]:
        """The dead letters, oldest first, each with its artifacts as stored."""
        out = []
        for row in self.store.query(self._sql.dead_letters, (self.flow,)):
            ids = json.loads(row["artifact_ids"])
            found = {r["id"]: _raw_artifact(r) for r in self._by_ids(ids)}
            out.append({
                "consumer": row["consumer"],
                "reason": row["reason"],
                "error": row["error"],
                "created_at": _parse(row["created_at"]).isoformat(),
                "artifacts": [found.get(i, {"id": i}) for i in ids],
            })  # fmt: skip
        return out

    def _by_ids(self, ids: Sequence[str]) -> list[Any]:
        if not ids:
            return []
        dialect = self.store.dialect
        marks, p = dialect.placeholders(len(ids)), dialect.placeholder
        return self.store.query(
            f"SELECT * FROM flow_artifacts WHERE flow = {p} AND id IN ({marks})",  # noqa: S608
            (self.flow, *ids),
        )  # placeholders only; the ids are bound

    def open_deliveries(self, types: dict[str, type]) -> list[tuple[str, Envelope, datetime]]:
        """Deliveries not done, in publication order: ``(consumer, envelope, arrived_at)``."""
        rows = self.store.query(self._sql.open_deliveries, (self.flow,))
        return [
            (row["consumer"], self._envelope(row, types), _parse(row["arrived_at"])) for row in rows
        ]

    def artifacts(self, types: dict[str, type]) -> list[Envelope]:
        """Every artifact of this flow, in publication order."""
        rows = self.store.query(self._sql.artifacts, (self.flow,))
        return [self._envelope(row, types) for row in rows]

    def dead_letters(self, types: dict[str, type]) -> list[tuple[StoredDeadLetter, list[Envelope]]]:
        """The dead letters, oldest first, each with its artifacts."""
        rows = self.store.query(self._sql.dead_letters, (self.flow,))
        out = []
        for row in rows:
            ids = json.loads(row["artifact_ids"])
            found = self._by_ids(ids)
            by_id = {r["id"]: self._envelope(r, types) for r in found}
            letter = StoredDeadLetter(
                row["consumer"], row["reason"], ids, row["error"], _parse(row["created_at"])
            )
            out.append((letter, [by_id[i] for i in ids if i in by_id]))
        return out

    def _envelope(self, row: Any, types: dict[str, type]) -> Envelope:
        kind = types.get(row["type"])
        if kind is None:
            raise ConfigError(
                f"the board holds artifacts of type {row['type']} that no consumer of this "
                "flow consumes or publishes; declare it (or publish it) before the flow starts"
            )
        return Envelope(
            id=row["id"],
            type=row["type"],
            payload=load(kind, row["payload"]),
            producer=row["producer"],
            created_at=0.0,
            published_at=_parse(row["published_at"]),
            visibility=from_json(json.loads(row["visibility"])),
            tenant=row["tenant"],
            correlation_id=row["correlation_id"],
            depth=int(row["depth"]),
        )


def _insert(db: Any, template: str, row: str, rows: list[tuple[Any, ...]]) -> None:
    """Insert ``rows``, up to ``_MOST`` to a statement."""
    for first in range(0, len(rows), _MOST):
        chunk = rows[first : first + _MOST]
        db.execute(_many(template, row, len(chunk)), [v for r in chunk for v in r])


def describe(spec: Any) -> dict[str, Any]:
    """What a consumer (a ``ConsumerSpec``) declares, as JSON-ready values: its
    subscriptions (delivery name, types, batch, join), tenant and what it publishes."""
    subscriptions = []
    for sub in spec.subscriptions:
        batch = sub.batch
        join = sub.join
        subscriptions.append({
            "delivery": spec.delivery_name(sub.index),
            "types": [t.__qualname__ for t in sub.types],
            "batch": None if batch is None else {
                "size": None if batch.time_only else batch.size, "timeout": batch.timeout,
            },
            "join": None if join is None else {"seconds": join.seconds, "count": join.count},
            "gate": len(sub.types) > 1,
            "on_partial": sub.on_partial,
        })  # fmt: skip
    return {
        "name": spec.name,
        "subscriptions": subscriptions,
        "tenant": spec.tenant,
        "all_tenants": spec.all_tenants,
        "publishes": [t.__qualname__ for t in spec.publishes],
    }


def _raw_artifact(row: Any) -> dict[str, Any]:
    return {
        "id": row["id"],
        "type": row["type"],
        "producer": row["producer"],
        "tenant": row["tenant"],
        "correlation_id": row["correlation_id"],
        "depth": int(row["depth"]),
        "published_at": _parse(row["published_at"]).isoformat(),
        "payload": json.loads(row["payload"]),
    }


def _dump(value: Any) -> str:
    """The artifact as JSON text: ``model_dump_json`` for a pydantic model; for a
    dataclass the JSON of ``dataclasses.asdict`` (the same text), without its deep copy
    of every value (a third of a durable publish's time). The way is found once per
    type."""
    dump = _DUMPS.get(type(value))
    if dump is None:
        dump = _DUMPS[type(value)] = _dumper(type(value))
    return dump(value)


_DUMPS: dict[type, Callable[[Any], str]] = {}


def _dumper(kind: type) -> Callable[[Any], str]:
    """How to dump artifacts of type ``kind`` (``_dump``)."""
    if not dataclasses.is_dataclass(kind):
        return _model_json
    names = _field_names(kind)
    if not names:
        return lambda value: "{}"
    values = operator.attrgetter(*names)
    if len(names) == 1:
        [name] = names
        return lambda value: _json_dataclass({name: values(value)})
    return lambda value: _json_dataclass(dict(zip(names, values(value), strict=True)))


def _model_json(value: Any) -> str:
    return str(value.model_dump_json())


def _as_dict(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {name: getattr(value, name) for name in _field_names(type(value))}
    return str(value)


@functools.lru_cache(maxsize=256)
def _field_names(kind: type) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(kind))


def _encoder() -> Callable[[Any], str]:
    """``json.dumps(x, default=_as_dict)``; with the C encoder made once, not per call
    as ``json.dumps`` does (a third of its time for a small artifact)."""
    make = getattr(json.encoder, "c_make_encoder", None)  # CPython's, untyped in typeshed
    if make is None:  # pragma: no cover - CPython has the C encoder
        return json.JSONEncoder(default=_as_dict).encode
    encode = make(None, _as_dict, json.encoder.encode_basestring_ascii, None, ": ", ", ",
                  False, False, True)  # fmt: skip

    def dumps(value: Any) -> str:
        return "".join(encode(value, 0))

    return dumps


_json_dataclass = _encoder()
_PUBLIC_JSON = json.dumps(Public().to_json())


@functools.lru_cache(maxsize=256)
def _visibility_json(visibility: Visibility) -> str:
    return json.dumps(visibility.to_json())


def _parse(text: str) -> datetime:
    value = datetime.fromisoformat(text)
    return value if value.tzinfo else value.replace(tzinfo=UTC)
