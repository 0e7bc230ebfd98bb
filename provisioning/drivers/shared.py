"""Shared mode: environments as a role and a schema (`shared`, in `shared_schema.py`), or a
role and a database (`shared-db`, here), on one PostgreSQL server
(`provisioning/shared/server.py`). What both have in common is `SharedDriver`.

Each environment gets a login role `dev_<name>_<id>` (the id keeps an environment apart
from the one it replaces) with a random password, a connection limit, no right to create
roles or databases, and no memberships. PUBLIC gets nothing: not on the shared database,
its `public` schema, the developers' schemas or databases, or the golden copies; default
privileges keep what a role creates to itself. Every identifier is validated and quoted.
Every grant and revoke goes to the audit log through the server's `audit` hook.
"""

from __future__ import annotations

import asyncio
import secrets
from pathlib import Path

import asyncpg

from provisioning.drivers.base import Activity, Driver, Handle, Placement, Progress
from provisioning.errors import InvalidInput, ProvisioningFailed
from provisioning.models import Environment, ProgressEvent, Step
from provisioning.pg.probe import read_activity
from provisioning.pg.restore import restored
from provisioning.pg.scram import scram_verifier
from provisioning.pg.sql import quote_ident
from provisioning.shared.server import (
    ENV_MARK,
    GOLDEN_OWNER,
    OLD_PREFIX,
    RESET_PREFIX,
    SHARED_DB,
    SharedServer,
)
from provisioning.snapshots.manifest import Manifest

_ACTIVITY = r"""
select
  (select count(*) from pg_stat_activity where usename = $1 and backend_type = 'client backend'
     and coalesce(application_name, '') not like 'devdb-%') as connections,
  (select coalesce(sum(seq_scan + coalesce(idx_scan, 0) + n_tup_ins + n_tup_upd + n_tup_del), 0)
     from pg_stat_user_tables where schemaname = any($2::text[])) as work
"""


# The databases holding objects a role owns, or privileges granted to it.
_HOLDING = """
select distinct d.datname from pg_shdepend s
join pg_database d on d.oid = s.dbid
join pg_roles r on r.oid = s.refobjid and s.refclassid = 'pg_authid'::regclass
where r.rolname = $1 and d.datallowconn
"""


def role_name(env: Environment) -> str:
    role = f"dev_{env.name.replace('-', '_')}_{env.id}"
    if len(role.encode()) > 63 or not role.isascii():
        raise InvalidInput(f"{env.name!r} makes a role name PostgreSQL cannot hold.")
    return role


class SharedDriver(Driver):
    """What both shared variants have in common: the role, its password, the probe."""

    def __init__(self, server: SharedServer, *, connection_limit: int = 10) -> None:
        self.server = server
        self.connection_limit = connection_limit

    @property
    def _mark(self) -> str:
        return f"{ENV_MARK}: {self.kind}"

    async def preflight(self) -> None:
        for program in ("pg_restore", "pg_dump"):
            self.server.programs.path(program)

    def _placement(self, handle: Handle, database: str, role: str) -> Placement:
        host, port = self.server.address
        return Placement(handle=handle, host=host, port=port, database=database, user=role)

    async def _create_role(self, role: str, password: str) -> list[str]:
        """The login role; returns the privilege statements run (for the audit log)."""
        conn = await self.server.connect(SHARED_DB)
        try:
            create = await conn.fetchval(
                "select format('create role %I login password %L connection limit %s"
                " nocreatedb nocreaterole', $1::text, $2::text, $3::int)",
                role,
                scram_verifier(password),
                self.connection_limit,
            )
            await conn.execute(create)
            # Marks the role as an environment of this kind, for the inventory.
            await conn.execute(f"comment on role {quote_ident(role)} is '{self._mark}'")
            statements = [
                # What a role creates stays its own: no EXECUTE or USAGE for PUBLIC by default.
                f"alter default privileges for role {quote_ident(role)}"
                " revoke execute on functions from public",
                f"alter default privileges for role {quote_ident(role)}"
                " revoke usage on types from public",
            ]
            for statement in statements:
                await conn.execute(statement)
        finally:
            await conn.close()
        return statements

    async def _role_exists(self, role: str) -> bool:
        if not await self.server.running():
            return False
        try:
            conn = await self.server.connect("postgres")
        except ProvisioningFailed:
            return False
        try:
            return bool(await conn.fetchval("select 1 from pg_roles where rolname = $1", role))
        finally:
            await conn.close()

    async def is_running(self, handle: Handle) -> bool:
        return bool(handle.get("role")) and await self._role_exists(handle["role"])

    async def resume(self, handle: Handle) -> bool:
        await self.server.ensure()
        return await self.is_running(handle)

    async def _activity(self, database: str, role: str, schemas: list[str]) -> Activity:
        conn = await self.server.connect(database)
        try:
            row = await conn.fetchrow(_ACTIVITY, role, schemas)
        finally:
            await conn.close()
        return Activity(connections=int(row["connections"]), sessions=0, work=float(row["work"]))

    async def _drop_role(self, role: str, statements: list[str]) -> None:
        """Drop what the role owns and was granted in every database that holds any of it
        (as `pg_shdepend` records, which is what DROP ROLE checks), then the role."""
        conn = await self.server.connect("postgres")
        try:
            await conn.execute(
                "select pg_terminate_backend(pid) from pg_stat_activity where usename = $1", role
            )
            holding = [
                row["datname"]
                for row in await conn.fetch(_HOLDING, role)
                if row["datname"] != SHARED_DB
            ]
        finally:
            await conn.close()
        for database in [SHARED_DB, *holding]:
            extra = statements if database == SHARED_DB else []
            await self.server.execute(database, f"drop owned by {quote_ident(role)}", *extra)
        await self.server.execute("postgres", f"drop role if exists {quote_ident(role)}")
        await self.server.audit(role, [f"drop owned by {role}", *statements, f"drop role {role}"])

    async def inventory(self) -> list[Handle]:
        if not await self.server.running():
            return []
        try:
            conn = await self.server.connect("postgres")
        except ProvisioningFailed:
            return []
        try:
            rows = await conn.fetch(
                "select r.rolname from pg_roles r"
                " join pg_shdescription c on c.objoid = r.oid and c.description = $1",
                self._mark,
            )
        finally:
            await conn.close()
        return [{"role": r["rolname"]} for r in rows]

    def key(self, handle: Handle) -> str:
        return str(handle.get("role") or "")

    async def prune(self, snapshot_ids: set[str]) -> list[str]:
        return await self.server.prune(snapshot_ids)


