"""The agent's status row: how an instance tells the bot how its restore is going.

One row in `devdb_agent.status` in the instance's maintenance database (`postgres`),
written by the agent as superuser and readable by the environment's login role, which is
how the bot polls it: the same password, the same port, no other channel to secure.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from enum import StrEnum

import asyncpg

from provisioning.models import ProgressEvent, Step
from provisioning.pg.sql import quote_ident

SCHEMA = "devdb_agent"


class AgentState(StrEnum):
    STARTING = "starting"
    RESTORING = "restoring"
    READY = "ready"
    FAILED = "failed"


@dataclass(frozen=True, kw_only=True)
class AgentStatus:
    state: AgentState
    event: ProgressEvent | None
    error: str | None


async def install(conn: asyncpg.Connection, reader: str) -> None:
    """Create the status row (once) and let `reader` see it."""
    await conn.execute(
        f"create schema if not exists {SCHEMA};"
        f" create table if not exists {SCHEMA}.status ("
        "  id int primary key default 1 check (id = 1),"
        "  state text not null, event jsonb, error text,"
        "  updated_at timestamptz not null default now());"
        f" insert into {SCHEMA}.status (state) values ('starting') on conflict do nothing;"
        f" grant usage on schema {SCHEMA} to {quote_ident(reader)};"
        f" grant select on {SCHEMA}.status to {quote_ident(reader)};"
    )


async def write(
    conn: asyncpg.Connection,
    state: AgentState,
    event: ProgressEvent | None = None,
    error: str | None = None,
) -> None:
    body = None
    if event is not None:
        body = json.dumps({**asdict(event), "step": str(event.step)})
    await conn.execute(
        f"update {SCHEMA}.status set state = $1, event = coalesce($2::jsonb, event),"
        " error = $3, updated_at = now()",
        state.value,
        body,
        error,
    )


async def read(conn: asyncpg.Connection) -> AgentStatus | None:
    """The agent's latest word, or None if it has not set up its status yet."""
    try:
        row = await conn.fetchrow(f"select state, event, error from {SCHEMA}.status")
    except (asyncpg.UndefinedTableError, asyncpg.InvalidSchemaNameError):
        return None
    if row is None:
        return None
    event = None
    if row["event"]:
        data = json.loads(row["event"])
        try:
            data["step"] = Step(data["step"])
        except ValueError:
            data["step"] = Step.RESTORE
        event = ProgressEvent(**data)
    return AgentStatus(state=AgentState(row["state"]), event=event, error=row["error"])
