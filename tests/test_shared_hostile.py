"""Shared mode against a hostile developer, on real PostgreSQL.

Two setups: devdb's embedded shared server, and a configured server (DEVDB_SHARED_URL) that
a DBA installed with PostgreSQL's default PUBLIC grants, which devdb refuses until the
README's statements are run. Each attack is made as a developer's own role; each fails or
its harm is undone, provisioning for the others keeps working, and destroy leaves nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path

import asyncpg
import pytest

from provisioning.drivers.local import create_login, set_password
from provisioning.drivers.shared import SharedDatabaseDriver
from provisioning.drivers.shared_schema import SharedSchemaDriver
from provisioning.errors import InvalidInput
from provisioning.models import default_name
from provisioning.pg.cluster import LocalCluster
from provisioning.runtime import Runtime
from provisioning.secrets import new_password
from provisioning.service import EnvironmentView, Service
from provisioning.shared.server import _LOCK, SHARED_DB, SharedServer, golden_name
from provisioning.snapshots.dump import dump_snapshot
from provisioning.snapshots.manifest import Manifest
from tests.conftest import started_cluster, unique
from tests.ports import BASE
from tests.test_shared import as_role

CONFIGURED_PORT = BASE + 510
# Refused by pg_hba (devdb's own server) or by the missing CONNECT privilege (any server).
KEPT_OUT = (asyncpg.InsufficientPrivilegeError, asyncpg.InvalidAuthorizationSpecificationError)
DBA_STATEMENTS = ["revoke connect, temporary on database postgres, template1 from public"]


@dataclass
class Setup:
    name: str
    service: Service
    server: SharedServer


def with_server(runtime: Runtime, server: SharedServer) -> Service:
    base = runtime.service
    return Service(
        store=base.store,
        drivers={
            "shared": SharedSchemaDriver(server),
            "shared-db": SharedDatabaseDriver(server),
        },
        snapshots=base.snapshots,
        secrets=base.secrets,
        policy=base.policy,
        job_options=base.job_options,
    )


@pytest.fixture(scope="module")
async def configured(runtime: Runtime, home: Path) -> AsyncIterator[LocalCluster]:
    """A PostgreSQL server as a DBA set it up for devdb: PostgreSQL's default pg_hba and
    grants, then the README's statements; devdb's login a superuser with a password, reached
    over TCP like any configured server."""
    cluster = await started_cluster(runtime, CONFIGURED_PORT, "configured-admin")
    conn = await cluster.connect()
    try:
        for statement in DBA_STATEMENTS:  # README, Shared mode: run once by a DBA
            await conn.execute(statement)
    finally:
        await conn.close()
    try:
        yield cluster
    finally:
        await cluster.stop(immediate=True)


def configured_server(runtime: Runtime, cluster: LocalCluster) -> SharedServer:
    return SharedServer(
        url=f"postgresql://devdb:configured-admin@127.0.0.1:{cluster.port}/postgres",
        home=runtime.settings.home / "configured-home",
        programs=runtime.programs,
        account=None,
        port=cluster.port,
    )


@pytest.fixture(params=["embedded", "configured"])
async def setup(
    request: pytest.FixtureRequest, runtime: Runtime, configured: LocalCluster
) -> Setup:
    if request.param == "embedded":
        server = runtime.service.drivers["shared"].server  # type: ignore[attr-defined]
        return Setup("embedded", runtime.service, server)
    server = configured_server(runtime, configured)
    return Setup("configured", with_server(runtime, server), server)


async def refresh(setup: Setup, kind: str, snapshot: Manifest) -> EnvironmentView:
    view = await setup.service.refresh(unique("dev"), None, kind=kind, snapshot=snapshot.id)
    assert view.endpoint is not None
    return view


async def leftovers(server: SharedServer, role: str) -> dict[str, object]:
    """What is left of a role on the server: itself, its databases and schemas, and any
    object or privilege recorded for it anywhere."""
    conn = await server.connect("postgres")
    try:
        found: dict[str, object] = {
            "role": await conn.fetchval("select count(*) from pg_roles where rolname = $1", role),
            "databases": await conn.fetchval(
                "select count(*) from pg_database where datname = $1", role
            ),
        }
    finally:
        await conn.close()
    shared = await server.connect(SHARED_DB)
    try:
        found["schemas"] = await shared.fetchval(
            "select count(*) from pg_namespace where nspname = $1", role
        )
    finally:
        await shared.close()
    return found


NOTHING_LEFT = {"role": 0, "databases": 0, "schemas": 0}


@pytest.mark.parametrize("kind", ["shared", "shared-db"])
async def test_a_hostile_developer_reaches_nothing_but_their_own(
    setup: Setup, runtime: Runtime, demo_snapshot: Manifest, kind: str
) -> None:
    mallory = await refresh(setup, kind, demo_snapshot)
    assert mallory.endpoint is not None
    neighbour: EnvironmentView | None = None
    conn = await as_role(mallory.endpoint)
    try:
        # Other databases: the maintenance database (devdb's lock lives there), template1
        # (golden builds need it idle), the golden copy.
        for database in ("postgres", "template1", golden_name(demo_snapshot.id)):
            with pytest.raises(KEPT_OUT):
                await as_role(mallory.endpoint, database)
        # devdb's lock key, taken where the developer can: it is not devdb's lock.
        await conn.execute("select pg_advisory_lock($1)", _LOCK)
        # Objects to make destroy stick: a large object, a default privilege, a table.
        await conn.execute("select lo_from_bytea(0, 'kept'::bytea)")
        await conn.execute(
            f'alter default privileges grant select on tables to "{mallory.endpoint.user}"'
        )
        await conn.execute("create table stash (x int)")
        await conn.execute("listen neighbours")

        # A neighbour's creation, while mallory knocks on its database and holds the key.
        name = unique("neighbour")
        owner = unique("dev")
        knocked: list[BaseException | None] = []

        async def knock(prefix: str) -> None:
            """Watch the catalog for the neighbour's database, and knock on it at once."""
            spy = await as_role(mallory.endpoint)  # type: ignore[arg-type]
            try:
                while True:
                    names = await spy.fetch(
                        "select datname from pg_database where starts_with(datname, $1)", prefix
                    )
                    for row in names:
                        try:
                            intruder = await as_role(mallory.endpoint, row[0])  # type: ignore[arg-type]
                        except (OSError, asyncpg.PostgresError) as exc:
                            knocked.append(exc)
                        else:
                            knocked.append(None)
                            await intruder.close()
                    await asyncio.sleep(0.005)
            finally:
                await spy.close()

        knocking = asyncio.create_task(knock(f"dev_{name.replace('-', '_')}"))
        try:
            neighbour = await asyncio.wait_for(
                setup.service.refresh(owner, name, kind=kind, snapshot=demo_snapshot.id), 120
            )
        finally:
            knocking.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await knocking
        assert neighbour.endpoint is not None
        assert None not in knocked, "no knock got in"
        if kind == "shared-db":
            assert knocked, "the neighbour's database was seen while it was made"
        if kind == "shared-db":
            with pytest.raises(KEPT_OUT):
                await as_role(mallory.endpoint, neighbour.endpoint.database)

        # NOTIFY: per database, so a database neighbour is unheard; the schema variant's
        # neighbours share one database, and its channels (README, isolation).
        heard: list[str] = []
        await conn.add_listener("neighbours", lambda *args: heard.append(args[3]))
        other = await as_role(neighbour.endpoint)
        try:
            await other.execute("notify neighbours, 'secret-plan'")
        finally:
            await other.close()
        await asyncio.sleep(0.3)
        assert heard == (["secret-plan"] if kind == "shared" else [])
    finally:
        await conn.close()
        if neighbour is not None:
            await setup.service.destroy(neighbour.env.owner, neighbour.env.name)

    await setup.service.destroy(mallory.env.owner, mallory.env.name)
    assert await leftovers(setup.server, mallory.endpoint.user) == NOTHING_LEFT


