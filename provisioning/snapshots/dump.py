"""Making a snapshot: dump a source database and publish it with its manifest.

Row counts and the dump come from one exported database snapshot, so the manifest's counts
are exactly what the dump holds.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import asyncpg

from provisioning.errors import ProvisioningFailed
from provisioning.models import ProgressEvent, Step
from provisioning.pg.dsn import redact, split_secrets
from provisioning.pg.programs import PgPrograms, first_error, run
from provisioning.pg.sql import quote_ident
from provisioning.snapshots.base import SnapshotStore
from provisioning.snapshots.manifest import Manifest, manifest_for_dump

_ENTRY = re.compile(r"^(\d+); (\d+) (\d+) (.*)$")


def read_entries(listing: str) -> dict[str, tuple[int, str]]:
    """`pg_restore --list` output as dump id -> (OID, the rest of the line). pg_dump sets a
    table data entry's OID to the table's, which tells tables apart whatever their names."""
    entries = {}
    for line in listing.splitlines():
        match = _ENTRY.match(line)
        if match:
            entries[match.group(1)] = (int(match.group(3)), match.group(4))
    return entries


async def list_dump(programs: PgPrograms, dump_dir: Path) -> str:
    """`pg_restore --list` of a dump directory: one line per table-of-contents entry."""
    result = await run([programs.path("pg_restore"), "--list", str(dump_dir)])
    if result.returncode != 0:
        raise ProvisioningFailed(f"pg_restore could not read the dump: {result.stderr.strip()}")
    return result.stdout


async def schema_text(programs: PgPrograms, dump_dir: Path) -> str:
    """What a dump would create, as SQL: comments, defaults, views, functions, checks."""
    result = await run([programs.path("pg_restore"), "--schema-only", "--file=-", str(dump_dir)])
    if result.returncode != 0:
        reason = first_error(result.stderr, result.returncode)
        raise ProvisioningFailed(f"pg_restore could not read the dump: {reason}")
    return result.stdout


async def table_data_files(
    programs: PgPrograms, dump_dir: Path, names: dict[int, str]
) -> dict[str, str]:
    """Map each table to its data file, matching TOC entries by OID (`names`: OID -> name)."""
    entries = read_entries(await list_dump(programs, dump_dir))
    files = {p.name.split(".", 1)[0]: p.name for p in dump_dir.iterdir() if p.name[0].isdigit()}
    return {
        names[oid]: files[dump_id]
        for dump_id, (oid, description) in entries.items()
        if description.startswith("TABLE DATA ") and oid in names and dump_id in files
    }


async def pg_dump(
    programs: PgPrograms,
    dsn: str,
    target: Path,
    *,
    jobs: int,
    snapshot: str | None = None,
    options: Sequence[str] = (),
) -> None:
    """`pg_dump --format=directory` of `dsn` (as seen by an exported snapshot, if given)."""
    bare, secrets = split_secrets(dsn)
    result = await run(
        [
            programs.path("pg_dump"),
            "--format=directory",
            f"--jobs={jobs}",
            *([f"--snapshot={snapshot}"] if snapshot else []),
            "--no-owner",
            "--no-privileges",
            *options,
            "--file",
            str(target),
            "--dbname",
            bare,
        ],
        env={**os.environ, **secrets},
    )
    if result.returncode != 0:
        raise ProvisioningFailed(f"pg_dump failed: {first_error(result.stderr, result.returncode)}")


async def dump_snapshot(
    source_dsn: str,
    store: SnapshotStore,
    programs: PgPrograms,
    *,
    jobs: int = 2,
    extra: dict[str, Any] | None = None,
    progress: Callable[[ProgressEvent], None] | None = None,
    snapshot_id: str | None = None,
) -> Manifest:
    """Dump `source_dsn` with pg_dump's directory format and publish it as a new snapshot."""
    staged = await store.staging()
    try:
        conn = await asyncpg.connect(source_dsn)
    except (OSError, asyncpg.PostgresError) as exc:
        shutil.rmtree(staged, ignore_errors=True)
        raise ProvisioningFailed(f"the source database could not be reached: {exc}.") from exc
    try:
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            exported = await conn.fetchval("select pg_export_snapshot()")
            version = await conn.fetchval("show server_version")
            tables = await conn.fetch(
                "select c.oid, n.nspname, c.relname from pg_class c"
                " join pg_namespace n on n.oid = c.relnamespace"
                " where c.relkind = 'r' and n.nspname not in ('pg_catalog', 'information_schema')"
                " and n.nspname not like 'pg\\_%' order by 2, 3"
            )
            counts: dict[str, int] = {}
            names: dict[int, str] = {}
            for oid, schema, name in tables:
                names[oid] = f"{schema}.{name}"
                counts[names[oid]] = await conn.fetchval(
                    f"select count(*) from only {quote_ident(schema)}.{quote_ident(name)}"
                )
            if progress:
                progress(ProgressEvent(step=Step.RESTORE, message="dumping the source database"))
            await pg_dump(programs, source_dsn, staged / "dump", jobs=jobs, snapshot=exported)
        dump_dir = staged / "dump"
        data_files = await table_data_files(programs, dump_dir, names)
        manifest = await asyncio.to_thread(
            manifest_for_dump,
            dump_dir,
            source=redact(source_dsn),
            pg_version=str(version),
            rows=counts,
            data_files=data_files,
            extra=extra or {},
            snapshot_id=snapshot_id,
        )
        return await store.publish(staged, manifest)
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)
        raise
    finally:
        await conn.close()
