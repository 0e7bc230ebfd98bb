"""Golden copies and clones: each snapshot restored once, environments copied from it."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import asyncpg
import pytest

from provisioning.drivers.golden import GoldenCopies
from provisioning.drivers.local import LocalDriver
from provisioning.errors import NotAllowed
from provisioning.pg.clone import COPY, REFLINK, clone_tree
from provisioning.pg.programs import stop_servers_under
from provisioning.recovery import recover
from provisioning.runtime import Runtime
from provisioning.snapshots.local import LocalSnapshotStore
from provisioning.snapshots.manifest import Manifest
from provisioning.sweeps import expire_saved
from tests.conftest import unique
from tests.test_cli import devdb
from tests.test_recovery import assert_nothing_left
from tests.test_service import service_with


def local_driver(runtime: Runtime) -> LocalDriver:
    driver = runtime.service.drivers["local"]
    assert isinstance(driver, LocalDriver) and driver.golden is not None
    return driver


async def count(dsn: str, table: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return int(await conn.fetchval(f"select count(*) from {table}"))
    finally:
        await conn.close()


async def test_environments_are_clones_of_one_golden_copy(
    runtime: Runtime, chinook_snapshot: Manifest
) -> None:
    driver = local_driver(runtime)
    assert driver.golden is not None
    owner = unique("dev")
    await driver.prune(set())
    # The first environment is restored, and kept as the golden copy; the next are clones.
    first = await runtime.service.refresh(owner, "first", snapshot=chinook_snapshot.id)
    assert first.env.handle["made"] == "restore"
    assert driver.golden.ready(chinook_snapshot.id) is not None
    await runtime.service.destroy(owner, "first")
    names = [unique("c") for _ in range(2)]
    views = await asyncio.gather(
        *(runtime.service.refresh(owner, n, snapshot=chinook_snapshot.id) for n in names)
    )
    root = driver.golden.root
    assert not list(root.glob(f".build-{chinook_snapshot.id}-*")), "nothing half-made left"
    try:
        for view in views:
            assert view.env.handle["made"] == "clone"
            assert view.env.handle["method"] in (REFLINK, COPY)
            assert view.endpoint is not None and view.endpoint.database == view.env.name
            for table, entry in chinook_snapshot.tables.items():
                assert await count(view.endpoint.dsn, table) == entry.rows
            # Statistics came with the copy: the golden copy was analysed.
            conn = await asyncpg.connect(view.endpoint.dsn)
            try:
                analysed = await conn.fetchval(
                    "select count(*) from pg_stats where tablename = 'track'"
                )
            finally:
                await conn.close()
            assert analysed > 0
        # Each clone is its own: a write to one is not in the other.
        first, second = (v.endpoint for v in views)
        assert first is not None and second is not None
        conn = await asyncpg.connect(first.dsn)
        try:
            await conn.execute("delete from playlist_track")
        finally:
            await conn.close()
        assert await count(second.dsn, "playlist_track") == 8715
    finally:
        for name in names:
            await runtime.service.destroy(owner, name)
    assert await driver.prune({m.id for m in await runtime.snapshots.list()}) == []
    removed = await driver.prune(set())
    assert chinook_snapshot.id in removed and driver.golden.ready(chinook_snapshot.id) is None


def test_a_full_disk_leaves_no_half_copy(tmp_path: Path) -> None:
    source = tmp_path / "src"
    source.mkdir()
    (source / "a").write_bytes(b"x" * 1000)
    target = tmp_path / "dst"
    assert clone_tree(source, target) in (REFLINK, COPY)
    assert (target / "a").read_bytes() == b"x" * 1000
    if os.geteuid() != 0:
        return
    tiny = tmp_path / "tiny"
    tiny.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(tiny)], check=False
    )
    if mounted.returncode != 0:
        pytest.skip("no tmpfs mount here")
    try:
        (source / "big").write_bytes(os.urandom(256 * 1024))
        with pytest.raises(Exception, match=r"the disk under .* is full"):
            clone_tree(source, tiny / "copy")
        assert not (tiny / "copy").exists()
    finally:
        subprocess.run(["umount", str(tiny)], check=False)


@pytest.fixture
def xfs() -> Iterator[Path]:
    """A loop-mounted XFS with reflink, as root; skipped where one cannot be made."""
    if os.geteuid() != 0 or not shutil.which("mkfs.xfs", path="/usr/sbin:/sbin:/usr/bin"):
        pytest.skip("needs root and xfsprogs (scripts/bootstrap --test installs it)")
    base = Path(tempfile.mkdtemp(prefix="devdb-xfs-", dir="/tmp"))
    image, mount = base / "image", base / "mnt"
    mount.mkdir()
    with open(image, "wb") as handle:
        handle.truncate(512 << 20)
    made = subprocess.run(
        [
            shutil.which("mkfs.xfs", path="/usr/sbin:/sbin:/usr/bin") or "mkfs.xfs",
            "-q",
            "-m",
            "reflink=1",
            str(image),
        ],
        capture_output=True,
        check=False,
    )
    mounted = (
        made.returncode == 0
        and subprocess.run(
            ["mount", "-o", "loop", str(image), str(mount)], capture_output=True, check=False
        ).returncode
        == 0
    )
    if not mounted:
        shutil.rmtree(base, ignore_errors=True)
        pytest.skip("a loop device could not be mounted here")
    os.chmod(mount, 0o755)
    os.chmod(base, 0o755)
    try:
        yield mount
    finally:
        stop_servers_under(mount)
        subprocess.run(["umount", "-l", str(mount)], check=False)
        shutil.rmtree(base, ignore_errors=True)


async def test_clones_share_blocks_on_a_reflink_filesystem(
    runtime: Runtime, demo_snapshot: Manifest, xfs: Path
) -> None:
    local = local_driver(runtime)
    driver = LocalDriver(
        xfs / "clusters",
        programs=local.programs,
        account=local.account,
        port_range=local.port_range,
        golden=GoldenCopies(xfs / "golden", programs=local.programs, account=local.account, jobs=2),
    )
    service = service_with(runtime, drivers={"local": driver})
    owner = unique("dev")
    started = time.monotonic()
    first = await service.refresh(owner, "one", snapshot=demo_snapshot.id)
    restored = time.monotonic() - started
    started = time.monotonic()
    second = await service.refresh(owner, "two", snapshot=demo_snapshot.id)
    cloned = time.monotonic() - started
    try:
        assert first.env.handle["made"] == "restore"
        assert second.env.handle["made"] == "clone" and second.env.handle["method"] == REFLINK
        for view in (first, second):
            assert view.endpoint is not None
            assert await count(view.endpoint.dsn, "contacts") == 2000
        assert cloned < restored
    finally:
        for name in ("one", "two"):
            await service.destroy(owner, name)
        await driver.prune(set())


BUILD = """
import asyncio, sys
from pathlib import Path
from provisioning.drivers.golden import GoldenCopies
from provisioning.pg.programs import PgPrograms, ServerAccount
from provisioning.snapshots.manifest import Manifest

