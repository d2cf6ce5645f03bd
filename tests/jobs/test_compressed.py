"""Compressed CSV and JSONL sources (gzip, zstd): the same records as the plain file,
positions in the decompressed stream, resume from a checkpoint, read_at, progress in
compressed bytes."""

from __future__ import annotations

import gzip
import hashlib
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from freight import ConfigError
from freight.jobs import CsvSource, JsonlSource, Record, _compression, _csvread, as_source
from freight.jobs._sources import file_format

Write = Callable[[Path, bytes], Path]


def plain(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def gz(path: Path, data: bytes) -> Path:
    target = path.with_name(path.name + ".gz")
    target.write_bytes(gzip.compress(data))
    return target


def zst(path: Path, data: bytes) -> Path:
    target = path.with_name(path.name + ".zst")
    target.write_bytes(zstandard.ZstdCompressor().compress(data))
    return target


def zst_frames(path: Path, data: bytes) -> Path:
    """Several zstd frames one after the other (as ``zstd`` writes for appended data)."""
    target = path.with_name(path.name + ".zst")
    cut = len(data) // 2
    c = zstandard.ZstdCompressor()
    target.write_bytes(c.compress(data[:cut]) + c.compress(data[cut:]))
    return target


COMPRESSED = [gz, zst, zst_frames]


@pytest.fixture
def tiny_window(monkeypatch: pytest.MonkeyPatch) -> None:
    """Blocks of 64 bytes, 128 kept, CSV groups of 512 bytes: every read crosses blocks,
    old bytes are dropped often and a group's step back may fall outside the window (the
    file is reopened and decompressed again up to there)."""
    monkeypatch.setattr(_compression, "_BLOCK", 64)
    monkeypatch.setattr(_compression, "_KEEP", 128)
    monkeypatch.setattr(_csvread, "_GROUP_BYTES", 512)


def items(records: list[Record]) -> list[tuple[Any, ...]]:
    return [(r.position, r.item, None if r.error is None else str(r.error)) for r in records]


CSV = (
    b"id,name,note\n"
    + b"".join(b"%d,name %d,plain\n" % (i, i) for i in range(1, 200))
    + b'200,"multi\nline",ok\n'
    + b'201,"unclosed,x\n'
    + b"202,short\n"
    + b'203,"a ""quoted"" one",z\r\n'
    + b"\n"
    + b"".join(b"%d,n%d,tail\n" % (i, i) for i in range(204, 400))
)


@pytest.mark.usefixtures("tiny_window")
@pytest.mark.parametrize("write", COMPRESSED)
@pytest.mark.parametrize("raw", [False, True])
def test_a_compressed_csv_gives_the_records_of_the_plain_file(
    tmp_path: Path, write: Write, raw: bool
) -> None:
    expected = items(list(CsvSource(plain(tmp_path / "p.csv", CSV), raw=raw).read()))
    source = CsvSource(write(tmp_path / "c.csv", CSV), raw=raw)
    assert source.compression is not None
    assert items(list(source.read())) == expected
    assert len(expected) > 390
    assert sum(r[2] is not None for r in expected) == 2  # the unclosed quote, the short row


@pytest.mark.usefixtures("tiny_window")
@pytest.mark.parametrize("write", COMPRESSED)
def test_resume_from_any_checkpoint_reads_the_rest_as_the_plain_file_does(
    tmp_path: Path, write: Write
) -> None:
    reference = CsvSource(plain(tmp_path / "p.csv", CSV))
    source = CsvSource(write(tmp_path / "c.csv", CSV))
    records = list(reference.read())
    for record in records[::37] + records[-1:]:
        assert items(list(source.read(record.position))) == items(
            list(reference.read(record.position))
        )


@pytest.mark.usefixtures("tiny_window")
@pytest.mark.parametrize("write", COMPRESSED)
def test_read_at_on_a_compressed_csv_finds_each_position_in_one_pass(
    tmp_path: Path, write: Write
) -> None:
    reference = CsvSource(plain(tmp_path / "p.csv", CSV))
    source = CsvSource(write(tmp_path / "c.csv", CSV))
    records = list(reference.read())
    wanted = [r.position for r in records[5::23]] + [(1, 1), (10**9, 10**6)]  # two strays
    assert items(list(source.read_at(reversed(wanted)))) == items(list(reference.read_at(wanted)))
    assert len(list(source.read_at(wanted))) == len(records[5::23])


JSONL = b"".join(b'{"id": %d, "v": "x%d"}\n' % (i, i) for i in range(300)) + b"{bad\n\n[1]"


@pytest.mark.usefixtures("tiny_window")
@pytest.mark.parametrize("write", COMPRESSED)
def test_a_compressed_jsonl_gives_the_records_resume_and_read_at_of_the_plain_file(
    tmp_path: Path, write: Write
) -> None:
    reference = JsonlSource(plain(tmp_path / "p.jsonl", JSONL))
    source = JsonlSource(write(tmp_path / "c.jsonl", JSONL))
    records = list(reference.read())
    assert items(list(source.read())) == items(records)
    middle = records[150].position
    assert items(list(source.read(middle))) == items(list(reference.read(middle)))
    wanted = [r.position for r in records[::50]]
    assert items(list(source.read_at(wanted))) == items(list(reference.read_at(wanted)))


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    lines=st.lists(
        st.text(alphabet='ab,"\n\r\x00é', max_size=12).map(str.encode), min_size=1, max_size=40
    ),
    cut=st.integers(min_value=0, max_value=60),
)
def test_any_csv_reads_alike_plain_and_gzip_from_any_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, lines: list[bytes], cut: int
) -> None:
    monkeypatch.setattr(_compression, "_BLOCK", 16)
    monkeypatch.setattr(_compression, "_KEEP", 32)
    data = b"a,b\n" + b"\n".join(lines)
    reference = CsvSource(plain(tmp_path / "h.csv", data))
    source = CsvSource(gz(tmp_path / "h.csv", data))
    records = list(reference.read())
    assert items(list(source.read())) == items(records)
    if records:
        start = records[min(cut, len(records) - 1)].position
        assert items(list(source.read(start))) == items(list(reference.read(start)))


