"""A dev-safe snapshot of a DynamoDB source: check → subset → mask → scan → publish.

Tables are read by parallel segmented scans, one table at a time, roots before the tables
that follow them. Every item kept is masked by the policy's rules (inside maps and lists
too), checked against DynamoDB's item size limit, scanned for personal data, and written as
one line of DynamoDB JSON (`{"Item": {...}}`, the shape of DynamoDB's own S3 exports) in a
gzip file per table. The manifest holds each table's keys, indexes and TTL attribute, item
counts and checksums. Nothing is published unless every item passed.
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import json
import re
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from functools import partial
from pathlib import Path
from typing import Any

from boto3.dynamodb.types import Binary, TypeDeserializer, TypeSerializer

from provisioning.dynamo.policy import DynamoPolicy, Follow, TablePolicy
from provisioning.dynamo.source import DynamoSource, TableShape, describe, list_tables, scan
from provisioning.errors import InvalidInput, Next, PolicyViolation
from provisioning.models import ProgressEvent
from provisioning.shrink.detect import PiiDetector
from provisioning.shrink.pipeline import Progress, ShrinkStep, apply_retention, salt_id
from provisioning.shrink.rules import mask_document, mask_leaves
from provisioning.shrink.scan import Findings
from provisioning.snapshots.base import SnapshotStore
from provisioning.snapshots.manifest import Manifest, manifest_for_dump

ENGINE = "dynamodb"
ITEM_LIMIT = 400 * 1024  # DynamoDB's largest item, in bytes
_from_dynamo = TypeDeserializer()
_to_dynamo = TypeSerializer()


@dataclass
class Outcome:
    """What one table gave: items kept, and the values of the attributes others follow."""

    items: int = 0
    values: dict[str, set[str]] = field(default_factory=dict)


async def shrink_dynamo(
    client: Any,
    source: DynamoSource,
    policy: DynamoPolicy,
    store: SnapshotStore,
    *,
    salt: bytes,
    tenant: str | None = None,
    allow: Sequence[str] = (),
    keep_last: int | None = None,
    progress: Progress | None = None,
    detector: PiiDetector | None = None,
    segments: int = 4,
) -> Manifest:
    """Build a dev-safe snapshot of the tables under `source` and publish it."""
    emit = progress or (lambda _: None)
    try:
        allowed = [re.compile(pattern) for pattern in allow]
    except re.error as exc:
        raise InvalidInput(f"an --allow pattern is not a valid regular expression: {exc}.") from exc
    if tenant is not None and policy.tenant is None:
        raise InvalidInput("the policy names no tenant attribute, so --tenant cannot be used.")
    emit(ProgressEvent(step=ShrinkStep.CHECK, message="checking the policy against the source"))
    names = await asyncio.to_thread(list_tables, client, source)
    problems = [f"table {n} is not in the policy" for n in names if n not in policy.tables]
    problems += [f"table {n} is not in the source" for n in policy.tables if n not in names]
    if problems:
        raise PolicyViolation(
            f"the policy does not match the source ({len(problems)} problem(s)): "
            f"{problems[0]}; run ",
            Next("policy check"),
            " for the list.",
            problems=problems,
        )
    kept = [n for n in _in_order(policy) if policy.tables[n].action != "drop"]
    shapes = {n: await asyncio.to_thread(describe, client, source, n) for n in kept}
    started = datetime.now(UTC)
    staged = await store.staging()
    published: Manifest | None = None
    try:
        data = staged / "dump"
        data.mkdir()
        findings = Findings(allowed)
        unclassified: set[str] = set()
        outcomes: dict[str, Outcome] = {}
        for number, name in enumerate(kept):
            emit(
                ProgressEvent(
                    step=ShrinkStep.MASK,
                    message=f"reading, masking and scanning {name}",
                    percent=100.0 * number / max(1, len(kept)),
                )
            )
            writer = TableWriter(
                shape=shapes[name],
                spec=policy.tables[name],
                policy=policy,
                salt=salt,
                tenant=tenant,
                detector=detector or PiiDetector(),
                findings=findings,
                unclassified=unclassified,
                outcomes=outcomes,
                followed_by=_followed(policy, shapes, name),
                shapes=shapes,
                since=started,
            )
            outcomes[name] = await asyncio.to_thread(
                writer.run, scan(client, source.prefix + name, segments=segments), data
            )
        if unclassified:
            listed = sorted(unclassified)
            raise PolicyViolation(
                f"{len(listed)} attribute(s) of the source are not in the policy, such as "
                f"{listed[0]}; run ",
                Next("policy check"),
                " for the list.",
                problems=[f"{place} is not classified" for place in listed],
            )
        if findings.hits:
            report = findings.report()
            raise PolicyViolation(
                f"the scan found personal data the policy lets through, in {len(report)} "
                f"place(s): {report[0].line()}. Nothing was published.",
                problems=[finding.line() for finding in report],
            )
        emit(ProgressEvent(step=ShrinkStep.PUBLISH, message="publishing"))
        manifest = await asyncio.to_thread(
            manifest_for_dump,
            data,
            source=source.url,
            pg_version="",
            rows={name: outcome.items for name, outcome in outcomes.items()},
            data_files={name: _file(name) for name in outcomes},
            extra={
                "kind": "shrink",
                "engine": ENGINE,
                "policy_sha256": policy.digest,
                "source_time": started.isoformat(),
                "tenant": tenant,
                "salt_id": salt_id(salt),
                "tables": {name: shape.to_json() for name, shape in shapes.items()},
            },
        )
        published = await store.publish(staged, manifest)
        if keep_last:
            await apply_retention(store, keep_last, engine=ENGINE)
        emit(
            ProgressEvent(
                step=ShrinkStep.PUBLISH, message=f"published {published.id}", percent=100.0
            )
        )
        return published
    finally:
        if published is None:  # whatever went wrong, nothing half-made stays
            shutil.rmtree(staged, ignore_errors=True)


def _followed(policy: DynamoPolicy, shapes: dict[str, TableShape], name: str) -> set[str]:
    """The attributes of `name` that tables following it compare with."""
    return {
        spec.follow.key or shapes[name].keys[0]
        for spec in policy.tables.values()
        if spec.follow is not None and spec.follow.table == name
    }


def _file(name: str) -> str:
    return f"{name}.json.gz"


def _in_order(policy: DynamoPolicy) -> list[str]:
    """Tables that follow others after those they follow."""
    ordered: list[str] = []

    def place(name: str, seen: tuple[str, ...] = ()) -> None:
        if name in ordered:
            return
        if name in seen:
            raise InvalidInput(f"the policy's follow entries go round in a circle through {name}.")
        follow = policy.tables[name].follow
        if follow is not None:
            place(follow.table, (*seen, name))
        ordered.append(name)

    for name in sorted(policy.tables):
        place(name)
    return ordered


def to_json(value: Any) -> str:
    """DynamoDB JSON, binary values in base64 as DynamoDB's exports write them."""
    return json.dumps(value, separators=(",", ":"), sort_keys=True, default=_base64)


