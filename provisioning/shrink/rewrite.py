"""Streaming pg_dump's table data through the policy: keep the chosen rows, mask, scan.

Each table's data file (COPY text) is read once and written once, line by line, so memory
stays flat however large the table is. Tables with nothing to filter or mask are only read,
for the scan.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from provisioning.errors import ProvisioningFailed
from provisioning.shrink.copytext import END, decode, encode
from provisioning.shrink.rules import Mask, digest
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
    masks: dict[int, Mask] = field(default_factory=dict)
    unique_masked: frozenset[int] = frozenset()
    pattern_positions: tuple[int, ...] = ()  # text kept as it was: scanned for patterns
    exact_positions: tuple[int, ...] = ()  # checked against the source's pii values
    pii_positions: tuple[int, ...] = ()  # source pii/secret columns

    @property
    def rewrites(self) -> bool:
        return self.keep is not None or bool(self.masks)


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


def process(plan: TablePlan, salt: bytes, pii_values: set[str], findings: Findings) -> int:
    """Filter, mask and scan one table's data file in place; return the rows kept."""
    caches: dict[int, dict[str, str]] = {p: {} for p in plan.masks}
    seen: dict[int, set[str]] = {p: set() for p in plan.unique_masked}
    blocks: dict[int, list[str]] = {p: [] for p in plan.pattern_positions}
    kept = 0
    output = None
    target = plan.path.with_name(plan.path.name + ".masked")
    if plan.rewrites:
        output = open(target, "w", encoding="utf-8", newline="")  # noqa: SIM115
    try:
        with open(plan.path, encoding="utf-8", newline="") as source:
            for line in source:
                if line.startswith(END):
                    if output:
                        output.write(line)
                        output.writelines(source)
                    break
                fields = line[:-1].split("\t")
                if plan.keep is not None:
                    key = tuple(decode(fields[p]) or "" for p in plan.key_positions)
                    if key not in plan.keep:
                        continue
                for position, mask in plan.masks.items():
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
    return kept


def _scan(plan: TablePlan, position: int, block: list[str], findings: Findings) -> None:
    if block:
        for kind, value in find_pii("\n".join(block)):
            findings.add(plan.name, plan.columns[position], kind, value)
        block.clear()
