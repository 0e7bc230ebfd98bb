"""What devdb counts for an operator, in Prometheus's exposition format (prometheus-client).

Counted where it happens, in this process: how long refreshes take, by kind and by how the
environment was made (clone, restore, warm); failures by action and reason; reaps; how long
each scheduler sweep takes. Read from the state store (which replicas share) when scraped:
environments by kind and state, and this month's estimated spend by kind. `devdb serve`
serves them at /metrics.
"""

from __future__ import annotations

from collections import Counter as Tally
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

if TYPE_CHECKING:
    from provisioning.service import Service

REGISTRY = CollectorRegistry()
REFRESH_SECONDS = Histogram(
    "devdb_refresh_seconds",
    "Time from a refresh's start until its environment is ready.",
    ["kind", "made"],
    buckets=(0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600),
    registry=REGISTRY,
)
FAILURES = Counter(
    "devdb_failures",
    "Actions that failed or were refused, by action and reason.",
    ["action", "reason"],
    registry=REGISTRY,
)
REAPS = Counter("devdb_reaps", "Environments the reaper removed.", ["kind"], registry=REGISTRY)
SWEEP_SECONDS = Histogram(
    "devdb_sweep_seconds",
    "How long each scheduler sweep took on this replica.",
    ["sweep"],
    buckets=(0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600),
    registry=REGISTRY,
)
ENVIRONMENTS = Gauge(
    "devdb_environments",
    "Live environments, by kind and state (from the state store).",
    ["kind", "state"],
    registry=REGISTRY,
)
SPEND = Gauge(
    "devdb_spend_month_to_date_dollars",
    "Estimated spend on environments since the start of this month, by kind.",
    ["kind"],
    registry=REGISTRY,
)


def reason(exc: BaseException) -> str:
    """A failure's reason label: its kind, in snake case (`quota_exceeded`)."""
    name = type(exc).__name__
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in name).lstrip("_")


async def render(service: Service) -> bytes:
    """The exposition text, with the state store's figures read now."""
    async with service.store.connection() as tx:
        envs = await tx.live_environments(None)
    ENVIRONMENTS.clear()
    for (kind, state), count in Tally((e.kind, e.state.value) for e in envs).items():
        ENVIRONMENTS.labels(kind=kind, state=state).set(count)
    now = datetime.now(UTC)
    month = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    for kind, driver in service.drivers.items():
        async with service.store.connection() as tx:
            seen = await tx.environments_since(kind, None, month)
        SPEND.labels(kind=kind).set(sum(driver.cost(env, month, now) for env in seen))
    return generate_latest(REGISTRY)
