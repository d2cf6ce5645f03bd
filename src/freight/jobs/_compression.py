"""Compressed files (gzip, zstd) read as a stream of their decompressed bytes.

:class:`CsvSource` and :class:`JsonlSource` read a ``.gz`` or ``.zst`` file through
:func:`open_stream`, which hands them an :class:`Inflated` file: it behaves like the
plain file opened in binary mode, only slower to seek. Rules:

- Positions are offsets in the *decompressed* stream, so a record's position, its
  line number and what it reads are the same as in the plain file.
- Reading goes forward, decompressing blocks of ``_BLOCK`` bytes. The last ``_KEEP``
  bytes (at least) already read are kept, so the CSV reader's short steps back (to the
  start of a group of lines, to the line after a bad quoted record) cost nothing.
- A seek further back reopens the file and decompresses it again up to there; a seek
  forward decompresses and drops what lies between. So a resume (``read(start)``)
  re-reads the compressed stream up to its checkpoint: the time of a decompression of
  that part, with flat memory.
- Compressed bytes read are noted as reading goes (:class:`Marks`), so that progress
  is measured in bytes of the file as it is on disk (:meth:`Marks.consumed_at`).
- gzip is the standard library's (multi-member files included); zstd needs the extra
  ``freight[zstd]`` (``zstandard``), and reads every frame of the file.
"""

from __future__ import annotations

import bisect
import gzip
import io
import zlib
from pathlib import Path
from typing import IO, Any, BinaryIO, Literal, cast

from freight._errors import ConfigError

__all__ = ["Compression", "Inflated", "Marks", "compression_of", "open_stream"]

Compression = Literal["gzip", "zstd"]

_SUFFIXES: dict[str, Compression] = {
    ".gz": "gzip",
    ".gzip": "gzip",
    ".zst": "zstd",
    ".zstd": "zstd",
}
_MAGIC: dict[Compression, bytes] = {"gzip": b"\x1f\x8b", "zstd": b"\x28\xb5\x2f\xfd"}
_BLOCK = 1 << 20  # decompressed bytes read at a time
_KEEP = 4 << 20  # bytes before the position kept for a step back (more than a CSV group)


def compression_of(path: str | Path, compression: str | None = "auto") -> Compression | None:
    """The compression of ``path``: ``compression`` itself, or with ``"auto"`` the one
    its last suffix names (``.gz``/``.gzip``: gzip, ``.zst``/``.zstd``: zstd), else the
    one its first bytes show (a gzip or zstd header), else none.

    Raises:
        ConfigError: an unknown ``compression``, a file whose first bytes are not those
            of the compression named (by ``compression`` or the suffix), or a zstd file
            without the extra ``freight[zstd]``.
    """
    with Path(path).open("rb") as f:
        head = f.read(4)
    found: Compression | None
    if compression == "auto":
        found = _SUFFIXES.get(Path(path).suffix.lower())
        if found is None:
            found = next((c for c, magic in _MAGIC.items() if head.startswith(magic)), None)
    elif compression is None or compression in _MAGIC:
        found = compression
    else:
        raise ConfigError(
            f"compression must be 'auto', 'gzip', 'zstd' or None, got {compression!r}"
        )
    if found is not None and head and not head.startswith(_MAGIC[found]):
        raise ConfigError(
            f"{str(path)!r} is not {found}-compressed (it does not start with a {found} "
            "header); rename it or pass compression= explicitly"
        )
    if found == "zstd":
        _zstandard()
    return found


def _zstandard() -> Any:
    try:
        import zstandard  # noqa: PLC0415  (optional extra)
    except ImportError as exc:
        raise ConfigError(
            "reading a .zst file needs zstandard: pip install 'freight[zstd]'"
        ) from exc
    return zstandard


class Marks:
    """Where reading a compressed file stood: pairs of (decompressed bytes, compressed
    bytes read), noted forward only, shared by every stream opened on one source. One
    list of pairs, appended whole: a reader of another thread (progress) never sees half
    a mark."""

    __slots__ = ("_marks", "total")

    def __init__(self) -> None:
        self._marks: list[tuple[int, int]] = [(0, 0)]
        self.total: int | None = None  # decompressed size, once a read reached the end

    def note(self, end: int, consumed: int) -> None:
        """``end`` decompressed bytes came from the first ``consumed`` compressed ones."""
        last_end, last_consumed = self._marks[-1]
        if end > last_end:
            self._marks.append((end, max(consumed, last_consumed)))

    def consumed_at(self, offset: int) -> int | None:
        """The compressed bytes read to reach decompressed ``offset`` (interpolated
        between marks); ``None`` past the furthest point read so far."""
        marks = self._marks
        if offset > marks[-1][0]:
            return None
        i = bisect.bisect_left(marks, (offset,))  # the first mark at or past it
        end, consumed = marks[i]
        if end == offset or i == 0:
            return consumed
        low, low_consumed = marks[i - 1]
        share = (offset - low) / (end - low)
        return round(low_consumed + share * (consumed - low_consumed))


def open_stream(path: Path, compression: Compression | None, marks: Marks) -> BinaryIO:
    """``path`` opened for reading its bytes: the file itself, or an :class:`Inflated`."""
    if compression is None:
        return path.open("rb")
    return cast("BinaryIO", Inflated(path, compression, marks))


