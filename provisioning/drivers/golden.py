"""Golden copies: each snapshot restored once, then cloned for every local environment.

A golden copy is a data directory that had the snapshot restored into it (`pg_restore
--jobs`), was vacuumed, analysed and checkpointed, and was then shut down cleanly. It is
never started again: environments are copies of it (`pg/clone.py`), so they start with
indexes built and statistics gathered, in about the time the server takes to start.

The first environment of a snapshot is restored as before, and its freshly restored data
directory, stopped cleanly, is kept as the golden copy (`keep`); or the copy is built on
its own (`ensure`), as the nightly rebuild does right after publishing.

Layout, under `<home>/golden/`:
    <snapshot id>/data/      a finished golden copy (a READY file marks it whole)
    .build-<id>-<random>/    one being built; renamed into place only when finished, so an
                             interrupted build is never used and is swept at the next build
    <snapshot id>.lock       held while building, so two processes never build it twice
"""

from __future__ import annotations

import asyncio
import fcntl
import secrets
import shutil
from collections.abc import Callable
from pathlib import Path

from provisioning.models import ProgressEvent, Step
from provisioning.pg.clone import clone_tree
from provisioning.pg.cluster import LocalCluster
from provisioning.pg.programs import PgPrograms, ServerAccount
from provisioning.pg.restore import Target, restore_dump
from provisioning.snapshots.manifest import Manifest

GOLDEN_DATABASE = "golden"
OWNER = "dev"
_MARK = "READY"
_SOCKET_PORT = 5432  # a golden copy's server listens only on its own socket: any number will do
Progress = Callable[[ProgressEvent], None]


async def settle(cluster: LocalCluster, database: str) -> None:
    """Vacuum, analyse and checkpoint `database`, then stop the server cleanly: what a data
    directory needs before copies of it start fast, with statistics, and without recovery."""
    conn = await cluster.connect(database)
    try:
        await conn.execute("vacuum (analyze)")
        await conn.execute("checkpoint")
    finally:
        await conn.close()
    await cluster.stop()


class GoldenCopies:
    def __init__(
        self, root: Path, *, programs: PgPrograms, account: ServerAccount | None, jobs: int
    ) -> None:
        self.root = root
        self.programs = programs
        self.account = account
        self.jobs = jobs
        self._locks: dict[str, asyncio.Lock] = {}

    def database(self, snapshot_id: str) -> str:
        """The name the golden copy's database has (the one each clone renames)."""
        return (self.root / snapshot_id / _MARK).read_text().split("\n", 1)[0].strip()

    async def keep(
        self, snapshot_id: str, data_dir: Path, database: str, owner: tuple[int, int] | None
    ) -> bool:
        """Keep a copy of a cleanly stopped, freshly restored data directory as the snapshot's
        golden copy, unless one exists or is being made; return whether it was kept."""
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / f"{snapshot_id}.lock", "w") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False  # another environment is making it right now
            try:
                if self.ready(snapshot_id) is not None:
                    return False
                work = self.root / f".build-{snapshot_id}-{secrets.token_hex(3)}"
                work.mkdir(mode=0o700)
                try:
                    await asyncio.to_thread(clone_tree, data_dir, work / "data", owner=owner)
                    for name in ("postmaster.pid", "postmaster.opts"):
                        (work / "data" / name).unlink(missing_ok=True)
                    (work / _MARK).write_text(database + "\n")
                    work.rename(self.root / snapshot_id)
                except BaseException:
                    await asyncio.to_thread(shutil.rmtree, work, True)
                    raise
                return True
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def ready(self, snapshot_id: str | None) -> Path | None:
        """The finished golden data directory of a snapshot, if there is one."""
        if not snapshot_id:
            return None
        home = self.root / snapshot_id
        data = home / "data"
        if (home / _MARK).is_file() and (data / "PG_VERSION").is_file():
            return data
        return None

    async def ensure(self, manifest: Manifest, dump_dir: Path, progress: Progress) -> Path:
        """The golden copy of `manifest`, built from `dump_dir` unless it exists already."""
        lock = self._locks.setdefault(manifest.id, asyncio.Lock())
        async with lock:
            found = self.ready(manifest.id)
            if found is not None:
                return found
            self.root.mkdir(parents=True, exist_ok=True)
            with open(self.root / f"{manifest.id}.lock", "w") as handle:
                await asyncio.to_thread(fcntl.flock, handle, fcntl.LOCK_EX)
                try:
                    found = self.ready(manifest.id)  # another process may have built it
                    if found is None:
                        found = await self._build(manifest, dump_dir, progress)
                finally:
                    fcntl.flock(handle, fcntl.LOCK_UN)
            return found

    async def _build(self, manifest: Manifest, dump_dir: Path, progress: Progress) -> Path:
        for stale in self.root.glob(f".build-{manifest.id}-*"):  # interrupted builds
            await asyncio.to_thread(shutil.rmtree, stale, True)
        work = self.root / f".build-{manifest.id}-{secrets.token_hex(3)}"
        # Only the private socket: a golden copy serves nobody while it is built.
        cluster = LocalCluster(
            work,
            _SOCKET_PORT,
            programs=self.programs,
            account=self.account,
            tcp=False,
            durable=False,
        )
        progress(ProgressEvent(step=Step.RESTORE, message="building the golden copy"))
        try:
            await cluster.create()
            await cluster.start()
            conn = await cluster.connect()
            try:
                await conn.execute(f"create role {OWNER} login")
                await conn.execute(f"create database {GOLDEN_DATABASE} owner {OWNER}")
            finally:
                await conn.close()
            await restore_dump(
                programs=self.programs,
                dump_dir=dump_dir,
                manifest=manifest,
                target=Target(
                    host=str(cluster.socket_dir),
                    port=cluster.port,
                    user=OWNER,
                    database=GOLDEN_DATABASE,
                ),
                jobs=self.jobs,
                monitor=cluster.connect,
                progress=progress,
            )
            await settle(cluster, GOLDEN_DATABASE)
            (work / "server.log").unlink(missing_ok=True)
            (work / _MARK).write_text(GOLDEN_DATABASE + "\n")
            final = self.root / manifest.id
            await asyncio.to_thread(shutil.rmtree, final, True)
            work.rename(final)
        except BaseException:
            await asyncio.shield(cluster.remove())
            raise
        return final / "data"

    async def prune(self, snapshot_ids: set[str]) -> list[str]:
        """Remove golden copies of snapshots that are gone, and builds that were interrupted
        (nobody holds their lock); return what was removed."""
        if not self.root.is_dir():
            return []
        removed = []
        for build in self.root.glob(".build-*"):
            snapshot_id = build.name.removeprefix(".build-").rsplit("-", 1)[0]
            with open(self.root / f"{snapshot_id}.lock", "a") as handle:
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue  # being built right now
                try:
                    # Its builder was killed; the server it started may still run.
                    await LocalCluster(
                        build, _SOCKET_PORT, programs=self.programs, account=self.account
                    ).remove()
                    removed.append(build.name)
                finally:
                    fcntl.flock(handle, fcntl.LOCK_UN)
        for entry in self.root.iterdir():
            if entry.is_dir() and not entry.name.startswith(".") and entry.name not in snapshot_ids:
                await asyncio.to_thread(shutil.rmtree, entry, True)
                (self.root / f"{entry.name}.lock").unlink(missing_ok=True)
                removed.append(entry.name)
        return removed
