"""The shared server that schema and database environments live on (golden copies of
snapshots on it: `golden.py`).

Either a configured server (`DEVDB_SHARED_URL`, a role with CREATEROLE and CREATEDB, or a
superuser) or, in the embedded default, a PostgreSQL cluster of devdb's own under
`DEVDB_HOME/shared`, listening on 127.0.0.1 only and made on first use. devdb's state store
is never on it: developers get logins here.

A developer's role reaches only its own environment: new databases never admit PUBLIC
(`create_closed`), devdb's own server keeps PUBLIC out of `postgres` and `template1` and
writes its pg_hba, and a configured server that lets PUBLIC in elsewhere is refused.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from urllib.parse import unquote, urlsplit

import asyncpg

from provisioning.errors import InvalidInput, ProvisioningFailed
from provisioning.pg.cluster import LocalCluster
from provisioning.pg.dsn import split_password
from provisioning.pg.programs import PgPrograms, ServerAccount
from provisioning.pg.restore import Target
from provisioning.pg.sql import quote_ident
from provisioning.shared.golden import (
    GOLDEN_OWNER,
    GOLDEN_SCHEMA,
    OLD_PREFIX,
    RESET_PREFIX,
    SHARED_DB,
    GoldenCopies,
    golden_name,
)

__all__ = [
    "ENV_MARK",
    "GOLDEN_OWNER",
    "GOLDEN_SCHEMA",
    "OLD_PREFIX",
    "RESET_PREFIX",
    "SHARED_DB",
    "SharedServer",
    "golden_name",
]
ENV_MARK = "devdb environment"  # the comment on every role devdb makes for an environment
# Serialises what must not overlap on one server: schema restores (they all restore
# `devdb_golden` before renaming it) and copies of a template (it must have no connections).
_LOCK = 0x64657664  # "devd"
# Seconds to wait for that lock: it is held through a golden restore or a schema
# environment's restore, which may take as long as any restore; developers cannot take it.
LOCK_WAIT = 3600.0


# Databases PUBLIC may connect to (no ACL means PostgreSQL's default, which lets it).
_OPEN_DATABASES = """
select datname from pg_database
where datallowconn
  and (datacl is null
       or exists (select 1 from aclexplode(datacl) a
                  where a.grantee = 0 and a.privilege_type = 'CONNECT'))
