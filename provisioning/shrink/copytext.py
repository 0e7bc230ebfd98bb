"""PostgreSQL's COPY text format, as pg_dump writes table data: one row a line, fields split
by tabs, `\\N` for NULL, backslash escapes for tab, newline, carriage return and backslash."""

from __future__ import annotations

import re

NULL = "\\N"
END = "\\."
_ESCAPES = {"b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v", "\\": "\\"}
_ESCAPED = re.compile(r"\\(x[0-9a-fA-F]{1,2}|[0-7]{1,3}|.)")
_UNSAFE = str.maketrans(
    {"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r", "\b": "\\b", "\f": "\\f", "\v": "\\v"}
)


def _unescape(match: re.Match[str]) -> str:
    code = match.group(1)
    if code[0] == "x":
        return chr(int(code[1:], 16))
    if code[0].isdigit():
        return chr(int(code, 8))
    return _ESCAPES.get(code, code)


def decode(field: str) -> str | None:
    """A field as written by COPY to the value it stands for."""
    if field == NULL:
        return None
    return _ESCAPED.sub(_unescape, field) if "\\" in field else field


def encode(value: str | None) -> str:
    """A value as COPY writes it."""
    return NULL if value is None else value.translate(_UNSAFE)
