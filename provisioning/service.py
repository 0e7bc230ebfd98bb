"""The service every front end calls: refresh, list, status, destroy, extend, snapshots.

Front ends pass the acting user; the service decides what that user may do, records every
action in the audit log, and raises `DevdbError`s whose message is meant for that user.
"""

from __future__ import annotations

import builtins
import time
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

import asyncpg

from provisioning import metrics
from provisioning.branching import Branching
from provisioning.budget import Budget
from provisioning.drivers.base import Driver, Progress, placement_of
from provisioning.durations import format_duration
from provisioning.errors import (
    Conflict,
    DevdbError,
    InvalidInput,
    Next,
    NotAllowed,
    NotFound,
    QuotaExceeded,
)
from provisioning.jobs import LEASE as JOB_LEASE
from provisioning.jobs import JobOptions, RefreshJob, retire, worker_id
from provisioning.models import (
    POOL_OWNER,
    REPLACEABLE,
    Environment,
    EnvironmentView,
    EnvState,
    ProgressEvent,
    Step,
    default_name,
    validate_name,
)
from provisioning.notify import Notifier, Warner, nobody
from provisioning.pg.programs import PgPrograms
from provisioning.policy import Policy
from provisioning.restore_into import RestoreInto
from provisioning.secrets import Passwords
from provisioning.snapshots.base import SAVED, SnapshotStore, check_saved
from provisioning.snapshots.manifest import Manifest, validate_snapshot_id
from provisioning.state.store import StateStore, Tx
from provisioning.upkeep import Upkeep


def _ignore(_: ProgressEvent) -> None:
    return None


async def _running(driver: Driver, env: Environment) -> bool | None:
    """Whether its server is up; None when that cannot be told now."""
    try:
        return await driver.is_running(env.handle)
    except DevdbError:
        return None


