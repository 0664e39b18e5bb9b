"""Numbered text lines of an input file, for every reader: UTF-8 checked line by line, so an
undecodable line, or one with a NUL character (binary data), is a `FormatError` naming its file
and line; a leading UTF-8 byte order mark is dropped; gzipped files are read through gzip (told
by their content, not their name). `read_text` gives a whole file as one text by the same rules.

Lines end at `\\n` only (with a `\\r` before it dropped), as a text file opened by Python
splits them: U+2028, form feeds and other Unicode line breaks stay inside the line.
"""

from __future__ import annotations

import gzip
import json
import os
import zlib
from collections.abc import Iterator
from pathlib import Path

from .errors import FormatError

BOM = "\ufeff"


def is_gzipped(path: str | os.PathLike) -> bool:
    with open(path, "rb") as probe:
        return probe.read(2) == b"\x1f\x8b"


def decode_line(raw: bytes, path: str | os.PathLike | None, line_no: int) -> str:
    """One line's text; not UTF-8, or a NUL character in it, is a FormatError naming the line."""
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise FormatError(path, line_no, "encoding", f"not UTF-8: byte {raw[error.start]:#04x} at column {error.start + 1}") from None
    if "\x00" in line:
        raise FormatError(path, line_no, "text", "binary data (a NUL character)")
    return line


def text_lines(path: str | os.PathLike, skipped: list[FormatError] | None = None, *,
               keep_ends: bool = False) -> Iterator[tuple[int, str]]:
    """(line number from 1, line without its line ending, or with it for `keep_ends`) for every
    line of `path`.

    A line that is not UTF-8 or holds a NUL raises FormatError, unless `skipped` is a list: then
    the error goes there and the line is left out. A damaged gzip stream always raises.
    """
    handle = gzip.open(path, "rb") if is_gzipped(path) else open(path, "rb")
    line_no = 0
    with handle:
        try:
            for line_no, raw in enumerate(handle, start=1):
                try:
                    line = decode_line(raw, path, line_no)
                except FormatError as problem:
                    if skipped is None:
                        raise
                    skipped.append(problem)
                    continue
                if line_no == 1 and line.startswith(BOM):
                    line = line[1:]
                yield line_no, line if keep_ends else line.rstrip("\r\n")
        except (EOFError, zlib.error, gzip.BadGzipFile) as error:
            raise FormatError(path, line_no + 1, "gzip", f"damaged compressed data ({error})") from None


def read_text(path: str | os.PathLike) -> str:
    """The whole file as one text, exactly as it is (line endings kept, a BOM dropped)."""
    return "".join(line for _, line in text_lines(path, keep_ends=True))


def first_line(path: str | os.PathLike) -> str:
    """The first non-blank readable line, for telling a file's format; "" when there is none."""
    return next((line for _, line in text_lines(path, skipped=[]) if line.strip()), "")


def _no_constant(name: str):
    raise ValueError(f"{name} is not a JSON number")


_STRICT_JSON = json.JSONDecoder(parse_constant=_no_constant)  # one decoder: json.loads with options builds one a call


def parse_json_line(line: str, path: str | os.PathLike | None, line_no: int | None):
    """One JSON value, strictly: `NaN` and `Infinity` (which Python's json accepts and would
    write back out as invalid JSON) and nesting too deep to parse are FormatErrors too."""
    try:
        return _STRICT_JSON.decode(line)
    except RecursionError:
        raise FormatError(path, line_no, "json", "nested too deeply") from None
    except ValueError as error:  # JSONDecodeError, NaN/Infinity, integers of over 4300 digits
        raise FormatError(path, line_no, "json", str(error)) from None


def json_lines(path: str | os.PathLike) -> list:
    """The JSON value of every line of a file biosyn wrote (one value a line, no blank lines),
    parsed in one go, which is several times faster than line by line; on any problem the
    line-by-line reader finds the line to name."""
    try:
        text = Path(path).read_bytes().decode("utf-8")
        rows = text.split("\n")
        if rows[-1] == "":
            rows.pop()
        return _STRICT_JSON.decode("[" + ",".join(rows) + "]")
    except (UnicodeDecodeError, ValueError, RecursionError):
        for line_no, line in text_lines(path):
            parse_json_line(line, path, line_no)
        raise FormatError(path, None, "json", "expected one JSON value a line") from None