async def test_a_configured_server_open_to_public_is_refused_until_closed(
    runtime: Runtime, demo_snapshot: Manifest
) -> None:
    """A fresh server with PostgreSQL's default grants: shared mode is refused in one
    sentence, with nothing made; after the README's statements, it works."""
    cluster = await started_cluster(runtime, CONFIGURED_PORT + 1, "configured-admin")
    try:
        conn = await cluster.connect()
        service = with_server(runtime, configured_server(runtime, cluster))
        owner = unique("dev")
        with pytest.raises(InvalidInput, match="closed to PUBLIC, and postgres, template1 are"):
            await service.refresh(owner, None, kind="shared-db", snapshot=demo_snapshot.id)
        roles = await conn.fetchval("select count(*) from pg_roles where rolname like 'dev\\_%'")
        assert roles == 0, "nothing was made"
        for statement in DBA_STATEMENTS:
            await conn.execute(statement)
        await conn.close()
        view = await service.refresh(owner, None, kind="shared-db", snapshot=demo_snapshot.id)
        await service.destroy(owner, view.env.name)
    finally:
        await cluster.stop(immediate=True)
        await cluster.remove()


async def test_new_databases_never_admit_public(
    runtime: Runtime, demo_snapshot: Manifest, configured: LocalCluster
) -> None:
    """A golden build (for a snapshot seen for the first time) and the copy made from it are
    closed from their first moment: a role that may connect wherever PUBLIC may never gets
    into either while they are made. On the configured server, whose pg_hba lets any role
    try any database, so that only the privileges keep it out."""
    server = configured_server(runtime, configured)
    service = with_server(runtime, server)
    await server.ensure()
    copy = replace(demo_snapshot, id=unique("closed"), created=demo_snapshot.created)
    staged = await runtime.snapshots.staging()
    shutil.copytree(await runtime.snapshots.fetch(demo_snapshot), staged / "dump")
    await runtime.snapshots.publish(staged, copy)
    watcher = f"watcher_{unique('w').replace('-', '_')}"
    await server.execute("postgres", f"create role {watcher} login password 'watching'")
    owner = unique("dev")
    prefixes = (golden_name(copy.id), f"dev_{default_name(owner).replace('-', '_')}_")
    got_in: list[str] = []
    seen: set[str] = set()

    async def watch() -> None:
        host, port = server.address
        admin = await server.connect("postgres")
        try:
            while True:
                names = [
                    r[0]
                    for r in await admin.fetch("select datname from pg_database")
                    if r[0].startswith(prefixes)
                ]
                for database in names:
                    seen.add(database)
                    try:
                        conn = await asyncpg.connect(
                            host=host,
                            port=port,
                            user=watcher,
                            password="watching",
                            database=database,
                        )
                    except (OSError, asyncpg.PostgresError):
                        continue
                    got_in.append(database)
                    await conn.close()
                await asyncio.sleep(0.005)
        finally:
            await admin.close()

    watching = asyncio.create_task(watch())
    try:
        view = await service.refresh(owner, None, kind="shared-db", snapshot=copy.id)
    finally:
        watching.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watching
    assert got_in == []
    assert f"{golden_name(copy.id)}_partial" in seen, "the golden build was watched"
    await service.destroy(owner, view.env.name)
    await runtime.snapshots.delete(copy.id)
    await server.execute("postgres", f"drop role {watcher}")


