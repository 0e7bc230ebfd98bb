"""What a snapshot store is: where published, verified dumps live.

A store hands out a local directory holding a verified dump (`fetch`), and publishes a
staged dump with its manifest atomically (`publish`): a snapshot is either complete or absent.
The local-directory store is in `local.py`; an S3 store implements the same interface.
"""

from __future__ import annotations

import builtins
from abc import ABC, abstractmethod
from datetime import UTC, datetime
from pathlib import Path

from provisioning.errors import InvalidInput, Next, NotAllowed, NotFound
from provisioning.snapshots.manifest import Manifest

SAVED = "saved"  # `extra.kind` of an environment saved before it was reaped
POSTGRESQL = "postgresql"  # `extra.engine`: what a snapshot's tables are; this when unset
ENGINES = {POSTGRESQL: "PostgreSQL", "dynamodb": "DynamoDB"}


def engine_of(manifest: Manifest) -> str:
    return str(manifest.extra.get("engine") or POSTGRESQL)


def check_saved(manifest: Manifest, actor: str, *, admin: bool) -> None:
    """A saved snapshot is its owner's work: anyone else but an admin is refused."""
    owner = manifest.extra.get("owner")
    if manifest.extra.get("kind") == SAVED and actor != owner and not admin:
        raise NotAllowed(f"snapshot {manifest.id} is {owner}'s saved work.")


def saved_id(env_id: int) -> str:
    """A saved snapshot's id: the environment's id (names are reused, by other owners too)
    and the time, so no save ever replaces another's."""
    return f"{SAVED}-{env_id}-{datetime.now(UTC):%Y%m%d-%H%M%S}"


class SnapshotStore(ABC):
    """Published snapshots, newest first."""

    @abstractmethod
    async def list(self) -> builtins.list[Manifest]:
        """Every intact-looking snapshot, newest first."""

    @abstractmethod
    async def get(self, snapshot_id: str) -> Manifest:
        """One snapshot's manifest; `NotFound` if there is no such snapshot."""

    @abstractmethod
    async def fetch(self, manifest: Manifest) -> Path:
        """A local directory with the snapshot's dump, verified against its manifest."""

    @abstractmethod
    async def staging(self) -> Path:
        """A fresh, empty directory to dump into before `publish`."""

    @abstractmethod
    async def publish(self, staged: Path, manifest: Manifest) -> Manifest:
        """Make a staged dump a snapshot, atomically."""

    @abstractmethod
    async def delete(self, snapshot_id: str) -> None:
        """Remove a snapshot; `NotFound` if absent."""

    async def latest(self, engine: str = POSTGRESQL) -> Manifest:
        """The newest shared snapshot of an engine (not someone's saved one); `NotFound` if
        none yet."""
        snapshots = [
            m for m in await self.list() if m.extra.get("kind") != SAVED and engine_of(m) == engine
        ]
        if not snapshots:
            raise NotFound(
                "no snapshot has been published yet: run ",
                Next("demo"),
                " to make one from generated data.",
            )
        return snapshots[0]

    async def resolve(self, snapshot_id: str | None, engine: str = POSTGRESQL) -> Manifest:
        """The named snapshot, or the latest when no id is given; one of another engine (a
        DynamoDB snapshot for a PostgreSQL environment) is refused in one sentence."""
        manifest = await (self.get(snapshot_id) if snapshot_id else self.latest(engine))
        if engine_of(manifest) != engine:
            raise InvalidInput(
                f"snapshot {manifest.id} holds {ENGINES.get(engine_of(manifest), 'other')} "
                f"tables, not {ENGINES[engine]} ones: run ",
                Next("snapshots"),
                " to see them.",
            )
        return manifest
