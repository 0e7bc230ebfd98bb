"""The classification policy of a DynamoDB source: what to keep of every table and how to
mask every attribute. Tables are named without the source's prefix.

version: 1
engine: dynamodb
tenant: {table: Accounts, attribute: tenant_id}     # what `shrink --tenant ID` filters on
tables:
  Accounts:
    action: subset                                  # keep (default) | drop | subset
    where: {sandbox: true}                          # the items to start from (all must match)
    attributes:
      pk: internal                                  # public | internal | pii | secret
      email: {class: pii, rule: fake, kind: email}
      profile: {class: pii, rule: json, paths: {"$.phones[*]": {rule: fake, kind: phone}}}
  Events:
    action: subset
    follow: {attribute: account, table: Accounts, key: id}  # `account` is a kept item's id
    window: {attribute: created_at, last: 30d}      # ISO-8601 times or epoch seconds

The masking rules are those of PostgreSQL sources (`provisioning/shrink/rules.py`): keyed by
the same salt, so a value masks alike in a table and in a DynamoDB item. A `json` rule masks
inside maps and lists.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import yaml

from provisioning.durations import parse_duration
from provisioning.errors import InvalidInput
from provisioning.shrink.policy import CLASSES
from provisioning.shrink.rules import RULES, Rule, build_rule

ACTIONS = ("keep", "drop", "subset")


@dataclass(frozen=True, kw_only=True)
class AttributePolicy:
    classification: str
    rule: Rule | None = None


@dataclass(frozen=True, kw_only=True)
class Follow:
    attribute: str
    table: str
    key: str | None = None  # the attribute of `table` it names; default its partition key


@dataclass(frozen=True, kw_only=True)
class Window:
    attribute: str
    last: timedelta


@dataclass(frozen=True, kw_only=True)
class TablePolicy:
    action: str = "keep"
    where: dict[str, Any] = field(default_factory=dict)
    follow: Follow | None = None
    window: Window | None = None
    attributes: dict[str, AttributePolicy] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class DynamoPolicy:
    tables: dict[str, TablePolicy]
    tenant: tuple[str, str] | None = None  # (table, attribute)
    digest: str = ""


def is_dynamo_policy(body: Any) -> bool:
    return isinstance(body, dict) and body.get("engine") == "dynamodb"


def load_dynamo_policy(path: Path) -> DynamoPolicy:
    try:
        text = path.read_text()
    except OSError as exc:
        raise InvalidInput(f"the policy {path} cannot be read: {exc.strerror}.") from exc
    except UnicodeDecodeError:
        raise InvalidInput(f"the policy {path} is not UTF-8 text.") from None
    try:
        body = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise InvalidInput(f"the policy {path} is not valid YAML: {exc}.") from exc
    policy = parse_dynamo_policy(body, where=str(path))
    digest = hashlib.sha256(text.encode()).hexdigest()
    return DynamoPolicy(tables=policy.tables, tenant=policy.tenant, digest=digest)


def parse_dynamo_policy(body: Any, *, where: str = "the policy") -> DynamoPolicy:
    """Check a policy's shape; every mistake is one sentence naming its place."""
    if not is_dynamo_policy(body):
        raise InvalidInput(f"{where} is not a DynamoDB policy (it needs engine: dynamodb).")
    _known(where, body, ("version", "engine", "tenant", "tables"))
    raw_tables = body.get("tables")
    if not isinstance(raw_tables, dict) or not raw_tables:
        raise InvalidInput(f"{where}: tables must map each table to what to keep of it.")
    tables = {
        str(name): _table(f"{where}: {name}", spec or {}) for name, spec in raw_tables.items()
    }
    for name, table in tables.items():
        if table.follow and table.follow.table not in tables:
            raise InvalidInput(
                f"{where}: {name} follows {table.follow.table!r}, which the policy does not name."
            )
        if table.follow and tables[table.follow.table].action == "drop":
            raise InvalidInput(
                f"{where}: {name} follows {table.follow.table!r}, which the policy drops."
            )
    tenant = None
    if (raw := body.get("tenant")) is not None:
        if not isinstance(raw, dict) or {"table", "attribute"} - raw.keys():
            raise InvalidInput(f"{where}: tenant must be {{table: T, attribute: A}}.")
        tenant = (str(raw["table"]), str(raw["attribute"]))
        if tenant[0] not in tables:
            raise InvalidInput(f"{where}: the tenant table {tenant[0]!r} is not in the policy.")
    return DynamoPolicy(tables=tables, tenant=tenant)


