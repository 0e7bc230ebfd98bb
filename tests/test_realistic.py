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

SALT = b"realistic-salt"
Copier = Callable[..., Awaitable[str]]


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
                f"p.{pc} = c.{cc}"
                for cc, pc in zip(cols.split(", "), pcols.split(", "), strict=True)
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
        return (
            "internal" if spec == "internal" else f"{spec['rule']} {spec.get('kind', '')}".strip()
        )

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


CUTOFF = "timestamptz '2026-11-24' - interval '30 days'"
SUBSET = {
    "app.tenants": {"action": "subset", "root": True, "where": "is_sandbox"},
    "app.users": {"action": "subset"},
    "app.CustomerNotes": {"action": "subset"},
    "app.user_devices": {"action": "subset"},  # no primary key
    "app.events": {
        "action": "subset",
        "where": f"occurred_at > {CUTOFF}",
        "follow_children": False,
    },
    "app.documents": {"action": "subset"},
    "app.search_index": {"action": "subset"},
    "billing.invoices": {"action": "subset"},  # its key is declared on one partition only
    "billing.payment_methods": {"action": "subset"},
    "billing.orders": {"action": "subset"},
    "Analytics.PageViews": {"action": "subset"},  # no primary key, mixed case
    "legacy.accounts": {"action": "subset"},  # an inheritance parent
}


async def subset_policy(dsn: str, **changes: dict[str, Any]) -> dict[str, Any]:
    body = await draft(dsn)
    for table, entry in {**SUBSET, **changes}.items():
        body["tables"][table].update(entry)
    return body


async def test_a_subset_of_partitioned_inherited_and_keyless_tables_restores(
    runtime: Runtime, realistic_dsn: str, restored: Callable[[Manifest], Awaitable[str]]
) -> None:
    policy = as_policy(await subset_policy(realistic_dsn))
    manifest = await shrink(realistic_dsn, policy, runtime.snapshots, runtime.programs, salt=SALT)
    users = (
        "select id from app.users where tenant_id in (select id from app.tenants where is_sandbox)"
    )
    expected = {
        "app.users": users,
        "app.events": f"select id from app.events where user_id in ({users}) "
        f"and occurred_at > {CUTOFF}",
        "app.user_devices": f"select user_id from app.user_devices where user_id in ({users})",
        '"Analytics"."PageViews"': f'select "userId" from "Analytics"."PageViews" '
        f'where "userId" in ({users})',
        "billing.invoices": f"select id from billing.invoices_eu where user_id in ({users})",
        "legacy.accounts": "select id from legacy.accounts where tenant_id in "
        "(select id from app.tenants where is_sandbox)",
    }
    counts = {t: len(await fetch(realistic_dsn, sql)) for t, sql in expected.items()}
    total = {t: len(await fetch(realistic_dsn, f"select 1 from {t}")) for t in expected}
    for table in expected:
        assert 0 < counts[table] < total[table], table
    premium = await fetch(
        realistic_dsn,
        "select count(*) from legacy.premium_accounts where tenant_id in "
        "(select id from app.tenants where is_sandbox)",
    )
    assert premium[0][0] > 0, "the fixture puts sandbox tenants' rows in the inheritance child"
    assert (
        sum(e.rows for n, e in manifest.tables.items() if n.startswith("app.events_"))
        == (counts["app.events"])
    )

    dsn = await restored(manifest)
    await assert_foreign_keys_hold(dsn)
    for table in expected:
        got = await fetch(dsn, f"select count(*) from {table}")
        assert got[0][0] == counts[table], table
    # The partitions' rows were masked like the parent's, and subset by its window.
    events = await fetch(dsn, "select payload, occurred_at from app.events")
    emails = {r[0].lower() for r in await fetch(realistic_dsn, "select email from app.users")}
    assert not any(email in e["payload"].lower() for e in events for email in emails)
    cutoff = (await fetch(dsn, f"select {CUTOFF}"))[0][0]
    assert all(e["occurred_at"] > cutoff for e in events)
    # The inheritance child's rows follow the parent's subset.
    child = await fetch(dsn, "select count(*) from legacy.premium_accounts")
    assert child[0][0] == premium[0][0]
    names = {r[0] for r in await fetch(realistic_dsn, "select display_name from legacy.accounts")}
    kept = {r[0] for r in await fetch(dsn, "select display_name from legacy.accounts")}
    assert kept and not kept & names, "the child's rows were masked by the parent's rules"