class Inflated:
    """The decompressed bytes of a gzip or zstd file, read forward (see the module's
    rules): ``read``, ``readline``, ``readlines``, iteration, ``seek`` and ``tell``
    work as on a file opened in binary mode, offsets counted in decompressed bytes."""

    def __init__(self, path: Path, compression: Compression, marks: Marks) -> None:
        self._path, self._compression, self._marks = path, compression, marks
        self._file: IO[bytes] | None = None
        self._open()

    def _open(self) -> None:
        if self._file is not None:
            self._close_streams()
        self._file = file = self._path.open("rb")
        self._stream: IO[bytes]
        if self._compression == "gzip":
            self._stream = cast("IO[bytes]", gzip.GzipFile(fileobj=file, mode="rb"))
        else:
            reader = _zstandard().ZstdDecompressor().stream_reader(file, read_across_frames=True)
            self._stream = cast("IO[bytes]", reader)
        self._window = io.BytesIO()  # decompressed bytes [base, base + size)
        self._base = self._size = 0
        self._eof = False

    # -- filling the window -------------------------------------------------------

    def _fill(self) -> bool:
        """Add a block of decompressed bytes to the window (first dropping what lies
        more than ``_KEEP`` before the position, once that is much); False at the end."""
        if self._eof:
            return False
        block = self._decompress(_BLOCK)
        if not block:
            self._eof = True
            self._marks.total = self._base + self._size
            return False
        window, position = self._window, self._window.tell()
        if position > 2 * _KEEP:  # drop the oldest bytes, rarely: one copy of the rest
            drop = position - _KEEP
            with window.getbuffer() as view:
                kept = io.BytesIO(view[drop:])
            window.close()
            self._window = window = kept
            self._base += drop
            self._size -= drop
            position -= drop
        window.seek(self._size)
        window.write(block)
        window.seek(position)
        self._size += len(block)
        assert self._file is not None
        self._marks.note(self._base + self._size, self._file.tell())
        return True

    def _decompress(self, size: int) -> bytes:
        try:
            return self._stream.read(size)
        except (OSError, EOFError, zlib.error) as exc:
            raise self._damaged(exc) from exc
        except Exception as exc:  # zstandard.ZstdError: not importable without the extra
            if type(exc).__name__ != "ZstdError":
                raise
            raise self._damaged(exc) from exc

    def _damaged(self, exc: BaseException) -> ConfigError:
        at = self._base + self._size
        return ConfigError(
            f"cannot decompress {str(self._path)!r} ({self._compression}) after "
            f"{at:,} bytes of data: {exc}; the file is damaged or cut short"
        )

    def _available(self) -> int:
        return self._size - self._window.tell()

    # -- reading ------------------------------------------------------------------

    def read(self, size: int = -1) -> bytes:
        """Up to ``size`` bytes (all that is left with a negative size)."""
        while (size < 0 or self._available() < size) and self._fill():
            pass
        return self._window.read(size)

    def readline(self, limit: int = -1) -> bytes:
        """The next line with its ``\\n``, or at most ``limit`` bytes of it."""
        line = self._window.readline(limit)
        if line.endswith(b"\n") or len(line) == limit:
            return line
        parts = [line]
        size = len(line)
        while self._fill():
            part = self._window.readline(limit - size if limit >= 0 else -1)
            parts.append(part)
            size += len(part)
            if part.endswith(b"\n") or size == limit:
                break
        return b"".join(parts)

    def readlines(self, hint: int = -1) -> list[bytes]:
        """Whole lines, until they hold ``hint`` bytes or more (all with ``hint <= 0``)."""
        while (hint <= 0 or self._available() < hint) and self._fill():
            pass
        lines = self._window.readlines(hint)
        if lines and not lines[-1].endswith(b"\n"):
            lines[-1] += self.readline()  # the window ended inside this line
        return lines

    def __iter__(self) -> Inflated:
        return self

    def __next__(self) -> bytes:
        line = self.readline()
        if not line:
            raise StopIteration
        return line

    def tell(self) -> int:
        """The position, in decompressed bytes."""
        return self._base + self._window.tell()

    def seek(self, offset: int, whence: int = 0) -> int:
        """Go to decompressed ``offset`` (``whence`` 0 only): within the window at no
        cost, forward by decompressing, back past the window by reopening the file."""
        if whence != 0 or offset < 0:
            raise io.UnsupportedOperation("a compressed stream seeks to an absolute offset")
        if offset < self._base:
            self._open()
        end = self._base + self._size
        if offset > end:  # skip forward without keeping what lies between
            self._window = io.BytesIO()
            skip = offset - end
            while skip > 0 and (block := self._decompress(min(skip, 4 * _BLOCK))):
                skip -= len(block)
            self._base, self._size = offset - skip, 0
            if skip:  # the stream ended first: stay at its end
                self._eof = True
                self._marks.total = self._base
            assert self._file is not None
            self._marks.note(self._base, self._file.tell())
        self._window.seek(min(offset, self._base + self._size) - self._base)
        return self.tell()

    # -- closing ------------------------------------------------------------------

    def _close_streams(self) -> None:
        self._stream.close()
        assert self._file is not None
        self._file.close()
        self._window.close()

    def close(self) -> None:
        if self._file is not None:
            self._close_streams()
            self._file = None

    def __enter__(self) -> Inflated:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
