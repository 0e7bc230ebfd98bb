"""Shared mode against real PostgreSQL: the isolation matrix, hostile names, no residue."""

from __future__ import annotations

import shutil
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest

from provisioning.drivers.shared import SharedDatabaseDriver
from provisioning.drivers.shared_schema import SharedSchemaDriver
from provisioning.models import Endpoint, EnvironmentView
from provisioning.runtime import Runtime
from provisioning.shared.server import SHARED_DB, golden_name
from provisioning.snapshots.manifest import Manifest
from provisioning.sweeps import reconcile_sweep
from tests.conftest import unique
from tests.test_cli import devdb, psql

DENIED = (asyncpg.InsufficientPrivilegeError, asyncpg.InvalidSchemaNameError)
# Another database: refused by pg_hba on devdb's own server, by the privilege on others.
KEPT_OUT = (asyncpg.InsufficientPrivilegeError, asyncpg.InvalidAuthorizationSpecificationError)


async def as_role(endpoint: Endpoint, database: str | None = None) -> asyncpg.Connection:
    return await asyncpg.connect(
        host=endpoint.host,
        port=endpoint.port,
        user=endpoint.user,
        password=endpoint.password,
        database=database or endpoint.database,
    )


async def pair(
    runtime: Runtime, kind: str, snapshot: Manifest
) -> tuple[EnvironmentView, EnvironmentView]:
    a = await runtime.service.refresh(unique("ann"), None, kind=kind, snapshot=snapshot.id)
    b = await runtime.service.refresh(unique("bob"), None, kind=kind, snapshot=snapshot.id)
    assert a.endpoint is not None and b.endpoint is not None
    return a, b


async def destroy(runtime: Runtime, *views: EnvironmentView) -> None:
    for view in views:
        await runtime.service.destroy(view.env.owner, view.env.name)


async def test_schema_isolation_matrix(runtime: Runtime, demo_snapshot: Manifest) -> None:
    a, b = await pair(runtime, "shared", demo_snapshot)
    assert a.endpoint and b.endpoint
    mine, theirs = a.endpoint.user, b.endpoint.user
    conn = await as_role(a.endpoint)
    try:
        # Their own schema is on the search path, with the snapshot's data, theirs to change.
        assert await conn.fetchval("show search_path") == mine
        assert await conn.fetchval("select count(*) from contacts") > 0
        await conn.execute("create table scratch (x int); insert into scratch values (1)")
        await conn.execute("create function mine() returns int language sql as 'select 1'")
        # Someone else's schema: not listed, not readable, not writable, nothing to create.
        listed = await conn.fetchval(
            "select count(*) from information_schema.tables where table_schema = $1", theirs
        )
        assert listed == 0
        for statement in [
            f'select * from "{theirs}".contacts',
            f'insert into "{theirs}".contacts (id) values (-1)',
            f'create table "{theirs}".intruder (x int)',
            f'set role "{theirs}"',
            "create table public.intruder (x int)",
            f"alter role \"{theirs}\" password 'taken'",
        ]:
            with pytest.raises(DENIED):
                await conn.execute(statement)
        # Nor the golden copy the environments came from.
        with pytest.raises(KEPT_OUT):
            await as_role(a.endpoint, golden_name(demo_snapshot.id))
    finally:
        await conn.close()
    other = await as_role(b.endpoint)
    try:
        for statement in [f'select * from "{mine}".scratch', f'select "{mine}".mine()']:
            with pytest.raises(DENIED):
                await other.execute(statement)
    finally:
        await other.close()
    admin = await runtime_server(runtime).connect(SHARED_DB)
    try:
        checks = await admin.fetchrow(
            "select has_schema_privilege('public', $1, 'usage') as schema_usage,"
            " has_schema_privilege('public', 'public', 'usage') as public_usage,"
            " has_database_privilege('public', $2, 'connect') as connect,"
            " has_function_privilege('public', $3, 'execute') as execute,"
            " (select rolconnlimit from pg_roles where rolname = $1) as limit",
            mine,
            SHARED_DB,
            f'"{mine}".mine()',
        )
    finally:
        await admin.close()
    assert dict(checks) == {
        "schema_usage": False,
        "public_usage": False,
        "connect": False,
        "execute": False,
        "limit": 10,
    }
    async with runtime.store.connection() as tx:
        audit = [r for r in await tx.audit_entries(mine) if r["action"] == "privileges"]
    statements = [s for r in audit for s in r["detail"]["statements"]]
    assert f'revoke all on schema "{mine}" from public' in statements or (
        f"revoke all on schema {mine} from public" in statements
    )
    assert any(s.startswith("grant connect on database") for s in statements)
    await destroy(runtime, a, b)
    async with runtime.store.connection() as tx:
        audit = [r for r in await tx.audit_entries(mine) if r["action"] == "privileges"]
    assert any("drop role" in s for r in audit for s in r["detail"]["statements"])


