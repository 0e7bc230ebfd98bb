"""Snapshots in a local directory: `<root>/<id>/manifest.json` and `<root>/<id>/dump/`."""

from __future__ import annotations

import asyncio
import builtins
import shutil
import tempfile
from pathlib import Path

from provisioning.errors import Next, NotFound, SnapshotInvalid
from provisioning.snapshots.base import SnapshotStore
from provisioning.snapshots.manifest import Manifest, validate_snapshot_id, verify


class LocalSnapshotStore(SnapshotStore):
    def __init__(self, root: Path, *, verify_workers: int = 4) -> None:
        self.root = root
        self.verify_workers = verify_workers

    def _dir(self, snapshot_id: str) -> Path:
        return self.root / validate_snapshot_id(snapshot_id)

    async def list(self) -> builtins.list[Manifest]:
        def scan() -> builtins.list[Manifest]:
            found: builtins.list[Manifest] = []
            if not self.root.is_dir():
                return found
            for entry in self.root.iterdir():
                if entry.name.startswith("."):
                    continue
                try:
                    found.append(Manifest.from_json((entry / "manifest.json").read_text()))
                except (OSError, SnapshotInvalid):
                    continue
            return sorted(found, key=lambda m: (m.created, m.id), reverse=True)

        return await asyncio.to_thread(scan)

    async def get(self, snapshot_id: str) -> Manifest:
        path = self._dir(snapshot_id) / "manifest.json"
        try:
            text = await asyncio.to_thread(path.read_text)
        except FileNotFoundError:
            raise NotFound(
                f"there is no snapshot {snapshot_id!r}: run ", Next("snapshots"), " to see them."
            ) from None
        except OSError as exc:
            raise SnapshotInvalid(
                f"snapshot {snapshot_id} cannot be read: {exc.strerror}."
            ) from exc
        manifest = Manifest.from_json(text)
        if manifest.id != snapshot_id:
            raise SnapshotInvalid(f"snapshot {snapshot_id}'s manifest names another id.")
        return manifest

    async def fetch(self, manifest: Manifest) -> Path:
        dump = self._dir(manifest.id) / "dump"
        await asyncio.to_thread(verify, dump, manifest, self.verify_workers)
        return dump

    async def staging(self) -> Path:
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        return Path(tempfile.mkdtemp(prefix=".staging-", dir=self.root))

    async def publish(self, staged: Path, manifest: Manifest) -> Manifest:
        final = self._dir(manifest.id)

        def move() -> None:
            (staged / "manifest.json").write_text(manifest.to_json())
            staged.rename(final)

        await asyncio.to_thread(move)
        return manifest

    async def delete(self, snapshot_id: str) -> None:
        path = self._dir(snapshot_id)
        if not path.is_dir():
            raise NotFound(f"there is no snapshot {snapshot_id!r}.")
        trash = self.root / f".deleting-{snapshot_id}"
        path.rename(trash)
        await asyncio.to_thread(shutil.rmtree, trash, True)
