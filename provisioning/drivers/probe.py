"""How every driver measures use: client sessions and counters, not counting devdb's own.

devdb's connections name themselves `devdb-*` (`devdb-probe` for this probe, `devdb-restore`
for pg_restore, `devdb-agent` on an instance), so none of them looks like a developer. The
counters exclude the maintenance database, where the probe and the agent's status live.
"""

from __future__ import annotations

import asyncpg

from provisioning.drivers.base import Activity

PROBE_APP = "devdb-probe"

_SQL = r"""
select
  (select count(*) from pg_stat_activity
    where backend_type = 'client backend' and pid <> pg_backend_pid()
      and coalesce(application_name, '') not like 'devdb-%') as connections,
  (select coalesce(sum(xact_commit + xact_rollback), 0) from pg_stat_database
    where datname not in ('postgres', 'template0', 'template1')) as xacts,
  (select coalesce(sum(tup_inserted + tup_updated + tup_deleted + tup_returned), 0)
    from pg_stat_database
    where datname not in ('postgres', 'template0', 'template1')) as tuples
"""


async def read_activity(conn: asyncpg.Connection) -> Activity:
    row = await conn.fetchrow(_SQL)
    return Activity(
        connections=int(row["connections"]),
        transactions=int(row["xacts"]),
        tuples=int(row["tuples"]),
    )