async def test_no_password_reaches_the_server_log(
    runtime: Runtime, demo_snapshot: Manifest
) -> None:
    """With log_statement=all, what devdb runs to make and reset logins is logged with SCRAM
    verifiers, never a password: on the shared server (both variants, refresh and reset),
    and on a local cluster (its login made, then given new passwords as a clone, a reset and
    a warm handover do)."""
    server = runtime.service.drivers["shared"].server  # type: ignore[attr-defined]
    await server.ensure()
    await server.execute("postgres", "alter system set log_statement = 'all'")
    await server.execute("postgres", "select pg_reload_conf()")
    log = server.cluster.log_file
    try:
        for kind in ("shared", "shared-db"):
            owner = unique("dev")
            start = log.stat().st_size
            view = await runtime.service.refresh(owner, None, kind=kind, snapshot=demo_snapshot.id)
            assert view.endpoint is not None
            await runtime.service.reset(owner, view.env.name)
            written = log.read_bytes()[start:].decode(errors="replace")
            assert view.endpoint.user in written
            assert "SCRAM-SHA-256$4096:" in written, "the role's statement was logged"
            assert view.endpoint.password not in written
            await runtime.service.destroy(owner, view.env.name)
    finally:
        await server.execute("postgres", "alter system reset log_statement")
        await server.execute("postgres", "select pg_reload_conf()")

    cluster = await started_cluster(runtime, CONFIGURED_PORT + 2)
    try:
        conn = await cluster.connect()
        await conn.execute("alter system set log_statement = 'all'")
        await conn.execute("select pg_reload_conf()")
        passwords = [new_password() for _ in range(3)]
        await create_login(conn, "dev", passwords[0])
        for password in passwords[1:]:
            await set_password(conn, "dev", password)
        await conn.close()
        await cluster.stop()  # the log is complete
        written = cluster.log_file.read_text(errors="replace")
        assert written.count("SCRAM-SHA-256$4096:") >= 3
        for password in passwords:
            assert password not in written
    finally:
        await cluster.remove()


