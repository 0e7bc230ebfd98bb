"""A randomized simulation of the reaper against the real state store, with an injected clock.

Each example makes a handful of environments (real rows in the state store) with random use
over a few hours, a random expiry and sometimes a protection lease; a simulated driver
reports their use as the server's counters would. The real sweep runs every five simulated
minutes. Checked: nobody's environment is reaped while in use or for a reason that does not
hold, never without a warning at least the warning period earlier, and every environment
that came due is reaped soon after its warning and grace.
"""

from __future__ import annotations

import itertools
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from provisioning.drivers.base import Activity, Driver, Handle, Placement, Progress
from provisioning.errors import Part
from provisioning.models import Endpoint, Environment
from provisioning.policy import Policy
from provisioning.runtime import Runtime
from provisioning.secrets import LocalSecrets, Passwords
from provisioning.service import Service
from provisioning.snapshots.manifest import Manifest
from provisioning.sweeps import reap_sweep

TICK = timedelta(minutes=5)
HORIZON = timedelta(hours=6)
POLICY = Policy(
    idle_ttl=timedelta(hours=1),
    reap_warning=timedelta(minutes=15),
    max_lifetime=timedelta(hours=5),
    max_lease=timedelta(hours=3),
)
START = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
_ids = itertools.count(1)


@dataclass
class Plan:
    uses: list[timedelta]  # when someone used it (a session that came and went)
    expires: timedelta
    lease: timedelta | None


@dataclass
class World:
    now: datetime = START
    plans: dict[str, Plan] = field(default_factory=dict)
    warned: dict[str, list[datetime]] = field(default_factory=dict)
    reaped: dict[str, tuple[datetime, str]] = field(default_factory=dict)


class SimulatedDriver(Driver):
    """Reports each environment's use up to the simulated now as session counters."""

    kind = "sim"

    def __init__(self, world: World) -> None:
        self.world = world

    async def activity(self, handle: Handle) -> Activity:
        plan = self.world.plans[handle["sim"]]
        used = [u for u in plan.uses if START + u <= self.world.now]
        return Activity(connections=0, sessions=len(used), work=float(len(used)))

    async def terminate(self, handle: Handle) -> None:
        return None

    async def is_running(self, handle: Handle) -> bool:
        return True

    async def preflight(self) -> None:
        return None

    async def place(self, env: Environment, avoid_ports: set[int]) -> Placement:
        raise NotImplementedError

    async def launch(self, placement: Placement, password: str, progress: Progress) -> Placement:
        raise NotImplementedError

    async def restore(self, *args: object) -> None:  # type: ignore[override]
        raise NotImplementedError

    async def endpoint(self, placement: Placement, password: str) -> Endpoint:
        raise NotImplementedError

    async def resume(self, handle: Handle) -> bool:
        return True

    async def inventory(self) -> list[Handle]:
        return []


plans = st.builds(
    Plan,
    uses=st.lists(st.integers(0, int(HORIZON / TICK) * 5), max_size=6).map(
        lambda minutes: sorted(timedelta(minutes=m) for m in minutes)
    ),
    expires=st.integers(1, 600).map(lambda m: timedelta(minutes=m)),
    lease=st.one_of(st.none(), st.integers(10, 170).map(lambda m: timedelta(minutes=m))),
)


async def insert(runtime: Runtime, name: str, plan: Plan) -> None:
    async with runtime.store.connection() as tx:
        await tx.conn.execute(
            "insert into devdb.environments (name, owner, kind, state, handle, host, port,"
            " database, username, created_at, ready_at, expires_at, protected_until)"
            " values ($1, $2, 'sim', 'ready', $3, 'sim', 1, $1, 'dev', $4, $4, $5, $6)",
            name,
            f"owner-{name}",
            {"sim": name},
            START,
            START + plan.expires,
            START + plan.lease if plan.lease else None,
        )


