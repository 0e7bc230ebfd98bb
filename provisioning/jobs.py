"""The durable refresh job: reserve → launch → restore → migrate → ready.

Each step is recorded in the state store before and after it runs, and the job holds a lease
it renews while it works. If the process dies, the lease lapses (or, on the same host, the
worker's pid is gone) and the next devdb start cleans the job up from its record
(`provisioning.recovery`). If the job fails or is cancelled while alive, it cleans up itself.
Either way the environment it replaces keeps serving until the new one is ready.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg

from provisioning.drivers.base import Driver, Placement, Progress, placement_of
from provisioning.errors import DevdbError, PortInUse, ProvisioningFailed
from provisioning.migrate import apply_migrations
from provisioning.models import (
    REPLACEABLE,
    Connection,
    Endpoint,
    Environment,
    EnvState,
    JobState,
    ProgressEvent,
    Step,
)
from provisioning.secrets import Passwords, new_password
from provisioning.snapshots.manifest import Manifest
from provisioning.state.store import StateStore, Tx

LEASE = timedelta(seconds=30)
HEARTBEAT_SECONDS = 5.0
PORT_ATTEMPTS = 3


def _start_time(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def worker_id() -> str:
    """This process, as `host:pid:start-time` (the start time guards against pid reuse)."""
    pid = os.getpid()
    return f"{socket.gethostname()}:{pid}:{_start_time(pid) or 0}"


def worker_is_gone(worker: str) -> bool:
    """True if `worker` ran on this host and that process no longer exists."""
    host, _, rest = worker.partition(":")
    pid_text, _, started = rest.partition(":")
    if host != socket.gethostname() or not pid_text.isdigit():
        return False
    return _start_time(int(pid_text)) != started


@dataclass(frozen=True, kw_only=True)
class JobOptions:
    restore_jobs: int
    migrations_dir: Path | None
    migrations_command: str | None
    migrations_env: tuple[str, ...] = ()


class RefreshJob:
    """Runs one reserved refresh to `ready`, or cleans up everything it made."""

    def __init__(
        self,
        *,
        store: StateStore,
        driver: Driver,
        secrets: Passwords,
        options: JobOptions,
        env: Environment,
        job_id: int,
        manifest: Manifest,
        dump_dir: Path | None,
        progress: Progress,
        drivers: Mapping[str, Driver] | None = None,
        warm: bool = False,
    ) -> None:
        self.store = store
        self.driver = driver
        self.secrets = secrets
        self.options = options
        self.env = env
        self.job_id = job_id
        self.manifest = manifest
        self.dump_dir = dump_dir
        self.progress = progress
        # The environment this refresh replaces may be of another kind.
        self.drivers = drivers or {driver.kind: driver}
        self.placement: Placement | None = placement_of(env) if warm else None
        self.warm = warm  # `env` is a claimed pool environment: hand it over, no restore
        self.last_event: ProgressEvent | None = None

    def _emit(self, event: ProgressEvent) -> None:
        self.last_event = event
        self.progress(event)

    async def run(self) -> Connection:
        heartbeat = asyncio.create_task(self._heartbeat())
        try:
            password = new_password()
            if self.warm:
                async with self._step(Step.LAUNCH):
                    endpoint = await self._hand_over(password)
                async with self._step(Step.READY):
                    await self._go_live()
                return endpoint
            async with self._step(Step.LAUNCH):
                await self._launch(password)
            assert self.placement is not None
            async with self._step(Step.RESTORE):
                await self.driver.restore(
                    self.placement,
                    self.dump_dir,
                    self.manifest,
                    self.options.restore_jobs,
                    self._emit,
                )
            endpoint = await self.driver.endpoint(self.placement, password)
            # Migrations are SQL, or a command given a PostgreSQL URL: not for DynamoDB tables.
            migrations = self.options.migrations_dir or self.options.migrations_command
            if migrations and isinstance(endpoint, Endpoint):
                async with self._step(Step.MIGRATE):
                    applied = await apply_migrations(
                        endpoint,
                        directory=self.options.migrations_dir,
                        command=self.options.migrations_command,
                        progress=self._emit,
                        passed=self.options.migrations_env,
                    )
                    self._emit(
                        ProgressEvent(
                            step=Step.MIGRATE,
                            percent=100.0,
                            message=f"applied {len(applied)} migration(s)",
                        )
                    )
            async with self._step(Step.READY):
                await self._go_live()
        except BaseException as exc:
            await asyncio.shield(self._clean_up(exc))
            raise
        finally:
            heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await heartbeat
        return endpoint

    @asynccontextmanager
    async def _step(self, step: Step) -> AsyncIterator[None]:
        async with self.store.connection() as tx:
            await tx.step_started(self.job_id, step)
        self._emit(ProgressEvent(step=step, message=f"{step.value} started", percent=0.0))
        ok = False
        try:
            yield
            ok = True
        finally:
            detail = asdict(self.last_event) if self.last_event else None
            async with self.store.connection() as tx:
                await tx.step_finished(self.job_id, step, ok=ok, detail=detail)

    async def _launch(self, password: str) -> None:
        for attempt in range(1, PORT_ATTEMPTS + 1):
            async with self.store.connection() as tx:
                used = await tx.used_local_ports()
            placement = await self.driver.place(self.env, used)
            # Recorded before anything exists, so an interrupted launch can be found again.
            async with self.store.connection() as tx:
                try:
                    await _record(tx, self.env.id, placement)
                except asyncpg.UniqueViolationError:
                    if attempt < PORT_ATTEMPTS:  # a concurrent job took the port first
                        continue
                    raise ProvisioningFailed("no free port could be reserved.") from None
            self.placement = placement
            await self.secrets.put(self.env, password)
            try:
                launched = await self.driver.launch(placement, password, self._emit)
            except PortInUse:
                await self.driver.terminate(placement.handle)
                if attempt == PORT_ATTEMPTS:
                    raise
                continue
            if launched != placement:  # what the launch learned (an address, a price)
                async with self.store.connection() as tx:
                    await _record(tx, self.env.id, launched)
                self.placement = launched
            return
        raise ProvisioningFailed("no port could be bound after several attempts.")

    async def _hand_over(self, password: str) -> Connection:
        """A warm environment: its database renamed for its new owner, a new password."""
        assert self.placement is not None
        self._emit(
            ProgressEvent(step=Step.LAUNCH, message="handing over a warm environment", percent=10)
        )
        await self.secrets.put(self.env, password)
        placement = await self.driver.handover(self.placement, self.env.name, password)
        async with self.store.connection() as tx:
            await _record(tx, self.env.id, placement)
        self.placement = placement
        self._emit(ProgressEvent(step=Step.LAUNCH, message="handed over", percent=100.0))
        return await self.driver.endpoint(placement, password)

    async def _go_live(self) -> None:
        old = None
        async with self.store.transaction() as tx:
            if self.env.replaces is not None:
                old = await tx.environment(self.env.replaces)
                if old.state in REPLACEABLE:
                    await tx.set_state(old.id, EnvState.DESTROYING)
                else:
                    old = None
            await tx.set_state(self.env.id, EnvState.READY)
            await tx.audit(
                self.env.owner,
                "refresh",
                self.env.name,
                "ready",
                {
                    "environment": self.env.id,
                    "snapshot": self.manifest.id,
                    "replaced": old.id if old else None,
                },
            )
            await tx.finish_job(self.job_id, JobState.SUCCEEDED)
        if old is not None:
            await retire(self.store, self.drivers.get(old.kind, self.driver), self.secrets, old)

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT_SECONDS)
            progress = asdict(self.last_event) if self.last_event else None
            with contextlib.suppress(Exception):
                async with self.store.connection() as tx:
                    await tx.renew_lease(self.job_id, datetime.now(UTC) + LEASE, progress)

    async def _clean_up(self, exc: BaseException) -> None:
        reason = (
            str(exc)
            if isinstance(exc, DevdbError)
            else (
                "interrupted"
                if isinstance(exc, asyncio.CancelledError | KeyboardInterrupt)
                else f"unexpected error: {exc!r}"
            )
        )
        env = self.env
        if self.placement is not None:
            env = replace(env, handle=self.placement.handle)
        await abandon(
            self.store, self.driver, self.secrets, env, self.job_id, reason, actor=env.owner
        )


async def _record(tx: Tx, env_id: int, placement: Placement) -> None:
    await tx.set_placement(
        env_id,
        handle=placement.handle,
        host=placement.host,
        port=placement.port,
        database=placement.database,
        user=placement.user,
    )


async def abandon(
    store: StateStore,
    driver: Driver,
    secrets: Passwords,
    env: Environment,
    job_id: int,
    reason: str,
    *,
    actor: str,
) -> None:
    """Remove what a failed refresh made (or keep it for debugging, where the driver is set
    to) and record the failure."""
    with contextlib.suppress(Exception):
        await driver.discard(env.handle)
    with contextlib.suppress(Exception):
        await secrets.delete(env)
    async with store.transaction() as tx:
        await tx.set_state(env.id, EnvState.FAILED, error=reason)
        await tx.finish_job(job_id, JobState.FAILED, reason)
        await tx.audit(
            actor, "refresh", env.name, "failed", {"environment": env.id, "reason": reason}
        )


async def retire(store: StateStore, driver: Driver, secrets: Passwords, env: Environment) -> None:
    """Remove an environment already marked `destroying`, then mark it destroyed."""
    await driver.terminate(env.handle)
    await secrets.delete(env)
    async with store.connection() as tx:
        await tx.set_state(env.id, EnvState.DESTROYED)
