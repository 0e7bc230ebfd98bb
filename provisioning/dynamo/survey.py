"""A DynamoDB source against its policy, by sampling items: `policy check` lists what the
policy misses, `policy init` drafts one (a person reviews it)."""

from __future__ import annotations

import asyncio
import contextlib
import re
from decimal import Decimal
from itertools import islice
from pathlib import Path
from typing import Any

import yaml
from boto3.dynamodb.types import Binary, TypeDeserializer

from provisioning.dynamo.policy import DynamoPolicy, load_dynamo_policy
from provisioning.dynamo.source import DynamoSource, dynamo_client, list_tables, parse_source, scan
from provisioning.shrink.classify import by_name, by_values, snake
from provisioning.shrink.detect import PiiDetector

SAMPLE = 200  # items read per table
_from_dynamo = TypeDeserializer()


def sample(
    client: Any, source: DynamoSource, table: str, count: int = SAMPLE
) -> list[dict[str, Any]]:
    with contextlib.closing(scan(client, source.prefix + table, segments=1)) as items:
        return list(islice(items, count))  # closed at once: its reading thread stops


def rule_problems(policy: DynamoPolicy) -> list[str]:
    """Sensitive attributes the policy classifies but does not mask."""
    return [
        f"{table}.{name} is {spec.classification} but has no rule"
        for table, table_spec in policy.tables.items()
        if table_spec.action != "drop"
        for name, spec in table_spec.attributes.items()
        if spec.classification in ("pii", "secret") and spec.rule is None
    ]


def check_dynamo_policy(client: Any, source: DynamoSource, policy: DynamoPolicy) -> list[str]:
    """Every table under the prefix the policy does not name (and the reverse), every sampled
    attribute it does not classify, every sensitive attribute without a rule."""
    names = list_tables(client, source)
    problems = [f"table {n} is not in the policy" for n in names if n not in policy.tables]
    problems += [f"table {n} is not in the source" for n in policy.tables if n not in names]
    for name in names:
        spec = policy.tables.get(name)
        if spec is None or spec.action == "drop":
            continue
        seen = {attribute for item in sample(client, source, name) for attribute in item}
        problems += [f"{name}.{a} is not classified" for a in sorted(seen - spec.attributes.keys())]
    return problems + rule_problems(policy)


async def check_dynamo_source(url: str, policy_file: Path) -> list[str]:
    """`devdb policy check` on a DynamoDB source."""
    source = parse_source(url)
    policy = load_dynamo_policy(policy_file)
    return await asyncio.to_thread(check_dynamo_policy, dynamo_client(source), source, policy)


async def draft_dynamo_source(url: str, detector: PiiDetector) -> dict[str, Any]:
    """`devdb policy init` on a DynamoDB source."""
    source = parse_source(url)
    return await asyncio.to_thread(draft_dynamo_policy, dynamo_client(source), source, detector)


def draft_dynamo_policy(client: Any, source: DynamoSource, detector: PiiDetector) -> dict[str, Any]:
    """A policy for every table under the prefix, from attribute names and sampled values."""
    tables: dict[str, Any] = {}
    for name in list_tables(client, source):
        items = sample(client, source, name)
        attributes: dict[str, Any] = {}
        for attribute in sorted({a for item in items for a in item}):
            values = [_from_dynamo.deserialize(i[attribute]) for i in items if attribute in i]
            seen = [text for value in values for text in texts(value)][:SAMPLE]
            guess = by_name(snake(attribute)) or by_values(seen, detector)
            if guess is not None and any(isinstance(v, dict | list) for v in values):
                guess = {"class": guess.get("class", "pii"), "rule": "hash"}
            attributes[attribute] = guess or "internal"
        tables[name] = {"action": "keep", "attributes": attributes}
    return {"version": 1, "engine": "dynamodb", "tables": tables}


def texts(value: Any) -> list[str]:
    """Every text under a value, to scan: strings, numbers, a map's keys, and the printable
    runs of binary values (an email in a blob)."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, Decimal | int) and not isinstance(value, bool):
        return [str(value)]
    if isinstance(value, Binary):
        value = value.value
    if isinstance(value, bytes | bytearray):
        return _PRINTABLE.findall(bytes(value).decode("latin-1"))
    if isinstance(value, dict):
        return [text for k, inner in value.items() for text in [str(k), *texts(inner)]]
    if isinstance(value, list | set | frozenset):
        return [text for inner in value for text in texts(inner)]
    return []


_PRINTABLE = re.compile(r"[\x20-\x7e]{6,}")


def render_dynamo_policy(body: dict[str, Any]) -> str:
    header = (
        "# devdb masking policy for a DynamoDB source, drafted by `devdb policy init` from\n"
        "# sampled items: review every pii and secret attribute (a map or list found to hold\n"
        "# personal data is hashed whole: give it a json rule with paths instead), then set\n"
        "# each table's action (keep, drop or subset with where, follow or window).\n"
    )
    return header + str(yaml.safe_dump(body, sort_keys=False, default_flow_style=None, width=100))