async def test_a_snapshot_with_several_schemas(runtime: Runtime, realistic_dsn: str) -> None:
    """A database environment restores every schema; a schema environment refuses before
    anything is made, naming the schemas and the database variant."""
    snapshot = await dump_snapshot(realistic_dsn, runtime.snapshots, runtime.programs)
    owner = unique("dev")
    view = await runtime.service.refresh(owner, None, kind="shared-db", snapshot=snapshot.id)
    assert view.endpoint is not None
    conn = await as_role(view.endpoint)
    try:
        schemas = {
            r[0]
            for r in await conn.fetch(
                "select nspname from pg_namespace n join pg_class c on c.relnamespace = n.oid"
                " where c.relkind in ('r', 'p')"
            )
        }
        assert {"app", "billing", "legacy"} <= schemas
        assert await conn.fetchval("select count(*) from app.users") > 0
        await conn.execute("create table legacy.mine (x int)")  # its schemas are its own
    finally:
        await conn.close()
    await runtime.service.destroy(owner, view.env.name)
    with pytest.raises(InvalidInput, match=r"also has tables in .*app.*--shared without --schema"):
        await runtime.service.refresh(owner, None, kind="shared", snapshot=snapshot.id)
    assert await runtime.service.list(owner) == []
    server = runtime.service.drivers["shared"].server  # type: ignore[attr-defined]
    conn = await server.connect(SHARED_DB)
    try:
        made = await conn.fetchval(
            "select count(*) from pg_roles where starts_with(rolname, $1)",
            f"dev_{default_name(owner).replace('-', '_')}_",
        )
    finally:
        await conn.close()
    assert made == 0, "refused before any role was made"
    await runtime.snapshots.delete(snapshot.id)


@pytest.mark.parametrize("kind", ["shared", "shared-db"])
async def test_what_a_neighbour_can_and_cannot_see(
    runtime: Runtime, demo_snapshot: Manifest, kind: str
) -> None:
    """Each line of the README's isolation table, for each variant: the cross-talk that
    decided the default (a database of its own)."""
    service = runtime.service
    you = await service.refresh(unique("you"), None, kind=kind, snapshot=demo_snapshot.id)
    them = await service.refresh(unique("them"), None, kind=kind, snapshot=demo_snapshot.id)
    assert you.endpoint is not None and them.endpoint is not None
    mine = await as_role(you.endpoint)
    theirs = await as_role(them.endpoint)
    schema = you.endpoint.user if kind == "shared" else "public"
    try:
        await mine.execute(
            "create view plans as select 'topsecret-view' as plan;"
            " create function plan() returns text language sql as $$ select 'topsecret-fn' $$;"
            " select pg_advisory_lock(42)"
        )
        await mine.execute("listen plans")
        # Both: rows stay yours; names are not secret; sessions show, their queries do not.
        if kind == "shared":
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await theirs.fetch(f'select * from "{schema}".contacts')
        else:
            with pytest.raises(KEPT_OUT):
                await as_role(them.endpoint, you.endpoint.database)
        assert await theirs.fetchval(
            "select count(*) from pg_roles where rolname = $1", you.endpoint.user
        )
        assert await theirs.fetchval(
            "select count(*) from pg_database where datname = $1", you.endpoint.database
        )
        seen = await theirs.fetch(
            "select query, client_addr from pg_stat_activity where usename = $1",
            you.endpoint.user,
        )
        assert seen and all(
            r["query"] == "<insufficient privilege>" and r["client_addr"] is None for r in seen
        )
        # Only in one database: definitions, lock keys and NOTIFY channels.
        shared = kind == "shared"
        definitions = await theirs.fetchval(
            "select string_agg(definition, ' ') from pg_views where schemaname = $1", schema
        )
        sources = await theirs.fetchval(
            "select string_agg(p.prosrc, ' ') from pg_proc p"
            " join pg_namespace n on n.oid = p.pronamespace where n.nspname = $1",
            schema,
        )
        assert ("topsecret-view" in (definitions or "")) == shared
        assert ("topsecret-fn" in (sources or "")) == shared
        assert await theirs.fetchval("select pg_try_advisory_lock(42)") is not shared
        heard: list[str] = []
        await mine.add_listener("plans", lambda *args: heard.append(args[3]))
        await theirs.execute("notify plans, 'from them'")
        await asyncio.sleep(0.3)
        assert heard == (["from them"] if shared else [])
    finally:
        await mine.close()
        await theirs.close()
        for view in (you, them):
            await service.destroy(view.env.owner, view.env.name)
