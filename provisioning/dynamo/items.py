"""What happens to each item of a DynamoDB source on its way into a snapshot: chosen by the
policy's subset, masked, checked against DynamoDB's size limit, scanned, written as a line
of DynamoDB JSON (binary in base64, as DynamoDB's exports write it)."""

from __future__ import annotations

import base64
import contextlib
import gzip
import json
import threading
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from functools import partial
from pathlib import Path
from typing import Any

from boto3.dynamodb.types import Binary, TypeDeserializer, TypeSerializer

from provisioning.dynamo.policy import DynamoPolicy, Follow, TablePolicy
from provisioning.dynamo.source import TableShape
from provisioning.dynamo.survey import texts
from provisioning.errors import InvalidInput
from provisioning.shrink import documents
from provisioning.shrink.detect import PiiDetector
from provisioning.shrink.rules import mask_document, mask_leaves
from provisioning.shrink.scan import Findings

ITEM_LIMIT = 400 * 1024  # DynamoDB's largest item, in bytes
_from_dynamo = TypeDeserializer()
_to_dynamo = TypeSerializer()


@dataclass
class Outcome:
    """What one table gave: items kept, and the values of the attributes others follow."""

    items: int = 0
    values: dict[str, set[str]] = field(default_factory=dict)


def data_file(name: str) -> str:
    return f"{name}.json.gz"


def to_json(value: Any) -> str:
    """DynamoDB JSON, binary values in base64 as DynamoDB's exports write them."""
    return json.dumps(value, separators=(",", ":"), sort_keys=True, default=_base64)


def _base64(value: Any) -> str:
    if isinstance(value, Binary):
        value = value.value
    if isinstance(value, bytes | bytearray):
        return base64.b64encode(value).decode()
    raise TypeError(f"{type(value).__name__} is not a DynamoDB value")


