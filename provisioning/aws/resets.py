"""Resetting an EC2 environment made from a golden EBS snapshot, on its own instance.

Such an instance keeps the golden data directory as it came off the snapshot (`pristine`, a
block-sharing copy on XFS). After it is ready, the agent stays to serve resets: it listens on
the channel `devdb_reset` of its server. The bot writes a one-time token to the SSM parameter
beside the environment's password, then sends the token on that channel. Only a token equal
to the parameter counts, so a developer who can NOTIFY (anyone can) cannot trigger a reset
devdb did not ask for. A reset stops the server (ending every session), replaces the data
directory with a fresh copy of the pristine one, starts it and makes the database the
environment's again under the same name, user and password; the status row's event names
the token, which is how the bot knows it is done.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
from typing import Any

import asyncpg
import boto3

from provisioning.aws import agent_status
from provisioning.aws.agent import (
    AGENT_APP,
    PRISTINE,
    AgentConfig,
    adopt_golden,
    agent_cluster,
)
from provisioning.aws.agent_status import AgentState
from provisioning.errors import DevdbError, ProvisioningFailed
from provisioning.pg.clone import clone_tree
from provisioning.pg.cluster import LocalCluster
from provisioning.pg.programs import PgPrograms, ServerAccount
from provisioning.pg.sql import quote_ident

CHANNEL = "devdb_reset"
log = logging.getLogger("devdb.agent")


def reset_parameter(password_parameter: str) -> str:
    """The SSM parameter, beside the password's, that holds the token of a reset asked for."""
    return password_parameter.rsplit("/", 1)[0] + "/reset"


def reset_note(token: str) -> str:
    return f"reset to the golden copy ({token[:12]})"


def _expected(parameter: str) -> str | None:
    ssm = boto3.client("ssm")
    try:
        reply: Any = ssm.get_parameter(Name=parameter, WithDecryption=True)
    except Exception:  # missing, or SSM unreachable: no reset was asked for that we can see
        return None
    return str(reply["Parameter"]["Value"])


async def serve_resets(
    config: AgentConfig, programs: PgPrograms, account: ServerAccount | None
) -> None:
    """Wait for resets and carry them out, for as long as the instance lives."""
    cluster = agent_cluster(config, programs, account)
    done: set[str] = set()
    while True:
        try:
            token = await _next_request(cluster, config, done)
        except (OSError, asyncpg.PostgresError, ProvisioningFailed) as exc:
            log.warning("devdb agent: waiting for resets again after %s", exc)
            await asyncio.sleep(2)
            continue
        done.add(token)
        await _reset(cluster, config, account, token)


async def _next_request(cluster: LocalCluster, config: AgentConfig, done: set[str]) -> str:
    tokens: asyncio.Queue[str] = asyncio.Queue()
    conn = await cluster.connect()
    try:
        await conn.execute(f"set application_name = {quote_ident(AGENT_APP)}")
        await conn.add_listener(CHANNEL, lambda *args: tokens.put_nowait(str(args[-1])))
        while True:
            token = await tokens.get()
            expected = await asyncio.to_thread(_expected, reset_parameter(config.parameter))
            if token not in done and token == expected:
                return token
    finally:
        await conn.close()


async def _reset(
    cluster: LocalCluster, config: AgentConfig, account: ServerAccount | None, token: str
) -> None:
    pristine = config.root / PRISTINE
    database = (pristine / "database").read_text().strip()
    owner = (account.uid, account.gid) if account else None
    try:
        await cluster.stop(immediate=True)  # ends every session
        await asyncio.to_thread(shutil.rmtree, cluster.data_dir, True)
        await asyncio.to_thread(clone_tree, pristine / "data", cluster.data_dir, owner=owner)
        cluster.configure()
        await cluster.start()
        conn = await cluster.connect()
        try:
            await conn.execute(f"set application_name = {quote_ident(AGENT_APP)}")
            await adopt_golden(conn, config, database, reset_note(token))
        finally:
            await conn.close()
    except (DevdbError, OSError, asyncpg.PostgresError) as exc:
        log.error("devdb agent: the reset failed: %s", exc)
        with contextlib.suppress(DevdbError, OSError, asyncpg.PostgresError):
            await cluster.start()
            conn = await cluster.connect()
            try:
                await agent_status.write(conn, AgentState.FAILED, error=f"the reset failed: {exc}")
            finally:
                await conn.close()
