"""`reset` and `save`: an environment back to its snapshot, or kept as a snapshot of its own.

Mixed into `Service`. A saved snapshot (`saved-<environment id>-<time>`) belongs to the
environment's owner: only they and admins see it and refresh from it, and environments made
from it are clones of its own golden copy, like any other snapshot's.
 For `reset`, the driver throws away every change (a new clone of the golden copy,
for local environments) and keeps the host, port, database, user and password, so nothing
that connects to it needs to change. Sessions still connected are ended; the reply says
how many.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping

from provisioning.drivers.base import Driver, Progress, placement_of
from provisioning.errors import InvalidInput, NotAllowed
from provisioning.jobs import JobOptions
from provisioning.models import (
    Environment,
    EnvironmentView,
    EnvState,
    database_of,
    validate_name,
)
from provisioning.pg.programs import PgPrograms
from provisioning.secrets import Passwords
from provisioning.snapshots.base import SAVED, SnapshotStore, saved_id
from provisioning.snapshots.dump import dump_snapshot
from provisioning.snapshots.manifest import Manifest
from provisioning.state.store import StateStore, Tx


class Branching:
    store: StateStore
    drivers: Mapping[str, Driver]
    snapshots: SnapshotStore
    secrets: Passwords
    programs: PgPrograms
    job_options: JobOptions

    may_act: Callable[[str, Environment], bool]  # Service's
    _refuse: Callable[[str, str, Environment], Awaitable[NotAllowed]]
    _live: Callable[[Tx, str], Awaitable[Environment]]

    async def reset(
        self, actor: str, name: str, progress: Progress | None = None
    ) -> tuple[EnvironmentView, int]:
        """Bring `name` back to its snapshot; return it and the number of sessions ended."""
        emit = progress or (lambda _: None)
        async with self.store.connection() as tx:
            env = await self._live(tx, validate_name(name))
        if not self.may_act(actor, env):
            raise await self._refuse(actor, "reset", env)
        if env.state != EnvState.READY or env.snapshot_id is None:
            raise InvalidInput(f"{env.name!r} is {env.state.value}, so it cannot be reset now.")
        driver = self.drivers[env.kind]
        manifest = await self.snapshots.get(env.snapshot_id)
        dump = await driver.stage(self.snapshots, manifest)
        password = await self.secrets.get(env)
        placement = placement_of(env)
        async with self.store.exclusive(f"reset:{env.id}") as mine:  # a double click
            if not mine:
                raise InvalidInput(f"{env.name!r} is being reset already.")
            ended = await driver.reset(
                placement, password, manifest, dump, self.job_options.restore_jobs, emit
            )
        async with self.store.connection() as tx:
            await tx.audit(
                actor,
                "reset",
                env.name,
                "reset",
                {"snapshot": manifest.id, "sessions_ended": ended},
            )
        endpoint = await driver.endpoint(placement, password)
        return EnvironmentView(env=env, running=True, endpoint=endpoint), ended

    async def save(self, actor: str, name: str) -> Manifest:
        """Keep `name` as it is now as a new snapshot that only its owner (and admins) see."""
        async with self.store.connection() as tx:
            env = await self._live(tx, validate_name(name))
        if not self.may_act(actor, env):
            raise await self._refuse(actor, "save", env)
        if env.state != EnvState.READY:
            raise InvalidInput(f"{env.name!r} is {env.state.value}, so it cannot be saved now.")
        connection = await self.drivers[env.kind].endpoint(
            placement_of(env), await self.secrets.get(env)
        )
        endpoint = database_of(connection, "save")
        manifest = await dump_snapshot(
            endpoint.dsn,
            self.snapshots,
            self.programs,
            extra={
                "kind": SAVED,
                "owner": env.owner,
                "environment": env.name,
                "from_snapshot": env.snapshot_id,
            },
            snapshot_id=saved_id(env.id),
        )
        async with self.store.connection() as tx:
            await tx.audit(actor, "save", env.name, "saved", {"snapshot": manifest.id})
        return manifest
