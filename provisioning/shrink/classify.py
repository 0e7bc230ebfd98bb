"""`devdb policy init`: draft a policy from a database's columns' names and sampled values.

The draft errs towards `pii`: a person reviews it, and an over-masked column costs less
than a leaked one.
"""

from __future__ import annotations

import re
from typing import Any

import asyncpg
import yaml

from provisioning.shrink.catalog import Catalog, Column, read_catalog
from provisioning.shrink.scan import find_pii
from provisioning.sql import quote_ident, quote_table

_SAMPLE = 200
# (name pattern, class, rule) — the first match wins.
_BY_NAME: list[tuple[str, str, dict[str, Any]]] = [
    (r"e_?mail", "pii", {"rule": "fake", "kind": "email"}),
    (r"phone|mobile|fax|msisdn", "pii", {"rule": "fake", "kind": "phone"}),
    (r"ssn|social_sec|national_id|passport|tax_id", "secret", {"rule": "hash"}),
    (r"card_?(num|no)|\bpan\b|credit_?card|cc_num", "secret", {"rule": "partial", "keep": 4}),
    (r"iban|account_?(num|no)|routing", "secret", {"rule": "partial", "keep": 4}),
    (r"password|passwd|secret|token|api_?key|hash|salt", "secret", {"rule": "hash"}),
    (r"first_?name|given_?name|forename", "pii", {"rule": "fake", "kind": "first_name"}),
    (r"last_?name|surname|family_?name", "pii", {"rule": "fake", "kind": "last_name"}),
    (
        r"(full|display|contact|card|account)_?(name|holder)$",
        "pii",
        {"rule": "fake", "kind": "name"},
    ),
    (r"street|address", "pii", {"rule": "fake", "kind": "address"}),
    (r"city|town", "pii", {"rule": "fake", "kind": "city"}),
    (r"postal|zip|post_?code", "pii", {"rule": "fake", "kind": "postcode"}),
    (r"company|employer|organi[sz]ation", "pii", {"rule": "fake", "kind": "company"}),
    (r"birth|dob", "pii", {"rule": "date_shift", "days": 180}),
    (r"ip_?addr|^ip$", "pii", {"rule": "fake", "kind": "ipv4"}),
]
_FROM_VALUES: dict[str, dict[str, Any]] = {
    "email": {"rule": "fake", "kind": "email"},
    "phone number": {"rule": "fake", "kind": "phone"},
    "ssn": {"rule": "hash"},
    "card number": {"rule": "partial", "keep": 4},
    "iban": {"rule": "partial", "keep": 4},
}


_PEOPLE = re.compile(
    r"user|person|people|customer|employee|contact|member|patient|staff|client|student|owner",
    re.IGNORECASE,
)


def classify_column(
    table: str, column: Column, samples: list[str], keys: set[str]
) -> dict[str, Any] | str:
    """A policy entry for one column."""
    if column.name in keys:
        return "internal"
    if column.name.lower() == "name" and column.is_text:
        # A bare `name` is a person's only in a table of people (not an artist's or genre's).
        if _PEOPLE.search(table.rpartition(".")[2]):
            return {"class": "pii", "rule": "fake", "kind": "name"}
        return "internal"
    for pattern, classification, rule in _BY_NAME:
        if re.search(pattern, column.name, re.IGNORECASE) and (
            column.is_text or rule.get("rule") == "date_shift"
        ):
            return {"class": classification, **rule}
    if column.is_text and samples:
        kinds: dict[str, int] = {}
        for kind, _ in find_pii("\n".join(samples)):
            kinds[kind] = kinds.get(kind, 0) + 1
        if kinds:
            kind = max(kinds, key=lambda k: kinds[k])
            classification = "secret" if kind in ("ssn", "card number", "iban") else "pii"
            return {"class": classification, **_FROM_VALUES[kind]}
    return "internal"


async def draft_policy(conn: asyncpg.Connection) -> tuple[Catalog, dict[str, Any]]:
    """Classify every column of the database `conn` reaches."""
    catalog = await read_catalog(conn)
    tables: dict[str, Any] = {}
    for name, table in catalog.tables.items():
        keys = set(table.primary_key)
        for fk in catalog.parents_of(name):
            keys.update(fk.columns)
        text_columns = [c for c in table.columns if c.is_text]
        samples: dict[str, list[str]] = {c.name: [] for c in text_columns}
        if text_columns:
            select = ", ".join(f"{quote_ident(c.name)}::text" for c in text_columns)
            rows = await conn.fetch(
                f"select {select} from {quote_table(name)} tablesample system (10) limit {_SAMPLE}"
            )
            if not rows:
                rows = await conn.fetch(f"select {select} from {quote_table(name)} limit {_SAMPLE}")
            for row in rows:
                for index, column in enumerate(text_columns):
                    if row[index] is not None:
                        samples[column.name].append(row[index])
        tables[name] = {
            "action": "keep",
            "columns": {
                c.name: classify_column(name, c, samples.get(c.name, []), keys)
                for c in table.columns
            },
        }
    return catalog, {"version": 1, "tables": tables}


def render_policy(body: dict[str, Any]) -> str:
    header = (
        "# devdb masking policy, drafted by `devdb policy init`: review every `pii` and\n"
        "# `secret` column, then set each table's action (keep, drop or subset).\n"
    )
    return header + str(yaml.safe_dump(body, sort_keys=False, default_flow_style=None, width=100))
