"""Copying a stopped data directory: sharing blocks where the filesystem can, copying where
it cannot.

On XFS (with reflink) and btrfs, `FICLONE` makes a file that shares every block with its
source until one of them writes: a copy of any size in milliseconds. Elsewhere the kernel
copies the bytes (`copy_file_range`, `sendfile`), which still spares a restore's parsing and
index builds.
"""

from __future__ import annotations

import errno
import fcntl
import os
import shutil
import tempfile
from pathlib import Path

from provisioning.errors import ProvisioningFailed

FICLONE = 0x40049409  # _IOW(0x94, 9, int), from linux/fs.h
REFLINK = "reflink"
COPY = "copy"
_UNSUPPORTED = {errno.EOPNOTSUPP, errno.ENOTTY, errno.EXDEV, errno.EINVAL, errno.ENOSYS}


def _copy_file(source: Path, target: Path, method: str) -> str:
    """Copy one file; return the method that worked (a failed reflink falls back, once)."""
    if method == REFLINK:
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with open(source, "rb") as src:
                fcntl.ioctl(fd, FICLONE, src.fileno())
            return REFLINK
        except OSError as exc:
            if exc.errno not in _UNSUPPORTED:
                raise
        finally:
            os.close(fd)
        target.unlink()
    shutil.copyfile(source, target)
    os.chmod(target, 0o600)
    return COPY


def clone_tree(source: Path, target: Path, *, owner: tuple[int, int] | None = None) -> str:
    """Copy the directory `source` to the new directory `target`; return "reflink" when every
    file shares its blocks, else "copy". On failure nothing of `target` is left behind."""
    method = REFLINK
    try:
        target.mkdir(mode=0o700)
        for folder, dirs, files in os.walk(source):
            relative = Path(folder).relative_to(source)
            for name in dirs:
                (target / relative / name).mkdir(mode=0o700)
            for name in files:
                src, dst = Path(folder) / name, target / relative / name
                if src.is_symlink():
                    os.symlink(os.readlink(src), dst)
                else:
                    method = _copy_file(src, dst, method)
        if owner is not None:
            for folder, dirs, files in os.walk(target):
                for name in [".", *dirs, *files]:
                    os.lchown(os.path.join(folder, name), *owner)
    except OSError as exc:
        shutil.rmtree(target, ignore_errors=True)
        if exc.errno == errno.ENOSPC:
            raise ProvisioningFailed(
                f"the disk under {target.parent} is full, so the environment could not be "
                "copied: free some space or destroy environments you no longer use."
            ) from exc
        raise ProvisioningFailed(f"copying the golden copy failed: {exc.strerror}.") from exc
    return method


def reflink_works(directory: Path) -> bool:
    """Whether files in `directory` can share blocks (tried on two scratch files)."""
    directory.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=directory, prefix=".reflink-") as scratch:
        source = Path(scratch) / "a"
        source.write_bytes(b"devdb")
        try:
            return _copy_file(source, Path(scratch) / "b", REFLINK) == REFLINK
        except OSError:
            return False
