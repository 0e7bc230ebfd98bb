"""Golden copies of snapshots on the shared server, made once per snapshot.

A golden database restored from the snapshot (from template0, closed to PUBLIC from its
first moment), its objects owned by the role `devdb_golden` (no login). Database
environments are `CREATE DATABASE … TEMPLATE` copies of it. Schema environments restore an
archive of that golden database's `public` schema renamed `devdb_golden`, and rename it once
restored. Mixed into `SharedServer`, whose connections, lock and closed creation it uses.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import shutil
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import asyncpg

from provisioning.errors import ProvisioningFailed
from provisioning.models import ProgressEvent
from provisioning.pg.programs import PgPrograms
from provisioning.pg.restore import Target, restore_dump
from provisioning.pg.sql import quote_ident
from provisioning.snapshots.dump import pg_dump
from provisioning.snapshots.manifest import Manifest

SHARED_DB = "devdb_shared"
GOLDEN_OWNER = "devdb_golden"
GOLDEN_SCHEMA = "devdb_golden"
RESET_PREFIX = "devdb_reset_"  # a shared-db reset's new copy, until it takes the name
OLD_PREFIX = "devdb_resetold_"  # the database a shared-db reset replaced, until dropped


def golden_name(snapshot_id: str) -> str:
    cleaned = re.sub(r"[^a-z0-9]+", "_", snapshot_id.lower())[:30]
    return f"devdb_golden_{cleaned}_{hashlib.sha256(snapshot_id.encode()).hexdigest()[:8]}"


class GoldenCopies:
    home: Path
    programs: PgPrograms
    audit: Callable[[str, list[str]], Awaitable[None]]
    _golden: dict[str, asyncio.Lock]
    # SharedServer's:
    connect: Callable[[str], Awaitable[asyncpg.Connection]]
    execute: Callable[..., Awaitable[None]]
    exclusive: Callable[[], AbstractAsyncContextManager[None]]
    create_closed: Callable[..., Awaitable[list[str]]]
    target: Callable[..., Target]
    running: Callable[[], Awaitable[bool]]

    async def golden_database(
        self,
        manifest: Manifest,
        dump_dir: Path,
        jobs: int,
        progress: Callable[[ProgressEvent], None],
    ) -> str:
        """The snapshot restored once, owned by `devdb_golden`, closed to PUBLIC."""
        name = golden_name(manifest.id)
        partial = f"{name}_partial"
        async with self._golden.setdefault(name, asyncio.Lock()), self.exclusive():
            admin = await self.connect("postgres")
            try:
                if await admin.fetchval("select 1 from pg_database where datname = $1", name):
                    return name
                # Restored under another name and renamed when complete, so a golden copy
                # that exists is whole.
                await admin.execute(f"drop database if exists {quote_ident(partial)} with (force)")
            finally:
                await admin.close()
            # The golden owner restores into `public` (PostgreSQL 15 closes it by default) and
            # makes the snapshot's other schemas.
            # From template0, so nobody sitting in template1 can make the build fail.
            revoked = await self.create_closed(
                partial, template="template0", grants=(f"create:{GOLDEN_OWNER}",)
            )
            await self.execute(partial, f"grant create on schema public to {GOLDEN_OWNER}")
            await restore_dump(
                programs=self.programs,
                dump_dir=dump_dir,
                manifest=manifest,
                target=self.target(partial, role=GOLDEN_OWNER),
                jobs=jobs,
                monitor=lambda: self.connect(partial),
                progress=progress,
            )
            await self.execute(partial, f"revoke create on schema public from {GOLDEN_OWNER}")
            await self.execute(
                "postgres",
                f"revoke create on database {quote_ident(partial)} from {GOLDEN_OWNER}",
                f"alter database {quote_ident(partial)} rename to {quote_ident(name)}",
            )
            await self.audit(name, revoked[:1])
            return name

    async def golden_schema(
        self,
        manifest: Manifest,
        dump_dir: Path,
        jobs: int,
        progress: Callable[[ProgressEvent], None],
    ) -> Path:
        """An archive of the snapshot's tables in a schema named `devdb_golden` (cached)."""
        archive = self.home / "shared-golden" / golden_name(manifest.id)
        if (archive / "toc.dat").is_file():
            return archive
        golden = await self.golden_database(manifest, dump_dir, jobs, progress)
        stage = f"{golden}_stage"[:63]
        async with self.exclusive():
            await self.execute(
                "postgres", f"drop database if exists {quote_ident(stage)} with (force)"
            )
            await self.create_closed(stage, template=golden)
        try:
            conn = await self.connect(stage)
            try:
                others = await conn.fetch(
                    "select nspname from pg_namespace where nspname not in"
                    " ('public', 'information_schema') and nspname not like 'pg\\_%'"
                )
                if others:
                    raise ProvisioningFailed(
                        "a schema environment holds one schema, and this snapshot has "
                        f"tables in {', '.join(r['nspname'] for r in others)} as well: use "
                        "`--shared` without `--schema`."
                    )
                await conn.execute(f"alter schema public rename to {GOLDEN_SCHEMA}")
            finally:
                await conn.close()
            partial = archive.with_name(archive.name + ".partial")
            shutil.rmtree(partial, ignore_errors=True)
            partial.parent.mkdir(parents=True, exist_ok=True)
            await pg_dump(
                self.programs,
                self.target(stage).dsn,
                partial,
                jobs=max(1, jobs),
                options=[f"--schema={GOLDEN_SCHEMA}"],
            )
            partial.rename(archive)
        finally:
            await self.execute(
                "postgres", f"drop database if exists {quote_ident(stage)} with (force)"
            )
        return archive

    async def prune(self, snapshot_ids: set[str]) -> list[str]:
        """Drop golden copies whose snapshot is gone, and databases a shared-db reset left
        when it was killed (the server is not started for it)."""
        if not await self.running():
            return []
        keep = {golden_name(snapshot_id) for snapshot_id in snapshot_ids}
        removed = []
        async with self.exclusive():
            admin = await self.connect("postgres")
            try:
                names = [
                    r["datname"]
                    for r in await admin.fetch(
                        "select datname from pg_database where datname like 'devdb\\_golden\\_%'"
                    )
                ]
                names += [
                    r["datname"]
                    for r in await admin.fetch(
                        "select datname from pg_database where datname like 'devdb\\_reset%'"
                    )
                ]
                for name in names:
                    base = name.removesuffix("_partial").removesuffix("_stage")
                    if base not in keep:
                        await admin.execute(
                            f"drop database if exists {quote_ident(name)} with (force)"
                        )
                        removed.append(name)
            finally:
                await admin.close()
        archives = self.home / "shared-golden"
        if archives.is_dir():
            for entry in archives.iterdir():
                if entry.name.removesuffix(".partial") not in keep:
                    shutil.rmtree(entry, ignore_errors=True)
                    removed.append(entry.name)
        return removed
