"""The values devdb passes around: environments, endpoints, steps and progress events."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any
from urllib.parse import quote

from provisioning.errors import InvalidInput

_NAME = re.compile(r"[a-z][a-z0-9_-]{0,39}")


def validate_name(name: str) -> str:
    """Return `name` if it is a safe environment name, else raise `InvalidInput`."""
    if _NAME.fullmatch(name):
        return name
    shown = name if len(name) <= 24 else name[:24] + "…"
    raise InvalidInput(
        f"{shown!r} is not a valid environment name: use 1 to 40 lowercase letters, digits, "
        "'-' or '_', starting with a letter."
    )


def default_name(owner: str) -> str:
    """Derive an environment name from an owner's user name (`Jane.Doe` → `jane-doe`)."""
    cleaned = re.sub(r"[^a-z0-9_-]+", "-", owner.lower()).strip("-_")
    if not cleaned or not cleaned[0].isalpha():
        cleaned = "env-" + cleaned
    return cleaned[:40].rstrip("-_")


class EnvState(StrEnum):
    PROVISIONING = "provisioning"
    READY = "ready"
    DESTROYING = "destroying"
    DESTROYED = "destroyed"
    FAILED = "failed"
    INTERRUPTED = "interrupted"  # its server was taken away (a reclaimed spot instance)
    LOST = "lost"  # its server or cluster vanished and could not be brought back


LIVE_STATES = (
    EnvState.PROVISIONING,
    EnvState.READY,
    EnvState.DESTROYING,
    EnvState.INTERRUPTED,
    EnvState.LOST,
)
# The states a refresh of the same name replaces, and a destroy removes.
REPLACEABLE = (EnvState.READY, EnvState.INTERRUPTED, EnvState.LOST)
POOL_OWNER = "@pool"  # the owner of warm environments waiting to be handed over


class JobState(StrEnum):
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class Step(StrEnum):
    RESERVE = "reserve"
    LAUNCH = "launch"
    RESTORE = "restore"
    MIGRATE = "migrate"
    READY = "ready"


STEPS = tuple(Step)


@dataclass(frozen=True, kw_only=True)
class Endpoint:
    """How to reach an environment's database."""

    host: str
    port: int
    database: str
    user: str
    password: str

    @property
    def dsn(self) -> str:
        return (
            f"postgresql://{quote(self.user, safe='')}:{quote(self.password, safe='')}"
            f"@{self.host}:{self.port}/{quote(self.database, safe='')}"
        )


@dataclass(frozen=True, kw_only=True)
class TableSet:
    """How to reach a DynamoDB environment: its tables' names start with `prefix`, in
    `region`, at `url` (None: AWS's own endpoint), and an application reads the same from
    the SSM parameters under `parameters`."""

    prefix: str
    region: str
    url: str | None
    parameters: str
    tables: tuple[str, ...]

    @property
    def dsn(self) -> str:
        """One line naming the tables, as `dsn` is one line naming a database."""
        where = self.url or f"dynamodb.{self.region}.amazonaws.com"
        return f"dynamodb://{self.region}/{self.prefix} at {where}"


# What a driver answers to "how do I reach it": a PostgreSQL database or DynamoDB tables.
Connection = Endpoint | TableSet


def database_of(connection: Connection, action: str) -> Endpoint:
    """The PostgreSQL database behind `connection`, for an action only PostgreSQL has."""
    if isinstance(connection, TableSet):
        raise InvalidInput(f"{action} works on PostgreSQL environments, not DynamoDB tables.")
    return connection


@dataclass(frozen=True, kw_only=True)
class Environment:
    """One developer database, as the state store records it."""

    id: int
    name: str
    owner: str
    kind: str
    state: EnvState
    snapshot_id: str | None
    handle: dict[str, Any]
    host: str | None
    port: int | None
    database: str | None
    user: str | None
    created_at: datetime
    ready_at: datetime | None
    expires_at: datetime
    last_active_at: datetime | None
    replaces: int | None = None
    error: str | None = None
    finished_at: datetime | None = None
    activity: dict[str, Any] | None = None
    warned_at: datetime | None = None
    warned_reason: str | None = None
    protected_until: datetime | None = None


@dataclass(frozen=True, kw_only=True)
class ProgressEvent:
    """One update from a long-running operation; front ends render these."""

    step: StrEnum  # a refresh `Step`, or a step of another pipeline (e.g. shrink)
    message: str
    percent: float | None = None
    bytes_done: int | None = None
    bytes_total: int | None = None
    eta_seconds: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class EnvironmentView:
    """An environment as a front end shows it; `endpoint` only for its owner or an admin."""

    env: Environment
    running: bool | None = None
    endpoint: Connection | None = None
    job: Mapping[str, object] | None = None
    cost: float = 0.0  # estimated spend so far; local environments cost nothing extra

    def idle_for(self, now: datetime) -> timedelta | None:
        since = self.env.last_active_at or self.env.ready_at
        return now - since if since else None

    def to_dict(self) -> dict[str, object]:
        env = self.env
        return {
            "name": env.name,
            "owner": env.owner,
            "kind": env.kind,
            "state": env.state.value,
            "snapshot": env.snapshot_id,
            "created_at": env.created_at.isoformat(),
            "ready_at": env.ready_at.isoformat() if env.ready_at else None,
            "expires_at": env.expires_at.isoformat(),
            "running": self.running,
            "host": env.host,
            "port": env.port,
            "database": env.database,
            "user": env.user,
            "dsn": self.endpoint.dsn if self.endpoint else None,
            "job": dict(self.job) if self.job else None,
            "cost": self.cost,
            "made": self.made,
            **self._tables(),
        }

    @property
    def where(self) -> str | None:
        """For a DynamoDB environment, its tables and endpoint: `dev_app_* at URL`."""
        handle = self.env.handle
        if "prefix" not in handle:
            return None
        return f"{handle['prefix']}* at {handle.get('url') or handle['region']}"

    def _tables(self) -> dict[str, object]:
        """A DynamoDB environment's record says prefix and region where a database's says
        database and user."""
        handle = self.env.handle
        if "prefix" not in handle:
            return {}
        return {
            "database": None,
            "user": None,
            "prefix": handle["prefix"],
            "region": handle["region"],
        }

    @property
    def made(self) -> str | None:
        """How the environment was made: "clone (reflink)", "clone (copy)", "restore", "warm"."""
        made = self.env.handle.get("made")
        method = self.env.handle.get("method")
        return f"{made} ({method})" if made == "clone" and method else made