def _base64(value: Any) -> str:
    if isinstance(value, Binary):
        value = value.value
    if isinstance(value, bytes | bytearray):
        return base64.b64encode(value).decode()
    raise TypeError(f"{type(value).__name__} is not a DynamoDB value")


def key_of(value: Any) -> str:
    """A typed DynamoDB value as text, to compare keys across tables."""
    return to_json(value)


@dataclass
class TableWriter:
    """Filters, masks, scans and writes one table's items (in a worker thread)."""

    shape: TableShape
    spec: TablePolicy
    policy: DynamoPolicy
    salt: bytes
    tenant: str | None
    detector: PiiDetector
    findings: Findings
    unclassified: set[str]
    outcomes: dict[str, Outcome]  # of the tables done before this one
    followed_by: set[str]  # attributes of this table whose values other tables follow
    shapes: dict[str, TableShape]
    since: datetime

    def follow_key(self, follow: Follow) -> str:
        return follow.key or self.shapes[follow.table].keys[0]

    def __post_init__(self) -> None:
        self.masks: dict[str, Callable[[Any], Any]] = {}
        self.scanned: set[str] = set()
        for attribute, spec in self.spec.attributes.items():
            rule = spec.rule
            if rule is not None and rule.name == "json":
                self.masks[attribute] = mask_document(rule.params.get("paths"), self.salt)
            elif rule is not None and rule.name != "keep":
                self.masks[attribute] = partial(
                    mask_leaves, inner=rule.masker(salt=self.salt), salt=self.salt
                )
            if rule is None or not rule.generates:
                self.scanned.add(attribute)

    def run(self, items: Any, data: Path) -> Outcome:
        outcome = Outcome(values={attribute: set() for attribute in self.followed_by})
        with gzip.open(data / _file(self.shape.name), "wt", encoding="utf-8") as out:
            for item in items:
                if not self.wanted(item):
                    continue
                masked = self.mask(item)
                size = item_size(masked)
                if size > ITEM_LIMIT:
                    raise InvalidInput(
                        f"an item of {self.shape.name} is {size // 1024} KB after masking, over "
                        "DynamoDB's 400 KB: choose a rule that keeps the values short."
                    )
                self.scan(masked)
                out.write(to_json({"Item": masked}) + "\n")
                outcome.items += 1
                for attribute, seen in outcome.values.items():
                    if attribute in item:
                        seen.add(key_of(item[attribute]))
        return outcome

    def wanted(self, item: dict[str, Any]) -> bool:
        spec = self.spec
        if self.tenant is not None and self.policy.tenant is not None:
            attribute = self.policy.tenant[1]
            if attribute in item and str(_plain(item[attribute])) != self.tenant:
                return False
        if spec.action == "keep":
            return True
        for attribute, value in spec.where.items():
            if attribute not in item or _plain(item[attribute]) != value:
                return False
        if spec.follow is not None:
            value = item.get(spec.follow.attribute)
            target = self.outcomes[spec.follow.table].values[self.follow_key(spec.follow)]
            if value is None or key_of(value) not in target:
                return False
        if spec.window is not None:
            when = _moment(item.get(spec.window.attribute))
            if when is None or when < self.since - spec.window.last:
                return False
        return True

    def mask(self, item: dict[str, Any]) -> dict[str, Any]:
        masked: dict[str, Any] = {}
        for attribute, typed in item.items():
            spec = self.spec.attributes.get(attribute)
            if spec is None:
                self.unclassified.add(f"{self.shape.name}.{attribute}")
            mask = self.masks.get(attribute)
            if mask is None:
                masked[attribute] = typed
                continue
            value = mask(_unwrapped(_plain(typed)))
            if value is not None:
                masked[attribute] = _to_dynamo.serialize(value)
        return masked

    def scan(self, item: dict[str, Any]) -> None:
        for attribute, typed in item.items():
            if attribute not in self.scanned and attribute in self.spec.attributes:
                continue
            for text in _texts(_plain(typed)):
                for kind, value in self.detector.find(text):
                    self.findings.add(self.shape.name, attribute, kind, value)


