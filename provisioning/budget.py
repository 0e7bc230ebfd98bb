"""Cloud spend: each team's estimate this month, and the monthly cap that refuses new cloud
environments once it is reached. Mixed into `Service`."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from datetime import UTC, datetime

from provisioning.drivers.base import Driver
from provisioning.errors import Next, QuotaExceeded
from provisioning.policy import Policy
from provisioning.state.store import StateStore


def month_start(now: datetime) -> datetime:
    return now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


class Budget:
    store: StateStore
    drivers: Mapping[str, Driver]
    policy: Policy

    async def spent_this_month(self, owner: str, kind: str) -> tuple[str, float]:
        """The owner's team and its estimated spend on `kind` environments this month."""
        team, members = self.policy.team_of(owner)
        now = datetime.now(UTC)
        month = month_start(now)
        async with self.store.connection() as tx:
            envs = await tx.environments_since(kind, sorted(members), month)
        driver = self.drivers[kind]
        return team, sum(driver.cost(env, month, now) for env in envs)

    async def _check_budget(self, actor: str, owner: str, name: str, driver: Driver) -> None:
        cap = self.policy.monthly_cap
        if cap is None or driver.kind == "local":
            return
        team, spent = await self.spent_this_month(owner, driver.kind)
        if spent >= cap:
            async with self.store.connection() as audit:
                await audit.audit(
                    actor, "refresh", name, "refused", {"reason": "budget", "spent": spent}
                )
            raise QuotaExceeded(
                f"team {team} has spent ${spent:.2f} of its ${cap:.2f} monthly cap on {driver.kind}"
                " environments: use a local one (",
                Next("refresh"),
                ") or ask an admin to raise DEVDB_MONTHLY_CAP.",
            )

    async def spend_by_team(self) -> dict[str, float]:
        """Every team's estimated spend this month, on every kind of environment."""
        now = datetime.now(UTC)
        month = month_start(now)
        totals: dict[str, float] = defaultdict(float)
        for kind, driver in self.drivers.items():
            async with self.store.connection() as tx:
                envs = await tx.environments_since(kind, None, month)
            for env in envs:
                totals[self.policy.team_of(env.owner)[0]] += driver.cost(env, month, now)
        return dict(totals)