# Rules a key (or index key) attribute may have: ones that keep distinct values distinct and
# a string a string. Anything else would merge items, drop a key or change its type.
KEY_RULES = ("keep", "hash", "fake")


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
    follows: str | None  # the attribute of the followed table this table's follow names
    since: datetime
    stop: threading.Event  # set when the shrink is cancelled
    originals: set[str]  # masked personal values, for the search for copies (all tables)

    def __post_init__(self) -> None:
        name = self.shape.name
        self.masks: dict[str, Callable[[Any], Any]] = {}
        self.scanned: set[str] = set()
        self.dropped: set[str] = set()
        self.remembered: set[str] = set()  # attributes whose source values are looked for
        keys = self.shape.key_attributes
        for attribute, spec in self.spec.attributes.items():
            rule = spec.rule
            if attribute in keys and rule is not None and rule.name != "keep":
                typed = self.shape.attribute_type(attribute)
                if rule.name not in KEY_RULES or typed != "S":
                    raise InvalidInput(
                        f"{name}.{attribute} is a key or index key: mask a string key with "
                        f"hash or fake (values stay distinct), not {rule.name} on type {typed}."
                    )
            if rule is None or not rule.generates:
                self.scanned.add(attribute)
            if rule is None or rule.name == "keep":
                continue
            sensitive = spec.classification in ("pii", "secret") and rule.identifying
            if sensitive and rule.name != "json":  # a document's unmasked parts are not personal
                self.remembered.add(attribute)
            if rule.name == "null":
                self.dropped.add(attribute)
            elif rule.name == "json":
                self.masks[attribute] = _document(
                    mask_document(rule.params.get("paths"), self.salt)
                )
            else:
                inner = rule.masker(unique=attribute in keys, salt=self.salt)
                self.masks[attribute] = partial(mask_leaves, inner=inner, salt=self.salt, keys=True)

    def run(self, items: Generator[dict[str, Any]], data: Path) -> Outcome:
        outcome = Outcome(values={attribute: set() for attribute in self.followed_by})
        primary: set[str] = set()
        with contextlib.closing(items), gzip.open(data / data_file(self.shape.name), "wt") as out:
            for item in items:
                if self.stop.is_set():
                    raise InvalidInput("the shrink was stopped.")
                if not self.wanted(item):
                    continue
                masked = self.mask(item)
                key = to_json([masked.get(part) for part in self.shape.keys])
                if key in primary:
                    raise InvalidInput(
                        f"masking gave two items of {self.shape.name} the same key: choose a "
                        "rule for its key attributes that keeps values apart (hash)."
                    )
                primary.add(key)
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
                        seen.add(to_json(item[attribute]))
        if self.tenant is not None and self.is_tenant_table and not outcome.items:
            raise InvalidInput(f"there is no tenant {self.tenant!r} in {self.shape.name}.")
        return outcome

    @property
    def is_tenant_table(self) -> bool:
        return self.policy.tenant is not None and self.policy.tenant[0] == self.shape.name

    def wanted(self, item: dict[str, Any]) -> bool:
        spec = self.spec
        if self.tenant is not None and self.is_tenant_table:
            # One tenant's items stand in for the root's `where`; other tables follow them.
            assert self.policy.tenant is not None
            value = item.get(self.policy.tenant[1])
            return value is not None and str(_plain(value)) == self.tenant
        if spec.action == "keep":
            return True
        for attribute, value in spec.where.items():
            if attribute not in item or _plain(item[attribute]) != value:
                return False
        if spec.follow is not None:
            value = item.get(spec.follow.attribute)
            assert self.follows is not None
            target = self.outcomes[spec.follow.table].values[self.follows]
            if value is None or to_json(value) not in target:
                return False
        if spec.window is not None:
            when = _moment(item.get(spec.window.attribute))
            if when is None or when < self.since - spec.window.last:
                return False
        return True

    def mask(self, item: dict[str, Any]) -> dict[str, Any]:
        masked: dict[str, Any] = {}
        for attribute, typed in item.items():
            if attribute not in self.spec.attributes:
                self.unclassified.add(f"{self.shape.name}.{attribute}")
            if attribute in self.remembered:
                self.originals.update(t for t in texts(_plain(typed)) if len(t) >= 4)
            if attribute in self.dropped:
                continue
            mask = self.masks.get(attribute)
            if mask is None:
                masked[attribute] = typed
                continue
            try:
                value = mask(_unwrapped(_plain(typed)))
            except (ValueError, TypeError) as exc:
                raise InvalidInput(
                    f"{self.shape.name}.{attribute} could not be masked: {exc}."
                ) from None
            if value is not None:
                masked[attribute] = _to_dynamo.serialize(value)
        return masked

    def scan(self, item: dict[str, Any]) -> None:
        for attribute, typed in item.items():
            if attribute not in self.scanned and attribute in self.spec.attributes:
                continue
            # One look at all of an attribute's texts: the detectors' cost is per call.
            for kind, value in self.detector.find("\n".join(texts(_plain(typed)))):
                self.findings.add(self.shape.name, attribute, kind, value)


def _document(masker: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """A `json` rule over a map or list, or over JSON text kept in a string attribute."""

    def mask(value: Any) -> Any:
        if not isinstance(value, str):
            return masker(value)
        try:
            document = documents.loads(value)
        except ValueError:
            raise ValueError("it is text but not a JSON document") from None
        return documents.dumps(masker(document))

    return mask


def follow_key(follow: Follow, shapes: dict[str, TableShape]) -> str:
    """The attribute of the followed table a follow compares with: its key unless named."""
    return follow.key or shapes[follow.table].keys[0]


def find_copies(data: Path, writers: dict[str, TableWriter], originals: set[str]) -> None:
    """Masked personal values found again, unmasked, anywhere they are not generated: an
    attribute a follow compares with, a name copied beside a masked one."""
    if not originals:
        return
    for name, writer in writers.items():
        with gzip.open(data / data_file(name), "rt") as lines:
            for line in lines:
                for attribute, typed in json.loads(line)["Item"].items():
                    if attribute not in writer.scanned or "B" in typed or "BS" in typed:
                        continue
                    for text in texts(_plain(typed)):
                        if text in originals:
                            writer.findings.add(name, attribute, "copy of a masked value", text)


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
