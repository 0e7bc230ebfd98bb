"""An XFS image for clones (`DEVDB_CLONE_IMAGE`): instant clones where DEVDB_HOME cannot
share blocks.

Opt-in, and for devdb running as root (as in many containers): a sparse file
`DEVDB_HOME/clones.xfs`, made once with `mkfs.xfs -m reflink=1`, loop-mounted on
`DEVDB_HOME/clones`, where the local driver then keeps its clusters and golden copies. Every
start mounts it again if it is not mounted (after a reboot, say). The image is sparse and
mounted with `discard`, so it takes disk space only for what it holds.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import re
import shutil
from pathlib import Path

from provisioning.errors import InvalidInput, ProvisioningFailed
from provisioning.pg.programs import run

IMAGE = "clones.xfs"
MOUNT = "clones"
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_size(text: str) -> int:
    """`50G`, `512M`, `2T` (powers of 1024) into bytes; anything else is one sentence."""
    match = re.fullmatch(r"\s*(\d+)\s*([kmgt]?)i?b?\s*", text.lower())
    if not match or int(match.group(1)) == 0:
        raise InvalidInput(f"DEVDB_CLONE_IMAGE must be a size like 50G, not {text!r}.")
    size = int(match.group(1)) * _UNITS[match.group(2)]
    if size < 300 << 20:
        raise InvalidInput("DEVDB_CLONE_IMAGE must be at least 300M (XFS's smallest size).")
    return size


async def mount_clone_image(home: Path, size: int) -> Path:
    """The mounted XFS directory under `home`, making and mounting the image as needed."""
    mount = home / MOUNT
    if os.path.ismount(mount):
        return mount
    if os.geteuid() != 0:
        raise InvalidInput(
            "DEVDB_CLONE_IMAGE needs devdb to run as root (it loop-mounts an XFS image): "
            "unset it, or put DEVDB_HOME on XFS or btrfs yourself."
        )
    with open(home / "clones.lock", "w") as lock:  # two devdb processes starting together
        await asyncio.to_thread(fcntl.flock, lock.fileno(), fcntl.LOCK_EX)
        if not os.path.ismount(mount):
            await _make_and_mount(home / IMAGE, mount, size)
    return mount


async def _make_and_mount(image: Path, mount: Path, size: int) -> None:
    if not image.exists():
        mkfs = shutil.which("mkfs.xfs") or shutil.which("mkfs.xfs", path="/usr/sbin:/sbin")
        if mkfs is None:
            raise InvalidInput("DEVDB_CLONE_IMAGE needs mkfs.xfs: install xfsprogs.")
        partial = image.with_suffix(".partial")
        with open(partial, "wb") as handle:
            handle.truncate(size)
        made = await run([mkfs, "-q", "-m", "reflink=1", str(partial)])
        if made.returncode != 0:
            partial.unlink(missing_ok=True)
            raise ProvisioningFailed(f"mkfs.xfs could not make {image}: {made.stderr.strip()}")
        partial.rename(image)
    mount.mkdir(exist_ok=True)
    mounted = await run(["mount", "-o", "loop,noatime,discard", str(image), str(mount)])
    if mounted.returncode != 0:
        raise ProvisioningFailed(
            f"{image} could not be mounted on {mount}: {mounted.stderr.strip()} "
            "(a container needs loop devices and CAP_SYS_ADMIN for this)."
        )
    mount.chmod(0o711)  # the server account enters; what is inside keeps its own modes