def _plain(typed: Any) -> Any:
    return _from_dynamo.deserialize(typed)


def _unwrapped(value: Any) -> Any:
    """boto3's Binary wrappers as the bytes they hold, for masking."""
    if isinstance(value, Binary):
        return value.value
    if isinstance(value, dict):
        return {k: _unwrapped(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_unwrapped(v) for v in value]
    if isinstance(value, set | frozenset):
        return {_unwrapped(v) for v in value}
    return value


def _texts(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [text for inner in value.values() for text in _texts(inner)]
    if isinstance(value, list | set | frozenset):
        return [text for inner in value for text in _texts(inner)]
    return []


def _moment(typed: Any) -> datetime | None:
    """An ISO-8601 time or epoch seconds, as DynamoDB items usually hold them."""
    if typed is None:
        return None
    value = _plain(typed)
    try:
        if isinstance(value, Decimal):
            return datetime.fromtimestamp(float(value), UTC)
        if isinstance(value, str):
            moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
            return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    except (ValueError, OverflowError):
        return None
    return None


def item_size(item: dict[str, Any]) -> int:
    """An item's size as DynamoDB counts it (names and values, in bytes), near enough."""
    return sum(len(name.encode()) + _value_size(value) for name, value in item.items())


def _value_size(typed: dict[str, Any]) -> int:
    (kind, value), *_ = typed.items()
    if kind == "S":
        return len(value.encode())
    if kind == "N":
        return len(value) // 2 + 2
    if kind == "B":
        return len(value.value if isinstance(value, Binary) else value)
    if kind in ("SS", "NS", "BS"):
        return sum(_value_size({kind[0]: part}) for part in value)
    if kind == "M":
        return 3 + sum(len(k.encode()) + _value_size(v) + 1 for k, v in value.items())
    if kind == "L":
        return 3 + sum(_value_size(v) + 1 for v in value)
    return 1  # BOOL, NULL
