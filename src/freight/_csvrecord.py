"""One CSV record read as ``csv.reader(strict=True)`` reads it, without the csv module's
field size limit: the reader of a record holding a huge field, shared by the CSV source
(``freight.jobs._csvread``) and the sinks that take CSV record texts
(``SqliteSink(format="csv")``). The limit (131,072 characters) is process-wide, so it is
never raised here."""

from __future__ import annotations

import csv
import re
from collections.abc import Iterator

__all__ = ["CSV_EOF", "FIELD_TOO_LARGE", "read_big"]

CSV_EOF = "unexpected end of data"  # csv.reader's reason for a quote open at the end
FIELD_TOO_LARGE = "field larger than field limit"  # how csv.reader's reason starts


def read_big(lines: Iterator[str], delimiter: str, quote: str) -> list[str]:
    """One record read as ``csv.reader(strict=True)`` reads it, but without the csv
    module's field size limit (131,072 characters, process-wide, so not raised here):
    the reader of a record holding a huge field. Regular expressions skip over the
    field's text, so a 10 MB field costs milliseconds."""
    unquoted = re.compile(f"[^{re.escape(delimiter)}\r\n]*")
    inside = re.compile(f"[^{re.escape(quote)}]*")
    fields: list[str] = []
    parts: list[str] = []
    quoted = False
    for line in lines:
        pos, end = 0, len(line)
        if not fields and not quoted and not line.strip("\r\n"):
            return []
        while True:
            if quoted:
                found = inside.match(line, pos)
                assert found is not None  # a starred class always matches
                parts.append(found.group())
                pos = found.end() + 1  # past the quote
                if pos > end:
                    break  # the quoted field runs on to the next line
                if line.startswith(quote, pos):
                    parts.append(quote)  # a doubled quote
                    pos += 1
                    continue
                quoted = False
                fields.append("".join(parts))
                parts = []
                if pos == end or line[pos] in "\r\n":
                    return _record_end(fields, line, pos)
                if line[pos] != delimiter:
                    raise csv.Error(f"'{delimiter}' expected after '{quote}'")
                pos += 1
            if line.startswith(quote, pos):
                quoted = True
                pos += 1
                continue
            found = unquoted.match(line, pos)
            assert found is not None
            fields.append(found.group())
            pos = found.end()
            if pos == end or line[pos] != delimiter:
                return _record_end(fields, line, pos)
            pos += 1
    raise csv.Error(CSV_EOF)


def _record_end(fields: list[str], line: str, pos: int) -> list[str]:
    """``fields``, when the rest of ``line`` is only its line ending."""
    if line[pos:].strip("\r\n"):
        raise csv.Error("new-line character seen in unquoted field")
    return fields
