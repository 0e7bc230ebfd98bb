"""The embedded control cluster: devdb's own private PostgreSQL under DEVDB_HOME.

Created and started on first use, reachable only over a Unix socket in its own directory.
A file lock keeps two devdb processes starting at once from racing to create it.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
from pathlib import Path
from typing import IO, Any

from provisioning.errors import DevdbError, StateStoreUnavailable
from provisioning.pg.cluster import SUPERUSER, LocalCluster
from provisioning.pg.programs import PgPrograms, ServerAccount

CONTROL_PORT = 5432  # names the socket only: the control cluster listens on no TCP port
CONTROL_DATABASE = "devdb"


def prepare_home(home: Path, account: ServerAccount | None) -> None:
    """Create DEVDB_HOME, and make sure the server account can reach the clusters inside it."""
    home.mkdir(parents=True, exist_ok=True, mode=0o700)
    if account is None:
        return
    blocked = account.can_enter(home)
    if blocked is not None and blocked == home.resolve() and home.stat().st_uid == os.geteuid():
        # Traverse-only access for the server account; secrets inside stay 0600.
        home.chmod(0o711)
        blocked = account.can_enter(home)
    if blocked is not None:
        raise StateStoreUnavailable(
            f"the account {account.name!r} that runs PostgreSQL cannot enter {blocked}, which "
            f"holds DEVDB_HOME ({home}): set DEVDB_HOME to a directory it can reach."
        )


def control_cluster(
    home: Path, programs: PgPrograms, account: ServerAccount | None
) -> LocalCluster:
    return LocalCluster(
        home / "control", CONTROL_PORT, programs=programs, account=account, tcp=False, durable=True
    )


async def ensure_control_cluster(
    home: Path, programs: PgPrograms, account: ServerAccount | None
) -> dict[str, Any]:
    """Create and start the control cluster if needed; return asyncpg connect keywords."""
    prepare_home(home, account)
    cluster = control_cluster(home, programs, account)

    async def bring_up() -> None:
        if not cluster.exists():
            if cluster.root.exists():
                await cluster.remove()  # a half-made cluster from an interrupted first run
            await cluster.create()
        await cluster.start()
        conn = await cluster.connect()
        try:
            found = await conn.fetchval(
                "select 1 from pg_database where datname = $1", CONTROL_DATABASE
            )
            if not found:
                await conn.execute(f'create database "{CONTROL_DATABASE}"')
        finally:
            await conn.close()

    try:
        lock = await asyncio.to_thread(_acquire, home)
        try:
            await bring_up()
        finally:
            lock.close()  # closing the file releases the lock
    except DevdbError as exc:
        raise StateStoreUnavailable(f"devdb's control database could not start: {exc}") from exc
    return {
        "host": str(cluster.socket_dir),
        "port": CONTROL_PORT,
        "user": SUPERUSER,
        "database": CONTROL_DATABASE,
    }


def _acquire(home: Path) -> IO[str]:
    """Open DEVDB_HOME/.lock and wait for an exclusive lock on it, across processes."""
    handle = open(home / ".lock", "a+")  # noqa: SIM115 - the caller closes it
    fcntl.flock(handle, fcntl.LOCK_EX)
    return handle