def test_the_fingerprint_and_size_are_of_the_compressed_bytes(tmp_path: Path) -> None:
    path = gz(tmp_path / "f.csv", CSV)
    source = CsvSource(path)
    assert source.size().bytes == path.stat().st_size < len(CSV)
    before = source.fingerprint()
    size = path.stat().st_size
    expected = hashlib.sha256(str(size).encode() + path.read_bytes()).hexdigest()[:32]
    assert before == expected
    path.write_bytes(gzip.compress(CSV, compresslevel=1))  # same data, other bytes
    assert CsvSource(path).fingerprint() != before


def test_bytes_read_maps_decompressed_positions_to_compressed_bytes(tmp_path: Path) -> None:
    rng = random.Random(7)
    rows = b"".join(b"%d,%d\n" % (i, rng.randrange(10**9)) for i in range(300_000))
    path = gz(tmp_path / "big.csv", b"a,b\n" + rows)
    source = CsvSource(path)
    records = list(source.read())
    size = source.size().bytes
    assert size is not None
    read = [source.bytes_read(r.position) for r in records[:: len(records) // 20]]
    assert all(b is not None for b in read)
    known = [b for b in read if b is not None]
    assert known == sorted(known)  # never backwards
    assert known[-1] <= size
    assert 0.3 * size < known[len(known) // 2] < 0.7 * size  # proportional, not raw offsets
    assert CsvSource(path).bytes_read(records[-1].position) is None  # not read here yet
    assert CsvSource(plain(tmp_path / "p.csv", b"a\n1\n")).bytes_read((2, 2)) == 2


def test_as_source_and_file_format_look_through_the_compression_suffix(tmp_path: Path) -> None:
    csv_gz = gz(tmp_path / "a.csv", b"x\n1\n")
    jsonl_zst = zst(tmp_path / "a.jsonl", b"1\n")
    assert isinstance(as_source(csv_gz), CsvSource)
    assert isinstance(as_source(jsonl_zst), JsonlSource)
    assert file_format("a.ndjson.gz") == "jsonl"
    assert file_format("export.dat", "csv") == "csv"
    odd = tmp_path / "export.dat"
    odd.write_bytes(gzip.compress(b"x\n1\n"))  # no suffix: compression from its header
    source = as_source(odd, format="csv")
    assert isinstance(source, CsvSource)
    assert source.compression == "gzip"
    assert [r.item for r in source.read()] == [{"x": "1"}]
    with pytest.raises(ConfigError, match="cannot tell the format"):
        as_source(tmp_path / "a.txt.gz")
    with pytest.raises(ConfigError, match="format must be"):
        file_format("a.csv", "xml")


def test_a_file_whose_bytes_are_not_its_suffix_compression_is_refused(tmp_path: Path) -> None:
    fake = tmp_path / "fake.csv.gz"
    fake.write_bytes(b"a,b\n1,2\n")
    with pytest.raises(ConfigError, match="is not gzip-compressed"):
        CsvSource(fake)
    assert [r.item for r in CsvSource(fake, compression=None).read()] == [{"a": "1", "b": "2"}]
    with pytest.raises(ConfigError, match="compression must be"):
        CsvSource(fake, compression="bz2")  # type: ignore[arg-type]


def test_a_damaged_compressed_file_fails_with_one_clear_error(tmp_path: Path) -> None:
    path = gz(tmp_path / "cut.csv", CSV * 50)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])  # cut short
    source = CsvSource(path)
    with pytest.raises(ConfigError, match=r"cannot decompress .* damaged or cut short"):
        list(source.read())
