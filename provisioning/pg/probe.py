"""How every driver measures use: client sessions and counters, not counting devdb's own.

devdb's connections name themselves `devdb-*` (`devdb-probe` for this probe, `devdb-restore`
for pg_restore, `devdb-agent` on an instance), so none of them looks like a developer. The
counters exclude the maintenance database, where the probe and the agent's status live.
Sessions and statement time count; transaction and tuple counters do not, because
autovacuum moves them too.
"""

from __future__ import annotations

from typing import Any

import asyncpg

from provisioning.drivers.base import Activity

PROBE_APP = "devdb-probe"

_SQL = r"""
select
  (select count(*) from pg_stat_activity
    where backend_type = 'client backend' and pid <> pg_backend_pid()
      and coalesce(application_name, '') not like 'devdb-%'
      and ($1::text[] is null or datname = any($1::text[]))) as connections,
  (select coalesce(sum(sessions), 0) from pg_stat_database
    where datname not in ('postgres', 'template0', 'template1')
      and ($1::text[] is null or datname = any($1::text[]))) as sessions,
  (select coalesce(sum(active_time), 0) from pg_stat_database
    where datname not in ('postgres', 'template0', 'template1')
      and ($1::text[] is null or datname = any($1::text[]))) as work
"""


async def read_activity(conn: asyncpg.Connection, databases: list[str] | None = None) -> Activity:
    """Activity in every user database of the server, or only in `databases`."""
    row = await conn.fetchrow(_SQL, databases)
    return Activity(
        connections=int(row["connections"]),
        sessions=int(row["sessions"]),
        work=float(row["work"]),
    )


async def probe(databases: list[str] | None = None, **connect: Any) -> Activity:
    """Connect to a server's maintenance database as the probe and read its activity."""
    conn = await asyncpg.connect(
        database="postgres", server_settings={"application_name": PROBE_APP}, **connect
    )
    try:
        return await read_activity(conn, databases)
    finally:
        await conn.close()
