"""Streaming pg_dump's table data through the policy: keep the chosen rows, mask, scan.

Each table's data file (COPY text) is read once and written once, line by line, so memory
stays flat however large the table is. Tables with nothing to filter or mask are only read,
for the scan.
"""

from __future__ import annotations

import itertools
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from provisioning.errors import ProvisioningFailed
from provisioning.shrink.copytext import END, decode, encode
from provisioning.shrink.rules import Rule, digest
from provisioning.shrink.scan import Findings, find_pii

_SCAN_EVERY = 4000  # lines per block handed to the regex engine
_CACHE_LIMIT = 200_000


@dataclass(kw_only=True)
class TablePlan:
    name: str
    path: Path
    columns: tuple[str, ...]
    keep: set[tuple[str, ...]] | None = None  # None: every row
    key_positions: tuple[int, ...] = ()
    masks: dict[int, Rule] = field(default_factory=dict)
    unique_masked: frozenset[int] = frozenset()
    pattern_positions: tuple[int, ...] = ()  # text kept as it was: scanned for patterns
    exact_positions: tuple[int, ...] = ()  # checked against the source's pii values
    pii_positions: tuple[int, ...] = ()  # source pii/secret columns
    span: tuple[int, int] | None = None  # a byte range of the file (scan-only plans)

    @property
    def rewrites(self) -> bool:
        return self.keep is not None or bool(self.masks)


_BLOCK = 1 << 23


def lines(path: Path, span: tuple[int, int] | None = None) -> Iterator[str]:
    """The lines (without their newline) of a file or of a byte range that starts and ends
    on line boundaries. Only "\\n" ends a line: COPY escapes the others it writes."""
    start, end = span or (0, path.stat().st_size)
    with open(path, "rb") as handle:
        handle.seek(start)
        position = start
        rest = b""
        while position < end:
            chunk = handle.read(min(_BLOCK, end - position))
            if not chunk:
                break
            position += len(chunk)
            data = rest + chunk
            cut = len(data) if position >= end else data.rfind(b"\n") + 1
            rest = data[cut:]
            block = data[:cut].decode()
            yield from block[:-1].split("\n") if block.endswith("\n") else block.split("\n")
        if rest:
            yield from rest.decode().split("\n")


def split_spans(path: Path, parts: int) -> list[tuple[int, int]]:
    """Cut a file into about `parts` byte ranges that begin and end at line boundaries."""
    size = path.stat().st_size
    cuts = [0]
    with open(path, "rb") as handle:
        for index in range(1, parts):
            handle.seek(max(cuts[-1], size * index // parts))
            handle.readline()
            cuts.append(min(size, handle.tell()))
    cuts.append(size)
    return [(a, b) for a, b in itertools.pairwise(cuts) if b > a]


def collect_pii_values(plan: TablePlan) -> set[str]:
    """The source's pii/secret values of one table, as COPY fields."""
    values: set[str] = set()
    with open(plan.path, encoding="utf-8", newline="") as source:
        for line in source:
            if line.startswith(END):
                break
            fields = line.rstrip("\n").split("\t")
            if (
                plan.keep is not None
                and tuple(decode(fields[p]) or "" for p in plan.key_positions) not in plan.keep
            ):
                continue
            values.update(fields[p] for p in plan.pii_positions)
    values.discard("\\N")
    values.discard("")
    return values


def process(
    plan: TablePlan, salt: bytes, pii_values: set[str], allow: list[re.Pattern[str]]
) -> tuple[int, Findings]:
    """Filter, mask and scan one table's data file in place; return the rows kept and what
    the scan found. Runs in a worker process, so it takes and returns only plain values."""
    findings = Findings(allow)
    masks = {
        position: rule.masker(unique=position in plan.unique_masked)
        for position, rule in plan.masks.items()
    }
    caches: dict[int, dict[str, str]] = {p: {} for p in plan.masks}
    seen: dict[int, set[str]] = {p: set() for p in plan.unique_masked}
    blocks: dict[int, list[str]] = {p: [] for p in plan.pattern_positions}
    kept = 0
    output = None
    target = plan.path.with_name(plan.path.name + ".masked")
    if plan.rewrites:
        output = open(target, "w", encoding="utf-8", newline="")  # noqa: SIM115
    try:
        source = lines(plan.path, plan.span)
        for line in source:
            if line.startswith(END):
                if output:
                    output.write(line + "\n")
                    output.writelines(rest + "\n" for rest in source)
                break
            fields = line.split("\t")
            if plan.keep is not None:
                key = tuple(decode(fields[p]) or "" for p in plan.key_positions)
                if key not in plan.keep:
                    continue
            for position, mask in masks.items():
                raw = fields[position]
                if raw == "\\N":
                    continue
                cache = caches[position]
                masked = cache.get(raw)
                if masked is None:
                    value = decode(raw) or ""
                    masked = encode(mask(value, digest(salt, value)))
                    if len(cache) > _CACHE_LIMIT:
                        cache.clear()
                    cache[raw] = masked
                if position in seen:
                    if masked in seen[position]:
                        raise ProvisioningFailed(
                            f"masking {plan.name}.{plan.columns[position]} made two "
                            "different values equal, but the column is unique: use a "
                            "rule that keeps values apart (fake with unique: true, or hash)."
                        )
                    seen[position].add(masked)
                fields[position] = masked
            for position in plan.exact_positions:
                if fields[position] in pii_values:
                    findings.add(
                        plan.name,
                        plan.columns[position],
                        "value copied from a pii column",
                        decode(fields[position]) or "",
                    )
            for position, block in blocks.items():
                if fields[position] != "\\N":
                    block.append(fields[position])
                    if len(block) >= _SCAN_EVERY:
                        _scan(plan, position, block, findings)
            kept += 1
            if output:
                output.write("\t".join(fields) + "\n")
        for position, block in blocks.items():
            _scan(plan, position, block, findings)
    except BaseException:
        if output:
            output.close()
            target.unlink(missing_ok=True)
        raise
    if output:
        output.close()
        os.replace(target, plan.path)
    return kept, findings


def _scan(plan: TablePlan, position: int, block: list[str], findings: Findings) -> None:
    if block:
        for kind, value in find_pii("\n".join(block)):
            findings.add(plan.name, plan.columns[position], kind, value)
        block.clear()
