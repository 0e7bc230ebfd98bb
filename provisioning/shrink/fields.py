"""What the scan reads in one COPY field, by the column's kind (see `catalog`).

Each reader returns the text to search for patterns and the values to compare with the
source's personal data, both COPY-encoded so they compare with what pg_dump wrote.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from provisioning.shrink import documents
from provisioning.shrink.catalog import ARRAY, BYTES, JSON, MARKUP
from provisioning.shrink.copytext import decode, encode

Reader = Callable[[str], tuple[str, list[str]]]
_QUOTED = re.compile(r'"((?:[^"\\]|\\.)*)"')
_ARRAY_ITEM = re.compile(r'"((?:[^"\\]|\\.)*)"|([^{},"]+)')
_PRINTABLE = re.compile(r"[^\x00-\x08\x0e-\x1f\x7f\ufffd]{6,}")


def _unescape(text: str) -> str:
    return re.sub(r"\\(.)", r"\1", text)


def read_text(field: str) -> tuple[str, list[str]]:
    return field, [field]


def read_array(field: str) -> tuple[str, list[str]]:
    """An array literal (`{a,"b c",NULL}`, nested or not): its elements one by one."""
    value = decode(field) or ""
    items = []
    for match in _ARRAY_ITEM.finditer(value):
        if match.group(1) is not None:
            items.append(_unescape(match.group(1)))
        elif match.group(2).strip() != "NULL":
            items.append(match.group(2).strip())
    return "\n".join(encode(i) for i in items), [encode(i) for i in items]


def read_json(field: str) -> tuple[str, list[str]]:
    """Every string and number in the document, keys too, however it was escaped."""
    value = decode(field) or ""
    try:
        document = documents.loads(value)
    except ValueError:
        return field, [field]
    items = [encode(str(v)) for v in documents.scalars(document)]
    return "\n".join(items), [i for i in items if not i.lstrip("-").isdigit()]


def read_markup(field: str) -> tuple[str, list[str]]:
    """xml, hstore, tsvector: patterns over the text, and quoted values (hstore's) whole."""
    value = decode(field) or ""
    return field, [encode(_unescape(m.group(1))) for m in _QUOTED.finditer(value)]


def read_bytes(field: str) -> tuple[str, list[str]]:
    """Runs of printable text inside a bytea value (`\\x…` hex, as COPY writes it)."""
    value = decode(field) or ""
    if not value.startswith("\\x"):
        return "", []
    try:
        raw = bytes.fromhex(value[2:])
    except ValueError:
        return "", []
    runs = printable_runs(raw)
    return "\n".join(runs), [encode(r) for r in runs]


def printable_runs(data: bytes) -> list[str]:
    """The stretches of readable text in binary data (six characters or more)."""
    return list(_PRINTABLE.findall(data.decode("utf-8", errors="replace")))


READERS: dict[str, Reader] = {
    ARRAY: read_array,
    JSON: read_json,
    MARKUP: read_markup,
    BYTES: read_bytes,
}


def reader(kind: str) -> Reader:
    return READERS.get(kind, read_text)