def runtime_server(runtime: Runtime) -> Any:
    driver = runtime.service.drivers["shared"]
    assert isinstance(driver, SharedSchemaDriver)
    return driver.server


async def test_database_isolation_matrix(runtime: Runtime, demo_snapshot: Manifest) -> None:
    a, b = await pair(runtime, "shared-db", demo_snapshot)
    assert a.endpoint and b.endpoint
    conn = await as_role(a.endpoint)
    try:
        assert await conn.fetchval("select current_database()") == a.endpoint.database
        owner = await conn.fetchval("select tableowner from pg_tables where tablename = 'contacts'")
        assert owner == a.endpoint.user
        await conn.execute(
            "update contacts set city = city where id = (select min(id) from contacts)"
        )
        await conn.execute("create table mine (x int)")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute(f'set role "{b.endpoint.user}"')
    finally:
        await conn.close()
    for database in [b.endpoint.database, golden_name(demo_snapshot.id), SHARED_DB]:
        with pytest.raises(KEPT_OUT):
            await as_role(a.endpoint, database)
    await destroy(runtime, a, b)


@pytest.mark.parametrize(
    "owner",
    ["O'Brien; drop role devdb; --", 'say "hi"', "x" * 80, "Zoë Ünïcødé", "  ", "1leading"],
)
async def test_hostile_user_names_are_made_safe(
    runtime: Runtime, demo_snapshot: Manifest, owner: str
) -> None:
    view = await runtime.service.refresh(owner, None, kind="shared", snapshot=demo_snapshot.id)
    assert view.endpoint is not None
    assert view.endpoint.user.isascii() and len(view.endpoint.user) <= 63
    conn = await as_role(view.endpoint)
    try:
        assert await conn.fetchval("select current_user") == view.endpoint.user
    finally:
        await conn.close()
    await runtime.service.destroy(owner, view.env.name)


async def catalog(runtime: Runtime) -> dict[str, list[tuple[Any, ...]]]:
    server = runtime_server(runtime)
    queries = {
        "roles": "select rolname from pg_roles order by 1",
        "databases": "select datname, datacl::text from pg_database order by 1",
        "schemas": "select nspname, nspacl::text from pg_namespace order by 1",
        "default_acls": "select defaclrole::regrole::text, defaclobjtype, defaclacl::text"
        " from pg_default_acl order by 1, 2",
        "shared_dependencies": "select classid::regclass::text, refobjid, deptype"
        " from pg_shdepend where dbid <> 0 order by 1, 2",
        "members": "select roleid, member from pg_auth_members order by 1, 2",
        "tables": "select schemaname, tablename from pg_tables"
        " where schemaname not in ('pg_catalog', 'information_schema') order by 1, 2",
    }
    conn = await server.connect(SHARED_DB)
    try:
        return {name: [tuple(r) for r in await conn.fetch(sql)] for name, sql in queries.items()}
    finally:
        await conn.close()


async def test_refresh_destroy_refresh_leaves_no_residue(
    runtime: Runtime, demo_snapshot: Manifest
) -> None:
    owner = unique("tidy")
    # Golden copies are made once per snapshot and stay; warm them first.
    for kind in ("shared", "shared-db"):
        first = await runtime.service.refresh(owner, None, kind=kind, snapshot=demo_snapshot.id)
        await runtime.service.destroy(owner, first.env.name)
    before = await catalog(runtime)
    for kind in ("shared", "shared-db", "shared"):
        view = await runtime.service.refresh(owner, None, kind=kind, snapshot=demo_snapshot.id)
        assert view.endpoint is not None
        conn = await as_role(view.endpoint)
        try:
            await conn.execute("create table extra (x int); create sequence extra_seq")
        finally:
            await conn.close()
        await runtime.service.destroy(owner, view.env.name)
    assert await catalog(runtime) == before


