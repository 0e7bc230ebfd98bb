"""The rules the service enforces: quotas, admins, lifetimes, budgets, reaping, the pool."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta

from provisioning.reaper import ReapPolicy


@dataclass(frozen=True, kw_only=True)
class Policy:
    """The rules the service enforces."""

    quota: int = 2
    admins: frozenset[str] = frozenset()
    default_ttl: timedelta = timedelta(hours=8)
    max_lifetime: timedelta = timedelta(days=7)
    monthly_cap: float | None = None  # US dollars per team per month on cloud environments
    teams: Mapping[str, frozenset[str]] = field(default_factory=dict)
    auto_replace: bool = False  # re-provision an environment whose server was taken away
    idle_ttl: timedelta = timedelta(hours=4)  # reaped after this long unused
    reap_warning: timedelta = timedelta(minutes=30)  # the owner is warned this long before
    max_lease: timedelta = timedelta(days=3)  # the longest protection lease
    save_before_reap: bool = False  # dump a reaped environment as a saved snapshot first
    saved_retention: timedelta = timedelta(days=14)  # saved snapshots no environment uses
    pool_size: int = 0  # warm environments kept ready from the latest snapshot
    pool_kind: str = "local"

    @property
    def reap(self) -> ReapPolicy:
        return ReapPolicy(
            idle_ttl=self.idle_ttl,
            warning=self.reap_warning,
            max_lifetime=self.max_lifetime,
            max_lease=self.max_lease,
        )

    def team_of(self, user: str) -> tuple[str, frozenset[str]]:
        """The user's team and its members; someone in no team is a team of one."""
        for team, members in sorted(self.teams.items()):
            if user in members:
                return team, members
        return user, frozenset({user})