async def staging_and_snapshots(runtime: Runtime) -> tuple[set[Path], list[str]]:
    staging = set(runtime.settings.snapshots_dir.glob(".staging-*"))
    return staging, [m.id for m in await runtime.snapshots.list()]


async def test_planted_personal_data_anywhere_stops_the_publish(
    runtime: Runtime, realistic_dsn: str, scratch_copy: Copier
) -> None:
    policy = as_policy(await subset_policy(realistic_dsn))
    planted = await scratch_copy("realistic")
    conn = await asyncpg.connect(planted)
    try:
        sandbox_user = await conn.fetchval(
            "select min(id) from app.users where tenant_id in "
            "(select id from app.tenants where is_sandbox)"
        )
        # Inside a json document, at a path the policy does not mask.
        await conn.execute(
            "update app.users set profile = profile || "
            """'{"backup": {"contact": "jane.roe@proton.me"}}' where id = $1""",
            sandbox_user,
        )
        # In a text array, and in a citext column the policy calls internal.
        await conn.execute(
            "update app.users set tags = array['vip', 'call 212-867-5309'] where id = $1",
            sandbox_user,
        )
        await conn.execute("alter table app.settings add column contact citext")
        await conn.execute("update app.settings set contact = 'ops.lead@fastmail.com'")
        # In the schema text: a comment and a view definition.
        await conn.execute("comment on table app.tenants is 'escalations: SSN 536-22-8726'")
        await conn.execute(
            "create view app.vip as select id from app.users where email = 'ceo.personal@gmail.com'"
        )
        # A copy of a masked value, kept where the policy does not mask.
        await conn.execute(
            "update app.settings set value = (select username from app.users where tenant_id "
            "in (select id from app.tenants where is_sandbox) and length(username) > 5 "
            "order by id limit 1) where key = (select min(key) from app.settings)"
        )
    finally:
        await conn.close()
    body = await subset_policy(realistic_dsn)
    body["tables"]["app.settings"]["columns"]["contact"] = "internal"
    before = await staging_and_snapshots(runtime)
    with pytest.raises(PolicyViolation) as caught:
        await shrink(planted, as_policy(body), runtime.snapshots, runtime.programs, salt=SALT)
    found = "\n".join(caught.value.problems)
    assert "app.users.profile: 1 email" in found
    assert "app.users.tags: 1 phone:US" in found
    assert "app.settings.contact:" in found and "email" in found
    assert "the schema (COMMENT ON TABLE app.tenants): 1 national_id:US.ssn value(s)" in found
    assert "the schema (VIEW app.vip): 1 email value(s)" in found
    assert "app.settings.value: 1 value copied from a pii column" in found
    assert "jane.roe@proton.me" not in found and "536-22-8726" not in found
    assert await staging_and_snapshots(runtime) == before
    del policy


async def test_large_objects_are_left_out_or_scanned(
    runtime: Runtime,
    realistic_dsn: str,
    scratch_copy: Copier,
    restored: Callable[[Manifest], Awaitable[str]],
) -> None:
    planted = await scratch_copy(
        "realistic",
        "update app.documents set content = lo_from_bytea(0, convert_to("
        "'Applicant SSN 536-22-8726, card 4111 1111 1111 1111', 'UTF8')) where id = 1",
    )
    body = await draft(planted)
    manifest = await shrink(
        planted, as_policy(body), runtime.snapshots, runtime.programs, salt=SALT
    )
    assert not [name for name in manifest.files if name.startswith("blob")]
    dsn = await restored(manifest)
    assert (await fetch(dsn, "select count(*) from pg_largeobject_metadata"))[0][0] == 0

    body["large_objects"] = "keep"
    before = await staging_and_snapshots(runtime)
    with pytest.raises(PolicyViolation) as caught:
        await shrink(planted, as_policy(body), runtime.snapshots, runtime.programs, salt=SALT)
    found = "\n".join(caught.value.problems)
    assert re.search(r"large object \d+: 1 national_id:US.ssn", found) and "card value(s)" in found
    assert await staging_and_snapshots(runtime) == before


