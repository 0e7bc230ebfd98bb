"""The state store: environments, refresh jobs and their steps, and the audit log, in PostgreSQL
(the jobs' queries in `job_rows.py`, the audit log's and deliveries' in `audit_rows.py`).

`StateStore` owns the connection pool and applies the versioned migrations on open.
Queries live on `Tx`, a thin wrapper over one connection, so callers compose them inside
one transaction (`async with store.transaction() as tx`).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from importlib import resources
from typing import Any

import asyncpg

from provisioning.errors import StateStoreUnavailable
from provisioning.models import LIVE_STATES, POOL_OWNER, Environment, EnvState
from provisioning.state.audit_rows import AuditRows, DeliveriesAndAuditPages
from provisioning.state.job_rows import JobRows

_MIGRATION_LOCK = 0x6465_7664_62  # "devdb"
_ENV_COLUMNS = (
    "id, name, owner, kind, state, snapshot_id, handle, host, port, database, username, "
    "replaces, created_at, ready_at, expires_at, last_active_at, error, finished_at,"
    " activity, warned_at, warned_reason, protected_until"
)
_LIVE = [state.value for state in LIVE_STATES]


def _environment(row: asyncpg.Record) -> Environment:
    return Environment(
        id=row["id"],
        name=row["name"],
        owner=row["owner"],
        kind=row["kind"],
        state=EnvState(row["state"]),
        snapshot_id=row["snapshot_id"],
        handle=row["handle"],
        host=row["host"],
        port=row["port"],
        database=row["database"],
        user=row["username"],
        created_at=row["created_at"],
        ready_at=row["ready_at"],
        expires_at=row["expires_at"],
        last_active_at=row["last_active_at"],
        replaces=row["replaces"],
        error=row["error"],
        finished_at=row["finished_at"],
        activity=row["activity"],
        warned_at=row["warned_at"],
        warned_reason=row["warned_reason"],
        protected_until=row["protected_until"],
    )


async def _init_connection(conn: asyncpg.Connection) -> None:
    await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


def migrations() -> list[tuple[int, str, str]]:
    """The packaged migrations as (version, name, sql), in order."""
    folder = resources.files("provisioning.state") / "migrations"
    found = []
    for entry in folder.iterdir():
        if entry.name.endswith(".sql"):
            version = int(entry.name.split("_", 1)[0])
            found.append((version, entry.name, entry.read_text()))
    return sorted(found)


class StateStore(DeliveriesAndAuditPages):
    """A pool of connections to the state store database."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    @classmethod
    async def open(cls, **connect_kwargs: Any) -> StateStore:
        """Connect (DSN or host/port/user keywords) and apply pending migrations."""
        try:
            pool = await asyncpg.create_pool(
                min_size=1, max_size=4, init=_init_connection, **connect_kwargs
            )
        except (OSError, asyncpg.PostgresError) as exc:
            raise StateStoreUnavailable(f"the state store could not be reached: {exc}.") from exc
        store = cls(pool)
        await store.migrate()
        return store

    async def close(self) -> None:
        await self.pool.close()

    async def migrate(self) -> list[int]:
        """Apply every migration not yet recorded; safe when several processes start at once."""
        applied: list[int] = []
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute("select pg_advisory_xact_lock($1)", _MIGRATION_LOCK)
            await conn.execute("create schema if not exists devdb")
            await conn.execute(
                "create table if not exists devdb.schema_migrations ("
                " version integer primary key, name text not null,"
                " applied_at timestamptz not null default now())"
            )
            done = {
                r["version"]
                for r in await conn.fetch("select version from devdb.schema_migrations")
            }
            for version, name, sql in migrations():
                if version in done:
                    continue
                await conn.execute(sql)
                await conn.execute(
                    "insert into devdb.schema_migrations (version, name) values ($1, $2)",
                    version,
                    name,
                )
                applied.append(version)
        return applied

    async def installation(self) -> str:
        """This installation's id (made once, by the migration), shared by its replicas."""
        async with self.pool.acquire() as conn:
            return str(await conn.fetchval("select id from devdb.installation"))

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Tx]:
        async with self.pool.acquire() as conn, conn.transaction():
            yield Tx(conn)

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[Tx]:
        """Autocommit access, one statement at a time."""
        async with self.pool.acquire() as conn:
            yield Tx(conn)

    @asynccontextmanager
    async def exclusive(self, name: str) -> AsyncIterator[bool]:
        """Hold the advisory lock `name` if no other process does; yield whether it is held."""
        async with self.pool.acquire() as conn:
            held = await conn.fetchval(
                "select pg_try_advisory_lock(hashtext('devdb:' || $1))", name
            )
            try:
                yield bool(held)
            finally:
                if held:
                    await conn.execute("select pg_advisory_unlock(hashtext('devdb:' || $1))", name)


