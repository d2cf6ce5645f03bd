"""Plain CSV lines stay lines (:class:`Lines`): a chunk of them holds texts, not a tuple
per line, and is still, record for record, what the lines give one at a time; chunks cut
from groups (:class:`Feed`) have the boundaries the record-at-a-time cutting gave."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from freight.jobs import CsvSource, Job, Record
from freight.jobs._chunk import ChunkHandler
from freight.jobs._chunking import Chunk, Feed
from freight.jobs._lines import Lines, _after
from freight.store import SqliteStore

_TEXT = st.text(st.characters(exclude_categories=["Cs"]), max_size=8).map(lambda t: t + "\n")


@st.composite
def _lines(draw: st.DrawFn, offset: int = 0, line: int = 1) -> Lines:
    texts = draw(st.lists(_TEXT, max_size=12))
    lengths = [len(t.encode()) + draw(st.integers(0, 1)) for t in texts]  # \r\n: one more
    return Lines(offset, line, lengths, texts)


# A line's text in a block: no \n nor \r inside (plain lines), any other character.
_BODY = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\n\r"), max_size=8)


@st.composite
def _block(draw: st.DrawFn, offset: int = 0, line: int = 1) -> tuple[Lines, Lines]:
    """Lines kept as one text, as the reader makes them of a UTF-8 file's plain lines
    (line endings \\r\\n or \\n, the last line maybe without one), and the same lines
    kept as texts (what they must be, record for record)."""
    bodies = draw(st.lists(_BODY, max_size=12))
    crlf, open_end = draw(st.booleans()), draw(st.booleans()) and bool(bodies)
    texts = [b + "\n" for b in bodies]
    lengths = [len(b.encode()) + 1 + crlf for b in bodies]
    if open_end:
        lengths[-1] = len(bodies[-1].encode())
    data = "".join(texts).encode()
    block = Lines.of_block(offset, line, data, len(texts), crlf=crlf, open_end=open_end)
    return block, Lines(offset, line, lengths, texts)


def _records(lines: Lines) -> list[Record]:
    """The records of ``lines``, one by one, as the raw reader made them."""
    out, offset = [], lines.offset
    for i, (length, text) in enumerate(zip(lines.lengths, lines.texts, strict=True)):
        out.append(Record(offset, lines.line + i, text, None, "", "line"))
        offset += length
    return out


@given(lines=_lines(offset=17, line=7), data=st.data())
@settings(max_examples=200, deadline=None)
def test_lines_are_the_records_of_their_lines(lines: Lines, data: st.DataObject) -> None:
    expected = _records(lines)
    assert list(lines) == expected
    assert len(lines) == len(expected)
    assert [lines[i] for i in range(-len(lines), len(lines))] == expected + expected
    start, stop = data.draw(st.integers(-15, 15)), data.draw(st.integers(-15, 15))
    assert list(lines[start:stop]) == expected[start:stop]
    assert list(lines[::2]) == expected[::2]
    n = data.draw(st.integers(0, len(lines)))
    head, rest = lines.split(n)
    assert (list(head), list(rest)) == (expected[:n], expected[n:])
    assert head.end == rest.start
    joined = Lines.joined([head, rest])
    assert joined is not None
    assert list(joined) == expected
    assert joined.end == (lines.offset + sum(lines.lengths), lines.line + len(lines))


@given(pair=_block(offset=17, line=7), data=st.data())
@settings(max_examples=300, deadline=None)
def test_lines_kept_as_one_text_are_the_records_of_their_lines(
    pair: tuple[Lines, Lines], data: st.DataObject
) -> None:
    block, lines = pair
    expected = _records(lines)
    assert block.is_block
    assert (len(block), block.length, block.end) == (len(lines), lines.length, lines.end)
    if expected:  # the first and the last, found as bytes: no texts made
        assert (block[0], block[-1]) == (expected[0], expected[-1])
        assert block.is_block
    n = data.draw(st.integers(0, len(lines)))
    head, rest = block.split(n)
    assert head.is_block
    assert rest.is_block
    assert head.end == rest.start == (lines.offset + sum(lines.lengths[:n]), lines.line + n)
    assert rest.end == lines.end
    assert (list(head), list(rest)) == (expected[:n], expected[n:])
    assert (head.block() or b"") + (rest.block() or b"") == block.block()
    again = Lines.joined([*block.split(n)])
    assert again is not None
    assert again.is_block
    assert list(again) == expected
    mixed = Lines.joined([block.split(n)[0].texts_only(), block.split(n)[1]])
    assert mixed is not None
    assert list(mixed) == expected
    assert list(block) == expected
    assert [block[i] for i in range(-len(block), len(block))] == expected + expected
    start, stop = data.draw(st.integers(-15, 15)), data.draw(st.integers(-15, 15))
    assert list(Lines.of_block(*pair[0].start, pair[0].block() or b"", len(lines),
                               crlf=pair[0]._crlf, open_end=pair[0]._open)[start:stop]
                ) == expected[start:stop]  # fmt: skip


@given(
    lengths=st.lists(st.integers(1, 40), min_size=1, max_size=300),
    data=st.data(),
)
@settings(max_examples=300, deadline=None)
def test_a_text_is_cut_where_its_nth_line_ends(lengths: list[int], data: st.DataObject) -> None:
    text = b"".join(b"x" * (n - 1) + b"\n" for n in lengths)
    begin_line = data.draw(st.integers(0, len(lengths) - 1))
    begin = sum(lengths[:begin_line])
    count = len(lengths) - begin_line
    n = data.draw(st.integers(0, count))
    assert _after(text, begin, len(text), n, count) == begin + sum(lengths[begin_line:][:n])


def test_an_index_past_the_lines_is_refused() -> None:
    lines = Lines(0, 1, [2], ["a\n"])
    with pytest.raises(IndexError):
        lines[1]
    with pytest.raises(IndexError):
        lines[-2]
    with pytest.raises(ValueError, match="2 lengths for 1 texts"):
        Lines(0, 1, [2, 3], ["a\n"])
    assert repr(lines) == "Lines(0, 1, 1 lines)"


def test_lines_that_do_not_follow_one_another_are_not_joined() -> None:
    first, gap = Lines(0, 1, [2], ["a\n"]), Lines(5, 2, [2], ["b\n"])
    assert Lines.joined([first, gap]) is None
    assert Lines.joined([first]) is first


# -- the feed: chunks cut from groups ------------------------------------------------------


@st.composite
def _groups(draw: st.DrawFn) -> list[Sequence[Record]]:
    """Groups as a CSV source reads them, following one another: Lines, and lists of
    records read one by one (a group with an odd line)."""
    groups: list[Sequence[Record]] = []
    offset, line = 0, 1
    for _ in range(draw(st.integers(0, 6))):
        kind = draw(st.sampled_from(["lines", "block", "records"]))
        if kind != "records":
            lines = draw(_lines(offset, line)) if kind == "lines" else draw(_block(offset, line))[0]
            groups.append(lines)
            offset, line = lines.end
        else:
            count = draw(st.integers(0, 5))
            groups.append(
                [Record(offset + 3 * i, line + i, f"odd {line + i}") for i in range(count)]
            )
            offset, line = offset + 3 * count, line + count
    return groups


def _old_chunks(records: Iterator[Record], current: list[Record], size: int) -> Iterator[Chunk]:
    """The cutting the feed replaced: a record at a time, the next one read for each end."""
    index, current = 0, current + list(itertools.islice(records, max(0, size - len(current))))
    for record in records:
        yield Chunk(index, current, record.position)
        index, current = index + 1, [record, *itertools.islice(records, size - 1)]
    if current:
        yield Chunk(index, current, None)


def _view(chunks: Iterable[Chunk]) -> list[tuple[int, list[Record], Any]]:
    return [(c.index, list(c.records), c.end) for c in chunks]


@given(groups=_groups(), size=st.integers(1, 9), first=st.integers(0, 12))
@settings(max_examples=400, deadline=None)
def test_the_feed_cuts_the_chunks_the_record_at_a_time_cutting_cut(
    groups: list[Sequence[Record]], size: int, first: int
) -> None:
    flat = list(itertools.chain.from_iterable(groups))
    feed = Feed(groups)
    current = list(itertools.islice(feed, first))  # phase 1 takes some one at a time
    chunks = list(feed.chunks(current, 0, lambda: size))
    old = _old_chunks(iter(flat[len(current) :]), flat[: len(current)], size)
    assert _view(chunks) == _view(old)


def test_a_chunk_of_plain_lines_only_is_one_lines() -> None:
    a = Lines(0, 2, [2, 2, 2], ["a\n", "b\n", "c\n"])
    b = Lines(6, 5, [2, 2], ["d\n", "e\n"])
    odd = [Record(10, 7, "odd")]
    chunks = list(Feed([a, b, odd]).chunks([], 0, lambda: 4))
    assert isinstance(chunks[0].records, Lines)
    assert [r.item for r in chunks[0].records] == ["a\n", "b\n", "c\n", "d\n"]
    assert chunks[0].end == (8, 6)
    assert isinstance(chunks[1].records, list)  # a line and a record read on its own
    assert [r.item for r in chunks[1].records] == ["e\n", "odd"]
    assert chunks[1].end is None
    assert list(Feed([]).chunks([], 0, lambda: 4)) == []
    assert Feed([[], Lines(0, 1, [], [])]).peek() is None


# -- a job over a CSV file ---------------------------------------------------------------


class _Keeping:
    """A sink that keeps what each write was given, then empties its list (a sink may do
    what it likes with it: the records keep their texts)."""

    def __init__(self) -> None:
        self.writes: list[list[str]] = []

    def write(self, items: list[str], context: object = None) -> None:
        self.writes.append(list(items))
        items.clear()


def test_a_raw_csv_job_writes_each_line_once_and_its_chunks_stay_lines(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "rows.csv"
    lines = [f"{i},name {i}\n" for i in range(2_500)]
    lines[1_234] = '1234,"quoted"\n'  # its piece of the file is read a record at a time
    path.write_text("id,name\n" + "".join(lines))
    seen: list[Sequence[Record]] = []
    prepare = ChunkHandler.prepare

    def spying(self: ChunkHandler, index: int, records: Sequence[Record]) -> Any:
        seen.append(records)
        return prepare(self, index, records)

    monkeypatch.setattr(ChunkHandler, "prepare", spying)
    sink = _Keeping()
    store = SqliteStore(tmp_path / "s.db")
    report = Job("lines", CsvSource(path, raw=True), sink, store=store, chunk_size=500).run()
    assert report.summary["succeeded"] == 2_500
    written = [text for write in sink.writes for text in write]
    assert written[1_234] == "1234,quoted\n"  # a record read on its own: as csv reads it
    assert written[:1_234] + written[1_235:] == lines[:1_234] + lines[1_235:]
    assert [isinstance(r, Lines) for r in seen] == [True, True, False, True, True]
    assert [r[0].ordinal for r in seen] == [2, 502, 1002, 1502, 2002]
    assert [c.end for c in store.chunks(report.job_id)][-1] is None


# -- each record handled once (review of the first version) -------------------------------


def test_peeking_does_not_wrap_the_group_again_at_every_chunk() -> None:
    feed = Feed([iter([Record(i, i + 1, i) for i in range(5_000)])])
    chunks = list(feed.chunks([], 0, lambda: 1))
    assert len(chunks) == 5_000
    assert [c.records[0].item for c in chunks] == list(range(5_000))
    assert feed._records is None  # the group itself was read to its end, never wrapped


def test_a_group_of_lines_is_cut_without_copying_what_is_left() -> None:
    texts = [f"{i}\n" for i in range(1_000)]
    lines = Lines(0, 1, [len(t) for t in texts], texts)
    feed = Feed([lines])
    first = feed.take(10)
    assert feed._lines is lines  # read through a cursor, not re-made past each cut
    rest = feed.take(10_000)
    assert [list(p) for p in first + rest] == [list(lines[:10]), list(lines[10:])]
    assert feed.peek() is None


def test_a_source_wrapping_a_csv_source_is_read_through_its_own_read(tmp_path: Path) -> None:
    path = tmp_path / "rows.csv"
    path.write_text("id,name\n" + "".join(f"{i},n{i}\n" for i in range(10)))

    class FirstThree:
        """Forwards everything to a CsvSource but reads only its first three records."""

        def __init__(self) -> None:
            self.inner = CsvSource(path, raw=True)

        def __getattr__(self, name: str) -> Any:
            return getattr(self.inner, name)

        def read(self, start: Any = None) -> Iterator[Record]:
            return itertools.islice(self.inner.read(start), 3)

    sink = _Keeping()
    Job("wrapped", FirstThree(), sink, store=SqliteStore(tmp_path / "s.db")).run()
    assert [t for w in sink.writes for t in w] == ["0,n0\n", "1,n1\n", "2,n2\n"]
