"""What devdb does to environments on its own, for the scheduler: interruptions, reaps,
saves before a reap, lost servers. Mixed into `Service`; owners hear of each through the
service's notifier, and each is in the audit log under the actor `devdb`."""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Mapping

from provisioning import metrics
from provisioning.drivers.base import Driver, placement_of
from provisioning.durations import format_duration
from provisioning.errors import DevdbError, Next, Part
from provisioning.jobs import retire
from provisioning.models import (
    POOL_OWNER,
    Environment,
    EnvironmentView,
    EnvState,
    database_of,
)
from provisioning.notify import Notifier
from provisioning.pg.programs import PgPrograms
from provisioning.policy import Policy
from provisioning.secrets import Passwords
from provisioning.snapshots.base import SAVED, SnapshotStore, saved_id
from provisioning.snapshots.dump import dump_snapshot
from provisioning.state.store import StateStore

# How a refresh names each kind of environment.
KIND_FLAGS = {"ec2": "--ec2", "shared-db": "--shared", "shared": "--shared --schema"}


class Upkeep:
    store: StateStore
    drivers: Mapping[str, Driver]
    snapshots: SnapshotStore
    secrets: Passwords
    policy: Policy
    notify: Notifier
    programs: PgPrograms

    refresh: Callable[..., Awaitable[EnvironmentView]]  # Service's

    async def check_interruptions(self) -> list[str]:
        """Mark environments whose server was taken away `interrupted` and tell their owners.

        With `auto_replace`, each is refreshed again from its snapshot, under the same name.
        Returns the names found interrupted.
        """
        async with self.store.connection() as tx:
            envs = await tx.live_environments()
        found = []
        for env in envs:
            driver = self.drivers.get(env.kind)
            if env.state != EnvState.READY or driver is None:
                continue
            reason = await driver.interruption(env.handle)
            if reason is None:
                continue
            async with self.store.transaction() as tx:
                await tx.lock("name", env.name)
                if (await tx.environment(env.id)).state != EnvState.READY:
                    continue  # destroyed or replaced meanwhile
                await tx.set_state(env.id, EnvState.INTERRUPTED, error=reason)
                await tx.audit(
                    "devdb",
                    "interrupt",
                    env.name,
                    "interrupted",
                    {"environment": env.id, "reason": reason},
                )
            found.append(env.name)
            with contextlib.suppress(Exception):  # whatever is left of it
                await driver.terminate(env.handle)
            if not self.policy.auto_replace:
                await self.notify(
                    env.owner,
                    f"Your environment {env.name} was interrupted: {reason}. Run ",
                    Next("refresh", f"{env.name} {KIND_FLAGS.get(env.kind, '')}"),
                    " for a new one.",
                )
                continue
            await self.notify(
                env.owner,
                f"Your environment {env.name} was interrupted: {reason}. A new one is on its "
                "way from the same snapshot.",
            )
            try:
                await self.refresh(env.owner, env.name, snapshot=env.snapshot_id, kind=env.kind)
            except DevdbError as exc:
                await self.notify(env.owner, f"{env.name} could not be replaced: ", *exc.parts)
            else:
                await self.notify(
                    env.owner,
                    f"{env.name} is back: ",
                    Next("status", env.name),
                    " shows how to reach it.",
                )
        return found

    async def _warn_by_notice(self, env: Environment, reason: str) -> None:
        await self.notify(
            env.owner,
            f"Your environment {env.name} will be removed in about "
            f"{format_duration(self.policy.reap.warning)}: {reason}. Use it, run ",
            Next("extend", f"{env.name} 4h"),
            ", or ",
            Next("protect", f"{env.name} 1d"),
            " to keep it.",
        )

    async def reap(self, env: Environment, reason: str, *, save: bool = False) -> bool:
        """Remove an environment the reaper judged due; optionally save it first."""
        async with self.store.transaction() as tx:
            await tx.lock("name", env.name)
            current = await tx.environment(env.id)
            if current.state != EnvState.READY or current.warned_at is None:
                return False  # replaced, destroyed, used or kept meanwhile
            await tx.set_state(env.id, EnvState.DESTROYING)
        saved = None
        if save:
            saved = await self._save(current)
        await retire(self.store, self.drivers[env.kind], self.secrets, current)
        async with self.store.connection() as tx:
            await tx.audit(
                "devdb",
                "reap",
                env.name,
                "reaped",
                {"environment": env.id, "reason": reason, "saved": saved},
            )
        metrics.REAPS.labels(kind=env.kind).inc()
        back: tuple[Part, ...] = (
            (" ", Next("refresh", f"{env.name} --snapshot {saved}"), " brings it back.")
            if saved
            else ()
        )
        await self.notify(env.owner, f"Your environment {env.name} was removed: {reason}.", *back)
        return True

    async def _save(self, env: Environment) -> str | None:
        """Dump `env` as the owner's saved snapshot; its id, or None if that fails."""
        snapshot_id = saved_id(env.id)
        try:
            connection = await self.drivers[env.kind].endpoint(
                placement_of(env), await self.secrets.get(env)
            )
            endpoint = database_of(connection, "saving before a reap")
            await dump_snapshot(
                endpoint.dsn,
                self.snapshots,
                self.programs,
                extra={"kind": SAVED, "owner": env.owner, "environment": env.name},
                snapshot_id=snapshot_id,
            )
        except DevdbError as exc:
            async with self.store.connection() as tx:
                await tx.audit("devdb", "save", env.name, "failed", {"reason": str(exc)})
            return None
        return snapshot_id

    async def mark_lost(self, env: Environment, reason: str) -> None:
        """A ready environment whose server vanished: `lost`, and its owner told."""
        async with self.store.transaction() as tx:
            await tx.lock("name", env.name)
            if (await tx.environment(env.id)).state != EnvState.READY:
                return
            await tx.set_state(env.id, EnvState.LOST, error=reason)
            await tx.audit("devdb", "reconcile", env.name, "lost", {"reason": reason})
        with contextlib.suppress(Exception):
            await self.drivers[env.kind].terminate(env.handle)
        if env.owner == POOL_OWNER:
            return
        await self.notify(
            env.owner,
            f"Your environment {env.name} is lost: {reason}. Run ",
            Next("refresh", env.name),
            " for a new one.",
        )
