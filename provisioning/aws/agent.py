"""`devdb agent restore`: what an EC2 environment's instance runs at boot.

The user data sets `DEVDB_AGENT_*` (nothing secret) and runs this. It uses the same parts as
the local driver: a `LocalCluster` (listening for the bot and the developer, behind the
security group), the S3 store's parallel download and sha256 check, and `restore_dump`
with `pg_restore --jobs`. The password comes from SSM at boot. Progress and readiness go to
the status row (`agent_status`), which the bot polls.

On a reboot the agent finds its cluster and status and only starts the server again.

A golden build (`DEVDB_AGENT_GOLDEN=1`) restores the same way, then vacuums, analyses,
checkpoints and stops the server cleanly, drops the downloaded dump, and leaves the file
`golden` (the database's name) on the volume; the user data then syncs and powers the
instance off, and the bot snapshots the volume. An instance whose volume was made from that
EBS snapshot finds the file: it starts the copied server on its own settings, renames the
database, sets the new password and is ready, with no download and no restore.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import boto3
from botocore.exceptions import ClientError

from provisioning.aws import agent_status
from provisioning.aws.agent_status import AgentState
from provisioning.drivers.golden import settle
from provisioning.errors import DevdbError, InvalidInput, ProvisioningFailed
from provisioning.models import ProgressEvent, Step
from provisioning.pg.clone import clone_tree, reflink_works
from provisioning.pg.cluster import LocalCluster
from provisioning.pg.programs import PgPrograms, ServerAccount, owner_of
from provisioning.pg.restore import Target, restore_dump
from provisioning.pg.scram import scram_verifier
from provisioning.pg.sql import quote_ident
from provisioning.snapshots.s3 import S3SnapshotStore

AGENT_APP = "devdb-agent"
FAILED_MARK = "devdb agent: failed: "  # on the console, where devdb looks before any status
GOLDEN_MARK = "golden"  # on a golden volume: the name of its database
PRISTINE = "pristine"  # beside the cluster: the golden data directory as it came, for resets
NO_RESETS = "resets are not possible here"  # in the status of an instance without that copy
WRITE_EVERY = 0.5  # seconds between status writes while bytes move
BIND_WAIT = 30.0  # seconds the agent waits for the bot to give it its password parameter


@dataclass(frozen=True, kw_only=True)
class AgentConfig:
    bucket: str
    prefix: str
    snapshot: str
    parameter: str
    database: str
    user: str
    root: Path
    port: int
    listen: str
    jobs: int
    golden: bool = False

    @classmethod
    def from_env(cls, environ: Mapping[str, str], jobs: int | None = None) -> AgentConfig:
        def need(key: str) -> str:
            value = environ.get(f"DEVDB_AGENT_{key}")
            if not value:
                raise InvalidInput(f"DEVDB_AGENT_{key} is not set: run the agent from user data.")
            return value

        try:
            port = int(environ.get("DEVDB_AGENT_PORT") or 5432)
        except ValueError:
            raise InvalidInput("DEVDB_AGENT_PORT must be a port number.") from None
        return cls(
            bucket=need("BUCKET"),
            prefix=environ.get("DEVDB_AGENT_PREFIX", ""),
            snapshot=need("SNAPSHOT"),
            parameter=need("PARAMETER"),
            database=need("DATABASE"),
            user=need("USER"),
            root=Path(environ.get("DEVDB_AGENT_ROOT") or "/var/lib/devdb-agent"),
            port=port,
            listen=environ.get("DEVDB_AGENT_LISTEN") or "*",
            jobs=jobs or os.cpu_count() or 2,
            golden=environ.get("DEVDB_AGENT_GOLDEN") == "1",
        )


class _StatusWriter:
    """Turns progress events into status writes, at most every WRITE_EVERY seconds."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn
        self.latest: ProgressEvent | None = None
        self.written_at = 0.0
        self.pending: asyncio.Task[None] | None = None

    def __call__(self, event: ProgressEvent) -> None:
        self.latest = event
        final = event.percent == 100.0
        if (final or time.monotonic() - self.written_at >= WRITE_EVERY) and (
            self.pending is None or self.pending.done()
        ):
            self.written_at = time.monotonic()
            self.pending = asyncio.ensure_future(
                agent_status.write(self.conn, AgentState.RESTORING, event)
            )

    async def flush(self) -> None:
        if self.pending is not None:
            await self.pending
        if self.latest is not None:
            await agent_status.write(self.conn, AgentState.RESTORING, self.latest)


def agent_cluster(
    config: AgentConfig, programs: PgPrograms, account: ServerAccount | None
) -> LocalCluster:
    return LocalCluster(
        config.root / "cluster",
        config.port,
        programs=programs,
        account=account,
        tcp=True,
        durable=False,
        listen=config.listen,
    )