class Service(Upkeep, Branching, RestoreInto, Budget):
    def __init__(
        self,
        *,
        store: StateStore,
        drivers: Mapping[str, Driver],
        snapshots: SnapshotStore,
        secrets: Passwords,
        policy: Policy,
        job_options: JobOptions,
        notify: Notifier = nobody,
        programs: PgPrograms | None = None,
    ) -> None:
        self.store = store
        self.drivers = drivers
        self.snapshots = snapshots
        self.secrets = secrets
        self.policy = policy
        self.job_options = job_options
        self.notify = notify
        self.programs = programs or PgPrograms()
        self.warn: Warner = self._warn_by_notice

    def is_admin(self, actor: str) -> bool:
        return actor in self.policy.admins

    def may_act(self, actor: str, env: Environment) -> bool:
        return actor == env.owner or self.is_admin(actor)

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
        """Make `name` a fresh environment from a snapshot; the old one serves until then.
        Counted for the operator (`metrics.py`): its time to ready, or why it failed."""
        started = time.monotonic()
        try:
            view = await self._refresh(
                actor, name, snapshot=snapshot, ttl=ttl, kind=kind, progress=progress
            )
        except DevdbError as exc:
            metrics.FAILURES.labels(action="refresh", reason=metrics.reason(exc)).inc()
            raise
        made = str(view.env.handle.get("made") or "restore")
        metrics.REFRESH_SECONDS.labels(kind=kind, made=made).observe(time.monotonic() - started)
        return view

    async def _refresh(
        self,
        actor: str,
        name: str | None,
        *,
        snapshot: str | None,
        ttl: timedelta | None,
        kind: str,
        progress: Progress | None,
    ) -> EnvironmentView:
        emit = progress or _ignore
        name = validate_name(name) if name else default_name(actor)
        ttl = ttl or self.policy.default_ttl
        if ttl > self.policy.max_lifetime:
            raise InvalidInput(f"the time to live can be at most {self.policy.max_lifetime}.")
        driver = self.drivers.get(kind)
        if driver is None:
            hint = (
                " (EC2 needs DEVDB_EC2_AMI or DEVDB_EC2_LAUNCH_TEMPLATE, and DEVDB_S3_BUCKET)"
                if kind == "ec2"
                else ""
            )
            raise InvalidInput(
                f"{kind} environments are not set up here{hint}: use one of "
                f"{', '.join(sorted(self.drivers))}."
            )
        await driver.preflight()
        owner = await self._owner_for(actor, name)
        await self._check_budget(actor, owner, name, driver)
        manifest = await self.snapshots.resolve(
            snapshot and validate_snapshot_id(snapshot), driver.engine
        )
        check_saved(manifest, actor, admin=self.is_admin(actor))
        dump_dir = None
        reserved = None
        if actor != POOL_OWNER:
            reserved = await self._reserve(actor, name, kind, manifest, ttl, from_pool=True)
        warm = reserved is not None
        if reserved is None:
            emit(ProgressEvent(step=Step.RESERVE, message=f"verifying snapshot {manifest.id}"))
            dump_dir = await driver.stage(self.snapshots, manifest)
            reserved = await self._reserve(actor, name, kind, manifest, ttl)
            assert reserved is not None
        env, job_id = reserved
        emit(
            ProgressEvent(
                step=Step.RESERVE,
                message="a warm environment is yours" if warm else "reserved",
                percent=100.0,
            )
        )
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
            warm=warm,
        )
        endpoint = await job.run()
        async with self.store.connection() as tx:
            fresh = await tx.environment(env.id)
        return EnvironmentView(env=fresh, running=True, endpoint=endpoint)

    async def _owner_for(self, actor: str, name: str) -> str:
        """Who will own `name`: its current owner when it is replaced, else the actor."""
        async with self.store.connection() as tx:
            live = await tx.live_by_name(name)
        return next((e.owner for e in live if e.state in REPLACEABLE), actor)

    async def _reserve(
        self,
        actor: str,
        name: str,
        kind: str,
        manifest: Manifest,
        ttl: timedelta,
        *,
        from_pool: bool = False,
    ) -> tuple[Environment, int] | None:
        """Record the new environment and its job; with `from_pool`, claim a warm one
        instead, or return None if there is none to claim."""
        try:
            async with self.store.transaction() as tx:
                await tx.lock("name", name)
                live = await tx.live_by_name(name)
                if any(e.state == EnvState.PROVISIONING for e in live):
                    raise Conflict(
                        f"a refresh of {name!r} is already in progress: wait for it "
                        "or follow it with ",
                        Next("status", name),
                        ".",
                    )
                if any(e.state == EnvState.DESTROYING for e in live):
                    raise Conflict(f"{name!r} is being destroyed: try again in a moment.")
                existing = next(
                    (e for state in REPLACEABLE for e in live if e.state == state), None
                )
                if existing is not None and not self.may_act(actor, existing):
                    raise await self._refuse(actor, "refresh", existing)
                owner = existing.owner if existing else actor
                await tx.lock("owner", owner)
                count = await tx.count_live_for_owner(owner, excluding=[name])
                if count >= self.policy.quota and owner != POOL_OWNER:
                    async with self.store.connection() as audit:
                        await audit.audit(actor, "refresh", name, "refused", {"reason": "quota"})
                    raise QuotaExceeded(
                        f"{owner} already has {count} environment(s), the most allowed: "
                        "destroy one first with ",
                        Next("destroy", "NAME"),
                        ".",
                    )
                fields = {
                    "name": name,
                    "owner": owner,
                    "kind": kind,
                    "snapshot_id": manifest.id,
                    "expires_at": datetime.now(UTC) + ttl,
                    "replaces": existing.id if existing else None,
                }
                if from_pool:
                    claimed = await tx.claim_warm(**fields)  # type: ignore[arg-type]
                    if claimed is None:
                        return None
                    env = claimed
                else:
                    env = await tx.insert_environment(**fields)  # type: ignore[arg-type]
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
                    {
                        "environment": env.id,
                        "snapshot": manifest.id,
                        "kind": kind,
                        "warm": from_pool,
                    },
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
        raise NotFound(
            f"there is no environment named {name!r}: ", Next("list", "--all"), " shows them."
        )

    async def status(self, actor: str, name: str) -> EnvironmentView:
        """One environment with its state, job progress and, for its owner, how to connect."""
        async with self.store.connection() as tx:
            env = await self._live(tx, name)
            job = await tx.latest_job(env.id)
        running = None
        endpoint = None
        driver = self.drivers.get(env.kind)
        if env.state == EnvState.READY and driver is not None:
            running = await _running(driver, env)
            if self.may_act(actor, env):
                endpoint = await driver.endpoint(placement_of(env), await self.secrets.get(env))
        job_view = dict(job) if job else None
        return EnvironmentView(env=env, running=running, endpoint=endpoint, job=job_view)

    async def list(self, actor: str, *, everyone: bool = False) -> builtins.list[EnvironmentView]:
        """The actor's live environments, or everyone's."""
        async with self.store.connection() as tx:
            envs = await tx.live_environments(None if everyone else actor)
        views = []
        now = datetime.now(UTC)
        for env in envs:
            running = None
            cost = 0.0
            if env.kind in self.drivers:
                driver = self.drivers[env.kind]
                cost = driver.cost(env, env.created_at, now)
                if env.state == EnvState.READY:
                    running = await _running(driver, env)
            views.append(EnvironmentView(env=env, running=running, cost=cost))
        return views

    async def destroy(self, actor: str, name: str) -> Environment:
        """Remove an environment and everything it holds."""
        async with self.store.transaction() as tx:
            await tx.lock("name", validate_name(name))
            env = await self._live(tx, name)
            if not self.may_act(actor, env):
                raise await self._refuse(actor, "destroy", env)
            if env.state not in REPLACEABLE:
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
            await self.drivers[env.kind].expiry_moved(env.handle, expires)
            await tx.audit(
                actor,
                "extend",
                env.name,
                "extended",
                {"by_seconds": by.total_seconds(), "expires_at": expires.isoformat()},
            )
            return await tx.environment(env.id)

    async def list_snapshots(self, actor: str) -> builtins.list[Manifest]:
        """Published snapshots, and of saved ones only the actor's own (an admin sees all)."""
        return [
            m
            for m in await self.snapshots.list()
            if m.extra.get("kind") != SAVED or m.extra.get("owner") == actor or self.is_admin(actor)
        ]

    async def protect(self, actor: str, name: str, duration: timedelta) -> Environment:
        """A protection lease: no idle or expiry reap for `duration` (up to the maximum)."""
        limit = self.policy.max_lease
        if duration > limit:
            raise InvalidInput(f"a protection lease can be at most {format_duration(limit)}.")
        async with self.store.transaction() as tx:
            await tx.lock("name", validate_name(name))
            env = await self._live(tx, name)
            if not self.may_act(actor, env):
                raise await self._refuse(actor, "protect", env)
            until = datetime.now(UTC) + duration
            await tx.set_protection(env.id, until)
            await tx.audit(actor, "protect", env.name, "protected", {"until": until.isoformat()})
            return await tx.environment(env.id)

    async def keep(self, actor: str, name: str, at_least: timedelta) -> Environment:
        """The owner's answer to a reap warning: used now, and not expiring for `at_least`."""
        async with self.store.transaction() as tx:
            await tx.lock("name", validate_name(name))
            env = await self._live(tx, name)
            if not self.may_act(actor, env):
                raise await self._refuse(actor, "keep", env)
            now = datetime.now(UTC)
            limit = env.created_at + self.policy.max_lifetime
            expires = min(max(env.expires_at, now + at_least), limit)
            await tx.set_expiry(env.id, expires)
            await self.drivers[env.kind].expiry_moved(env.handle, expires)
            await tx.touch(env.id, now)
            await tx.audit(actor, "keep", env.name, "kept", {"expires_at": expires.isoformat()})
            return await tx.environment(env.id)
