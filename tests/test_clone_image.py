"""DEVDB_CLONE_IMAGE: devdb, as root, keeps its clusters on a loop-mounted XFS image under
DEVDB_HOME, made on first use and mounted again at every start."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from provisioning.drivers.local import LocalDriver
from provisioning.errors import InvalidInput
from provisioning.pg.clone import REFLINK
from provisioning.pg.programs import stop_servers_under
from provisioning.pg.volume import MOUNT, mount_clone_image, parse_size
from provisioning.runtime import Runtime, open_runtime
from provisioning.settings import Settings
from provisioning.snapshots.manifest import Manifest
from tests.conftest import unique


def test_sizes_and_refusals(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert parse_size("50G") == 50 << 30 and parse_size("512MiB") == 512 << 20
    for bad in ("fifty", "0G", "10M", "-5G"):
        with pytest.raises(InvalidInput, match="DEVDB_CLONE_IMAGE must be"):
            parse_size(bad)
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(InvalidInput, match="needs devdb to run as root"):
        asyncio.run(mount_clone_image(tmp_path, 1 << 30))


async def test_clusters_live_on_the_image_and_it_is_mounted_again_at_start(
    runtime: Runtime, settings: Settings, demo_snapshot: Manifest
) -> None:
    if os.geteuid() != 0 or not shutil.which("mkfs.xfs", path="/usr/sbin:/sbin:/usr/bin"):
        pytest.skip("needs root and xfsprogs (scripts/bootstrap --test installs it)")
    home = Path(tempfile.mkdtemp(prefix="devdb-img-", dir="/tmp"))
    os.chmod(home, 0o755)
    mine = settings.model_copy(update=dict(home=home, clone_image=parse_size("1G")))
    mount = home / MOUNT
    try:
        async with open_runtime(mine) as rt:
            if not os.path.ismount(mount):
                pytest.fail("the image was not mounted")
            dump = await runtime.snapshots.fetch(demo_snapshot)
            staged = await rt.snapshots.staging()
            shutil.copytree(dump, staged / "dump")
            await rt.snapshots.publish(staged, demo_snapshot)
            owner = unique("img")
            first = await rt.service.refresh(owner, "one", snapshot=demo_snapshot.id)
            second = await rt.service.refresh(owner, "two", snapshot=demo_snapshot.id)
            assert first.env.handle["made"] == "restore"
            assert second.env.handle["made"] == "clone"
            assert second.env.handle["method"] == REFLINK
            assert Path(second.env.handle["dir"]).is_relative_to(mount)
        # A reboot, as far as devdb can tell: servers gone, image unmounted.
        stop_servers_under(home)
        subprocess.run(["umount", str(mount)], check=True)
        async with open_runtime(mine) as rt:
            assert os.path.ismount(mount), "mounted again at start"
            local = rt.service.drivers["local"]
            assert isinstance(local, LocalDriver) and local.golden is not None
            assert local.golden.ready(demo_snapshot.id) is not None
            assert await local.resume(second.env.handle)
            for name in ("one", "two"):
                await rt.service.destroy(owner, name)
    finally:
        stop_servers_under(home)
        subprocess.run(["umount", "-l", str(mount)], check=False)
        shutil.rmtree(home, ignore_errors=True)
