"""`devdb image upload`: the wheel the image recipe (deploy/image.yaml) installs.

It is built from the source checkout this devdb runs from (pip builds it, as for any
project) and stored in the snapshot bucket under `<prefix>image/`, where the image
pipeline's `WheelUri` parameter points.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from provisioning.errors import InvalidInput, ProvisioningFailed
from provisioning.snapshots.s3 import S3SnapshotStore

_NOT_SOURCE = shutil.ignore_patterns(
    ".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".*_cache"
)


def source_root() -> Path:
    """The checkout devdb runs from; a sentence if it is installed from a wheel."""
    root = Path(__file__).resolve().parents[2]
    if not (root / "pyproject.toml").is_file() or not (root / "provisioning").is_dir():
        raise InvalidInput(
            "devdb image upload builds the wheel from a source checkout of devdb, and this "
            "devdb is installed without one: run it from the repository's virtualenv."
        )
    return root


async def upload_wheel(store: S3SnapshotStore, say: Callable[[str], None]) -> str:
    """Build the wheel and store it; its s3:// address."""
    root = source_root()
    with tempfile.TemporaryDirectory(prefix="devdb-wheel-") as work:
        # A clean copy: the build leaves nothing in the checkout, and nothing stale there
        # (an old build/ directory) gets into the wheel.
        source, out = Path(work) / "source", str(Path(work) / "out")
        await asyncio.to_thread(shutil.copytree, root, source, ignore=_NOT_SOURCE)
        say(f"building the wheel from {root}")
        built = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "-q", "-w", out],
            capture_output=True,
            text=True,
            check=False,
        )
        wheels = sorted(Path(out).glob("devdb-*.whl"))
        if built.returncode != 0 or len(wheels) != 1:
            last = (built.stderr or built.stdout).strip().splitlines()[-1:] or ["no output"]
            raise ProvisioningFailed(f"the wheel could not be built: {last[0]}")
        say(f"uploading {wheels[0].name} ({wheels[0].stat().st_size // 1024} KiB)")
        return await store.put_file(wheels[0], f"image/{wheels[0].name}")
