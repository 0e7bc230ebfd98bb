"""The reaper: environments nobody uses, or that outlived their time, are removed after asking.

Each sweep probes every ready environment (concurrently), compares the reading with the last
one, and marks the environment active now if anyone connected or ran statements since. Then
each environment is judged against the time it becomes due:

- idle for `idle_ttl` since its last use (or since it became ready),
- past its expiry (`--ttl`, `extend`),
- older than `max_lifetime`.

A protection lease holds off the first two until it ends, never the third. The owner is
warned `warning` before it is due; it is reaped once due and warned at least `warning` ago.
Use, Keep, `extend` or a lease withdraws the warning. Every time comes from the caller's
clock, never from a server's, so a server in another time zone changes nothing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum

from provisioning.drivers.base import Activity
from provisioning.durations import format_duration
from provisioning.models import POOL_OWNER, Environment, EnvState

PROBES_AT_ONCE = 32


@dataclass(frozen=True, kw_only=True)
class ReapPolicy:
    idle_ttl: timedelta = timedelta(hours=4)
    warning: timedelta = timedelta(minutes=30)
    max_lifetime: timedelta = timedelta(days=7)
    max_lease: timedelta = timedelta(days=3)


class Action(StrEnum):
    KEEP = "keep"
    WARN = "warn"
    REAP = "reap"


@dataclass(frozen=True, kw_only=True)
class Verdict:
    env: Environment
    action: Action
    due_at: datetime
    reason: str


def due(env: Environment, policy: ReapPolicy, now: datetime) -> tuple[datetime, str]:
    """When `env` becomes due for reaping, and why (the earliest reason)."""
    idle_since = env.last_active_at or env.ready_at or env.created_at
    lease = env.protected_until if env.protected_until and env.protected_until > now else None
    candidates = [
        (
            env.created_at + policy.max_lifetime,
            f"it reached the maximum lifetime of {format_duration(policy.max_lifetime)}",
        ),
        (
            max(idle_since + policy.idle_ttl, lease or idle_since),
            f"nobody has used it for {format_duration(policy.idle_ttl)}",
        ),
        (max(env.expires_at, lease or env.expires_at), "it expired"),
    ]
    return min(candidates, key=lambda item: item[0])


def judge(env: Environment, policy: ReapPolicy, now: datetime) -> Verdict:
    due_at, reason = due(env, policy, now)
    if now < due_at - policy.warning:
        action = Action.KEEP
    elif env.warned_at is None:
        action = Action.WARN
    elif now >= due_at and now >= env.warned_at + policy.warning:
        action = Action.REAP
    else:
        action = Action.KEEP  # warned; waiting for the grace to pass
    return Verdict(env=env, action=action, due_at=due_at, reason=reason)


def _reading(env: Environment) -> Activity | None:
    try:
        return Activity(**env.activity) if env.activity else None
    except TypeError:  # a reading from an older devdb
        return None


@dataclass
class SweepReport:
    verdicts: list[Verdict] = field(default_factory=list)
    active: list[str] = field(default_factory=list)
    unreachable: list[str] = field(default_factory=list)
    warned: list[str] = field(default_factory=list)
    reaped: list[str] = field(default_factory=list)


Probe = Callable[[Environment], Awaitable[Activity]]
Warn = Callable[[Environment, str], Awaitable[None]]
Reap = Callable[[Environment, str], Awaitable[bool]]


async def observe(
    envs: list[Environment], probe: Probe, now: datetime
) -> tuple[list[Environment], list[tuple[int, dict[str, float], datetime | None]], list[str]]:
    """Probe every environment; return them updated, the readings to store, the unreachable."""
    gate = asyncio.Semaphore(PROBES_AT_ONCE)

    async def one(env: Environment) -> Activity | BaseException:
        async with gate:
            try:
                return await asyncio.wait_for(probe(env), 20)
            except Exception as exc:
                return exc

    results = await asyncio.gather(*(one(env) for env in envs))
    seen, rows, unreachable = [], [], []
    for env, result in zip(envs, results, strict=True):
        if isinstance(result, BaseException):
            unreachable.append(env.name)  # reconciliation decides whether it is lost
            seen.append(env)
            continue
        used = result.differs(_reading(env))
        rows.append((env.id, asdict(result), now if used else None))
        if used:
            env = replace(env, last_active_at=now, warned_at=None, warned_reason=None)
        seen.append(env)
    return seen, rows, unreachable


async def sweep(
    envs: list[Environment],
    *,
    probe: Probe,
    record: Callable[[list[tuple[int, dict[str, float], datetime | None]]], Awaitable[None]],
    warn: Warn,
    reap: Reap,
    policy: ReapPolicy,
    now: datetime,
    dry_run: bool = False,
) -> SweepReport:
    """One reaper sweep over `envs`; with `dry_run`, only the verdicts, nothing changed."""
    ready = [e for e in envs if e.state == EnvState.READY and e.owner != POOL_OWNER]
    seen, rows, unreachable = await observe(ready, probe, now)
    report = SweepReport(unreachable=unreachable)
    report.active = _names(seen, rows)
    if not dry_run:
        await record(rows)
    for env in seen:
        if env.name in unreachable:
            continue
        verdict = judge(env, policy, now)
        report.verdicts.append(verdict)
        if dry_run or verdict.action == Action.KEEP:
            continue
        if verdict.action == Action.WARN:
            await warn(env, verdict.reason)
            report.warned.append(env.name)
        elif await reap(env, verdict.reason):
            report.reaped.append(env.name)
    return report


def _names(
    envs: list[Environment], rows: list[tuple[int, dict[str, float], datetime | None]]
) -> list[str]:
    active = {env_id for env_id, _, at in rows if at is not None}
    return [env.name for env in envs if env.id in active]
