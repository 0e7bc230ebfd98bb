"""What to do with each data file of a dump, and the proof that the result restores.

A data file holds the rows of one relation: a table, or a partition or inheritance child of
one. Its plan follows the policy table it belongs to, column by column and by name, since a
partition's columns need not stand in its parent's order.

Before anything is published, every foreign key the subset or the masks could have broken
(declared on a table or on one of its partitions, or listed under `references`) is checked
on the output itself: each kept child's values must be among its parent's kept values.
"""

from __future__ import annotations

from pathlib import Path

from provisioning.shrink.catalog import ARRAY, BYTES, OTHER, Catalog, ForeignKey, Table
from provisioning.shrink.contents import DataFile
from provisioning.shrink.copytext import decode
from provisioning.shrink.policy import ColumnPolicy, Policy
from provisioning.shrink.rewrite import Refs, TablePlan
from provisioning.shrink.scan import redact
from provisioning.shrink.subset import Selection

Request = tuple[int, str, tuple[str, ...]]  # (check, "child" | "parent", columns)


def looked_for(spec: ColumnPolicy) -> bool:
    """Whether a pii column's source values are searched for in the rest of the output."""
    return spec.rule is not None and spec.rule.identifying


def closure_checks(policy: Policy, catalog: Catalog) -> list[ForeignKey]:
    """The foreign keys the subset or a mask could break: those worth checking."""
    checks = []
    for fk in policy.foreign_keys(catalog):
        child, parent = policy.tables.get(fk.table), policy.tables.get(fk.parent)
        if child is None or parent is None or "drop" in (child.action, parent.action):
            continue
        masked = any(
            (spec := side.columns.get(c)) is not None and spec.masked
            for side, columns in ((child, fk.columns), (parent, fk.parent_columns))
            for c in columns
        )
        if masked or "subset" in (child.action, parent.action):
            checks.append(fk)
    return checks


def requests_for(checks: list[ForeignKey], file: DataFile) -> list[Request]:
    """The column sets a data file must report for the closure check."""
    wanted: list[Request] = []
    for index, fk in enumerate(checks):
        if fk.table == file.table and file.member.bound_by(fk):
            wanted.append((index, "child", fk.columns))
        if fk.parent == file.table:
            wanted.append((index, "parent", fk.parent_columns))
    return [r for r in wanted if set(r[2]) <= set(file.member.columns)]


def plan_file(
    file: DataFile,
    table: Table,
    policy: Policy,
    dump: Path,
    selection: Selection,
    requests: list[Request],
    level: int,
) -> TablePlan:
    entry = policy.tables[table.name]
    member = file.member
    masks = {}
    unique = set()
    arrays = set()
    scans: dict[int, str] = {}
    pii: list[int] = []
    for index, name in enumerate(member.columns):
        column = table.column(name)
        spec = entry.columns[name]
        assert column is not None
        if spec.masked and spec.rule is not None:
            masks[index] = spec.rule
            if column.unique:
                unique.add(index)
            if column.kind == ARRAY and spec.rule.name not in ("null", "constant"):
                arrays.add(index)
        if spec.classification in ("pii", "secret") and column.kind != BYTES and looked_for(spec):
            pii.append(index)
        if column.kind != OTHER and not (spec.rule is not None and spec.rule.generates):
            scans[index] = column.kind
    keep = selection.keys.get(table.name)
    return TablePlan(
        name=table.name,
        relation=member.name,
        path=dump / file.name,
        columns=member.columns,
        keep=keep,
        key_positions=tuple(member.columns.index(c) for c in table.key) if keep is not None else (),
        masks=masks,
        unique_masked=frozenset(unique),
        arrays=frozenset(arrays),
        scans=scans,
        pii_positions=tuple(pii),
        refs=tuple(tuple(member.columns.index(c) for c in columns) for _, _, columns in requests),
        level=level,
    )


class Closure:
    """Foreign-key values seen in the output, child side and parent side."""

    def __init__(self, checks: list[ForeignKey]) -> None:
        self.checks = checks
        self.sides: dict[str, list[set[tuple[str, ...] | str]]] = {
            side: [set() for _ in checks] for side in ("child", "parent")
        }

    def add(self, requests: list[Request], refs: Refs) -> None:
        for (index, side, _), values in zip(requests, refs, strict=True):
            self.sides[side][index] |= values

    def problems(self) -> list[str]:
        found = []
        for index, fk in enumerate(self.checks):
            missing = self.sides["child"][index] - self.sides["parent"][index]
            if missing:
                sample = min(missing)
                shown = ", ".join(
                    redact(decode(v) or "")
                    for v in ((sample,) if isinstance(sample, str) else sample)
                )
                where = f" (declared on {fk.relation})" if fk.relation not in ("", fk.table) else ""
                found.append(
                    f"{len(missing)} value(s) of {fk.table}({', '.join(fk.columns)}){where} "
                    f"have no kept row in {fk.parent}({', '.join(fk.parent_columns)}), "
                    f"e.g. ({shown})"
                )
        return found