def last_seen(plan: Plan, until: datetime) -> datetime:
    """When the sweeps saw the last use before `until`: the first tick at or after it."""
    seen = START
    for use in plan.uses:
        if START + use <= until:
            ticks = -(-use // TICK)  # ceiling
            seen = START + ticks * TICK
    return seen


def expected_due(plan: Plan) -> datetime:
    """When it comes due for good: after its last use, its expiry and its lease. Any use
    withdraws a warning, so an environment past its expiry or lifetime that is still used
    comes due for good only once the use is seen."""
    reap = POLICY.reap
    seen = last_seen(plan, START + HORIZON)
    idle = seen + reap.idle_ttl
    lease = START + plan.lease if plan.lease else None
    expiry = max(START + plan.expires, lease) if lease else START + plan.expires
    candidates = [
        max(START + reap.max_lifetime, seen),
        max(idle, lease) if lease else idle,
        max(expiry, seen),
    ]
    return min(candidates)


@settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(envs=st.lists(plans, min_size=1, max_size=6))
async def test_the_reaper_never_reaps_what_is_used_and_always_reaps_what_is_due(
    runtime: Runtime, demo_snapshot: Manifest, envs: list[Plan]
) -> None:
    world = World()
    driver = SimulatedDriver(world)
    service = Service(
        store=runtime.store,
        drivers={"sim": driver},
        snapshots=runtime.snapshots,
        secrets=Passwords(LocalSecrets(runtime.settings.secrets_dir), {}),
        policy=POLICY,
        job_options=runtime.service.job_options,
    )
    tag = uuid.uuid4().hex[:6]
    for plan in envs:
        name = f"sim-{tag}-{next(_ids)}"
        world.plans[name] = plan
        await insert(runtime, name, plan)

    async def warn(env: Environment, reason: str) -> None:
        world.warned.setdefault(env.name, []).append(world.now)

    async def notify(owner: str, *parts: Part) -> None:
        return None

    service.warn = warn
    service.notify = notify
    original_reap = service.reap

    async def reap(env: Environment, reason: str, *, save: bool = False) -> bool:
        done = await original_reap(env, reason, save=save)
        if done:
            world.reaped[env.name] = (world.now, reason)
        return done

    service.reap = reap  # type: ignore[method-assign]
    try:
        while world.now <= START + HORIZON:
            await reap_sweep(service, world.now)
            world.now += TICK
        async with runtime.store.connection() as tx:
            states = {
                row["name"]: row["state"]
                for row in await tx.conn.fetch(
                    "select name, state from devdb.environments where name = any($1::text[])",
                    list(world.plans),
                )
            }
        for name in world.plans:
            assert states[name] == ("destroyed" if name in world.reaped else "ready")
    finally:
        async with runtime.store.connection() as tx:
            await tx.conn.execute(
                "update devdb.environments set state = 'destroyed' where kind = 'sim'"
                " and state = 'ready'"
            )

    reap_policy = POLICY.reap
    for name, plan in world.plans.items():
        if name in world.reaped:
            at, reason = world.reaped[name]
            uses = [START + u for u in plan.uses]
            lease = START + plan.lease if plan.lease else None
            if "nobody has used it" in reason:
                assert not any(at - reap_policy.idle_ttl < u <= at for u in uses), (
                    "reaped as idle although it was used within the idle time"
                )
                assert lease is None or lease <= at
            elif "expired" in reason:
                assert at >= START + plan.expires and (lease is None or lease <= at)
            else:
                assert "maximum lifetime" in reason and at >= START + reap_policy.max_lifetime
            warnings = [w for w in world.warned.get(name, []) if w <= at]
            assert warnings, "reaped without a warning"
            last_warning = warnings[-1]
            assert at - last_warning >= reap_policy.warning, "reaped before the grace ran out"
            assert not any(last_warning < u <= at for u in uses), "reaped although used since"
        due = expected_due(plan)
        if due + reap_policy.warning + 2 * TICK <= START + HORIZON:
            assert name in world.reaped, f"{name} came due at {due} and was never reaped"
            assert world.reaped[name][0] <= due + reap_policy.warning + 2 * TICK
