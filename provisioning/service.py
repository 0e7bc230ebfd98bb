"""The service every front end calls: refresh, list, status, destroy, extend, snapshots.

Front ends pass the acting user; the service decides what that user may do, records every
action in the audit log, and raises `DevdbError`s whose message is meant for that user.
"""

from __future__ import annotations

import builtins
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg

from provisioning.drivers.base import Driver, Progress, placement_of
from provisioning.errors import Conflict, InvalidInput, NotAllowed, NotFound, QuotaExceeded
from provisioning.jobs import LEASE as JOB_LEASE
from provisioning.jobs import JobOptions, RefreshJob, retire, worker_id
from provisioning.models import (
    Endpoint,
    Environment,
    EnvState,
    ProgressEvent,
    Step,
    default_name,
    validate_name,
)
from provisioning.secrets import Passwords
from provisioning.snapshots.base import SnapshotStore
from provisioning.snapshots.manifest import Manifest, validate_snapshot_id
from provisioning.state.store import StateStore, Tx


def _ignore(_: ProgressEvent) -> None:
    return None


@dataclass(frozen=True, kw_only=True)
class Policy:
    """The rules the service enforces."""

    quota: int = 2
    admins: frozenset[str] = frozenset()
    default_ttl: timedelta = timedelta(hours=8)
    max_lifetime: timedelta = timedelta(days=7)


@dataclass(frozen=True, kw_only=True)
class EnvironmentView:
    """An environment as a front end shows it; `endpoint` only for its owner or an admin."""

    env: Environment
    running: bool | None = None
    endpoint: Endpoint | None = None
    job: Mapping[str, object] | None = None
    cost: float = 0.0  # estimated spend so far; local environments cost nothing extra

    def idle_for(self, now: datetime) -> timedelta | None:
        since = self.env.last_active_at or self.env.ready_at
        return now - since if since else None

    def to_dict(self) -> dict[str, object]:
        env = self.env
        return {
            "name": env.name,
            "owner": env.owner,
            "kind": env.kind,
            "state": env.state.value,
            "snapshot": env.snapshot_id,
            "created_at": env.created_at.isoformat(),
            "ready_at": env.ready_at.isoformat() if env.ready_at else None,
            "expires_at": env.expires_at.isoformat(),
            "running": self.running,
            "host": env.host,
            "port": env.port,
            "database": env.database,
            "user": env.user,
            "dsn": self.endpoint.dsn if self.endpoint else None,
            "job": dict(self.job) if self.job else None,
            "cost": self.cost,
        }


