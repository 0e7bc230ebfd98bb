"""Scanning what a dump holds besides table data: its schema text and its large objects.

The schema text is what pg_restore would run: comments, column defaults, view and function
bodies, check constraints. Personal data typed into any of them ships with every snapshot.
"""

from __future__ import annotations

import gzip
import re
from pathlib import Path

from provisioning.shrink.copytext import encode
from provisioning.shrink.detect import PiiDetector
from provisioning.shrink.fields import printable_runs
from provisioning.shrink.scan import Findings

_HEADER = re.compile(r"^-- Name: (.*?); Type: (.*?); Schema: (.*?);", re.MULTILINE)
_LITERAL = re.compile(r"'((?:[^']|'')*)'")


def scan_schema(sql: str, pii_values: set[str], findings: Findings, detector: PiiDetector) -> None:
    """Look for personal data in the schema text, entry by entry."""
    headers = list(_HEADER.finditer(sql))
    for index, header in enumerate(headers):
        end = headers[index + 1].start() if index + 1 < len(headers) else len(sql)
        name, kind, schema = header.groups()
        qualified = name if schema == "-" else f"{schema}.{name}"
        if kind == "COMMENT" and " " in name:  # "TABLE tenants": what it is on
            what, _, target = name.partition(" ")
            qualified = f"ON {what} {target if schema == '-' else f'{schema}.{target}'}"
        place = f"{kind} {qualified}"
        text = sql[header.end() : end]
        for found, value in detector.find(text):
            findings.add("schema", place, found, value)
        for literal in _LITERAL.findall(text):
            value = literal.replace("''", "'")
            if encode(value) in pii_values:
                findings.add("schema", place, "value copied from a pii column", value)


def scan_large_objects(
    dump: Path, names: tuple[str, ...], findings: Findings, detector: PiiDetector
) -> None:
    """Look for personal data in the text inside each large object."""
    for name in names:
        path = dump / name
        opener = gzip.open if name.endswith(".gz") else open
        with opener(path, "rb") as handle:
            data = handle.read()
        oid = name.removeprefix("blob_").split(".", 1)[0]
        for found, value in detector.find("\n".join(printable_runs(data))):
            findings.add(f"large object {oid}", "", found, value)
