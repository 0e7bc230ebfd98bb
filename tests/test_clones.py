"""Golden copies and clones: each snapshot restored once, environments copied from it."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from provisioning.drivers.golden import GoldenCopies
from provisioning.drivers.local import LocalDriver
from provisioning.pg.clone import COPY, REFLINK, clone_tree
from provisioning.runtime import Runtime
from provisioning.snapshots.manifest import Manifest
from tests.conftest import unique
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
    names = [unique("c") for _ in range(2)]
    views = await asyncio.gather(
        *(runtime.service.refresh(owner, n, snapshot=chinook_snapshot.id) for n in names)
    )
    root = driver.golden.root
    assert driver.golden.ready(chinook_snapshot.id) is not None
    assert not list(root.glob(".build-*")), "built once, nothing half-made left"
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
    if os.geteuid() != 0 or not Path("/dev/full").exists():
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
        subprocess.run(["pkill", "-f", f"-D {mount}"], check=False)
        from provisioning.pg.programs import stop_servers_under

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
    golden_and_clone = time.monotonic() - started
    started = time.monotonic()
    second = await service.refresh(owner, "two", snapshot=demo_snapshot.id)
    clone_only = time.monotonic() - started
    try:
        for view in (first, second):
            assert view.env.handle["made"] == "clone" and view.env.handle["method"] == REFLINK
            assert view.endpoint is not None
            assert await count(view.endpoint.dsn, "contacts") == 2000
        assert clone_only < golden_and_clone
    finally:
        for name in ("one", "two"):
            await service.destroy(owner, name)
        await driver.prune(set())


async def test_an_interrupted_golden_build_is_never_used_and_is_swept(
    runtime: Runtime, chinook_snapshot: Manifest, cli_env: dict[str, str]
) -> None:
    """kill -9 while `devdb refresh` builds a golden copy: the half-built copy is never used,
    reconciliation's prune stops its server and removes it, and the next refresh builds it."""
    driver = local_driver(runtime)
    assert driver.golden is not None
    await driver.prune(set())  # no golden copies: the next refresh must build one
    name = unique("k")
    proc = subprocess.Popen(
        [sys.executable, "-m", "bot.cli", "refresh", name, "--snapshot", chinook_snapshot.id],
        env=cli_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while not list(driver.golden.root.glob(f".build-{chinook_snapshot.id}-*/data/postmaster.pid")):
        assert time.monotonic() < deadline and proc.poll() is None, "the build never started"
        await asyncio.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert driver.golden.ready(chinook_snapshot.id) is None
    builds = list(driver.golden.root.glob(".build-*"))
    assert builds
    removed = await driver.prune({chinook_snapshot.id})
    assert [b.name for b in builds] == removed
    assert not list(driver.golden.root.glob(".build-*"))
    leftover = subprocess.run(["pgrep", "-f", str(builds[0])], capture_output=True, check=False)
    assert leftover.stdout == b"", "the half-built copy's server was stopped"
    owner = unique("dev")
    view = await runtime.service.refresh(owner, "again", snapshot=chinook_snapshot.id)
    try:
        assert view.env.handle["made"] == "clone"
    finally:
        await runtime.service.destroy(owner, "again")
