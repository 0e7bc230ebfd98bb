"""The scheduler's sweeps: what each does, given the service and the time.

Several devdb replicas may run the scheduler. `exclusive` makes each sweep run once per
interval across all of them: a replica takes the sweep's advisory lock (or skips), then
claims the interval in `devdb.sweeps` (or skips, if another replica just ran it).
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import TypeVar

from provisioning.drivers.base import Activity
from provisioning.errors import DevdbError
from provisioning.jobs import worker_id
from provisioning.models import POOL_OWNER, Environment, EnvState
from provisioning.reaper import SweepReport, sweep
from provisioning.recovery import inventory_all
from provisioning.service import Service
from provisioning.snapshots.base import SAVED

T = TypeVar("T")


async def exclusive(
    service: Service,
    name: str,
    interval: timedelta,
    now: datetime,
    work: Callable[[], Awaitable[T]],
) -> T | None:
    """Run `work` unless another replica holds or just ran sweep `name`; None if skipped."""
    async with service.store.exclusive(f"sweep:{name}") as held:
        if not held:
            return None
        async with service.store.connection() as tx:
            # A little slack, so a replica whose timer fires early still takes its turn.
            if not await tx.claim_sweep(name, interval * 0.9, now, worker_id()):
                return None
        return await work()


async def reap_sweep(service: Service, now: datetime, *, dry_run: bool = False) -> SweepReport:
    """Probe every ready environment, warn owners of what comes due, reap what is due."""
    async with service.store.connection() as tx:
        envs = await tx.live_environments()

    async def probe(env: Environment) -> Activity:
        return await service.drivers[env.kind].activity(env.handle)

    async def record(rows: list[tuple[int, dict[str, float], datetime | None]]) -> None:
        async with service.store.connection() as tx:
            await tx.record_readings(rows)

    async def warn(env: Environment, reason: str) -> None:
        async with service.store.connection() as tx:
            await tx.set_warning(env.id, now, reason)
            await tx.audit("devdb", "reap", env.name, "warned", {"reason": reason})
        with contextlib.suppress(Exception):  # a failed message must not stop the sweep
            await service.warn(env, reason)

    async def reap(env: Environment, reason: str) -> bool:
        try:
            return await service.reap(env, reason, save=service.policy.save_before_reap)
        except DevdbError:
            return False

    return await sweep(
        [e for e in envs if e.kind in service.drivers],
        probe=probe,
        record=record,
        warn=warn,
        reap=reap,
        policy=service.policy.reap,
        now=now,
        dry_run=dry_run,
    )


async def reconcile_sweep(service: Service, now: datetime) -> dict[str, list[str]]:
    """Match what exists against what is recorded, and mend the difference.

    - Resources no live environment accounts for (orphan clusters, leaked instances) are
      removed once they have been orphans for the driver's grace period.
    - Ready environments whose server vanished are started again, or marked `lost` and
      their owners told.
    - Spot instances taken back are handled as interruptions.
    """
    done: dict[str, list[str]] = {"orphans_removed": [], "lost": [], "resumed": []}
    inventories = await inventory_all(service.drivers)
    async with service.store.connection() as tx:
        live = await tx.live_environments()
    for kind, driver in service.drivers.items():
        if kind not in inventories:
            continue
        known = {driver.key(env.handle) for env in live if env.kind == kind}
        orphans = [h for h in inventories[kind] if driver.key(h) not in known]
        async with service.store.connection() as tx:
            await tx.forget_orphans(kind, [driver.key(h) for h in orphans])
            for handle in orphans:
                first_seen = await tx.orphan_first_seen(kind, driver.key(handle), now)
                if now - first_seen >= driver.orphan_grace:
                    await driver.terminate(handle)
                    done["orphans_removed"].append(f"{kind}:{driver.key(handle)}")
                    await tx.audit(
                        "devdb",
                        "reconcile",
                        None,
                        "orphan removed",
                        {"kind": kind, "key": driver.key(handle)},
                    )
    try:
        done["saved_expired"] = await expire_saved(service, now)
        existing = {m.id for m in await service.snapshots.list()}
    except DevdbError:
        existing = None  # the store is unreachable: keep every golden copy
    if existing is not None:
        pruned: set[str] = set()
        for driver in service.drivers.values():
            pruned.update(await driver.prune(existing))
        done["golden_removed"] = sorted(pruned)
    done["interrupted"] = await service.check_interruptions()
    refreshing = {env.name for env in live if env.state == EnvState.PROVISIONING}
    for env in live:
        if env.state != EnvState.READY or env.kind not in service.drivers:
            continue
        if env.name in refreshing:
            continue  # a refresh replaces it (DynamoDB tables are replaced in place)
        driver = service.drivers[env.kind]
        try:
            if env.name in done["interrupted"] or await driver.is_running(env.handle):
                continue
            if await driver.resume(env.handle):
                done["resumed"].append(env.name)
                continue
        except DevdbError:
            continue  # cannot tell now (its cloud out of reach): looked at again next time
        await service.mark_lost(env, "its server is gone and could not be started again")
        done["lost"].append(env.name)
    return done


async def expire_saved(service: Service, now: datetime) -> list[str]:
    """Delete saved snapshots older than the retention that no live environment came from
    (looked at again right before each one goes, for a refresh that just began); their
    golden copies go with the prune that follows."""
    old = [
        m
        for m in await service.snapshots.list()
        if m.extra.get("kind") == SAVED and now - m.created >= service.policy.saved_retention
    ]
    expired = []
    for manifest in old:
        async with service.store.connection() as tx:
            if any(env.snapshot_id == manifest.id for env in await tx.live_environments()):
                continue
        await service.snapshots.delete(manifest.id)
        expired.append(manifest)
        async with service.store.connection() as tx:
            await tx.audit(
                "devdb",
                "expire",
                manifest.id,
                "saved snapshot removed",
                {"owner": manifest.extra.get("owner"), "created": manifest.created.isoformat()},
            )
    return [m.id for m in expired]


async def pool_sweep(service: Service, now: datetime) -> dict[str, list[str]]:
    """Keep `pool_size` warm environments of the latest snapshot; retire stale ones."""
    done: dict[str, list[str]] = {"made": [], "retired": [], "failed": []}
    size = service.policy.pool_size
    async with service.store.connection() as tx:
        pool = [e for e in await tx.live_environments(POOL_OWNER)]
    try:
        latest = (await service.snapshots.latest()).id if size else None
    except DevdbError:
        latest = None
    for env in pool:
        if env.state == EnvState.READY and env.snapshot_id != latest:
            await service.destroy(POOL_OWNER, env.name)
            done["retired"].append(env.name)
    if latest is None:
        return done
    current = [
        e
        for e in pool
        if e.snapshot_id == latest and e.state in (EnvState.READY, EnvState.PROVISIONING)
    ]
    if len(current) < size:
        # The golden copy first, so every pooled environment is a clone of it.
        with contextlib.suppress(DevdbError):
            manifest = await service.snapshots.get(latest)
            await service.drivers[service.policy.pool_kind].prepare(service.snapshots, manifest)
    for _ in range(size - len(current)):
        name = f"pool-{secrets.token_hex(4)}"
        try:
            await service.refresh(
                POOL_OWNER,
                name,
                snapshot=latest,
                ttl=service.policy.max_lifetime,
                kind=service.policy.pool_kind,
            )
            done["made"].append(name)
        except DevdbError as exc:
            done["failed"].append(f"{name}: {exc}")
            break
    return done