root, dump, manifest = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
golden = GoldenCopies(
    root, programs=PgPrograms(), account=ServerAccount.for_current_process(None), jobs=1
)
asyncio.run(golden.ensure(Manifest.from_json(manifest.read_text()), dump, lambda _: None))
"""


async def test_an_interrupted_golden_build_is_never_used_and_is_swept(
    runtime: Runtime, chinook_snapshot: Manifest
) -> None:
    """kill -9 while a golden copy is built (as the nightly rebuild builds one): the half-built
    copy is never used, reconciliation's prune stops its server and removes it, and the
    next build makes it whole."""
    driver = local_driver(runtime)
    assert driver.golden is not None
    await driver.prune(set())
    dump = await runtime.snapshots.fetch(chinook_snapshot)
    manifest = dump.parent / "manifest.json"
    command = [sys.executable, "-c", BUILD, str(driver.golden.root), str(dump), str(manifest)]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    pattern = f".build-{chinook_snapshot.id}-*/data/postmaster.pid"
    while not list(driver.golden.root.glob(pattern)):
        assert time.monotonic() < deadline and proc.poll() is None, "the build never started"
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.3)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert driver.golden.ready(chinook_snapshot.id) is None, "a half-built copy is not used"
    builds = list(driver.golden.root.glob(".build-*"))
    assert builds
    removed = await driver.prune({chinook_snapshot.id})
    assert sorted(b.name for b in builds) == sorted(removed)
    assert not list(driver.golden.root.glob(".build-*"))
    # Its server is stopped; a restore client the killed builder left loses its connection
    # with it and exits.
    deadline = time.monotonic() + 10
    while subprocess.run(["pgrep", "-f", str(builds[0])], capture_output=True).stdout:
        assert time.monotonic() < deadline, "a process of the half-built copy is still running"
        await asyncio.sleep(0.1)
    await driver.golden.ensure(chinook_snapshot, dump, lambda _: None)
    assert driver.golden.ready(chinook_snapshot.id) is not None


async def test_reset_brings_back_the_snapshot_under_the_same_dsn(
    runtime: Runtime, demo_snapshot: Manifest, cli_env: dict[str, str]
) -> None:
    owner = "carol"  # cli_env's user
    name = unique("r")
    view = await runtime.service.refresh(owner, name, snapshot=demo_snapshot.id)
    assert view.endpoint is not None
    dsn = view.endpoint.dsn
    conn = await asyncpg.connect(dsn)
    await conn.execute(
        "insert into tenants values (9999, 'Scratch', 'scratch', false, 'free', now())"
    )
    await conn.execute("create table notes (id int)")
    try:
        result = devdb(cli_env, "--json", "reset", name)
        assert result.returncode == 0, result.stderr
        assert '"sessions_ended": 1' in result.stdout, "the open session was ended and counted"
        with pytest.raises((OSError, asyncpg.PostgresError, asyncpg.InterfaceError)):
            await conn.fetchval("select 1")
    finally:
        await conn.close()
    after = await asyncpg.connect(dsn)  # the same host, port, database, user and password
    try:
        assert await after.fetchval("select count(*) from tenants where id = 9999") == 0
        assert await after.fetchval("select to_regclass('notes')") is None
        assert await after.fetchval("select count(*) from contacts") == 2000
    finally:
        await after.close()
    stranger = devdb({**cli_env, "DEVDB_USER": "mallory"}, "reset", name)
    assert stranger.returncode == 1 and "only its owner or an admin may reset it" in stranger.stderr
    async with runtime.store.connection() as tx:
        rows = await tx.conn.fetch(
            "select actor, result from devdb.audit_log where action = 'reset' and target = $1 "
            "order by id",
            name,
        )
    assert [(r["actor"], r["result"]) for r in rows] == [
        ("carol", "reset"),
        ("mallory", "refused"),
    ]
    await runtime.service.destroy(owner, name)


async def test_save_keeps_an_environment_as_its_owners_snapshot(
    runtime: Runtime, demo_snapshot: Manifest, cli_env: dict[str, str], tmp_path: Path
) -> None:
    owner, name = "carol", unique("s")
    view = await runtime.service.refresh(owner, name, snapshot=demo_snapshot.id)
    assert view.endpoint is not None
    conn = await asyncpg.connect(view.endpoint.dsn)
    try:
        await conn.execute(
            "insert into tenants values (9998, 'Branch', 'branch', false, 'free', now())"
        )
    finally:
        await conn.close()
    saved = devdb(cli_env, "--json", "save", name)
    assert saved.returncode == 0, saved.stderr
    snapshot_id = json.loads(saved.stdout)["id"]
    assert snapshot_id.startswith(f"saved-{view.env.id}-")
    branch = await runtime.service.refresh(owner, unique("b"), snapshot=snapshot_id)
    try:
        assert branch.endpoint is not None
        assert await count(branch.endpoint.dsn, "tenants where id = 9998") == 1
        assert snapshot_id in {m.id for m in await runtime.service.list_snapshots(owner)}
        assert snapshot_id not in {m.id for m in await runtime.service.list_snapshots("mallory")}
        with pytest.raises(NotAllowed, match="is carol's saved work"):
            await runtime.service.refresh("mallory", unique("m"), snapshot=snapshot_id)
        # Retention (14 days by default) spares a saved snapshot an environment came from.
        # A store of its own holds just this saved snapshot: other tests' are left alone.
        saved_manifest = await runtime.snapshots.get(snapshot_id)
        alone = LocalSnapshotStore(tmp_path / "snapshots")
        staged = await alone.staging()
        shutil.copytree(await runtime.snapshots.fetch(saved_manifest), staged / "dump")
        await alone.publish(staged, saved_manifest)
        retention = service_with(runtime, snapshots=alone)
        late = saved_manifest.created + timedelta(days=15)
        assert await expire_saved(retention, late) == []
    finally:
        await runtime.service.destroy(owner, branch.env.name)
        await runtime.service.destroy(owner, name)
    assert await expire_saved(retention, saved_manifest.created + timedelta(days=13)) == []
    assert await expire_saved(retention, late) == [snapshot_id]
    assert await alone.list() == []
    await runtime.snapshots.delete(snapshot_id)
    remaining = {m.id for m in await runtime.snapshots.list()}
    assert snapshot_id not in remaining
    driver = runtime.service.drivers["local"]
    assert isinstance(driver, LocalDriver) and driver.golden is not None
    assert driver.golden.ready(snapshot_id) is not None
    await driver.prune(remaining)  # what the same reconcile sweep does next
    assert driver.golden.ready(snapshot_id) is None


async def test_a_clone_killed_half_made_is_cleaned_up_at_the_next_start(
    runtime: Runtime, demo_snapshot: Manifest, cli_env: dict[str, str]
) -> None:
    """kill -9 while a refresh copies the golden copy: the next start's recovery removes the
    half-made cluster, its port and password, and the name is free again."""
    driver = local_driver(runtime)
    await driver.prepare(runtime.snapshots, demo_snapshot)
    before = set(driver.clusters_dir.iterdir()) if driver.clusters_dir.is_dir() else set()
    name = unique("k")
    proc = subprocess.Popen(
        [sys.executable, "-m", "bot.cli", "refresh", name, "--snapshot", demo_snapshot.id],
        env=cli_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    try:
        while not (
            set(driver.clusters_dir.iterdir()) - before if driver.clusters_dir.is_dir() else None
        ):
            assert proc.poll() is None and time.monotonic() < deadline, "no clone was begun"
            time.sleep(0.002)  # a tight look: the copy itself takes a fraction of a second
        proc.kill()
    finally:
        proc.wait()
    (made,) = set(driver.clusters_dir.iterdir()) - before
    assert made.exists(), "the half-made clone is there until recovery runs"
    report = await recover(runtime.store, runtime.service.drivers, runtime.service.secrets)
    assert len(report.abandoned_jobs) == 1
    await assert_nothing_left(runtime, name)
    assert not made.exists()
    view = await runtime.service.refresh("carol", name, snapshot=demo_snapshot.id)
    try:
        assert view.env.handle["made"] == "clone" and view.endpoint is not None
        assert await count(view.endpoint.dsn, "contacts") == 2000
    finally:
        await runtime.service.destroy("carol", view.env.name)
