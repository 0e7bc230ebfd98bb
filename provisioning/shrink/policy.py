"""The classification policy: what to keep of every table and how to mask every column.

version: 1
tenant: {table: public.tenants, column: id}        # what `shrink --tenant ID` filters on
tables:
  public.tenants:
    action: subset                                 # keep (default) | drop | subset
    root: true                                     # subset starts from rows matching `where`
    where: "is_sandbox"
    columns:
      id: internal                                 # public | internal | pii | secret
      name: {class: pii, rule: fake, kind: company}
  public.events:
    action: subset
    where: "occurred_at > now() - interval '7 days'"   # also filters rows reached by keys
    follow_children: false                         # rows kept here pull in no child rows
references:                                        # foreign keys the schema does not declare
  - {from: "public.events(contact_id)", to: "public.contacts(id)"}
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from provisioning.errors import InvalidInput, Next, PolicyViolation
from provisioning.shrink.catalog import JSON, Catalog, ForeignKey
from provisioning.shrink.rules import RULES, Rule, build_rule

CLASSES = ("public", "internal", "pii", "secret")
ACTIONS = ("keep", "drop", "subset")
_REFERENCE = re.compile(r"^\s*([^()]+?)\s*\(([^()]+)\)\s*$")


@dataclass(frozen=True, kw_only=True)
class ColumnPolicy:
    classification: str
    rule: Rule | None = None

    @property
    def masked(self) -> bool:
        return self.rule is not None and self.rule.name != "keep"


@dataclass(frozen=True, kw_only=True)
class TablePolicy:
    action: str = "keep"
    root: bool = False
    where: str | None = None
    follow_children: bool = True
    columns: dict[str, ColumnPolicy] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class Policy:
    tables: dict[str, TablePolicy]
    references: tuple[ForeignKey, ...] = ()
    tenant_table: str | None = None
    tenant_column: str | None = None
    large_objects: str = "drop"
    digest: str = ""

    def foreign_keys(self, catalog: Catalog) -> list[ForeignKey]:
        return [*catalog.foreign_keys, *self.references]


class PolicyError(InvalidInput):
    """The policy file is malformed; the message names the place."""


def _fail(where: str, problem: str) -> PolicyError:
    return PolicyError(f"policy {where}: {problem}")


def column_policy(table: str, name: str, raw: Any) -> ColumnPolicy:
    where = f"{table}.{name}"
    if isinstance(raw, str):
        raw = {"class": raw}
    if not isinstance(raw, dict):
        raise _fail(where, "give a class name or a mapping with `class` and `rule`.")
    params = dict(raw)
    classification = params.pop("class", None)
    if classification not in CLASSES:
        raise _fail(where, f"class must be one of {', '.join(CLASSES)}, not {classification!r}.")
    rule_name = params.pop("rule", None)
    if rule_name is None:
        if params:
            raise _fail(where, f"{', '.join(params)} given without a rule.")
        return ColumnPolicy(classification=classification)
    if rule_name not in RULES:
        raise _fail(where, f"unknown rule {rule_name!r}; rules: {', '.join(sorted(RULES))}.")
    try:
        rule = build_rule(rule_name, params)
    except (TypeError, ValueError, re.error) as exc:
        raise _fail(where, f"rule {rule_name}: {exc}") from exc
    return ColumnPolicy(classification=classification, rule=rule)


def _reference(index: int, raw: Any) -> ForeignKey:
    where = f"references[{index}]"
    if not isinstance(raw, dict) or set(raw) != {"from", "to"}:
        raise _fail(where, "write {from: 'schema.table(col)', to: 'schema.table(col)'}.")
    ends = []
    for key in ("from", "to"):
        match = _REFERENCE.match(str(raw[key]))
        if not match:
            raise _fail(where, f"{key} must look like 'schema.table(column, ...)'.")
        ends.append((match.group(1), tuple(c.strip() for c in match.group(2).split(","))))
    (table, cols), (parent, parent_cols) = ends
    if len(cols) != len(parent_cols):
        raise _fail(where, "both ends need the same number of columns.")
    return ForeignKey(
        table=table, columns=cols, parent=parent, parent_columns=parent_cols, declared=False
    )


def parse_policy(text: str) -> Policy:
    """Parse and validate a policy; `PolicyError` names the first problem."""
    try:
        body = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise PolicyError(f"the policy is not valid YAML: {exc}") from exc
    if not isinstance(body, dict) or not isinstance(body.get("tables"), dict):
        raise PolicyError("the policy needs a `tables` mapping.")
    if body.get("version", 1) != 1:
        raise PolicyError(f"policy version {body.get('version')!r} is not supported (use 1).")
    tables: dict[str, TablePolicy] = {}
    for name, raw in body["tables"].items():
        raw = raw or {}
        if not isinstance(raw, dict):
            raise _fail(str(name), "must be a mapping.")
        unknown = set(raw) - {"action", "root", "where", "follow_children", "columns"}
        if unknown:
            raise _fail(str(name), f"unknown keys {', '.join(sorted(unknown))}.")
        action = raw.get("action", "keep")
        if action not in ACTIONS:
            raise _fail(str(name), f"action must be keep, drop or subset, not {action!r}.")
        if (raw.get("root") or raw.get("where")) and action != "subset":
            raise _fail(str(name), "root and where need action: subset.")
        columns = raw.get("columns") or {}
        if not isinstance(columns, dict):
            raise _fail(str(name), "columns must be a mapping.")
        tables[str(name)] = TablePolicy(
            action=action,
            root=bool(raw.get("root", False)),
            where=raw.get("where"),
            follow_children=bool(raw.get("follow_children", True)),
            columns={str(c): column_policy(str(name), str(c), spec) for c, spec in columns.items()},
        )
    references = tuple(_reference(i, r) for i, r in enumerate(body.get("references") or []))
    tenant = body.get("tenant") or {}
    large_objects = body.get("large_objects", "drop")
    if large_objects not in ("drop", "keep"):
        raise PolicyError(f"large_objects must be drop or keep, not {large_objects!r}.")
    unknown = set(body) - {"version", "tables", "references", "tenant", "large_objects"}
    if unknown:
        raise PolicyError(f"the policy has unknown top-level keys: {', '.join(sorted(unknown))}.")
    return Policy(
        large_objects=large_objects,
        tables=tables,
        references=references,
        tenant_table=tenant.get("table"),
        tenant_column=tenant.get("column"),
        digest=hashlib.sha256(text.encode()).hexdigest(),
    )


def load_policy(path: Path) -> Policy:
    try:
        return parse_policy(path.read_text())
    except OSError as exc:
        raise PolicyError(f"the policy file {path} cannot be read: {exc.strerror}.") from exc


def check_policy(policy: Policy, catalog: Catalog) -> list[str]:
    """Every way the policy and the database disagree, one line each; empty when they agree."""
    problems: list[str] = []
    for name, table in sorted(catalog.tables.items()):
        entry = policy.tables.get(name)
        if entry is None:
            problems.append(f"table {name} is not in the policy (schema drift)")
            continue
        for column in table.columns:
            spec = entry.columns.get(column.name)
            if spec is None:
                problems.append(f"column {name}.{column.name} is not classified")
            elif spec.classification in ("pii", "secret") and spec.rule is None:
                problems.append(
                    f"column {name}.{column.name} is {spec.classification} but has no masking rule"
                )
            elif spec.rule is not None and spec.rule.name == "json" and column.kind != JSON:
                problems.append(
                    f"column {name}.{column.name} has a json rule but is {column.type}, "
                    "not json or jsonb"
                )
        for column_name in sorted(set(entry.columns) - {c.name for c in table.columns}):
            problems.append(f"policy names column {name}.{column_name}, which does not exist")
        if entry.action == "subset" and not table.primary_key:
            needed = sorted(
                {
                    fk.table
                    for fk in policy.foreign_keys(catalog)
                    if fk.parent == name
                    and policy.tables.get(fk.table, TablePolicy()).action != "drop"
                }
            )
            if needed:
                problems.append(
                    f"table {name} has no primary key and rows of {', '.join(needed)} "
                    "reference it, so it can only be kept or dropped"
                )
    for name in sorted(set(policy.tables) - set(catalog.tables)):
        owner = catalog.belongs_to.get(name)
        if owner:
            problems.append(
                f"policy names {name}, which belongs to {owner} (a partition or inheritance "
                f"child): name {owner} instead, and its rules apply to all of it"
            )
        else:
            problems.append(f"policy names table {name}, which does not exist")
    for fk in policy.references:
        for end, columns in ((fk.table, fk.columns), (fk.parent, fk.parent_columns)):
            found = catalog.tables.get(end)
            if found is None or any(found.column(c) is None for c in columns):
                problems.append(
                    f"reference {fk.table}{fk.columns} → {fk.parent} names a "
                    "table or column that does not exist"
                )
    if policy.tenant_table and policy.tenant_table not in catalog.tables:
        problems.append(f"tenant table {policy.tenant_table} does not exist")
    for fk in policy.foreign_keys(catalog):
        child = policy.tables.get(fk.table)
        parent = policy.tables.get(fk.parent)
        if child and parent and child.action != "drop" and parent.action == "drop":
            problems.append(f"{fk.table} keeps rows that reference {fk.parent}, which is dropped")
    return problems


def mismatch(problems: list[str]) -> PolicyViolation:
    """The refusal of a shrink whose policy does not match its source."""
    return PolicyViolation(
        f"the policy does not match the source ({len(problems)} problem(s)): {problems[0]}; run ",
        Next("policy check"),
        " for the list.",
        problems=problems,
    )