async def run_agent(
    config: AgentConfig, programs: PgPrograms, account: ServerAccount | None
) -> None:
    """Bring the instance's server up and restore the snapshot; report through the status."""
    cluster = agent_cluster(config, programs, account)
    config.root.mkdir(parents=True, exist_ok=True)
    if account:
        os.chmod(config.root, 0o711)
    mark = config.root / GOLDEN_MARK
    kept = False
    if not cluster.exists():
        await cluster.create()
    elif mark.is_file():
        # A copy of the golden volume. Its data directory is kept untouched beside (a block-
        # sharing copy on XFS) for resets; the cluster gets this instance's own settings.
        kept = await keep_pristine(config, cluster, account, mark.read_text().strip())
        cluster.configure()
    await cluster.start()
    conn = await cluster.connect()
    try:
        await conn.execute(f"set application_name = {quote_ident(AGENT_APP)}")
        if mark.is_file():
            message = "made from the golden EBS snapshot: nothing to restore"
            if not kept:
                message += f"; {NO_RESETS} (no room on the volume for a copy of the data)"
            await adopt_golden(conn, config, mark.read_text().strip(), message)
            mark.unlink()
            return
        status = await agent_status.read(conn)
        if status is not None and status.state == AgentState.READY:
            return  # a reboot: the server is back, the data was restored before
        await _prepare(conn, config)
        try:
            await _restore(conn, cluster, config, programs)
        except BaseException as exc:
            reason = str(exc) if isinstance(exc, DevdbError) else f"unexpected error: {exc!r}"
            await agent_status.write(conn, AgentState.FAILED, error=reason)
            raise
        await agent_status.write(conn, AgentState.READY)  # keeps restore_dump's last event
    finally:
        await conn.close()
    if config.golden:
        shutil.rmtree(config.root / "snapshots", ignore_errors=True)
        await settle(cluster, config.database)
        mark.write_text(config.database + "\n")
        os.sync()


async def adopt_golden(
    conn: asyncpg.Connection,
    config: AgentConfig,
    database: str,
    message: str = "made from the golden EBS snapshot: nothing to restore",
) -> None:
    """A copy of the golden data directory runs: make its database this environment's."""
    if database != config.database:
        await conn.execute(
            f"alter database {quote_ident(database)} rename to {quote_ident(config.database)}"
        )
    await _prepare(conn, config)
    event = ProgressEvent(step=Step.RESTORE, message=message, percent=100.0)
    await agent_status.write(conn, AgentState.READY, event)


async def _prepare(conn: asyncpg.Connection, config: AgentConfig) -> None:
    """The login role with the password from SSM, an empty database it owns, the status."""
    password = await asyncio.to_thread(_password, config.parameter)
    role, database = quote_ident(config.user), quote_ident(config.database)
    exists = await conn.fetchval("select 1 from pg_roles where rolname = $1", config.user)
    statement = await conn.fetchval(
        "select format('%s role %I login password %L', $1::text, $2::text, $3::text)",
        "alter" if exists else "create",
        config.user,
        scram_verifier(password),
    )
    await conn.execute(statement)
    # The reaper's probe logs in as this role and must see every session's activity.
    await conn.execute(f"grant pg_read_all_stats to {role}")
    await agent_status.install(conn, config.user)
    if not await conn.fetchval("select 1 from pg_database where datname = $1", config.database):
        await conn.execute(f"create database {database} owner {role}")


async def keep_pristine(
    config: AgentConfig, cluster: LocalCluster, account: ServerAccount | None, database: str
) -> bool:
    """Keep the golden data directory as it came, for resets; False if there is no room."""
    pristine = config.root / PRISTINE
    if (pristine / "data").is_dir():
        return True
    if not reflink_works(config.root):
        size = sum(f.stat().st_size for f in cluster.data_dir.rglob("*") if f.is_file())
        if shutil.disk_usage(config.root).free < size * 1.2 + (256 << 20):
            return False
    owner = owner_of(account)
    shutil.rmtree(pristine, ignore_errors=True)  # a copy an earlier boot did not finish
    partial = config.root / f"{PRISTINE}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir()
    await asyncio.to_thread(clone_tree, cluster.data_dir, partial / "data", owner=owner)
    (partial / "database").write_text(database + "\n")
    partial.rename(pristine)
    return True


def _password(parameter: str, wait: float = BIND_WAIT) -> str:
    """The password from SSM. The bot tags the parameter with this instance's ARN just after
    launch, and until then the instance policy denies the read: wait for it, a while."""
    ssm = boto3.client("ssm")
    deadline = time.monotonic() + wait
    while True:
        try:
            reply: Any = ssm.get_parameter(Name=parameter, WithDecryption=True)
        except ClientError as exc:
            denied = exc.response.get("Error", {}).get("Code") == "AccessDeniedException"
            if denied and time.monotonic() < deadline:
                time.sleep(2.0)
                continue
            raise ProvisioningFailed(f"the password could not be read from SSM: {exc}.") from exc
        except Exception as exc:
            raise ProvisioningFailed(f"the password could not be read from SSM: {exc}.") from exc
        return str(reply["Parameter"]["Value"])


async def _restore(
    conn: asyncpg.Connection, cluster: LocalCluster, config: AgentConfig, programs: PgPrograms
) -> None:
    writer = _StatusWriter(conn)
    store = S3SnapshotStore(
        boto3.client("s3"), config.bucket, prefix=config.prefix, cache=config.root / "snapshots"
    )
    manifest = await store.get(config.snapshot)
    done = 0
    loop = asyncio.get_running_loop()

    def downloaded(count: int) -> None:  # called from the transfer manager's threads
        nonlocal done
        done += count
        event = ProgressEvent(
            step=Step.RESTORE,
            message=f"downloading snapshot {manifest.id}",
            bytes_done=done,
            bytes_total=manifest.size,
        )
        loop.call_soon_threadsafe(writer, event)

    writer(ProgressEvent(step=Step.RESTORE, message=f"downloading snapshot {manifest.id}"))
    dump = await store.fetch(manifest, on_bytes=downloaded)
    await restore_dump(
        programs=programs,
        dump_dir=dump,
        manifest=manifest,
        target=Target(
            host=str(cluster.socket_dir),
            port=config.port,
            user=config.user,
            database=config.database,
        ),
        jobs=config.jobs,
        monitor=cluster.connect,
        progress=writer,
    )
    await writer.flush()
