"""`devdb restore [--snapshot ID] --into URL [--clean]`: a dev-safe snapshot restored into a
PostgreSQL server of the user's choosing (their laptop's, an existing dev server).

The target database must be empty, or `--clean` drops the snapshot's objects there first
(pg_restore's --clean --if-exists). Objects are owned by the connecting user. The URL's
password reaches pg_restore through its environment and is never shown.
"""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import unquote, urlsplit

import asyncpg

from provisioning.drivers.base import Progress
from provisioning.errors import InvalidInput
from provisioning.jobs import JobOptions
from provisioning.models import ProgressEvent, Step
from provisioning.pg.dsn import redact, split_password
from provisioning.pg.programs import PgPrograms
from provisioning.pg.restore import Target, restore_dump, restored
from provisioning.snapshots.base import SnapshotStore, check_saved
from provisioning.snapshots.manifest import Manifest, validate_snapshot_id
from provisioning.state.store import StateStore

_USER_RELATIONS = """
select count(*) from pg_class c join pg_namespace n on n.oid = c.relnamespace
where c.relkind in ('r', 'p', 'v', 'm', 'S', 'f')
  and n.nspname not in ('pg_catalog', 'information_schema') and n.nspname not like 'pg\\_%'
"""


def target_of(url: str) -> Target:
    """Where a postgresql:// URL points; one sentence for anything else."""
    if not url.startswith(("postgresql://", "postgres://")):
        raise InvalidInput("--into takes a postgresql://USER@HOST:PORT/DATABASE URL.")
    bare, password = split_password(url)
    parts = urlsplit(bare)
    database = unquote(parts.path.lstrip("/"))
    if not parts.hostname or not parts.username or not database:
        raise InvalidInput(
            f"--into needs a user, a host and a database: {redact(url)} lacks one of them."
        )
    return Target(
        host=parts.hostname,
        port=parts.port or 5432,
        user=unquote(parts.username),
        database=database,
        password=password,
    )


class RestoreInto:
    """Mixed into `Service`: snapshots restored into servers devdb does not manage."""

    store: StateStore
    snapshots: SnapshotStore
    programs: PgPrograms
    job_options: JobOptions
    is_admin: Callable[[str], bool]

    async def restore_into(
        self,
        actor: str,
        url: str,
        *,
        snapshot: str | None = None,
        clean: bool = False,
        progress: Progress | None = None,
    ) -> Manifest:
        """Restore `snapshot` (the latest if None) into the database at `url`."""
        emit = progress or (lambda _: None)
        target = target_of(url)
        shown = redact(url)
        manifest = await self.snapshots.resolve(snapshot and validate_snapshot_id(snapshot))
        check_saved(manifest, actor, admin=self.is_admin(actor))

        async def connect() -> asyncpg.Connection:
            return await target.connect(app="devdb-restore", called=shown)

        conn = await connect()
        try:
            present = int(await conn.fetchval(_USER_RELATIONS))
        finally:
            await conn.close()
        if present and not clean:
            raise InvalidInput(
                f"{shown} already holds {present} table(s), view(s) or sequence(s): restore "
                "into an empty database, or add --clean to drop the snapshot's objects there "
                "first."
            )
        emit(ProgressEvent(step=Step.RESERVE, message=f"verifying snapshot {manifest.id}"))
        dump_dir = await self.snapshots.fetch(manifest)
        await restore_dump(
            programs=self.programs,
            dump_dir=dump_dir,
            manifest=manifest,
            target=target,
            jobs=self.job_options.restore_jobs,
            monitor=connect,
            progress=emit,
            clean=clean,
        )
        emit(restored(f"restored into {target.database}", manifest.data_bytes))
        async with self.store.connection() as tx:
            await tx.audit(
                actor, "restore", None, "restored", {"snapshot": manifest.id, "into": shown}
            )
        return manifest
