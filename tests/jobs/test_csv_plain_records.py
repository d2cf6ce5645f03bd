"""CSV records of plain lines are made in C (no Python frame per line) and are exactly the
records the same lines give when each is read on its own."""

from __future__ import annotations

from pathlib import Path
from unittest import mock

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from freight.jobs import CsvSource, Record, _csvread

_FIELD = st.text(st.characters(exclude_characters='",\r\n\x00', exclude_categories=["Cs"]))
_LINE = st.tuples(_FIELD, _FIELD, _FIELD).map(",".join)
# Plain lines mostly, with a few that are not (a quote, a missing field, a blank line)
# so that a group is also cut into pieces.
_ODD = st.sampled_from(['1,"q ""x""",z', "2,b", "", '3,"two\nlines",c', "4,b,c\rd"])


def _view(records: list[Record]) -> list[tuple[object, ...]]:
    return [(r.position, r.item, str(r.error) if r.error else None, r.raw) for r in records]


@given(
    lines=st.lists(st.one_of(_LINE, _LINE, _LINE, _ODD), max_size=60),
    ending=st.sampled_from(["\n", "\r\n"]),
    tail=st.booleans(),
    raw=st.booleans(),
    latin=st.booleans(),
    group=st.sampled_from([None, 1, 40]),
)
@settings(max_examples=300, deadline=None)
def test_plain_lines_give_the_records_each_line_gives_on_its_own(  # noqa: PLR0917
    tmp_path_factory: pytest.TempPathFactory,
    lines: list[str],
    ending: str,
    tail: bool,
    raw: bool,
    latin: bool,
    group: int | None,
) -> None:
    """In both modes, UTF-8 (lines kept as one text in raw mode) or not, read in one
    group or in groups of a few bytes (each completed to a whole line)."""
    body = ending.join(["a,b,c", *lines]) + (ending if tail else "")
    encoding = "latin-1" if latin else "utf-8"
    path = tmp_path_factory.mktemp("plain") / "p.csv"
    path.write_bytes(body.encode(encoding, errors="replace"))
    source = CsvSource(path, blank_lines="skip", raw=raw, encoding=encoding)
    with mock.patch.object(_csvread, "_GROUP_BYTES", group or _csvread._GROUP_BYTES):
        records = list(source.read())
    alone = list(source.read_at(r.position for r in records))  # each parsed by itself
    assert _view(records) == _view(alone)
    if raw:
        assert all(r.item.endswith("\n") for r in records if isinstance(r.item, str))


def test_a_long_plain_line_keeps_an_excerpt_of_200_characters(tmp_path: Path) -> None:
    path = tmp_path / "long.csv"
    path.write_text("a,b\n1," + "x" * 500 + "\n2,y\n")
    first, second = CsvSource(path).read()
    assert first.item == {"a": "1", "b": "x" * 500}
    assert first.raw == ("1," + "x" * 500)[:200]
    assert (second.position, second.item, second.raw) == (
        (len("a,b\n1,") + 501, 3),
        {"a": "2", "b": "y"},
        "2,y",
    )


@pytest.mark.parametrize("raw", [False, True])
def test_a_carriage_return_inside_the_last_field_is_a_bad_record_not_two(
    tmp_path: Path, raw: bool
) -> None:
    """Found by review: ``1,a\\rb\\n`` passed the plain check as a \\r\\n line (what is
    left of it once all but delimiters and line endings are deleted is ``,\\r\\n``), and
    was cut at the \\r: two records (or, before, one without its ``b``)."""
    path = tmp_path / "cr.csv"
    path.write_bytes(b"id,name\n1,a\rb\n2,c\rd\n")
    source = CsvSource(path, raw=raw)
    records = list(source.read())
    assert [r.ordinal for r in records] == [2, 3]
    assert all("carriage return" in str(r.error) for r in records)
    assert _view(records) == _view(list(source.read_at(r.position for r in records)))