def _table(where: str, spec: Any) -> TablePolicy:
    if not isinstance(spec, dict):
        raise InvalidInput(f"{where}: give action and attributes.")
    _known(where, spec, ("action", "where", "follow", "window", "attributes"))
    action = spec.get("action", "keep")
    if action not in ACTIONS:
        raise InvalidInput(f"{where}: action must be one of {', '.join(ACTIONS)}, not {action!r}.")
    match_on = spec.get("where") or {}
    if not isinstance(match_on, dict):
        raise InvalidInput(f"{where}: where maps attributes to the values to keep.")
    follow = window = None
    if (raw := spec.get("follow")) is not None:
        if not isinstance(raw, dict) or {"attribute", "table"} - raw.keys():
            raise InvalidInput(f"{where}: follow must be {{attribute: A, table: T}}.")
        _known(f"{where}: follow", raw, ("attribute", "table", "key"))
        key = raw.get("key")
        follow = Follow(
            attribute=str(raw["attribute"]),
            table=str(raw["table"]),
            key=str(key) if key is not None else None,
        )
    if (raw := spec.get("window")) is not None:
        if not isinstance(raw, dict) or {"attribute", "last"} - raw.keys():
            raise InvalidInput(f"{where}: window must be {{attribute: A, last: 30d}}.")
        _known(f"{where}: window", raw, ("attribute", "last"))
        try:
            last = parse_duration(str(raw["last"]))
        except InvalidInput as exc:
            raise InvalidInput(f"{where}: window: {exc}") from None
        window = Window(attribute=str(raw["attribute"]), last=last)
    if action == "subset" and not (match_on or follow or window):
        raise InvalidInput(f"{where}: a subset needs where, follow or window.")
    raw_attributes = spec.get("attributes") or {}
    if not isinstance(raw_attributes, dict):
        raise InvalidInput(f"{where}: attributes must map each attribute to its class.")
    attributes = {
        str(name): _attribute(f"{where}.{name}", value) for name, value in raw_attributes.items()
    }
    return TablePolicy(
        action=action, where=match_on, follow=follow, window=window, attributes=attributes
    )


def _attribute(where: str, spec: Any) -> AttributePolicy:
    if isinstance(spec, str):
        spec = {"class": spec}
    if not isinstance(spec, dict) or spec.get("class") not in CLASSES:
        raise InvalidInput(f"{where}: class must be one of {', '.join(CLASSES)}.")
    params = {k: v for k, v in spec.items() if k not in ("class", "rule")}
    rule = None
    if "rule" in spec:
        if not isinstance(spec["rule"], str) or spec["rule"] not in RULES:
            raise InvalidInput(f"{where}: unknown rule {str(spec['rule'])[:40]!r}.")
        try:
            rule = build_rule(spec["rule"], params)
        except (TypeError, ValueError, re.error) as exc:
            raise InvalidInput(f"{where}: {exc}.") from exc
    return AttributePolicy(classification=str(spec["class"]), rule=rule)


def _known(where: str, spec: dict[str, Any], keys: tuple[str, ...]) -> None:
    """A key the policy format does not have is a mistake (a typo would keep more data)."""
    unknown = sorted(str(key) for key in spec if key not in keys)
    if unknown:
        raise InvalidInput(
            f"{where}: {unknown[0][:40]!r} is not part of the policy format "
            f"(use {', '.join(keys)})."
        )
