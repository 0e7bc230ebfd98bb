"""JSON documents: paths into them, their leaves, and writing them back.

A path names places in a document the way JSONPath does, in a small subset:

    $.contact.email      a member, then a member of it
    $."home address"     a member whose name needs quotes
    $.phones[*]          every element of an array      $.phones[0]   the first one
    $.*                  every member of an object      $..email      `email` at any depth

Numbers are read as `Decimal` and written back unchanged, so a document that is masked
loses no precision in the values it keeps.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

Segment = tuple[str, Any]  # ("member", name) | ("index", n) | ("all", None) | ("deep", name)
_SEGMENT = re.compile(
    r"""\.\.(?P<deep>[A-Za-z_][\w-]*|"(?:[^"\\]|\\.)*")"""
    r"""|\.(?P<member>[A-Za-z_$][\w$-]*|"(?:[^"\\]|\\.)*")"""
    r"""|\[(?P<index>\d+)\]|(?P<wild>\.\*|\[\*\])"""
    r"""|\[(?P<quoted>'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")\]"""
)


def _unquote(text: str) -> str:
    if text[0] in "'\"":
        return re.sub(r"\\(.)", r"\1", text[1:-1])
    return text


@dataclass(frozen=True)
class Path:
    text: str
    segments: tuple[Segment, ...]

    def __str__(self) -> str:
        return self.text


def parse_path(text: str) -> Path:
    """Parse `$.a.b[*]`; `ValueError` says what is wrong with a malformed path."""
    if not isinstance(text, str) or not text.startswith("$"):
        raise ValueError(f"a json path starts with $, as in $.contact.email, not {text!r}")
    segments: list[Segment] = []
    position = 1
    while position < len(text):
        match = _SEGMENT.match(text, position)
        if not match:
            raise ValueError(f"json path {text!r} is malformed at {text[position:]!r}")
        if match.group("deep"):
            segments.append(("deep", _unquote(match.group("deep"))))
        elif match.group("member"):
            segments.append(("member", _unquote(match.group("member"))))
        elif match.group("quoted"):
            segments.append(("member", _unquote(match.group("quoted"))))
        elif match.group("index"):
            segments.append(("index", int(match.group("index"))))
        else:
            segments.append(("all", None))
        position = match.end()
    if not segments:
        raise ValueError(f"json path {text!r} names the whole document; name a member in it")
    return Path(text, tuple(segments))


def loads(text: str) -> Any:
    return json.loads(text, parse_float=Decimal)


def dumps(value: Any) -> str:
    """Write a document as jsonb prints one (`{"a": 1, "b": [1, 2]}`), numbers unchanged."""
    if isinstance(value, dict):
        inner = ", ".join(
            f"{json.dumps(k, ensure_ascii=False)}: {dumps(v)}" for k, v in value.items()
        )
        return "{" + inner + "}"
    if isinstance(value, list):
        return "[" + ", ".join(dumps(v) for v in value) + "]"
    if isinstance(value, Decimal):
        return str(value)
    return json.dumps(value, ensure_ascii=False)


Visit = Callable[[Any], Any]


def _apply(node: Any, segments: tuple[Segment, ...], visit: Visit) -> Any:
    """`node` with `visit` applied to every place the segments reach; returns the new node."""
    if not segments:
        return visit(node)
    (kind, arg), rest = segments[0], segments[1:]
    if (kind == "member" and isinstance(node, dict) and arg in node) or (
        kind == "index" and isinstance(node, list) and arg < len(node)
    ):
        node[arg] = _apply(node[arg], rest, visit)
    elif kind == "all" and isinstance(node, dict):
        for key in node:
            node[key] = _apply(node[key], rest, visit)
    elif kind == "all" and isinstance(node, list):
        node[:] = [_apply(item, rest, visit) for item in node]
    elif kind == "all" and isinstance(node, set | frozenset):  # a DynamoDB set in a map
        return {_apply(item, rest, visit) for item in node}
    elif kind == "deep":
        if isinstance(node, dict):
            for key in node:
                if key == arg:
                    node[key] = _apply(node[key], rest, visit)
                else:
                    node[key] = _apply(node[key], segments, visit)
        elif isinstance(node, list):
            node[:] = [_apply(item, segments, visit) for item in node]
    return node


def apply(document: Any, path: Path, visit: Visit) -> Any:
    return _apply(document, path.segments, visit)


def scalars(node: Any) -> Iterator[Any]:
    """Every string and number in a document, object keys included."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield key
            yield from scalars(value)
    elif isinstance(node, list):
        for item in node:
            yield from scalars(item)
    elif isinstance(node, (str, Decimal)) or (isinstance(node, int) and not isinstance(node, bool)):
        yield node


def leaves(node: Any, prefix: str = "$") -> Iterator[tuple[str, Any]]:
    """(path, value) for every scalar, array positions written as [*]."""
    if isinstance(node, dict):
        for key, value in node.items():
            name = key if re.fullmatch(r"[A-Za-z_][\w-]*", key) else json.dumps(key)
            yield from leaves(value, f"{prefix}.{name}")
    elif isinstance(node, list):
        for item in node:
            yield from leaves(item, f"{prefix}[*]")
    elif node is not None and not isinstance(node, bool):
        yield prefix, node
