"""Resetting an EC2 environment made from a golden EBS snapshot, on its own instance.

Such an instance keeps the golden data directory as it came off the snapshot (`pristine`, a
block-sharing copy on XFS). After it is ready, the agent stays to serve resets: it listens
on the channel `devdb_reset` of its server. The bot writes a one-time token to the SSM
parameter beside the environment's password, then notifies that channel (again, until it is
answered). A notification only wakes the agent: it acts on the token in SSM, which only
devdb can write, so a developer who can NOTIFY (anyone can) can neither trigger a reset
devdb did not ask for nor make the agent read SSM more than once every two seconds.

A reset copies the pristine directory, stops the server (ending every session), swaps the
copy in, starts it and makes the database the environment's again under the same name, user
and password; the status row's event names the token, which is how the bot knows it is
done. Without reflink the copy is a full one, so it is kept only where the volume has room
for it; otherwise the status says resets are not possible there.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import shutil
import time
from typing import Any

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
from provisioning.errors import ProvisioningFailed
from provisioning.pg.clone import clone_tree
from provisioning.pg.cluster import LocalCluster
from provisioning.pg.programs import PgPrograms, ServerAccount, owner_of
from provisioning.pg.sql import quote_ident

CHANNEL = "devdb_reset"
LOOK_EVERY = 2.0  # seconds: the most often the agent reads the reset parameter
_TOKEN = re.compile(r"[0-9a-f]{32}")
log = logging.getLogger("devdb.agent")


def reset_parameter(password_parameter: str) -> str:
    """The SSM parameter, beside the password's, that holds the token of a reset asked for."""
    return password_parameter.rsplit("/", 1)[0] + "/reset"


def reset_note(token: str) -> str:
    return f"reset to the golden copy ({token[:12]})"


def _expected(parameter: str) -> str | None:  # a blocking SSM read
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
            done.add(token)
            await _reset(cluster, config, account, token)
        except Exception as exc:  # whatever happened, keep serving the next one
            log.warning("devdb agent: waiting for resets again after: %s", exc)
            await asyncio.sleep(2)


async def _next_request(cluster: LocalCluster, config: AgentConfig, done: set[str]) -> str:
    """The token of the next reset asked for. A notification only wakes the agent: the token
    comes from SSM, looked at on every (re)connection, on a wake-up at most every
    LOOK_EVERY seconds (a flood of notifications costs nothing), and once a minute anyway
    (a notification sent while the agent was not listening is not kept)."""
    wake = asyncio.Event()
    conn = await cluster.connect()
    try:
        await conn.execute(f"set application_name = {quote_ident(AGENT_APP)}")
        await conn.add_listener(CHANNEL, lambda *_: wake.set())
        conn.add_termination_listener(lambda _: wake.set())
        parameter = reset_parameter(config.parameter)
        looked = 0.0
        while True:
            await asyncio.sleep(max(0.0, looked + LOOK_EVERY - time.monotonic()))
            looked = time.monotonic()
            wake.clear()
            token = await asyncio.to_thread(_expected, parameter)
            if token and _TOKEN.fullmatch(token) and token not in done:
                return token
            if conn.is_closed():
                raise ProvisioningFailed("the connection to the server closed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), timeout=60)
    finally:
        await conn.close()


async def _reset(
    cluster: LocalCluster, config: AgentConfig, account: ServerAccount | None, token: str
) -> None:
    """A fresh copy of the pristine data directory in place of the cluster's. The copy is
    made while the server still runs, and the old directory comes back if the new one
    cannot start: a failed reset leaves the environment as it was."""
    pristine = config.root / PRISTINE
    database = (pristine / "database").read_text().strip()
    owner = owner_of(account)
    fresh = cluster.data_dir.with_name("data.new")
    old = cluster.data_dir.with_name("data.old")
    try:
        for leftover in (fresh, old):
            await asyncio.to_thread(shutil.rmtree, leftover, True)
        await asyncio.to_thread(clone_tree, pristine / "data", fresh, owner=owner)
        await cluster.stop(immediate=True)  # ends every session
        cluster.data_dir.rename(old)
        fresh.rename(cluster.data_dir)
        try:
            cluster.configure()
            await cluster.start()
            conn = await cluster.connect()
            try:
                await conn.execute(f"set application_name = {quote_ident(AGENT_APP)}")
                await adopt_golden(conn, config, database, reset_note(token))
            finally:
                await conn.close()
        except BaseException:
            await cluster.stop(immediate=True)
            await asyncio.to_thread(shutil.rmtree, cluster.data_dir, True)
            old.rename(cluster.data_dir)
            raise
        await asyncio.to_thread(shutil.rmtree, old, True)
    except Exception as exc:
        log.error("devdb agent: the reset failed: %s", exc)
        await asyncio.to_thread(shutil.rmtree, fresh, True)
        with contextlib.suppress(Exception):
            await cluster.start()
            conn = await cluster.connect()
            try:
                await agent_status.write(
                    conn, AgentState.FAILED, error=f"{reset_note(token)} failed: {exc}"
                )
            finally:
                await conn.close()