async def test_dropped_tables_are_left_out_exactly_whatever_their_case(
    runtime: Runtime,
    realistic_dsn: str,
    scratch_copy: Copier,
    restored: Callable[[Manifest], Awaitable[str]],
) -> None:
    source = await scratch_copy("realistic")
    conn = await asyncpg.connect(source)
    try:
        # Names pg_dump's patterns would misread: upper case, and pattern characters.
        await conn.execute("""
            create table app."Archive.Users*" (id int primary key, email text);
            insert into app."Archive.Users*" values (1, 'old.customer@gmail.com');
            create table app.archive_users (id int primary key, note text);
            insert into app.archive_users values (1, 'kept');
        """)
    finally:
        await conn.close()
    body = await draft(source)
    body["tables"]["Analytics.PageViews"]["action"] = "drop"
    body["tables"]["app.Archive.Users*"]["action"] = "drop"
    manifest = await shrink(source, as_policy(body), runtime.snapshots, runtime.programs, salt=SALT)
    assert manifest.tables["Analytics.PageViews"].file is None
    assert manifest.tables["app.Archive.Users*"].file is None
    assert manifest.tables["app.archive_users"].rows == 1
    dsn = await restored(manifest)
    assert (await fetch(dsn, 'select count(*) from "Analytics"."PageViews"'))[0][0] == 0
    assert (await fetch(dsn, 'select count(*) from app."Archive.Users*"'))[0][0] == 0
    assert (await fetch(dsn, "select count(*) from app.archive_users"))[0][0] == 1


async def test_a_json_path_rule_masks_like_the_column_and_the_same_every_time(
    runtime: Runtime, realistic_dsn: str
) -> None:
    body = await draft(realistic_dsn)
    policy = as_policy(body)
    first = await shrink(realistic_dsn, policy, runtime.snapshots, runtime.programs, salt=SALT)
    again = await shrink(realistic_dsn, policy, runtime.snapshots, runtime.programs, salt=SALT)
    assert published_rows(runtime, first, "app.users") == published_rows(
        runtime, again, "app.users"
    )
    columns = list(body["tables"]["app.users"]["columns"])
    email, profile = columns.index("email"), columns.index("profile")
    import json

    for row in published_rows(runtime, first, "app.users"):
        document = json.loads(row[profile] or "{}")
        assert document["contact"]["email"] == row[email], "same input, same output"
        assert document["preferences"], "unmasked paths are kept"


async def test_a_snapshot_that_would_not_restore_is_never_published(
    runtime: Runtime, scratch_copy: Copier
) -> None:
    source = await scratch_copy(
        "template1",
        """
            create table account (id int primary key, name text);
            create table ledger (id int primary key, account_id int, amount int);
            insert into account values (1, 'a'), (2, 'b');
            insert into ledger values (10, 1, 5), (11, 99, 7);  -- 99: no such account
        """,
    )
    policy = parse_policy("""
        tables:
          public.account: {action: subset, columns: {id: internal, name: internal}}
          public.ledger: {columns: {id: internal, account_id: internal, amount: internal}}
        references:
          - {from: "public.ledger(account_id)", to: "public.account(id)"}
    """)
    before = await staging_and_snapshots(runtime)
    with pytest.raises(PolicyViolation) as caught:
        await shrink(source, policy, runtime.snapshots, runtime.programs, salt=SALT)
    assert str(caught.value).startswith("the snapshot would not restore, so nothing was published")
    assert caught.value.problems == [
        "1 value(s) of public.ledger(account_id) have no kept row in public.account(id), e.g. (99)"
    ]
    assert await staging_and_snapshots(runtime) == before


async def test_the_draft_masks_a_column_that_copies_a_masked_one(
    runtime: Runtime, realistic_dsn: str, scratch_copy: Copier
) -> None:
    source = await scratch_copy("realistic")
    conn = await asyncpg.connect(source)
    try:
        # Names that say nothing: a label that is the user name, and a blob with text inside.
        await conn.execute('alter table app.users add column "shortLabel" text')
        await conn.execute('update app.users set "shortLabel" = username')
        await conn.execute("alter table app.tenants add column logo bytea")
        await conn.execute(
            "update app.tenants set logo = convert_to('PNG..owner ssn 536-22-8726', 'UTF8')"
        )
    finally:
        await conn.close()
    body = await draft(source)
    assert body["tables"]["app.users"]["columns"]["shortLabel"] == {
        "class": "pii",
        "rule": "fake",
        "kind": "user_name",
    }
    assert body["tables"]["app.tenants"]["columns"]["logo"] == "internal"
    with pytest.raises(PolicyViolation) as caught:
        await shrink(source, as_policy(body), runtime.snapshots, runtime.programs, salt=SALT)
    assert caught.value.problems == [
        "app.tenants.logo: 10 national_id:US.ssn value(s), e.g. ***-**-8726"
    ]
    body["tables"]["app.tenants"]["columns"]["logo"] = {"class": "pii", "rule": "null"}
    manifest = await shrink(source, as_policy(body), runtime.snapshots, runtime.programs, salt=SALT)
    assert manifest.tables["app.users"].rows == 600
