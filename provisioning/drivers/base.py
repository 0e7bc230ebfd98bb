"""What a driver is: the one place that knows where an environment's database runs.

The cut-off line: the core (jobs, service) decides *what* happens and records it in the
state store; a driver only does it, on one kind of infrastructure. A driver never touches
the state store. Its `place` answer (the handle) is recorded by the core *before* `launch`
runs, so an interrupted launch can always be found and terminated from that record.

Every method must be safe to call again with the same handle, and `terminate` must succeed
on a handle whose launch never started, half-finished, or already was terminated.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar

from provisioning.errors import DevdbError, ProvisioningFailed
from provisioning.models import Connection, Endpoint, Environment, ProgressEvent
from provisioning.snapshots.base import POSTGRESQL, SnapshotStore
from provisioning.snapshots.manifest import Manifest

Handle = dict[str, Any]
Progress = Callable[[ProgressEvent], None]


@dataclass(frozen=True, kw_only=True)
class Placement:
    """Where a new environment will run, decided before anything is created."""

    handle: Handle
    host: str
    port: int
    database: str
    user: str


@dataclass(frozen=True, kw_only=True)
class Activity:
    """What the reaper needs to tell whether anyone uses an environment.

    `connections` are open client sessions now; `sessions` and `work` are running totals
    that only clients move: sessions started, and the time their statements ran (or, where
    the server keeps no such total, as for a schema, its tables' scans and row changes).
    Any use between two looks changes them. Transaction and tuple-read counters are not
    used: autovacuum moves them on a database nobody touches.
    """

    connections: int
    sessions: int
    work: float

    def differs(self, before: Activity | None) -> bool:
        """Whether anyone used the environment since `before` was read."""
        return self.connections > 0 or (
            before is not None and (self.sessions, self.work) != (before.sessions, before.work)
        )


class Driver(ABC):
    """Creates, restores into, describes and removes environments of one kind."""

    kind: ClassVar[str]
    engine: ClassVar[str] = POSTGRESQL  # which snapshots it restores (`snapshots.base.ENGINES`)
    # How long a resource no record accounts for is left alone before it is removed: a
    # cloud API may list an instance before the launch that made it has been recorded.
    orphan_grace: ClassVar[timedelta] = timedelta(0)
    # Whether the platform may take a server back at short notice (spot instances).
    reclaimable: ClassVar[bool] = False

    @abstractmethod
    async def preflight(self) -> None:
        """Raise a `DevdbError` if this driver cannot work here (missing programs, access)."""

    async def diagnose(self) -> list[tuple[str, bool, str]]:
        """`devdb doctor`: each check this driver makes before a launch, and its outcome."""
        try:
            await self.preflight()
        except DevdbError as exc:
            return [("ready", False, str(exc))]
        return [("ready", True, "")]

    @abstractmethod
    async def place(self, env: Environment, avoid_ports: set[int]) -> Placement:
        """Choose resources for `env` (a port, a directory, a region); create nothing."""

    async def stage(self, snapshots: SnapshotStore, manifest: Manifest) -> Path | None:
        """Get the snapshot ready for `restore`, before anything is reserved or launched.

        By default: a verified local copy of the dump. A driver whose servers fetch the
        snapshot themselves checks that they can, and returns None.
        """
        return await snapshots.fetch(manifest)

    @abstractmethod
    async def launch(self, placement: Placement, password: str, progress: Progress) -> Placement:
        """Create and start the server, its login role and an empty database.

        Returns the placement, completed with what only the launch could learn (an address,
        an instance id, a price); the core records it.
        """

    @abstractmethod
    async def restore(
        self,
        placement: Placement,
        dump_dir: Path | None,
        manifest: Manifest,
        jobs: int,
        progress: Progress,
    ) -> None:
        """Restore a verified snapshot into the launched, empty database."""

    async def handover(self, placement: Placement, database: str, password: str) -> Placement:
        """Give a warm (pooled) environment to its new owner: rename its database to
        `database`, set the login role's password; return the placement as it is now."""
        raise ProvisioningFailed(f"{self.kind} environments cannot be handed over from a pool.")

    async def reset(
        self,
        placement: Placement,
        password: str,
        manifest: Manifest,
        dump_dir: Path | None,
        jobs: int,
        progress: Progress,
    ) -> int:
        """Throw away every change: bring the environment back to `manifest` with the same
        host, port, database, user and password. Returns the client sessions it ended."""
        raise ProvisioningFailed(f"{self.kind} environments cannot be reset yet: refresh them.")

    async def endpoint(self, placement: Placement, password: str) -> Connection:
        """How a developer connects: by default, what the placement says, and the password."""
        return Endpoint(
            host=placement.host,
            port=placement.port,
            database=placement.database,
            user=placement.user,
            password=password,
        )

    @abstractmethod
    async def is_running(self, handle: Handle) -> bool:
        """Whether the environment's server is up; false when it is gone."""

    @abstractmethod
    async def resume(self, handle: Handle) -> bool:
        """Bring a stopped environment back (after a reboot, say); False if it cannot."""

    @abstractmethod
    async def activity(self, handle: Handle) -> Activity:
        """Client connections and counters, not counting devdb's own probe."""

    async def expiry_moved(self, handle: Handle, expires_at: datetime) -> None:
        """The environment's expiry changed; a server that enforces it itself is told."""
        return None

    async def interruption(self, handle: Handle) -> str | None:
        """Why a ready environment's server went or is going away, or None if it is fine.

        For servers the platform may take back (spot instances); local servers are not.
        """
        return None

    def cost(self, env: Environment, since: datetime, until: datetime) -> float:
        """Estimated spend in US dollars on `env` between `since` and `until`."""
        return 0.0

    async def prepare(self, snapshots: SnapshotStore, manifest: Manifest) -> None:
        """Make what this driver keeps per snapshot (a golden copy) ahead of the first
        environment, as the nightly rebuild does right after publishing; by default nothing."""
        return None

    async def prune(self, snapshot_ids: set[str]) -> list[str]:
        """Remove what this driver keeps per snapshot (golden copies) for snapshots that no
        longer exist; return what was removed."""
        return []

    async def discard(self, handle: Handle) -> None:
        """What a failed refresh made: removed, unless kept for debugging (EC2, by setting)."""
        await self.terminate(handle)

    @abstractmethod
    async def terminate(self, handle: Handle) -> None:
        """Remove everything the handle names; idempotent."""

    @abstractmethod
    async def inventory(self) -> list[Handle]:
        """A handle for every resource of this driver that exists now, recorded or not."""

    def key(self, handle: Handle) -> str:
        """What identifies the resource a handle names, to match inventory against records."""
        return json.dumps(handle, sort_keys=True)


def placement_of(env: Environment) -> Placement:
    """Rebuild the placement the core recorded for `env`."""
    assert env.host and env.port and env.database and env.user
    return Placement(
        handle=env.handle, host=env.host, port=env.port, database=env.database, user=env.user
    )
