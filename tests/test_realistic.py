"""Dev-safe snapshots of a schema that looks like a real product's (tests/data/realistic.sql):
several schemas, partitions, inheritance, tables without primary keys, mixed-case names,
domains, enums, json documents, arrays, citext, hstore, tsvector and large objects."""

from __future__ import annotations

import gzip
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import yaml

from provisioning.errors import PolicyViolation
from provisioning.runtime import Runtime
from provisioning.shrink.classify import draft_policy
from provisioning.shrink.copytext import decode
from provisioning.shrink.pipeline import check_source, shrink
from provisioning.shrink.policy import Policy, parse_policy
from provisioning.snapshots.manifest import Manifest
from tests.conftest import unique

FIXTURE = Path(__file__).parent / "data" / "realistic.sql"
SALT = b"realistic-salt"
Copier = Callable[[str], Awaitable[str]]


@pytest.fixture(scope="session")
async def realistic_dsn(runtime: Runtime) -> str:
    admin = await asyncpg.connect(runtime.server_dsn("postgres"))
    try:
        await admin.execute("drop database if exists realistic with (force)")
        await admin.execute("create database realistic")
    finally:
        await admin.close()
    conn = await asyncpg.connect(runtime.server_dsn("realistic"))
    try:
        await conn.execute(FIXTURE.read_text())
    finally:
        await conn.close()
    return runtime.server_dsn("realistic")


async def draft(dsn: str) -> dict[str, Any]:
    conn = await asyncpg.connect(dsn)
    try:
        _, body = await draft_policy(conn)
    finally:
        await conn.close()
    return body


def as_policy(body: dict[str, Any]) -> Policy:
    return parse_policy(yaml.safe_dump(body, sort_keys=False))


async def fetch(dsn: str, sql: str, *args: object) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(dsn)
    try:
        return list(await conn.fetch(sql, *args))
    finally:
        await conn.close()


def published_rows(runtime: Runtime, manifest: Manifest, relation: str) -> list[list[str | None]]:
    entry = manifest.tables[relation]
    if entry.file is None:
        return []
    path = runtime.settings.snapshots_dir / manifest.id / "dump" / entry.file
    rows = []
    for line in gzip.decompress(path.read_bytes()).decode().splitlines():
        if line == "\\.":
            break
        rows.append([decode(field) for field in line.split("\t")])
    return rows


@pytest.fixture
async def restored(runtime: Runtime) -> AsyncIterator[Callable[[Manifest], Awaitable[str]]]:
    """Refresh an environment from a snapshot; destroyed after the test."""
    made: list[tuple[str, str]] = []

    async def restore(manifest: Manifest) -> str:
        owner, name = unique("dev"), "real"
        view = await runtime.service.refresh(owner, name, snapshot=manifest.id)
        made.append((owner, name))
        assert view.endpoint is not None
        return view.endpoint.dsn

    yield restore
    for owner, name in made:
        await runtime.service.destroy(owner, name)


async def assert_foreign_keys_hold(dsn: str) -> int:
    """Every foreign key is there, validated, and holds for every row (checked by query)."""
    keys = await fetch(
        dsn,
        "select conrelid::regclass::text as rel, conname, convalidated, "
        "pg_get_constraintdef(oid) as def from pg_constraint where contype = 'f' "
        "and conparentid = 0",
    )
    for key in keys:
        assert key["convalidated"], key["conname"]
    conn = await asyncpg.connect(dsn)
    try:
        for key in keys:
            match = re.match(r"FOREIGN KEY \((.+?)\) REFERENCES (.+?)\((.+?)\)", key["def"])
            assert match, key["def"]
            cols, parent, pcols = match.groups()
            cond = " and ".join(
                f"p.{pc} = c.{cc}" for cc, pc in zip(cols.split(", "), pcols.split(", "), strict=True)
            )
            notnull = " and ".join(f"c.{cc} is not null" for cc in cols.split(", "))
            orphans = await conn.fetchval(
                f"select count(*) from {key['rel']} c where {notnull} "
                f"and not exists (select 1 from {parent} p where {cond})"
            )
            assert orphans == 0, f"{key['rel']} {key['conname']}: {orphans} orphans"
    finally:
        await conn.close()
    return len(keys)


async def test_policy_init_check_shrink_publishes_with_no_edits(
    runtime: Runtime, realistic_dsn: str, restored: Callable[[Manifest], Awaitable[str]]
) -> None:
    body = await draft(realistic_dsn)
    columns = {
        f"{table}.{column}": spec
        for table, entry in body["tables"].items()
        for column, spec in entry["columns"].items()
    }

    def rule(name: str) -> str:
        spec = columns[name]
        return "internal" if spec == "internal" else f"{spec['rule']} {spec.get('kind', '')}".strip()

    assert rule("app.users.username") == "fake user_name"
    assert rule("app.users.picture") == "null"
    assert rule("app.users.date_of_birth").startswith("date_shift")
    assert rule("app.users.last_login_ip") == "fake ipv4"
    assert rule("app.users.latitude") == "noise"
    assert rule("app.users.region") == "fake state"
    assert rule("app.users.notes") == "fake text"
    assert rule("app.CustomerNotes.Body") == "fake text"
    assert rule("billing.orders.customer_name") == "fake name"
    assert rule("billing.invoices.billing_name") == "fake name"
    assert rule("billing.payment_methods.card_number") == "partial"
    assert rule("legacy.accounts.display_name") == "fake name"
    profile = columns["app.users.profile"]
    assert profile["rule"] == "json"
    assert profile["paths"]["$.contact.email"] == {"rule": "fake", "kind": "email"}
    payload = columns["app.events.payload"]["paths"]
    assert payload["$.email"]["kind"] == "email" and payload["$.ip"]["kind"] == "ipv4"
    assert not any(".events_2026" in name or "premium_accounts" in name for name in body["tables"])

    policy = as_policy(body)
    _, problems = await check_source(realistic_dsn, policy)
    assert problems == []
    manifest = await shrink(realistic_dsn, policy, runtime.snapshots, runtime.programs, salt=SALT)
    assert all(e.file is None or e.file.endswith(".dat.gz") for e in manifest.tables.values())
    assert manifest.tables["app.events_2026_11"].rows > 0, "partitions are published"
    assert "app.events" not in manifest.tables, "a partitioned table holds no rows itself"

    dsn = await restored(manifest)
    assert await assert_foreign_keys_hold(dsn) == await assert_foreign_keys_hold(realistic_dsn)
    source = {r["id"]: r for r in await fetch(realistic_dsn, "select * from app.users")}
    masked = {r["id"]: r for r in await fetch(dsn, "select * from app.users")}
    assert source.keys() == masked.keys()
    for key, row in masked.items():
        assert row["email"] != source[key]["email"] and row["username"] != source[key]["username"]
        assert row["picture"] is None
    events = await fetch(dsn, "select payload from app.events where kind = 'password_reset'")
    emails = {r["email"].lower() for r in source.values()}
    assert events and all(e["payload"] and '"email"' in e["payload"] for e in events)
    assert not any(email in e["payload"].lower() for e in events for email in emails)
