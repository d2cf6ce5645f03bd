"""A chunk sent to a worker process (``executor="processes"``) as its records' columns."""

from __future__ import annotations

import pickle
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from freight import RecordError
from freight.jobs import Record
from freight.jobs._chunk import handle_installed, install, packed
from freight.jobs._sourcekit import BLANK

records = st.lists(
    st.builds(
        Record,
        offset=st.integers(0, 2**40),
        ordinal=st.integers(0, 2**30),
        item=st.one_of(st.none(), st.text(), st.integers(), st.dictionaries(st.text(), st.text())),
        error=st.one_of(st.none(), st.builds(RecordError, st.text())),
        raw=st.text(max_size=20),
        unit=st.sampled_from(["line", "item", "row"]),
    ),
    min_size=1,
    max_size=30,
)


class Seen:
    """A handler stand-in keeping what it was given."""

    def __init__(self) -> None:
        self.got: list[Record] = []

    def handle(self, index: int, got: list[Record]) -> tuple[int, int, list[Any]]:
        self.got = got
        return 0, len(got), []


@given(records)
def test_a_packed_chunk_is_its_records_again_in_the_worker(chunk: list[Record]) -> None:
    """Pickled and unpacked, every record comes back equal, a Record, in order."""
    seen = Seen()
    install(seen)  # type: ignore[arg-type]
    try:
        sent = pickle.loads(pickle.dumps(packed(chunk)))
        assert handle_installed(7, sent) == (0, len(chunk), [])
    finally:
        install(None)  # type: ignore[arg-type]
    assert [type(r) for r in seen.got] == [Record] * len(chunk)
    assert [(r.offset, r.ordinal, r.item, r.raw, r.unit) for r in seen.got] == [
        (r.offset, r.ordinal, r.item, r.raw, r.unit) for r in chunk
    ]
    assert [str(r.error) if r.error else None for r in seen.got] == [
        str(r.error) if r.error else None for r in chunk
    ]


def test_a_packed_chunk_pickles_without_a_call_per_record() -> None:
    """10,000 records pickle as six tuples: no per-record ``__reduce__`` (the cost that
    made worker processes slower than one thread)."""
    chunk = [Record(i, i + 1, f"{i},x\n", None, "", "line") for i in range(10_000)]
    columns = packed(chunk)
    assert len(columns) == 6
    assert all(type(column) is tuple for column in columns)
    assert b"Record" not in pickle.dumps(columns)


def test_the_blank_marker_is_itself_after_the_trip_to_a_worker_process() -> None:
    """A skipped blank line is known by identity (``item is BLANK``): pickled by value,
    it reached a worker process's sink as an item (found by review)."""
    columns = pickle.loads(pickle.dumps(packed([Record(0, 2, BLANK), Record(1, 3, "x\n")])))
    assert columns[2][0] is BLANK
