"""The PII scan gate's findings: what was found where, with a redacted sample.

Detection itself lives in `detect.py`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from provisioning.errors import InvalidInput


def allow_patterns(allow: Sequence[str]) -> list[re.Pattern[str]]:
    """The `--allow` patterns: values the scan may let through."""
    try:
        return [re.compile(pattern) for pattern in allow]
    except re.error as exc:
        raise InvalidInput(f"an --allow pattern is not a valid regular expression: {exc}.") from exc


def redact(value: str) -> str:
    """Show the shape and the last few characters, never the whole value."""
    keep = 4 if len(value) > 8 else 2
    head = "".join("*" if ch.isalnum() else ch for ch in value[:-keep])
    return head + value[-keep:]


@dataclass
class Finding:
    table: str
    column: str
    kind: str
    count: int
    sample: str

    def line(self) -> str:
        place = f"{self.table}.{self.column}" if self.column else self.table
        if self.table == "schema":
            place = f"the schema ({self.column})"
        return f"{place}: {self.count} {self.kind} value(s), e.g. {self.sample}"


class Findings:
    """Accumulates hits per (table, column, kind), with one redacted sample each."""

    def __init__(self, allow: list[re.Pattern[str]]) -> None:
        self.allow = allow
        self.hits: dict[tuple[str, str, str], Finding] = {}

    def allowed(self, value: str) -> bool:
        return any(pattern.fullmatch(value) for pattern in self.allow)

    def add(self, table: str, column: str, kind: str, value: str) -> None:
        if self.allowed(value):
            return
        key = (table, column, kind)
        found = self.hits.get(key)
        if found is None:
            self.hits[key] = Finding(table, column, kind, 1, redact(value))
        else:
            found.count += 1

    def merge(self, other: Findings) -> None:
        for key, finding in other.hits.items():
            if key in self.hits:
                self.hits[key].count += finding.count
            else:
                self.hits[key] = finding

    def report(self) -> list[Finding]:
        return sorted(self.hits.values(), key=lambda f: (f.table, f.column, f.kind))
