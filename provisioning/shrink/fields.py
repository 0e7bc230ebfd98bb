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
JSON_STRING = re.compile(r'"([^"]*)"')
_BARE = re.compile(r"[^{},]+")
_PRINTABLE = re.compile(r"[^\x00-\x08\x0e-\x1f\x7f\ufffd]{6,}")


def _unescape(text: str) -> str:
    return re.sub(r"\\(.)", r"\1", text)


def read_text(field: str) -> tuple[str, list[str]]:
    return field, [field]


def read_array(field: str) -> tuple[str, list[str]]:
    """An array literal (`{a,"b c",NULL}`, nested or not): its elements one by one."""
    try:
        items = [encode(i) for i in _flatten(parse_array(decode(field) or ""))]
    except ValueError:
        return field, [field]
    return "\n".join(items), items


def _flatten(nodes: list[object]) -> list[str]:
    flat: list[str] = []
    for node in nodes:
        if isinstance(node, list):
            flat.extend(_flatten(node))
        elif node is not None:
            flat.append(str(node))
    return flat


def read_json(field: str) -> tuple[str, list[str]]:
    """Every string and number in the document, keys too, however it was escaped. With no
    escape in it, the text is read as it stands and its strings are cut out by one regex,
    which is several times faster than parsing; an escape (`\\u0040`) can hide a value, so
    then the document is parsed and walked."""
    if "\\\\" not in field:  # no escape in the document (COPY doubles its backslash)
        return field, JSON_STRING.findall(field)
    value = decode(field) or ""
    try:
        document = documents.loads(value)
    except ValueError:
        return field, [field]
    items = [encode(str(v)) for v in documents.scalars(document)]
    return "\n".join(items), [i for i in items if not i.lstrip("-").isdigit()]


def parse_array(text: str) -> list[object]:
    """An array literal as nested lists of strings (None for NULL)."""
    stack: list[list[object]] = [[]]
    position = 0
    while position < len(text):
        char = text[position]
        if char == "{":
            stack.append([])
            position += 1
        elif char == "}":
            done = stack.pop()
            stack[-1].append(done)
            position += 1
        elif char in ", \t\n":
            position += 1
        elif char == '"':
            match = _QUOTED.match(text, position)
            if not match:
                raise ValueError("an array literal has an unclosed quote")
            stack[-1].append(_unescape(match.group(1)))
            position = match.end()
        else:
            match = _BARE.match(text, position)
            assert match is not None
            item = match.group(0).strip()
            stack[-1].append(None if item.upper() == "NULL" else item)
            position = match.end()
    if len(stack) != 1 or len(stack[0]) != 1 or not isinstance(stack[0][0], list):
        raise ValueError("not an array literal")
    return stack[0][0]


def render_array(items: list[object]) -> str:
    """The literal for nested lists of strings, every element quoted."""
    parts = []
    for item in items:
        if isinstance(item, list):
            parts.append(render_array(item))
        elif item is None:
            parts.append("NULL")
        else:
            escaped = str(item).replace("\\", "\\\\").replace('"', '\\"')
            parts.append(f'"{escaped}"')
    return "{" + ",".join(parts) + "}"


def map_array(text: str, change: Callable[[str], str | None]) -> str:
    """Apply `change` to every element of an array literal (a dimension prefix is kept)."""
    prefix, brace, body = text.partition("{")
    items = parse_array(brace + body)

    def walk(nodes: list[object]) -> list[object]:
        return [
            walk(n) if isinstance(n, list) else None if n is None else change(str(n)) for n in nodes
        ]

    return prefix + render_array(walk(items))


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