class SharedDatabaseDriver(SharedDriver):
    """A role and a database it owns, copied from the snapshot's golden database."""

    kind = "shared-db"

    async def place(self, env: Environment, avoid_ports: set[int]) -> Placement:
        role = role_name(env)
        return self._placement({"role": role, "database": role}, role, role)

    async def launch(self, placement: Placement, password: str, progress: Progress) -> Placement:
        progress(ProgressEvent(step=Step.LAUNCH, message="preparing the shared server", percent=10))
        await self.server.ensure()
        statements = await self._create_role(placement.user, password)
        await self.server.audit(placement.user, statements)
        progress(ProgressEvent(step=Step.LAUNCH, message=f"role {placement.user}", percent=100))
        return placement

    async def restore(
        self,
        placement: Placement,
        dump_dir: Path | None,
        manifest: Manifest,
        jobs: int,
        progress: Progress,
    ) -> None:
        if dump_dir is None:
            raise ProvisioningFailed("a shared restore needs the snapshot on this machine.")
        golden = await self.server.golden_database(manifest, dump_dir, jobs, progress)
        async with self.server.exclusive():  # a template must have no other connections
            await self._copy(golden, placement.user, placement.database)
        progress(restored(f"copied from {golden}", manifest.data_bytes))

    async def _copy(self, golden: str, role: str, name: str) -> None:
        """Database `name`, a copy of the golden database, for `role` alone (under the
        server's exclusive lock: a template must have no other connections)."""
        grants = await self.server.create_closed(
            name, template=golden, owner=role, grants=(f"connect, temporary:{role}",)
        )
        # The copy's tables belong to the golden owner: hand them to the developer.
        await self.server.execute(name, f"reassign owned by {GOLDEN_OWNER} to {quote_ident(role)}")
        await self.server.audit(role, grants)

    async def reset(
        self,
        placement: Placement,
        password: str,
        manifest: Manifest,
        dump_dir: Path | None,
        jobs: int,
        progress: Progress,
    ) -> int:
        """A new copy of the golden database, made beside the old one; the two change names
        in one transaction, so the environment always has a whole database under its name;
        then the old one goes with every session on it. Under the server's exclusive lock,
        so reconciliation's prune never takes a copy being made for a leftover."""
        if dump_dir is None:
            raise ProvisioningFailed("a shared reset needs the snapshot on this machine.")
        golden = await self.server.golden_database(manifest, dump_dir, jobs, progress)
        suffix = secrets.token_hex(6)
        fresh, old = f"{RESET_PREFIX}{suffix}", f"{OLD_PREFIX}{suffix}"
        database = quote_ident(placement.database)
        async with self.server.exclusive():
            try:
                await self._copy(golden, placement.user, fresh)
            except BaseException:
                await self.server.execute(
                    "postgres", f"drop database if exists {fresh} with (force)"
                )
                raise
            ended = (await self.activity(placement.handle)).connections
            conn = await self.server.connect("postgres")
            try:
                for attempt in range(5):
                    await conn.execute(
                        "select pg_terminate_backend(pid) from pg_stat_activity where datname = $1",
                        placement.database,
                    )
                    try:
                        async with conn.transaction():
                            await conn.execute(f"alter database {database} rename to {old}")
                            await conn.execute(f"alter database {fresh} rename to {database}")
                        break
                    except asyncpg.ObjectInUseError:  # a session came back: end it again
                        if attempt == 4:
                            raise
                        await asyncio.sleep(0.2)
                await conn.execute(f"drop database {old} with (force)")
            finally:
                await conn.close()
        return ended

    async def activity(self, handle: Handle) -> Activity:
        conn = await self.server.connect("postgres")
        try:
            if not await conn.fetchval(
                "select 1 from pg_database where datname = $1", handle["database"]
            ):
                raise ProvisioningFailed(f"the database {handle['database']} is gone.")
            return await read_activity(conn, [handle["database"]])
        finally:
            await conn.close()

    async def terminate(self, handle: Handle) -> None:
        role = handle.get("role")
        if not role or not await self._role_exists(role):
            return
        await self.server.execute(
            "postgres", f"drop database if exists {quote_ident(role)} with (force)"
        )
        await self._drop_role(role, [])
