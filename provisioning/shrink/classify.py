"""`devdb policy init`: draft a policy from a database's column names and sampled values.

The draft errs towards `pii`: a person reviews it, and an over-masked column costs less
than a leaked one. It also applies the scan gate's own test for copies: a column left
`internal` whose sampled values equal those of a masked column (a username that is the
first name) is marked like that column, so that the draft publishes as it stands.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

import asyncpg
import yaml

from provisioning.pg.sql import quote_ident, quote_table
from provisioning.shrink import documents
from provisioning.shrink.catalog import BYTES, JSON, OTHER, Catalog, Column, read_catalog
from provisioning.shrink.copytext import encode
from provisioning.shrink.detect import PiiDetector
from provisioning.shrink.plan import looked_for
from provisioning.shrink.policy import column_policy
from provisioning.shrink.rewrite import MIN_COPIED

_SAMPLE = 200
Entry = dict[str, Any] | str
# (name pattern, class, rule): the first match wins. Names are matched in snake_case.
_BY_NAME: list[tuple[str, str, dict[str, Any]]] = [
    (r"e_?mail", "pii", {"rule": "fake", "kind": "email"}),
    (r"phone|mobile|fax|msisdn|^tel$|telephone", "pii", {"rule": "fake", "kind": "phone"}),
    (
        r"ssn|social_sec|national_?id|passport|tax_?(id|no|number|code)|^tin$|vat_?(id|no|number)"
        r"|aadhaa?r|^pan$|pan_?(no|number)|nino|ni_number|^cpf$|^cnpj$|^dni$|^nif$|^nie$"
        r"|driv(er|ing)_?licen[cs]e",
        "secret",
        {"rule": "hash"},
    ),
    (r"card_?(num|no|number)|credit_?card|cc_?num", "secret", {"rule": "partial", "keep": 4}),
    (
        r"iban|account_?(num|no|number)|routing|^bic$|swift",
        "secret",
        {"rule": "partial", "keep": 4},
    ),
    (r"password|passwd|secret|token|api_?key|hash|salt", "secret", {"rule": "hash"}),
    (
        r"user_?name|login|handle|nick_?name|screen_?name",
        "pii",
        {"rule": "fake", "kind": "user_name"},
    ),
    (r"first_?name|given_?name|forename", "pii", {"rule": "fake", "kind": "first_name"}),
    (r"last_?name|surname|family_?name", "pii", {"rule": "fake", "kind": "last_name"}),
    (
        r"(full|display|contact|card|account|customer|billing|shipping|recipient|sender|author"
        r"|patient|member|owner|person|employee|legal|maiden)_?(name|holder)$|holder$",
        "pii",
        {"rule": "fake", "kind": "name"},
    ),
    (r"street|address|addr_?line", "pii", {"rule": "fake", "kind": "address"}),
    (r"city|town", "pii", {"rule": "fake", "kind": "city"}),
    (r"postal|zip|post_?code", "pii", {"rule": "fake", "kind": "postcode"}),
    (r"company|employer|organi[sz]ation", "pii", {"rule": "fake", "kind": "company"}),
    (r"notes?$|comments?$|remarks?$|memo$|^bio$|^body$", "pii", {"rule": "fake", "kind": "text"}),
]
# Names that say personal data whatever the type holds; the rule depends on the type.
_BIRTH = re.compile(r"birth|^dob$|_dob$|birthday")
_IP = re.compile(r"ip_?addr|^ip$|_ip$|^ip_|remote_addr|client_addr")
_GEO = re.compile(r"^lat$|latitude|^lng$|^lon$|^long$|longitude|^geo|coordinates?$|geo_?point")
_PHOTO = re.compile(r"photo|picture|avatar|image|portrait|selfie|signature|^scan$")
_AREA = re.compile(r"district|region|^state$|_state$|county|province|suburb|neighbou?rhood")
_ADDRESS = re.compile(r"street|address|city|town|postal|zip|post_?code")
_FROM_VALUES: dict[str, dict[str, Any]] = {
    "email": {"class": "pii", "rule": "fake", "kind": "email"},
    "phone": {"class": "pii", "rule": "fake", "kind": "phone"},
    "national_id": {"class": "secret", "rule": "hash"},
    "card": {"class": "secret", "rule": "partial", "keep": 4},
    "iban": {"class": "secret", "rule": "partial", "keep": 4},
}
_PEOPLE = re.compile(
    r"user|person|people|customer|employee|contact|member|patient|staff|client|student|owner",
    re.IGNORECASE,
)


def snake(name: str) -> str:
    """`lastLoginIP` and `Last Login IP` alike become `last_login_ip`."""
    spaced = re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", name)
    return re.sub(r"[^a-z0-9]+", "_", spaced.lower()).strip("_")


def by_name(name: str) -> dict[str, Any] | None:
    for pattern, classification, rule in _BY_NAME:
        if re.search(pattern, name):
            return {"class": classification, **rule}
    return None


def by_values(samples: list[str], detector: PiiDetector) -> dict[str, Any] | None:
    """A rule that fits what the detectors find in sampled values (`phone:DE` is a phone)."""
    kinds = Counter(kind.split(":")[0] for kind, _ in detector.find("\n".join(samples)))
    if not kinds:
        return None
    return dict(_FROM_VALUES[kinds.most_common(1)[0][0]])


def _typed(name: str, column: Column, address_nearby: bool) -> dict[str, Any] | None:
    """Rules a name implies whatever the column's type."""
    if _BIRTH.search(name):
        rule: dict[str, Any] = (
            {"rule": "date_shift", "days": 180}
            if column.kind == OTHER and ("date" in column.type or "time" in column.type)
            else {"rule": "null" if column.nullable else "hash"}
        )
        return {"class": "pii", **rule}
    if _IP.search(name) and (column.is_text or column.base in ("inet", "cidr")):
        return {"class": "pii", "rule": "fake", "kind": "ipv4"}
    if _GEO.search(name):
        numeric = column.base in ("float4", "float8", "numeric")
        if numeric:
            return {"class": "pii", "rule": "noise", "ratio": 0.05}
        if column.nullable:
            return {"class": "pii", "rule": "null"}
        return {
            "class": "pii",
            "rule": "constant",
            "value": "(0,0)" if column.base == "point" else "0",
        }
    if _PHOTO.search(name) and column.kind == BYTES:
        if column.nullable:
            return {"class": "pii", "rule": "null"}
        return {"class": "pii", "rule": "constant", "value": ""}
    if _AREA.search(name) and column.is_text and address_nearby:
        return {"class": "pii", "rule": "fake", "kind": "state"}
    return None