order by datname
"""


def _split(grants: tuple[str, ...]) -> list[tuple[str, str]]:
    """`privileges:role` pairs, the role quoted."""
    return [(grant, quote_ident(role)) for grant, _, role in (g.partition(":") for g in grants)]


Privileges = Callable[[str, list[str]], Awaitable[None]]


async def _no_audit(role: str, statements: list[str]) -> None:
    return None


class SharedServer(GoldenCopies):
    def __init__(
        self,
        *,
        url: str | None,
        home: Path,
        programs: PgPrograms,
        account: ServerAccount | None,
        port: int,
        audit: Privileges = _no_audit,
    ) -> None:
        self.url = url
        self.home = home
        self.programs = programs
        self.account = account
        self.audit = audit
        self.cluster = (
            None
            if url
            else LocalCluster(
                home / "shared", port, programs=programs, account=account, durable=False
            )
        )
        self._ready = False
        self._golden: dict[str, asyncio.Lock] = {}

    # -- where -----------------------------------------------------------------------------

    @property
    def address(self) -> tuple[str, int]:
        """Where developers connect."""
        if self.cluster:
            return "127.0.0.1", self.cluster.port
        parts = urlsplit(self.url or "")
        return parts.hostname or "localhost", parts.port or 5432

    def target(self, database: str, role: str | None = None) -> Target:
        """How devdb's own programs reach `database`, as devdb's administrative login."""
        if self.cluster:
            return Target(
                host=str(self.cluster.socket_dir),
                port=self.cluster.port,
                user="devdb",
                database=database,
                role=role,
            )
        bare, password = split_password(self.url or "")
        parts = urlsplit(bare)
        return Target(
            host=parts.hostname or "localhost",
            port=parts.port or 5432,
            user=unquote(parts.username or ""),
            database=database,
            password=password,
            role=role,
        )

    async def connect(self, database: str = SHARED_DB) -> asyncpg.Connection:
        return await self.target(database).connect(app="devdb-admin", called="the shared server")

    async def execute(self, database: str, *statements: str) -> None:
        """Run `statements` in order on `database`, as devdb's administrative login."""
        conn = await self.connect(database)
        try:
            for statement in statements:
                await conn.execute(statement)
        finally:
            await conn.close()

    # -- setting up ------------------------------------------------------------------------

    async def running(self) -> bool:
        return self.cluster is None or self.cluster.running_pid() is not None

    async def ensure(self) -> None:
        """Start (or make) the server, and lock down its shared database once."""
        if self.cluster is not None:
            if not self.cluster.exists():
                self.home.mkdir(parents=True, exist_ok=True)
                await self.cluster.create()
            await self.cluster.start()
        if self._ready:
            return
        admin = await self.connect("postgres")
        try:
            if not await admin.fetchval("select 1 from pg_database where datname = $1", SHARED_DB):
                with contextlib.suppress(asyncpg.DuplicateDatabaseError):
                    await admin.execute(f"create database {SHARED_DB} template template0")
            if not await admin.fetchval("select 1 from pg_roles where rolname = $1", GOLDEN_OWNER):
                with contextlib.suppress(asyncpg.DuplicateObjectError):
                    await admin.execute(f"create role {GOLDEN_OWNER} nologin")
        finally:
            await admin.close()
        hardening = [
            f"revoke all on database {SHARED_DB} from public",
            "revoke all on schema public from public",
        ]
        if self.cluster is not None:
            # devdb's own server: developers reach no database but their own.
            hardening.append(
                "revoke connect, temporary on database postgres, template1 from public"
            )
            self._write_hba()
        await self.execute(SHARED_DB, *hardening)
        if self.cluster is not None:
            await self.execute("postgres", "select pg_reload_conf()")
        await self.audit(SHARED_DB, hardening)
        if self.cluster is None:
            await self._check_closed()
        self._ready = True

    def _write_hba(self) -> None:
        """Over TCP a developer role may reach only the shared database, or the database
        named like itself (`samerole`); devdb's own login uses the socket."""
        assert self.cluster is not None
        lines = [
            "# devdb's shared server: written by devdb at every start",
            "local all devdb trust",
            *(
                f"host {database} all {network} scram-sha-256"
                for network in ("127.0.0.1/32", "::1/128")
                for database in (SHARED_DB, "samerole")
            ),
        ]
        path = self.cluster.data_dir / "pg_hba.conf"
        text = "\n".join(lines) + "\n"
        if path.read_text() != text:
            path.write_text(text)  # in place: the file keeps its owner

    async def _check_closed(self) -> None:
        """On a configured server, refuse shared mode while PUBLIC may connect to another
        database: a developer's role could reach it (README, "Shared mode", has the fix)."""
        conn = await self.connect("postgres")
        try:
            open_to_all = await conn.fetch(_OPEN_DATABASES)
        finally:
            await conn.close()
        if open_to_all:
            names = ", ".join(row["datname"] for row in open_to_all)
            raise InvalidInput(
                f"shared mode needs every other database on the shared server closed to PUBLIC, "
                f"and {names} {'is' if len(open_to_all) == 1 else 'are'} not: run REVOKE CONNECT, "
                "TEMPORARY ON DATABASE … FROM PUBLIC for each (README, Shared mode)."
            )

    @contextlib.asynccontextmanager
    async def exclusive(self) -> AsyncIterator[None]:
        """One schema restore or template copy at a time on this server, across processes.

        The lock is taken in the `postgres` database (advisory locks are per database), which
        developer roles cannot connect to, and waited for at most LOCK_WAIT (a safety net
        against a stuck devdb process)."""
        conn = await self.connect("postgres")
        try:
            await conn.execute(f"set lock_timeout = '{int(LOCK_WAIT * 1000)}ms'")
            try:
                await conn.execute("select pg_advisory_lock($1)", _LOCK)
            except asyncpg.LockNotAvailableError:
                raise ProvisioningFailed(
                    "the shared server stayed busy with other environments for over an hour: "
                    "look for a stuck devdb process, then try again."
                ) from None
            await conn.execute("reset lock_timeout")
            yield
        finally:
            await conn.close()  # the lock goes with the session

    async def create_closed(
        self,
        name: str,
        *,
        template: str | None = None,
        owner: str | None = None,
        grants: tuple[str, ...] = (),
    ) -> list[str]:
        """Database `name`, made with connections disallowed and opened only once PUBLIC is
        revoked and `grants` (privileges on it) are given, so PUBLIC never gets in. Returns
        the privilege statements run, for the audit log."""
        database = quote_ident(name)
        create = f"create database {database}"
        if template:
            create += f" template {quote_ident(template)}"
        if owner:
            create += f" owner {quote_ident(owner)}"
        statements = [
            f"revoke all on database {database} from public",
            *(f"grant {grant} on database {database} to {to}" for grant, to in _split(grants)),
        ]
        await self.execute(
            "postgres",
            f"{create} allow_connections false",
            *statements,
            f"alter database {database} allow_connections true",
        )
        return statements
