"""Dev-safe snapshots on Chinook and the demo database, against real PostgreSQL."""

from __future__ import annotations

import gzip
import re
from collections.abc import Awaitable, Callable
from pathlib import Path

import asyncpg
import pytest

from provisioning.demo import demo_policy
from provisioning.errors import PolicyViolation
from provisioning.runtime import Runtime
from provisioning.shrink.copytext import decode
from provisioning.shrink.pipeline import apply_retention, check_source, shrink
from provisioning.shrink.policy import Policy, load_policy, parse_policy
from provisioning.snapshots.manifest import Manifest
from tests.conftest import unique

POLICY = Path(__file__).parent / "data" / "chinook_policy.yml"
SALT = b"test-salt-one"
Copier = Callable[..., Awaitable[str]]


def chinook_policy(country: str = "Brazil") -> Policy:
    text = POLICY.read_text().replace("country = 'Brazil'", f"country = '{country}'")
    return parse_policy(text)


async def fetch(dsn: str, sql: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(dsn)
    try:
        return list(await conn.fetch(sql))
    finally:
        await conn.close()


async def ids(dsn: str, sql: str) -> set[int]:
    return {row[0] for row in await fetch(dsn, sql)}


def dump_rows(runtime: Runtime, manifest: Manifest, table: str) -> list[list[str | None]]:
    """A published table's rows, read straight from the snapshot's data file."""
    entry = manifest.tables[table]
    assert entry.file is not None
    path = runtime.settings.snapshots_dir / manifest.id / "dump" / entry.file
    rows = []
    text = gzip.decompress(path.read_bytes()).decode() if path.suffix == ".gz" else path.read_text()
    for line in text.splitlines():
        if line == "\\.":
            break
        rows.append([decode(field) for field in line.split("\t")])
    return rows


async def test_policy_check_reports_every_kind_of_drift(
    chinook_dsn: str, scratch_copy: Copier
) -> None:
    _, problems = await check_source(chinook_dsn, load_policy(POLICY))
    assert problems == []
    drifted = await scratch_copy("chinook")
    conn = await asyncpg.connect(drifted)
    try:
        await conn.execute("alter table customer add column nickname text")
        await conn.execute("alter table employee drop column fax")
        await conn.execute("create table loyalty (id int primary key, points int)")
    finally:
        await conn.close()
    text = POLICY.read_text().replace(
        "      email: {class: pii, rule: fake, kind: email}\n      support_rep_id",
        "      email: pii\n      support_rep_id",
    )
    _, problems = await check_source(drifted, parse_policy(text))
    assert problems == [
        "column public.customer.email is pii but has no masking rule",
        "column public.customer.nickname is not classified",
        "policy names column public.employee.fax, which does not exist",
        "table public.loyalty is not in the policy (schema drift)",
    ]


async def test_bad_policy_files_name_the_problem() -> None:
    for text, fragment in [
        ("tables: [1]", "needs a `tables` mapping"),
        ("tables: {public.x: {action: shred}}", "action must be keep, drop or subset"),
        ("tables: {public.x: {columns: {a: secretish}}}", "class must be one of"),
        ("tables: {public.x: {columns: {a: {class: pii, rule: blur}}}}", "unknown rule 'blur'"),
        ("tables: {public.x: {columns: {a: {class: pii, rule: fake, kind: pet}}}}", "kind must"),
        ("tables: {public.x: {where: 'true'}}", "need action: subset"),
        ("tables: {}\nreferences: [{from: 'x', to: 'y'}]", "must look like"),
        (":\n  - [", "not valid YAML"),
    ]:
        with pytest.raises(PolicyViolation.__mro__[1], match=re.escape(fragment)):
            parse_policy(text)


async def test_one_country_subset_is_complete_and_restores(
    runtime: Runtime, chinook_dsn: str
) -> None:
    manifest = await shrink(
        chinook_dsn, chinook_policy("Brazil"), runtime.snapshots, runtime.programs, salt=SALT
    )
    expected = {
        "customer": await ids(
            chinook_dsn, "select customer_id from customer where country = 'Brazil'"
        ),
        "invoice": await ids(
            chinook_dsn,
            "select invoice_id from invoice i join customer c "
            "using (customer_id) where c.country = 'Brazil'",
        ),
        "invoice_line": await ids(
            chinook_dsn,
            "select invoice_line_id from invoice_line l join "
            "invoice i using (invoice_id) join customer c using "
            "(customer_id) where c.country = 'Brazil'",
        ),
    }
    sold = (
        "select t.* from track t where t.track_id in (select l.track_id from invoice_line l "
        "join invoice i using (invoice_id) join customer c using (customer_id) "
        "where c.country = 'Brazil')"
    )
    expected["track"] = await ids(chinook_dsn, f"select track_id from ({sold}) t")
    expected["album"] = await ids(chinook_dsn, f"select distinct album_id from ({sold}) t")
    expected["artist"] = await ids(
        chinook_dsn, f"select distinct a.artist_id from ({sold}) t join album a using (album_id)"
    )
    expected["genre"] = await ids(chinook_dsn, f"select distinct genre_id from ({sold}) t")
    expected["media_type"] = await ids(
        chinook_dsn, f"select distinct media_type_id from ({sold}) t"
    )
    expected["employee"] = await ids(
        chinook_dsn,
        """
        with recursive chain as (
            select e.* from employee e where e.employee_id in
                (select support_rep_id from customer where country = 'Brazil')
            union
            select m.* from employee m join chain c on m.employee_id = c.reports_to)
        select employee_id from chain""",
    )
    assert len(expected["customer"]) == 5 and len(expected["employee"]) >= 2
    for table, keys in expected.items():
        assert manifest.tables[f"public.{table}"].rows == len(keys), table
    assert manifest.tables["public.playlist_track"].rows == 0

    view = await runtime.service.refresh(unique("dev"), "brazil", snapshot=manifest.id)
    assert view.endpoint is not None
    dsn = view.endpoint.dsn
    try:
        for table, keys in expected.items():
            pk = "employee_id" if table == "employee" else f"{table}_id"
            assert await ids(dsn, f"select {pk} from {table}") == keys, table
        fks = await fetch(
            dsn, "select conname from pg_constraint where contype = 'f' and convalidated"
        )
        assert len(fks) == 11, "every foreign key was restored and validated"
        source_emails = {r[0] for r in await fetch(chinook_dsn, "select email from customer")}
        masked = [r[0] for r in await fetch(dsn, "select email from customer")]
        assert len(set(masked)) == len(masked), "masked emails stay unique"
        assert all(re.fullmatch(r"[a-z]+\.[a-z]+\.[0-9a-f]{10}@example\.com", e) for e in masked)
        assert not set(masked) & source_emails
        phones = [r[0] for r in await fetch(dsn, "select phone from customer")]
        assert all(re.fullmatch(r"\+1-[2-9]\d\d-555-\d{4}", p) for p in phones)
    finally:
        await runtime.service.destroy(view.env.owner, "brazil")


async def test_masking_is_deterministic_per_salt(runtime: Runtime, chinook_dsn: str) -> None:
    policy = chinook_policy("Brazil")
    first = await shrink(chinook_dsn, policy, runtime.snapshots, runtime.programs, salt=SALT)
    again = await shrink(chinook_dsn, policy, runtime.snapshots, runtime.programs, salt=SALT)
    other = await shrink(
        chinook_dsn, policy, runtime.snapshots, runtime.programs, salt=b"another-salt"
    )
    rows = [dump_rows(runtime, m, "public.customer") for m in (first, again, other)]
    assert rows[0] == rows[1]
    by_id = [{r[0]: r for r in table} for table in rows]
    for customer_id, row in by_id[0].items():
        assert by_id[2][customer_id][0] == row[0]  # keys are not masked
        assert by_id[2][customer_id][11] != row[11], "another salt, another email"
    # Denormalised copies agree: a value masks the same wherever it appears.
    invoices = dump_rows(runtime, first, "public.invoice")
    customers = dump_rows(runtime, first, "public.customer")
    source = await fetch(
        chinook_dsn,
        "select c.customer_id, c.city = i.billing_city as same "
        "from invoice i join customer c using (customer_id) "
        "where c.country = 'Brazil'",
    )
    same_city = {r["customer_id"] for r in source if r["same"]}
    city_of = {c[0]: c[5] for c in customers}
    for invoice in invoices:
        if int(invoice[1]) in same_city:
            assert invoice[4] == city_of[invoice[1]]


async def test_planted_personal_data_blocks_the_publish(
    runtime: Runtime, chinook_dsn: str, scratch_copy: Copier
) -> None:
    planted = await scratch_copy("chinook")
    conn = await asyncpg.connect(planted)
    try:
        brazil = (
            "(select invoice_id from invoice join customer using (customer_id) "
            "where country = 'Brazil' order by invoice_id limit 3)"
        )
        await conn.execute(
            f"update invoice set billing_state = 'SSN 536-22-8726' where invoice_id in {brazil}"
        )
        await conn.execute(
            "update track set composer = 'card 4111 1111 1111 1111 exp 2026-11-23'"
            " where track_id in (select track_id from invoice_line l join "
            f"invoice using (invoice_id) where invoice_id in {brazil})"
        )
        await conn.execute(
            "update album set title = 'call (415) 867-5309' where album_id in "
            "(select album_id from track where composer like 'card%')"
        )
        await conn.execute(
            "update artist set name = (select email from customer "
            "where country = 'Brazil' limit 1) where artist_id in "
            "(select artist_id from album where title like 'call%')"
        )
    finally:
        await conn.close()
    before = [m.id for m in await runtime.snapshots.list()]
    staging = set(runtime.settings.snapshots_dir.glob(".staging-*"))
    with pytest.raises(PolicyViolation) as caught:
        await shrink(
            planted, chinook_policy("Brazil"), runtime.snapshots, runtime.programs, salt=SALT
        )
    found = "\n".join(caught.value.problems)
    assert "public.invoice.billing_state: 3 national_id:US.ssn value(s), e.g. ***-**-8726" in found
    assert "public.track.composer:" in found and "card value(s)" in found
    assert "public.album.title: " in found and "phone:US" in found
    assert "public.artist.name:" in found and "value copied from a pii column" in found
    assert "4111 1111 1111 1111" not in found and "536-22-8726" not in found
    assert "2026-11-23" not in found, "timestamps are not card numbers"
    assert [m.id for m in await runtime.snapshots.list()] == before
    assert set(runtime.settings.snapshots_dir.glob(".staging-*")) == staging

    with pytest.raises(PolicyViolation) as allowed:
        await shrink(
            planted,
            chinook_policy("Brazil"),
            runtime.snapshots,
            runtime.programs,
            salt=SALT,
            allow=[r"call \(415\) 867-5309", r"\(415\) 867-5309"],
        )
    assert not any("phone" in p for p in allowed.value.problems)


async def test_tenant_snapshot_and_retention(runtime: Runtime, demo_snapshot: Manifest) -> None:
    demo = runtime.server_dsn("devdb_demo")
    policy = demo_policy()
    manifest = await shrink(
        demo, policy, runtime.snapshots, runtime.programs, salt=SALT, tenant="4"
    )
    users = dump_rows(runtime, manifest, "public.users")
    partitions = [name for name in manifest.tables if name.startswith("public.events_")]
    assert len(partitions) >= 8, "the demo's events are partitioned by month"
    events = [row for name in partitions for row in dump_rows(runtime, manifest, name)]
    assert events
    assert users and {row[1] for row in users} == {"4"}
    assert {row[1] for row in events} <= {"4"}
    assert manifest.extra["tenant"] == "4" and manifest.extra["policy_sha256"] == policy.digest
    assert "salt" not in str(manifest.to_json()).replace("salt_id", "")

    def shrunk(engine: str) -> list[str]:
        return [
            m.id
            for m in listed
            if m.extra.get("kind") == "shrink" and m.extra.get("engine", "postgresql") == engine
        ]

    listed = await runtime.snapshots.list()
    kept, dynamodb = shrunk("postgresql")[:2], shrunk("dynamodb")
    deleted = await apply_retention(runtime.snapshots, 2)
    listed = await runtime.snapshots.list()
    assert shrunk("postgresql") == kept and deleted
    assert shrunk("dynamodb") == dynamodb, "each engine's snapshots are counted apart"
    with pytest.raises(Exception, match="no tenant '99999'"):
        await shrink(demo, policy, runtime.snapshots, runtime.programs, salt=SALT, tenant="99999")


async def test_subset_follows_multi_column_keys_several_keys_and_declared_references(
    runtime: Runtime, scratch_copy: Copier
) -> None:
    source = await scratch_copy(
        "template1",
        """
            create table region (code text, country text, name text,
                                 primary key (country, code));
            create table shop (id int primary key, country text, region text, is_demo bool,
                               foreign key (country, region) references region (country, code));
            create table transfer (id int primary key,
                                   from_shop int not null references shop (id),
                                   to_shop int not null references shop (id),
                                   audit_ref int);
            create table audit (id int primary key, note text);
            insert into region values ('ca', 'us', 'California'), ('ny', 'us', 'New York'),
                                      ('by', 'de', 'Bavaria'), ('be', 'de', 'Berlin');
            insert into shop values (1, 'us', 'ca', true), (2, 'us', 'ny', false),
                                    (3, 'de', 'by', false), (4, 'de', 'be', false);
            insert into audit values (10, 'a'), (11, 'b'), (12, 'c');
            insert into transfer values (100, 1, 3, 10), (101, 2, 4, 11), (102, 4, 1, 12);
        """,
    )
    policy = parse_policy("""
        tables:
          public.shop: {action: subset, root: true, where: "is_demo",
                        columns: {id: internal, country: internal, region: internal,
                                  is_demo: internal}}
          public.region: {action: subset, columns: {code: internal, country: internal,
                                                    name: internal}}
          public.transfer: {action: subset, columns: {id: internal, from_shop: internal,
                                                      to_shop: internal, audit_ref: internal}}
          public.audit: {action: subset, columns: {id: internal, note: internal}}
        references:
          - {from: "public.transfer(audit_ref)", to: "public.audit(id)"}
    """)
    manifest = await shrink(source, policy, runtime.snapshots, runtime.programs, salt=SALT)
    rows = {
        t: sorted(r[0] for r in dump_rows(runtime, manifest, f"public.{t}"))
        for t in ("shop", "transfer", "audit")
    }
    # Shop 1 is the root; both transfers touching it (one key each way) come down; they pull
    # up the shops at their other ends (3, 4) and the audit rows named by the undeclared key.
    assert rows == {"shop": ["1", "3", "4"], "transfer": ["100", "102"], "audit": ["10", "12"]}
    regions = sorted((r[1], r[0]) for r in dump_rows(runtime, manifest, "public.region"))
    assert regions == [("de", "be"), ("de", "by"), ("us", "ca")]