def _json_paths(samples: list[str], detector: PiiDetector) -> dict[str, dict[str, Any]]:
    """Rules for the places in sampled documents that hold personal data."""
    values: dict[str, list[str]] = {}
    for text in samples:
        try:
            document = documents.loads(text)
        except ValueError:
            continue
        for path, value in documents.leaves(document):
            values.setdefault(path, []).append(str(value))
    paths: dict[str, dict[str, Any]] = {}
    for path, found in values.items():
        key = snake(re.split(r"[.\[\]]", path.rstrip("[*]"))[-1].strip('"'))
        entry = by_name(key) or by_values(found, detector)
        if entry is None and _IP.search(key):
            entry = {"class": "pii", "rule": "fake", "kind": "ipv4"}
        if entry is not None:
            paths[path] = {k: v for k, v in entry.items() if k != "class"}
    return paths


def classify_column(
    table: str,
    column: Column,
    samples: list[str],
    keys: set[str],
    address_nearby: bool = False,
    detector: PiiDetector | None = None,
) -> Entry:
    """A policy entry for one column: by its name, its type, and what its sampled values
    hold (a column of national ids is pii whatever it is called)."""
    detector = detector or PiiDetector()
    if column.name in keys:
        return "internal"
    name = snake(column.name)
    if column.kind == JSON:
        paths = _json_paths(samples, detector)
        if paths:
            return {"class": "pii", "rule": "json", "paths": paths}
        return "internal"
    if name == "name" and column.is_text:
        # A bare `name` is a person's only in a table of people (not an artist's or genre's).
        if _PEOPLE.search(table.rpartition(".")[2]):
            return {"class": "pii", "rule": "fake", "kind": "name"}
        return by_values(samples, detector) or "internal"
    typed = _typed(name, column, address_nearby)
    if typed is not None:
        return typed
    if column.is_text:
        return by_name(name) or by_values(samples, detector) or "internal"
    return "internal"


