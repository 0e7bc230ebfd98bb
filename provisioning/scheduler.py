"""The scheduler: APScheduler 3 (`AsyncIOScheduler`) running devdb's sweeps on this loop.

Runs inside `devdb serve` and alone as `devdb scheduler`. Several replicas may run it on one
state store: each sweep goes through `sweeps.exclusive`, so exactly one replica runs it per
interval. A sweep that fails is logged and tried again at its next turn.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from provisioning import metrics, sweeps
from provisioning.errors import InvalidInput
from provisioning.nightly import Announce, rebuild
from provisioning.runtime import Runtime
from provisioning.shrink.detect import PiiDetector

log = logging.getLogger("devdb.scheduler")


def nightly_trigger(cron: str) -> CronTrigger:
    try:
        return CronTrigger.from_crontab(cron, timezone=UTC)
    except ValueError as exc:
        raise InvalidInput(f"DEVDB_NIGHTLY_CRON {cron!r} is not a crontab line: {exc}.") from exc


class Scheduler:
    def __init__(
        self, runtime: Runtime, *, announce: Announce, clock: Callable[[], datetime] | None = None
    ) -> None:
        self.runtime = runtime
        self.service = runtime.service
        self.announce = announce
        self.clock = clock or (lambda: datetime.now(UTC))
        self.aps = AsyncIOScheduler(timezone=UTC)

    def start(self) -> None:
        settings = self.runtime.settings
        now = datetime.now(UTC)
        jobs: list[tuple[str, Any, datetime | None]] = [
            ("reconcile", IntervalTrigger(seconds=_secs(settings.reconcile_every)), now),
            ("reap", IntervalTrigger(seconds=_secs(settings.reap_every)), None),
        ]
        if settings.pool_size:
            jobs.append(("pool", IntervalTrigger(seconds=_secs(settings.pool_every)), now))
        if any(driver.reclaimable for driver in self.service.drivers.values()):
            # Cloud servers can be taken back with two minutes' warning: look every minute.
            every = _secs(settings.interruption_every)
            jobs.append(("interruptions", IntervalTrigger(seconds=every), now))
        if settings.source_url and settings.policy_file:
            jobs.append(("nightly", nightly_trigger(settings.nightly_cron), None))
        for name, trigger, first in jobs:
            self.aps.add_job(
                self.run,
                trigger,
                args=[name],
                id=name,
                max_instances=1,
                coalesce=True,
                misfire_grace_time=60,
                **({"next_run_time": first} if first else {}),
            )
        self.aps.start()

    def stop(self) -> None:
        if self.aps.running:
            self.aps.shutdown(wait=False)

    def intervals(self) -> dict[str, timedelta]:
        settings = self.runtime.settings
        return {
            "reap": settings.reap_every,
            "reconcile": settings.reconcile_every,
            "pool": settings.pool_every,
            "interruptions": settings.interruption_every,
            "nightly": timedelta(hours=20),
        }

    async def run(self, name: str) -> Any:
        """Run sweep `name` if it is this replica's turn; return what it found, or None."""
        now = self.clock()
        work: dict[str, Callable[[], Awaitable[Any]]] = {
            "reap": lambda: sweeps.reap_sweep(self.service, now),
            "reconcile": lambda: sweeps.reconcile_sweep(self.service, now),
            "pool": lambda: sweeps.pool_sweep(self.service, now),
            "interruptions": self.service.check_interruptions,
            "nightly": self._nightly,
        }
        started = time.monotonic()
        try:
            result = await sweeps.exclusive(
                self.service, name, self.intervals()[name], now, work[name]
            )
        except Exception:
            metrics.FAILURES.labels(action=f"{name} sweep", reason="error").inc()
            log.exception("the %s sweep failed; it runs again at its next turn", name)
            return None
        if result is not None:  # None: another replica's turn
            metrics.SWEEP_SECONDS.labels(sweep=name).observe(time.monotonic() - started)
            log.info("%s: %s", name, result)
        return result

    async def _nightly(self) -> Any:
        settings = self.runtime.settings
        assert settings.source_url and settings.policy_file
        return await rebuild(
            self.service,
            source=settings.source_url,
            policy_file=settings.policy_file,
            programs=self.runtime.programs,
            salt=self.service.secrets.local.mask_salt(settings.mask_salt),
            jobs=settings.restore_jobs,
            keep_last=settings.snapshot_retention,
            announce=self.announce,
            detector=PiiDetector(settings.pii_regions),
        )


def _secs(interval: timedelta) -> float:
    return max(1.0, interval.total_seconds())
