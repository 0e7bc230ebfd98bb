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
from urllib.parse import unquote, urlsplit, urlunsplit

import asyncpg

from provisioning.errors import ProvisioningFailed
from provisioning.models import ProgressEvent, Step
from provisioning.postgres import PgPrograms, run
from provisioning.snapshots.base import SnapshotStore
from provisioning.snapshots.manifest import Manifest, manifest_for_dump
from provisioning.sql import quote_ident

_TOC_DATA = re.compile(r"^(\d+); \d+ \d+ TABLE DATA (\S+) (.+) \S+$")


def split_password(dsn: str) -> tuple[str, str | None]:
    """Remove the password from a postgresql:// URL so it travels in PGPASSWORD, not argv."""
    parts = urlsplit(dsn)
    if parts.password is None:
        return dsn, None
    netloc = parts.netloc.rsplit("@", 1)
    user = unquote(parts.username or "")
    host = netloc[1] if len(netloc) == 2 else ""
    bare = urlunsplit(parts._replace(netloc=f"{user}@{host}" if user else host))
    return bare, unquote(parts.password)


def redact(dsn: str) -> str:
    bare, password = split_password(dsn)
    return bare if password is None else bare.replace("@", ":***@", 1)


async def table_data_files(programs: PgPrograms, dump_dir: Path) -> dict[str, str]:
    """Map each table ("schema.name") to its data file, from `pg_restore --list`."""
    result = await run([programs.path("pg_restore"), "--list", str(dump_dir)])
    if result.returncode != 0:
        raise ProvisioningFailed(f"pg_restore could not read the dump: {result.stderr.strip()}")
    files = {p.name.split(".", 1)[0]: p.name for p in dump_dir.iterdir() if p.name[0].isdigit()}
    mapping = {}
    for line in result.stdout.splitlines():
        match = _TOC_DATA.match(line)
        if match and match.group(1) in files:
            mapping[f"{match.group(2)}.{match.group(3)}"] = files[match.group(1)]
    return mapping


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
    bare, password = split_password(dsn)
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
        env={**os.environ, **({"PGPASSWORD": password} if password else {})},
    )
    if result.returncode != 0:
        lines = result.stderr.strip().splitlines() or [f"exit status {result.returncode}"]
        raise ProvisioningFailed(f"pg_dump failed: {lines[-1]}")


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
                "select n.nspname, c.relname from pg_class c"
                " join pg_namespace n on n.oid = c.relnamespace"
                " where c.relkind = 'r' and n.nspname not in ('pg_catalog', 'information_schema')"
                " and n.nspname not like 'pg\\_%' order by 1, 2"
            )
            counts: dict[str, int] = {}
            for schema, name in tables:
                counts[f"{schema}.{name}"] = await conn.fetchval(
                    f"select count(*) from {quote_ident(schema)}.{quote_ident(name)}"
                )
            if progress:
                progress(ProgressEvent(step=Step.RESTORE, message="dumping the source database"))
            await pg_dump(programs, source_dsn, staged / "dump", jobs=jobs, snapshot=exported)
        dump_dir = staged / "dump"
        data_files = await table_data_files(programs, dump_dir)
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