async def test_refresh_shared_from_the_command_line(
    runtime: Runtime, demo_snapshot: Manifest, cli_env: dict[str, str]
) -> None:
    name = unique("cli-shared")
    result = devdb(cli_env, "refresh", name, "--shared", "--schema", "--snapshot", demo_snapshot.id)
    assert result.returncode == 0, result.stderr
    count = psql(cli_env, f"devdb-{name}", "select count(*) > 0 from contacts")
    assert count == "t"
    assert devdb(cli_env, "destroy", name).returncode == 0
    bad = devdb(cli_env, "refresh", name, "--schema")
    assert bad.returncode == 2 and "--schema goes with --shared" in bad.stderr


async def test_golden_copies_go_with_their_snapshot(
    runtime: Runtime, demo_snapshot: Manifest
) -> None:
    copy = replace(demo_snapshot, id=unique("golden"), created=demo_snapshot.created)
    staged = await runtime.snapshots.staging()
    shutil.copytree(await runtime.snapshots.fetch(demo_snapshot), staged / "dump")
    await runtime.snapshots.publish(staged, copy)
    owner = unique("gold")
    for kind in ("shared", "shared-db"):
        view = await runtime.service.refresh(owner, None, kind=kind, snapshot=copy.id)
        await runtime.service.destroy(owner, view.env.name)
    server = runtime_server(runtime)
    assert (server.home / "shared-golden" / golden_name(copy.id)).is_dir()
    await runtime.snapshots.delete(copy.id)

    done = await reconcile_sweep(runtime.service, datetime.now(UTC))
    assert golden_name(copy.id) in done["golden_removed"]
    assert golden_name(demo_snapshot.id) not in done["golden_removed"]
    admin = await server.connect("postgres")
    try:
        left = await admin.fetch(
            "select datname from pg_database where datname like $1", golden_name(copy.id) + "%"
        )
    finally:
        await admin.close()
    assert left == []
    assert not (server.home / "shared-golden" / golden_name(copy.id)).exists()


@pytest.mark.parametrize("kind", ["shared", "shared-db"])
async def test_reset_keeps_the_login_and_drops_every_change(
    runtime: Runtime, demo_snapshot: Manifest, kind: str
) -> None:
    owner = unique("rita")
    view = await runtime.service.refresh(owner, None, kind=kind, snapshot=demo_snapshot.id)
    assert view.endpoint is not None
    conn = await as_role(view.endpoint)
    await conn.execute(
        "insert into tenants values (9999, 'Scratch', 'scratch', false, 'free', now())"
    )
    await conn.execute("create table notes (id int)")
    try:
        after_view, ended = await runtime.service.reset(owner, view.env.name)
        assert ended == 1, "the open session was ended and counted"
        with pytest.raises((OSError, asyncpg.PostgresError, asyncpg.InterfaceError)):
            await conn.fetchval("select 1")
    finally:
        await conn.close()
    assert after_view.endpoint == view.endpoint  # host, port, database, user, password
    again = await as_role(view.endpoint)
    try:
        assert await again.fetchval("select count(*) from tenants where id = 9999") == 0
        assert await again.fetchval("select to_regclass('notes')") is None
        assert await again.fetchval("select count(*) from contacts") == 2000
        # Still the developer's own: they may write and create again.
        await again.execute("create table notes (id int)")
    finally:
        await again.close()
    driver = runtime.service.drivers["shared-db"]
    assert isinstance(driver, SharedDatabaseDriver)
    admin = await driver.server.connect("postgres")
    try:
        leftovers = await admin.fetch(
            "select datname from pg_database where datname like 'devdb_reset_%'"
        )
    finally:
        await admin.close()
    assert leftovers == []
    await destroy(runtime, view)
