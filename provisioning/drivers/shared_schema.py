"""Shared mode, schema variant: a role and a schema of the same name in the shared database
(`shared.py` holds what both variants share, and the database variant)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import asyncpg

from provisioning.drivers.base import Activity, Handle, Placement, Progress
from provisioning.drivers.shared import SharedDriver, role_name
from provisioning.errors import InvalidInput, ProvisioningFailed
from provisioning.models import Environment, ProgressEvent, Step
from provisioning.pg.programs import run
from provisioning.pg.restore import restore_dump
from provisioning.pg.sql import quote_ident
from provisioning.shared.server import GOLDEN_SCHEMA, SHARED_DB
from provisioning.snapshots.base import SnapshotStore
from provisioning.snapshots.manifest import Manifest


class SharedSchemaDriver(SharedDriver):
    """A role and a schema of the same name in the shared database; search_path set to it."""

    kind = "shared"

    async def stage(self, snapshots: SnapshotStore, manifest: Manifest) -> Path | None:
        """Refused before anything is made: a snapshot with tables outside `public`."""
        others = sorted({name.split(".", 1)[0] for name in manifest.tables} - {"public"})
        if others:
            raise InvalidInput(
                "a schema environment holds one schema, and this snapshot also has tables in "
                f"{', '.join(others)}: use a database of its own (--shared without --schema)."
            )
        return await super().stage(snapshots, manifest)

    async def place(self, env: Environment, avoid_ports: set[int]) -> Placement:
        role = role_name(env)
        return self._placement({"role": role, "schema": role}, SHARED_DB, role)

    async def launch(self, placement: Placement, password: str, progress: Progress) -> Placement:
        progress(ProgressEvent(step=Step.LAUNCH, message="preparing the shared server", percent=10))
        await self.server.ensure()
        role = placement.user
        statements = await self._create_role(role, password)
        grants = [
            f"grant connect on database {SHARED_DB} to {quote_ident(role)}",
            f"create schema {quote_ident(role)} authorization {quote_ident(role)}",
            f"revoke all on schema {quote_ident(role)} from public",
            f"alter role {quote_ident(role)} in database {SHARED_DB}"
            f" set search_path = {quote_ident(role)}",
        ]
        await self.server.execute(SHARED_DB, *grants)
        await self.server.audit(role, [*statements, *grants])
        progress(ProgressEvent(step=Step.LAUNCH, message=f"role and schema {role}", percent=100))
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
        archive = await self.server.golden_schema(manifest, dump_dir, jobs, lambda _: None)
        role = placement.user
        listing = await self._entries_without_schema(archive)
        async with self.server.exclusive():
            await self.server.execute(
                SHARED_DB, f"create schema {GOLDEN_SCHEMA} authorization {quote_ident(role)}"
            )
            try:
                await restore_dump(
                    programs=self.server.programs,
                    dump_dir=archive,
                    manifest=_in_schema(manifest, GOLDEN_SCHEMA),
                    target=self.server.target(SHARED_DB, role=role),
                    jobs=jobs,
                    monitor=lambda: self.server.connect(SHARED_DB),
                    progress=progress,
                    only=listing,
                )
            except BaseException:
                await self.server.execute(
                    SHARED_DB, f"drop schema if exists {GOLDEN_SCHEMA} cascade"
                )
                raise
            await self._swap(role)

    async def _swap(self, role: str) -> None:
        """Put the restored `devdb_golden` schema in place of the role's own, in one
        transaction, after ending the role's sessions. A session that comes back and takes a
        lock first makes the swap wait at most two seconds; then its sessions are ended again
        and the swap tried again."""
        conn = await self.server.connect(SHARED_DB)
        try:
            for attempt in range(5):
                await conn.execute(
                    "select pg_terminate_backend(pid) from pg_stat_activity where usename = $1",
                    role,
                )
                try:
                    async with conn.transaction():
                        await conn.execute("set local lock_timeout = '2s'")
                        await conn.execute(f"drop schema {quote_ident(role)} cascade")
                        await conn.execute(
                            f"alter schema {GOLDEN_SCHEMA} rename to {quote_ident(role)}"
                        )
                        await conn.execute(f"revoke all on schema {quote_ident(role)} from public")
                    return
                except asyncpg.LockNotAvailableError:
                    if attempt == 4:
                        raise ProvisioningFailed(
                            f"the schema {role} stayed in use, so it could not be replaced."
                        ) from None
        finally:
            await conn.close()

    async def reset(
        self,
        placement: Placement,
        password: str,
        manifest: Manifest,
        dump_dir: Path | None,
        jobs: int,
        progress: Progress,
    ) -> int:
        """A new restore of the snapshot, swapped in for the schema; the role is kept."""
        ended = (await self.activity(placement.handle)).connections
        await self.restore(placement, dump_dir, manifest, jobs, progress)
        return ended

    async def _entries_without_schema(self, archive: Path) -> Path:
        """A pg_restore list of the archive without its CREATE SCHEMA (made beforehand)."""
        listing = archive / "restore.list"
        if listing.is_file():
            return listing
        result = await run([self.server.programs.path("pg_restore"), "--list", str(archive)])
        if result.returncode != 0:
            raise ProvisioningFailed(f"pg_restore could not list the archive: {result.stderr}")
        kept = [
            line
            for line in result.stdout.splitlines()
            if not (" SCHEMA - " in line and GOLDEN_SCHEMA in line)
        ]
        partial = listing.with_suffix(".partial")
        partial.write_text("\n".join(kept) + "\n")
        partial.rename(listing)
        return listing

    async def activity(self, handle: Handle) -> Activity:
        return await self._activity(SHARED_DB, handle["role"], [handle["schema"]])

    async def terminate(self, handle: Handle) -> None:
        role = handle.get("role")
        if not role or not await self._role_exists(role):
            return
        await self._drop_role(role, [f"drop schema if exists {quote_ident(role)} cascade"])


def _in_schema(manifest: Manifest, schema: str) -> Manifest:
    """The manifest with its public tables named in `schema`, for restore progress."""
    tables = {
        (f"{schema}.{name.split('.', 1)[1]}" if name.startswith("public.") else name): entry
        for name, entry in manifest.tables.items()
    }
    return replace(manifest, tables=tables)
