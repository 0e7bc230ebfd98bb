"""Cleaning up after processes that died mid-work, run whenever devdb starts.

- A refresh job whose lease lapsed, or whose worker on this host is gone, is abandoned:
  whatever its record says it made is terminated and the environment marked failed
  (the environment it would have replaced keeps serving).
- An environment left `destroying` is destroyed.
- Driver resources no live environment accounts for (orphan clusters) are removed.
- Ready environments whose server stopped (a reboot) are started again.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

from provisioning.drivers.base import Driver, Handle
from provisioning.errors import DevdbError
from provisioning.jobs import LEASE, abandon, worker_id, worker_is_gone
from provisioning.models import EnvState
from provisioning.secrets import Passwords
from provisioning.state.store import StateStore


@dataclass
class RecoveryReport:
    abandoned_jobs: list[int] = field(default_factory=list)
    finished_destroys: list[str] = field(default_factory=list)
    orphans_removed: list[str] = field(default_factory=list)
    resumed: list[str] = field(default_factory=list)


async def recover(
    store: StateStore, drivers: Mapping[str, Driver], secrets: Passwords
) -> RecoveryReport:
    report = RecoveryReport()
    me = worker_id()
    claimed = []
    async with store.transaction() as tx:
        for job in await tx.running_jobs():
            if job["expired"] or worker_is_gone(job["worker"]):
                await tx.claim_job(job["id"], me, datetime.now(UTC) + LEASE)
                claimed.append((job["id"], await tx.environment(job["environment_id"])))
    for job_id, env in claimed:
        driver = drivers.get(env.kind)
        if driver is None:
            continue
        await abandon(
            store,
            driver,
            secrets,
            env,
            job_id,
            "interrupted: the process running this refresh stopped",
            actor="devdb",
        )
        report.abandoned_jobs.append(job_id)

    async with store.transaction() as tx:
        for env in await tx.orphaned_destroys():
            if env.kind in drivers:
                await drivers[env.kind].terminate(env.handle)
                await secrets.delete(env)
                await tx.set_state(env.id, EnvState.DESTROYED)
                await tx.audit(
                    "devdb",
                    "destroy",
                    env.name,
                    "destroyed",
                    {"environment": env.id, "reason": "finished after interruption"},
                )
                report.finished_destroys.append(env.name)

    # List what exists *before* reading the records: a placement is recorded before anything
    # is created, so whatever existed then and has no record is an orphan, never a launch
    # under way in another process.
    inventories = await inventory_all(drivers)
    async with store.connection() as tx:
        live = await tx.live_environments()
    for kind, driver in drivers.items():
        if driver.orphan_grace or kind not in inventories:
            continue  # left to the scheduler's reconciliation, after the grace period
        known = {driver.key(env.handle) for env in live if env.kind == kind}
        for handle in inventories[kind]:
            if driver.key(handle) not in known:
                await driver.terminate(handle)
                report.orphans_removed.append(driver.key(handle))
    for env in live:
        driver = drivers.get(env.kind)
        if env.state != EnvState.READY or driver is None:
            continue
        with contextlib.suppress(DevdbError):  # its cloud out of reach: left for later
            if not await driver.is_running(env.handle) and await driver.resume(env.handle):
                report.resumed.append(env.name)
    if any((report.abandoned_jobs, report.finished_destroys, report.orphans_removed)):
        async with store.connection() as tx:
            await tx.audit(
                "devdb",
                "recover",
                None,
                "done",
                {
                    "abandoned_jobs": report.abandoned_jobs,
                    "finished_destroys": report.finished_destroys,
                    "orphans_removed": report.orphans_removed,
                },
            )
    return report


async def inventory_all(drivers: Mapping[str, Driver]) -> dict[str, list[Handle]]:
    """Each driver's inventory; a driver that cannot list its resources now (its cloud out
    of reach) is left out, so that it holds up no command of the other kinds."""
    found: dict[str, list[Handle]] = {}
    for kind, driver in drivers.items():
        with contextlib.suppress(DevdbError):
            found[kind] = await driver.inventory()
    return found