async def _samples(conn: asyncpg.Connection, table: str, columns: list[Column]) -> list[list[str]]:
    if not columns:
        return []
    select = ", ".join(f"{quote_ident(c.name)}::text" for c in columns)
    source = quote_table(table)
    rows = await conn.fetch(
        f"select {select} from {source} tablesample system (10) limit {_SAMPLE}"
    )
    if len(rows) < _SAMPLE // 4:
        rows = await conn.fetch(f"select {select} from {source} limit {_SAMPLE}")
    return [[row[i] for row in rows if row[i] is not None] for i in range(len(columns))]


def _copied_from(body: dict[str, Any], samples: dict[tuple[str, str], list[str]]) -> None:
    """Mark `internal` text columns whose sampled values are a masked column's values."""
    sources: dict[str, tuple[str, str]] = {}
    for (table, column), values in samples.items():
        entry = body[table]["columns"][column]
        if not isinstance(entry, dict) or entry.get("rule") == "json":
            continue
        if looked_for(column_policy(table, column, dict(entry))):
            for value in values:
                if len(value) >= MIN_COPIED:
                    sources.setdefault(encode(value), (table, column))
    for (table, column), values in samples.items():
        if body[table]["columns"][column] != "internal":
            continue
        hits = Counter(sources[encode(v)] for v in values if encode(v) in sources)
        if hits:
            source_table, source_column = hits.most_common(1)[0][0]
            body[table]["columns"][column] = dict(body[source_table]["columns"][source_column])


async def draft_source(dsn: str, detector: PiiDetector) -> tuple[Catalog, dict[str, Any]]:
    """`devdb policy init` on a PostgreSQL source: connect, classify, disconnect."""
    conn = await asyncpg.connect(dsn)
    try:
        return await draft_policy(conn, detector)
    finally:
        await conn.close()


async def draft_policy(
    conn: asyncpg.Connection, detector: PiiDetector | None = None
) -> tuple[Catalog, dict[str, Any]]:
    """Classify every column of the database `conn` reaches."""
    detector = detector or PiiDetector()
    catalog = await read_catalog(conn)
    tables: dict[str, Any] = {}
    text_samples: dict[tuple[str, str], list[str]] = {}
    for name, table in catalog.tables.items():
        keys = set(table.primary_key)
        for fk in catalog.parents_of(name):
            keys.update(fk.columns)
        sampled = [c for c in table.columns if c.is_text and c.name in table.root_columns]
        values = dict(
            zip([c.name for c in sampled], await _samples(conn, name, sampled), strict=True)
        )
        address_nearby = any(_ADDRESS.search(snake(c.name)) for c in table.columns)
        tables[name] = {
            "action": "keep",
            "columns": {
                c.name: classify_column(
                    name, c, values.get(c.name, []), keys, address_nearby, detector
                )
                for c in table.columns
            },
        }
        for column in sampled:
            if column.kind != JSON:
                text_samples[(name, column.name)] = values[column.name]
    _copied_from(tables, text_samples)
    body: dict[str, Any] = {"version": 1, "tables": tables}
    return catalog, body


def render_policy(body: dict[str, Any]) -> str:
    header = (
        "# devdb masking policy, drafted by `devdb policy init`: review every `pii` and\n"
        "# `secret` column, then set each table's action (keep, drop or subset).\n"
        "# Partitions and inheritance children follow the table they belong to.\n"
        "# Large objects are left out of snapshots; add `large_objects: keep` to keep them\n"
        "# (they are scanned then).\n"
    )
    return header + str(yaml.safe_dump(body, sort_keys=False, default_flow_style=None, width=100))
