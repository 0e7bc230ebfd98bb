"""The local driver: one PostgreSQL cluster per environment, on this machine.

Each environment gets `<clusters>/<env id>-<random>/` with its own data directory, a port
from the configured range on 127.0.0.1, a login role `dev` with a random password
(scram-sha-256), and a database named after the environment, owned by `dev`. devdb itself
talks to the cluster as superuser over the cluster's private Unix socket.

With golden copies (`golden.py`), a snapshot is restored once; each environment is then a
copy of that stopped data directory (block-sharing where the filesystem can), started on
its own port with its own password and its database renamed: no restore at all. Without
one (the copy could not be built), an environment is made by initdb and pg_restore.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import socket
from dataclasses import replace
from pathlib import Path

import asyncpg

from provisioning.drivers.base import Activity, Driver, Handle, Placement, Progress
from provisioning.drivers.golden import GoldenCopies, settle
from provisioning.errors import ProvisioningFailed
from provisioning.models import Environment, ProgressEvent, Step
from provisioning.pg.clone import COPY, REFLINK, reflink_works
from provisioning.pg.cluster import LocalCluster
from provisioning.pg.probe import probe
from provisioning.pg.programs import PgPrograms, ServerAccount, owner_of
from provisioning.pg.restore import Target, restore_dump, restored
from provisioning.pg.scram import scram_verifier
from provisioning.pg.sql import quote_ident
from provisioning.snapshots.base import SnapshotStore
from provisioning.snapshots.manifest import Manifest

DEV_USER = "dev"
HOST = "127.0.0.1"


async def _with_verifier(
    conn: asyncpg.Connection, statement: str, user: str, password: str
) -> None:
    """`statement` (a format() template: the role, then the password) run with the password
    as its SCRAM verifier, never in plain text; quoted by the server, never by hand."""
    filled = await conn.fetchval(
        f"select format('{statement}', $1::text, $2::text)", user, scram_verifier(password)
    )
    await conn.execute(filled)


async def create_login(conn: asyncpg.Connection, user: str, password: str) -> None:
    """The login role."""
    await _with_verifier(conn, "create role %I login password %L", user, password)


async def set_password(conn: asyncpg.Connection, user: str, password: str) -> None:
    """Give the login role a new password."""
    await _with_verifier(conn, "alter role %I password %L", user, password)


def port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((HOST, port))
        except OSError:
            return False
    return True


class LocalDriver(Driver):
    kind = "local"

    def __init__(
        self,
        clusters_dir: Path,
        *,
        programs: PgPrograms,
        account: ServerAccount | None,
        port_range: tuple[int, int],
        golden: GoldenCopies | None = None,
    ) -> None:
        self.clusters_dir = clusters_dir
        self.programs = programs
        self.account = account
        self.port_range = port_range
        self.golden = golden

    def _cluster(self, handle: Handle) -> LocalCluster:
        return LocalCluster(
            Path(handle["dir"]),
            int(handle.get("port") or 0),
            programs=self.programs,
            account=self.account,
            tcp=True,
            durable=False,
        )

    def clone_method(self) -> str:
        """How clones are made in this home: "reflink" (shared blocks) or "copy"."""
        return REFLINK if reflink_works(self.clusters_dir) else COPY

    async def preflight(self) -> None:
        for program in ("initdb", "pg_ctl", "pg_restore"):
            self.programs.path(program)

    async def stage(self, snapshots: SnapshotStore, manifest: Manifest) -> Path | None:
        """Nothing to fetch when the snapshot has a golden copy: environments are clones.
        Otherwise a verified local copy of the dump, to restore."""
        if self.golden is not None and self.golden.ready(manifest.id) is not None:
            return None
        return await snapshots.fetch(manifest)

    async def prepare(self, snapshots: SnapshotStore, manifest: Manifest) -> None:
        if self.golden is not None and self.golden.ready(manifest.id) is None:
            dump = await snapshots.fetch(manifest)
            await self.golden.ensure(manifest, dump, lambda _: None)

    async def place(self, env: Environment, avoid_ports: set[int]) -> Placement:
        low, high = self.port_range
        # From a random point in the range, so concurrent refreshes rarely pick the same port.
        start = secrets.randbelow(high - low + 1)
        candidates = [*range(low + start, high + 1), *range(low, low + start)]
        port = next((p for p in candidates if p not in avoid_ports and port_is_free(p)), None)
        if port is None:
            raise ProvisioningFailed(
                f"no free port is left in {low}-{high}: destroy an environment or widen "
                "DEVDB_PORT_RANGE."
            )
        root = self.clusters_dir / f"{env.id}-{secrets.token_hex(3)}"
        return Placement(
            handle={"dir": str(root), "port": port, "snapshot": env.snapshot_id},
            host=HOST,
            port=port,
            database=env.name,
            user=DEV_USER,
        )

    async def launch(self, placement: Placement, password: str, progress: Progress) -> Placement:
        self.clusters_dir.mkdir(parents=True, exist_ok=True)
        if self.account:
            os.chmod(self.clusters_dir, 0o711)
        cluster = self._cluster(placement.handle)
        golden = self.golden.ready(placement.handle.get("snapshot")) if self.golden else None
        if golden is not None:
            return await self._clone(placement, cluster, golden, password, progress)
        progress(
            ProgressEvent(step=Step.LAUNCH, message="creating a PostgreSQL cluster", percent=10.0)
        )
        await cluster.create()
        progress(
            ProgressEvent(
                step=Step.LAUNCH, message=f"starting it on port {placement.port}", percent=60.0
            )
        )
        await cluster.start()
        conn = await cluster.connect()
        try:
            await create_login(conn, placement.user, password)
            database, owner = quote_ident(placement.database), quote_ident(placement.user)
            await conn.execute(f"create database {database} owner {owner}")
        finally:
            await conn.close()
        progress(ProgressEvent(step=Step.LAUNCH, message="server is up", percent=100.0))
        return replace(placement, handle={**placement.handle, "made": "restore"})

    async def _clone(
        self,
        placement: Placement,
        cluster: LocalCluster,
        golden: Path,
        password: str,
        progress: Progress,
    ) -> Placement:
        progress(ProgressEvent(step=Step.LAUNCH, message="cloning the golden copy", percent=10.0))
        method = await cluster.adopt(golden)
        progress(
            ProgressEvent(
                step=Step.LAUNCH,
                message=f"cloned ({method}); starting it on port {placement.port}",
                percent=60.0,
            )
        )
        await cluster.start()
        conn = await cluster.connect()
        try:
            await set_password(conn, placement.user, password)
            assert self.golden is not None
            database = self.golden.database(str(placement.handle.get("snapshot")))
            if placement.database != database:
                await conn.execute(
                    f"alter database {quote_ident(database)}"
                    f" rename to {quote_ident(placement.database)}"
                )
        finally:
            await conn.close()
        progress(ProgressEvent(step=Step.LAUNCH, message="server is up", percent=100.0))
        return replace(placement, handle={**placement.handle, "made": "clone", "method": method})

    async def reset(
        self,
        placement: Placement,
        password: str,
        manifest: Manifest,
        dump_dir: Path | None,
        jobs: int,
        progress: Progress,
    ) -> int:
        golden = self.golden.ready(manifest.id) if self.golden else None
        if golden is None and self.golden is not None and dump_dir is not None:
            golden = await self.golden.ensure(manifest, dump_dir, progress)
        if golden is None:
            raise ProvisioningFailed(
                f"snapshot {manifest.id} has no golden copy here, so this environment cannot "
                "be reset: refresh it instead."
            )
        cluster = self._cluster(placement.handle)
        sessions = (await self.activity(placement.handle)).connections
        progress(ProgressEvent(step=Step.LAUNCH, message="stopping the server", percent=10.0))
        await cluster.stop(immediate=True)  # ends every session
        old = cluster.data_dir.with_name(f"data.old-{secrets.token_hex(3)}")
        cluster.data_dir.rename(old)
        try:
            await self._clone(placement, cluster, golden, password, progress)
        except BaseException:
            await cluster.stop(immediate=True)
            await asyncio.to_thread(shutil.rmtree, cluster.data_dir, True)
            old.rename(cluster.data_dir)  # back as it was
            raise
        await asyncio.to_thread(shutil.rmtree, old, True)
        return sessions

    async def restore(
        self,
        placement: Placement,
        dump_dir: Path | None,
        manifest: Manifest,
        jobs: int,
        progress: Progress,
    ) -> None:
        if placement.handle.get("made") == "clone":
            progress(
                restored("cloned from the golden copy: nothing to restore", manifest.data_bytes)
            )
            return
        if dump_dir is None:
            raise ProvisioningFailed("a local restore needs the snapshot on this machine.")
        cluster = self._cluster(placement.handle)
        await restore_dump(
            programs=self.programs,
            dump_dir=dump_dir,
            manifest=manifest,
            # As the owner role over the private socket, so restored objects belong to it.
            target=Target(
                host=str(cluster.socket_dir),
                port=placement.port,
                user=placement.user,
                database=placement.database,
            ),
            jobs=jobs,
            monitor=cluster.connect,
            progress=progress,
        )
        if self.golden is not None and self.golden.ready(manifest.id) is None:
            await self._keep_golden(placement, cluster, manifest, progress)

    async def _keep_golden(
        self, placement: Placement, cluster: LocalCluster, manifest: Manifest, progress: Progress
    ) -> None:
        """The first environment of a snapshot, freshly restored, becomes its golden copy:
        vacuumed, analysed, checkpointed, stopped cleanly, copied, and started again."""
        assert self.golden is not None
        progress(restored("keeping a golden copy for the next environments", manifest.data_bytes))
        await settle(cluster, placement.database)
        try:
            owner = owner_of(self.account)
            await self.golden.keep(manifest.id, cluster.data_dir, placement.database, owner)
        finally:
            await cluster.start()

    async def handover(self, placement: Placement, database: str, password: str) -> Placement:
        conn = await self._cluster(placement.handle).connect()
        try:
            await set_password(conn, placement.user, password)
            if database != placement.database:
                # Nobody may be connected while a database is renamed; a pool one has no users.
                await conn.execute(
                    "select pg_terminate_backend(pid) from pg_stat_activity where datname = $1",
                    placement.database,
                )
                await conn.execute(
                    f"alter database {quote_ident(placement.database)}"
                    f" rename to {quote_ident(database)}"
                )
        finally:
            await conn.close()
        return replace(placement, database=database, handle={**placement.handle, "made": "warm"})

    async def is_running(self, handle: Handle) -> bool:
        # A handle recorded before its placement was (a refresh killed at once) names no
        # cluster: nothing of it runs.
        return bool(handle.get("dir")) and self._cluster(handle).running_pid() is not None

    async def resume(self, handle: Handle) -> bool:
        cluster = self._cluster(handle)
        if not cluster.exists():
            return False
        await cluster.start()
        return True

    async def activity(self, handle: Handle) -> Activity:
        cluster = self._cluster(handle)
        return await probe(host=str(cluster.socket_dir), port=cluster.port, user="devdb")

    async def prune(self, snapshot_ids: set[str]) -> list[str]:
        return await self.golden.prune(snapshot_ids) if self.golden else []

    async def terminate(self, handle: Handle) -> None:
        if not handle.get("dir"):
            return
        await self._cluster(handle).remove()

    async def inventory(self) -> list[Handle]:
        if not self.clusters_dir.is_dir():
            return []
        return [
            {"dir": str(entry), "port": 0}
            for entry in self.clusters_dir.iterdir()
            if entry.is_dir()
        ]

    def key(self, handle: Handle) -> str:
        return str(Path(handle.get("dir") or "").resolve())