class Tx(JobRows, AuditRows):
    """The state store's queries, run on one connection."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn

    async def lock(self, scope: str, key: str) -> None:
        """Serialise transactions on (scope, key) until this transaction ends."""
        await self.conn.execute(
            "select pg_advisory_xact_lock(hashtextextended($1, 0))", f"devdb:{scope}:{key}"
        )

    # environments -------------------------------------------------------------------------

    async def live_by_name(self, name: str) -> list[Environment]:
        rows = await self.conn.fetch(
            f"select {_ENV_COLUMNS} from devdb.environments"
            " where name = $1 and state = any($2::text[]) order by id",
            name,
            _LIVE,
        )
        return [_environment(r) for r in rows]

    async def environment(self, env_id: int) -> Environment:
        row = await self.conn.fetchrow(
            f"select {_ENV_COLUMNS} from devdb.environments where id = $1", env_id
        )
        return _environment(row)

    async def live_environments(self, owner: str | None = None) -> list[Environment]:
        rows = await self.conn.fetch(
            f"select {_ENV_COLUMNS} from devdb.environments"
            " where state = any($1::text[]) and ($2::text is null or owner = $2)"
            " order by owner, name, id",
            _LIVE,
            owner,
        )
        return [_environment(r) for r in rows]

    async def count_live_for_owner(self, owner: str, *, excluding: Sequence[str] = ()) -> int:
        count: int = await self.conn.fetchval(
            "select count(distinct name) from devdb.environments"
            " where owner = $1 and state = any($2::text[]) and not name = any($3::text[])",
            owner,
            [EnvState.PROVISIONING.value, EnvState.READY.value],
            list(excluding),
        )
        return count

    async def environments_since(
        self, kind: str, owners: Sequence[str] | None, since: datetime
    ) -> list[Environment]:
        """`kind` environments of `owners` (everyone's: None) that existed since `since`."""
        rows = await self.conn.fetch(
            f"select {_ENV_COLUMNS} from devdb.environments where kind = $1"
            " and ($2::text[] is null or owner = any($2::text[]))"
            " and (finished_at is null or finished_at >= $3)",
            kind,
            None if owners is None else list(owners),
            since,
        )
        return [_environment(r) for r in rows]

    async def record_readings(
        self, readings: Sequence[tuple[int, dict[str, Any], datetime | None]]
    ) -> None:
        """Store each environment's probe reading; those used since are active `at`."""
        await self.conn.executemany(
            "update devdb.environments set activity = $2,"
            " last_active_at = coalesce($3, last_active_at),"
            " warned_at = case when $3 is null then warned_at end,"
            " warned_reason = case when $3 is null then warned_reason end"
            " where id = $1",
            readings,
        )

    async def set_warning(self, env_id: int, at: datetime, reason: str) -> None:
        await self.conn.execute(
            "update devdb.environments set warned_at = $2, warned_reason = $3 where id = $1",
            env_id,
            at,
            reason,
        )

    async def touch(self, env_id: int, at: datetime) -> None:
        """The owner wants it: active now, and any warning withdrawn."""
        await self.conn.execute(
            "update devdb.environments set last_active_at = $2, warned_at = null,"
            " warned_reason = null where id = $1",
            env_id,
            at,
        )

    async def set_protection(self, env_id: int, until: datetime) -> None:
        await self.conn.execute(
            "update devdb.environments set protected_until = $2, warned_at = null,"
            " warned_reason = null where id = $1",
            env_id,
            until,
        )

    async def claim_sweep(self, name: str, interval: timedelta, now: datetime, worker: str) -> bool:
        """Record that `worker` runs sweep `name` now, unless it ran less than `interval` ago."""
        claimed = await self.conn.fetchval(
            "insert into devdb.sweeps (name, last_run, last_by) values ($1, $2, $4)"
            " on conflict (name) do update set last_run = $2, last_by = $4"
            " where devdb.sweeps.last_run <= $2 - $3::interval returning true",
            name,
            now,
            interval,
            worker,
        )
        return bool(claimed)

    async def orphan_first_seen(self, kind: str, key: str, now: datetime) -> datetime:
        first: datetime = await self.conn.fetchval(
            "insert into devdb.orphans (kind, key, first_seen) values ($1, $2, $3)"
            " on conflict (kind, key) do update set key = excluded.key returning first_seen",
            kind,
            key,
            now,
        )
        return first

    async def forget_orphans(self, kind: str, keep: Sequence[str]) -> None:
        await self.conn.execute(
            "delete from devdb.orphans where kind = $1 and not key = any($2::text[])",
            kind,
            list(keep),
        )

    async def used_local_ports(self) -> set[int]:
        rows = await self.conn.fetch(
            "select port from devdb.environments"
            " where kind = 'local' and port is not null and state = any($1::text[])",
            _LIVE,
        )
        return {r["port"] for r in rows}

    async def insert_environment(
        self,
        *,
        name: str,
        owner: str,
        kind: str,
        snapshot_id: str,
        expires_at: datetime,
        replaces: int | None,
    ) -> Environment:
        row = await self.conn.fetchrow(
            "insert into devdb.environments (name, owner, kind, state, snapshot_id, expires_at,"
            " replaces) values ($1, $2, $3, 'provisioning', $4, $5, $6)"
            f" returning {_ENV_COLUMNS}",
            name,
            owner,
            kind,
            snapshot_id,
            expires_at,
            replaces,
        )
        return _environment(row)

    async def claim_warm(
        self,
        *,
        name: str,
        owner: str,
        kind: str,
        snapshot_id: str,
        expires_at: datetime,
        replaces: int | None,
    ) -> Environment | None:
        """Take one ready pool environment of `kind` and `snapshot_id` for `owner` as `name`.

        Row-locked and skipping rows another claim holds, so no two claims get the same one.
        It becomes `provisioning` under its new name until the handover is done.
        """
        row = await self.conn.fetchrow(
            "update devdb.environments set name = $3, owner = $4, expires_at = $5,"
            " replaces = $6, state = 'provisioning', created_at = now(), ready_at = null,"
            " last_active_at = null, activity = null, warned_at = null, warned_reason = null"
            " where id = (select id from devdb.environments where owner = $7"
            "   and state = 'ready' and kind = $1 and snapshot_id = $2"
            "   order by id limit 1 for update skip locked)"
            f" returning {_ENV_COLUMNS}",
            kind,
            snapshot_id,
            name,
            owner,
            expires_at,
            replaces,
            POOL_OWNER,
        )
        return _environment(row) if row else None

    async def set_placement(
        self,
        env_id: int,
        *,
        handle: dict[str, Any],
        host: str,
        port: int,
        database: str,
        user: str,
    ) -> None:
        await self.conn.execute(
            "update devdb.environments set handle = $2, host = $3, port = $4, database = $5,"
            " username = $6 where id = $1",
            env_id,
            handle,
            host,
            port,
            database,
            user,
        )

    async def set_state(self, env_id: int, state: EnvState, *, error: str | None = None) -> None:
        await self.conn.execute(
            "update devdb.environments set state = $2, error = coalesce($3, error),"
            " ready_at = case when $2 = 'ready' then now() else ready_at end,"
            " finished_at = case when $2 in ('destroyed', 'failed', 'interrupted', 'lost')"
            "                    then coalesce(finished_at, now()) else finished_at end"
            " where id = $1",
            env_id,
            state.value,
            error,
        )

    async def set_expiry(self, env_id: int, expires_at: datetime) -> None:
        await self.conn.execute(
            "update devdb.environments set expires_at = $2 where id = $1", env_id, expires_at
        )

    async def orphaned_destroys(self) -> list[Environment]:
        """Environments left in `destroying` with no job running to finish them."""
        rows = await self.conn.fetch(
            f"select {_ENV_COLUMNS} from devdb.environments e where state = 'destroying'"
            " and not exists (select 1 from devdb.jobs j where j.environment_id = e.id"
            "                 and j.state = 'running')"
            " for update skip locked"
        )
        return [_environment(r) for r in rows]
