"""Errors raised by the readers: every message names the file, the line and the field."""

from __future__ import annotations

import os


class FormatError(ValueError):
    """A malformed record in an input file."""

    def __init__(self, path: str | os.PathLike | None, line: int | None, field: str | None, message: str):
        self.path = None if path is None else str(path)
        self.line = line
        self.field = field
        self.message = message
        where = self.path or "<input>"
        if line is not None:
            where += f":{line}"
        super().__init__(f"{where}: {field}: {message}" if field else f"{where}: {message}")


class SpanError(FormatError):
    """A mention span that is empty, reversed, outside its text, or not over the mention's text."""