class Service:
    def __init__(
        self,
        *,
        store: StateStore,
        drivers: Mapping[str, Driver],
        snapshots: SnapshotStore,
        secrets: Passwords,
        policy: Policy,
        job_options: JobOptions,
    ) -> None:
        self.store = store
        self.drivers = drivers
        self.snapshots = snapshots
        self.secrets = secrets
        self.policy = policy
        self.job_options = job_options

    def may_act(self, actor: str, env: Environment) -> bool:
        return actor == env.owner or actor in self.policy.admins

    async def _refuse(self, actor: str, action: str, env: Environment) -> NotAllowed:
        # Recorded on its own connection: the caller's transaction rolls back as it raises.
        async with self.store.connection() as audit:
            await audit.audit(actor, action, env.name, "refused", {"owner": env.owner})
        return NotAllowed(
            f"{env.name!r} belongs to {env.owner}; only its owner or an admin may {action} it."
        )

    async def refresh(
        self,
        actor: str,
        name: str | None = None,
        *,
        snapshot: str | None = None,
        ttl: timedelta | None = None,
        kind: str = "local",
        progress: Progress | None = None,
    ) -> EnvironmentView:
        """Make `name` a fresh environment from a snapshot; the old one serves until then."""
        emit = progress or _ignore
        name = validate_name(name) if name else default_name(actor)
        ttl = ttl or self.policy.default_ttl
        if ttl > self.policy.max_lifetime:
            raise InvalidInput(f"the time to live can be at most {self.policy.max_lifetime}.")
        driver = self.drivers.get(kind)
        if driver is None:
            raise InvalidInput(
                f"{kind!r} is not an environment kind here: use one of "
                f"{', '.join(sorted(self.drivers))}."
            )
        await driver.preflight()
        manifest = await self.snapshots.resolve(snapshot and validate_snapshot_id(snapshot))
        emit(ProgressEvent(step=Step.RESERVE, message=f"verifying snapshot {manifest.id}"))
        dump_dir = await driver.stage(self.snapshots, manifest)
        env, job_id = await self._reserve(actor, name, kind, manifest, ttl)
        emit(ProgressEvent(step=Step.RESERVE, message="reserved", percent=100.0))
        job = RefreshJob(
            store=self.store,
            driver=driver,
            secrets=self.secrets,
            options=self.job_options,
            env=env,
            job_id=job_id,
            manifest=manifest,
            dump_dir=dump_dir,
            progress=emit,
            drivers=self.drivers,
        )
        endpoint = await job.run()
        async with self.store.connection() as tx:
            fresh = await tx.environment(env.id)
        return EnvironmentView(env=fresh, running=True, endpoint=endpoint)

    async def _reserve(
        self, actor: str, name: str, kind: str, manifest: Manifest, ttl: timedelta
    ) -> tuple[Environment, int]:
        try:
            async with self.store.transaction() as tx:
                await tx.lock("name", name)
                live = await tx.live_by_name(name)
                if any(e.state == EnvState.PROVISIONING for e in live):
                    raise Conflict(
                        f"a refresh of {name!r} is already in progress: wait for it "
                        f"or follow it with `devdb status {name}`."
                    )
                if any(e.state == EnvState.DESTROYING for e in live):
                    raise Conflict(f"{name!r} is being destroyed: try again in a moment.")
                existing = next((e for e in live if e.state == EnvState.READY), None)
                if existing is not None and not self.may_act(actor, existing):
                    raise await self._refuse(actor, "refresh", existing)
                owner = existing.owner if existing else actor
                await tx.lock("owner", owner)
                count = await tx.count_live_for_owner(owner, excluding=[name])
                if count >= self.policy.quota:
                    async with self.store.connection() as audit:
                        await audit.audit(actor, "refresh", name, "refused", {"reason": "quota"})
                    raise QuotaExceeded(
                        f"{owner} already has {count} environment(s), the most allowed: "
                        "destroy one first with `devdb destroy NAME`."
                    )
                env = await tx.insert_environment(
                    name=name,
                    owner=owner,
                    kind=kind,
                    snapshot_id=manifest.id,
                    expires_at=datetime.now(UTC) + ttl,
                    replaces=existing.id if existing else None,
                )
                job_id = await tx.insert_job(
                    kind="refresh",
                    env_id=env.id,
                    requested_by=actor,
                    worker=worker_id(),
                    lease_until=datetime.now(UTC) + JOB_LEASE,
                )
                await tx.step_started(job_id, Step.RESERVE)
                await tx.step_finished(job_id, Step.RESERVE, ok=True)
                await tx.audit(
                    actor,
                    "refresh",
                    name,
                    "started",
                    {"environment": env.id, "snapshot": manifest.id, "kind": kind},
                )
        except asyncpg.UniqueViolationError:
            raise Conflict(f"a refresh of {name!r} is already in progress.") from None
        return env, job_id

    async def _live(self, tx: Tx, name: str) -> Environment:
        live = await tx.live_by_name(validate_name(name))
        ready = [e for e in live if e.state == EnvState.READY]
        if ready:
            return ready[0]
        if live:
            return live[0]
        raise NotFound(f"there is no environment named {name!r}: `devdb list --all` shows them.")

    async def status(self, actor: str, name: str) -> EnvironmentView:
        """One environment with its state, job progress and, for its owner, how to connect."""
        async with self.store.connection() as tx:
            env = await self._live(tx, name)
            job = await tx.latest_job(env.id)
        running = None
        endpoint = None
        if env.state == EnvState.READY:
            driver = self.drivers[env.kind]
            running = await driver.is_running(env.handle)
            if self.may_act(actor, env):
                endpoint = await driver.endpoint(placement_of(env), await self.secrets.get(env))
        job_view = dict(job) if job else None
        return EnvironmentView(env=env, running=running, endpoint=endpoint, job=job_view)

    async def list(self, actor: str, *, everyone: bool = False) -> builtins.list[EnvironmentView]:
        """The actor's live environments, or everyone's."""
        async with self.store.connection() as tx:
            envs = await tx.live_environments(None if everyone else actor)
        views = []
        for env in envs:
            running = None
            if env.state == EnvState.READY and env.kind in self.drivers:
                running = await self.drivers[env.kind].is_running(env.handle)
            views.append(EnvironmentView(env=env, running=running))
        return views

    async def destroy(self, actor: str, name: str) -> Environment:
        """Remove an environment and everything it holds."""
        async with self.store.transaction() as tx:
            await tx.lock("name", validate_name(name))
            env = await self._live(tx, name)
            if not self.may_act(actor, env):
                raise await self._refuse(actor, "destroy", env)
            if env.state != EnvState.READY:
                raise Conflict(
                    f"{name!r} is {env.state.value}: wait until it is ready, then destroy it."
                )
            await tx.set_state(env.id, EnvState.DESTROYING)
        await retire(self.store, self.drivers[env.kind], self.secrets, env)
        async with self.store.connection() as tx:
            await tx.audit(actor, "destroy", env.name, "destroyed", {"environment": env.id})
        return env

    async def extend(self, actor: str, name: str, by: timedelta) -> Environment:
        """Push an environment's expiry out by `by`, up to the maximum lifetime."""
        async with self.store.transaction() as tx:
            await tx.lock("name", validate_name(name))
            env = await self._live(tx, name)
            if not self.may_act(actor, env):
                raise await self._refuse(actor, "extend", env)
            now = datetime.now(UTC)
            expires = max(now, env.expires_at) + by
            limit = env.created_at + self.policy.max_lifetime
            if expires > limit:
                raise InvalidInput(
                    f"{name!r} cannot live past {limit:%Y-%m-%d %H:%M} UTC (the maximum "
                    f"lifetime is {self.policy.max_lifetime}); refresh it for a new one."
                )
            await tx.set_expiry(env.id, expires)
            await tx.audit(
                actor,
                "extend",
                env.name,
                "extended",
                {"by_seconds": by.total_seconds(), "expires_at": expires.isoformat()},
            )
            return await tx.environment(env.id)

    async def list_snapshots(self) -> builtins.list[Manifest]:
        return await self.snapshots.list()
