"""A chunk of plain CSV lines kept as one text goes whole to a sink that takes lines so
(``_write_lines``, PostgreSQL's COPY), with no string made per line; anything that does
not write them all (a refusal, an error) falls back to writing their texts one item
each, the path that retries, isolates and reports."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from unittest import mock

import pytest

from freight.jobs import CsvSource, Job
from freight.jobs._sink import LinesSink, WriteContext
from freight.store import SqliteStore

LINES = [f"{i},name {i}\n" for i in range(1_000)]


class _LinesKeeping:
    """Takes lines as one text (or not: ``answer``), and their texts otherwise."""

    def __init__(self, answer: bool | Exception = True) -> None:
        self.answer = answer
        self.blocks: list[bytes] = []
        self.writes: list[list[str]] = []

    def _write_lines(self, text: bytes, context: WriteContext) -> bool:
        if isinstance(self.answer, Exception):
            raise self.answer
        if self.answer:
            self.blocks.append(text)
        return self.answer

    def write(self, items: list[str], context: object = None) -> None:
        self.writes.append(list(items))


def run(tmp_path: Path, sink: Any, **options: Any) -> dict[str, int]:
    path = tmp_path / "rows.csv"
    path.write_text("id,name\n" + "".join(LINES))
    job = Job("lines", CsvSource(path, raw=True), sink, store=SqliteStore(tmp_path / "s.db"),
              chunk_size=300, **options)  # fmt: skip
    return job.run().summary


def test_clean_chunks_are_written_as_one_text_each(tmp_path: Path) -> None:
    sink = _LinesKeeping()
    assert isinstance(sink, LinesSink)
    summary = run(tmp_path, sink)
    assert summary["succeeded"] == 1_000
    assert sink.writes == []
    assert [len(b.splitlines()) for b in sink.blocks] == [300, 300, 300, 100]
    assert b"".join(sink.blocks).decode() == "".join(LINES)


@pytest.mark.parametrize("answer", [False, RuntimeError("lost")])
def test_lines_the_sink_does_not_take_whole_are_written_as_texts(
    tmp_path: Path, answer: bool | Exception
) -> None:
    sink = _LinesKeeping(answer)
    summary = run(tmp_path, sink)
    assert (summary["succeeded"], summary["failed"]) == (1_000, 0)
    assert sink.blocks == []
    assert [t for w in sink.writes for t in w] == LINES


def test_lines_to_process_are_written_as_texts(tmp_path: Path) -> None:
    sink = _LinesKeeping()
    summary = run(tmp_path, sink, process=str.upper)
    assert summary["succeeded"] == 1_000
    assert sink.blocks == []
    assert [t for w in sink.writes for t in w] == [t.upper() for t in LINES]


class _Shouting(_LinesKeeping):
    """Found by review: a subclass overriding ``write`` had it skipped."""

    def write(self, items: list[str], context: object = None) -> None:
        super().write([t.upper() for t in items], context)


class _Forwarding:
    """Found by review: a wrapper forwarding other attributes had its ``write`` skipped."""

    def __init__(self) -> None:
        self.inner = _LinesKeeping()
        self.writes: list[list[str]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def write(self, items: list[str], context: object = None) -> None:
        self.writes.append([t for t in items if not t.startswith("3,")])


def test_a_sink_whose_write_is_not_the_one_beside_its_write_lines_gets_its_texts(
    tmp_path: Path,
) -> None:
    shouting = _Shouting()
    run(tmp_path, shouting)
    assert shouting.blocks == []
    assert [t for w in shouting.writes for t in w] == [t.upper() for t in LINES]
    forwarding = _Forwarding()
    (tmp_path / "f").mkdir()
    run(tmp_path / "f", forwarding)
    assert forwarding.inner.blocks == []
    assert len([t for w in forwarding.writes for t in w]) == 999


def test_a_write_replaced_on_the_sink_itself_gets_the_texts(tmp_path: Path) -> None:
    """Found by review: ``mock.patch.object(sink, "write", wraps=sink.write)`` was
    passed by (the class's write was compared, not the instance's)."""
    sink = _LinesKeeping()
    with mock.patch.object(sink, "write", wraps=sink.write) as write:
        run(tmp_path, sink)
    assert write.call_count == 4
    assert sink.blocks == []
