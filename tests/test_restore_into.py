"""`devdb restore --into`: a snapshot into a server of the user's choice (one the test starts)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest

from provisioning.runtime import Runtime
from provisioning.snapshots.manifest import Manifest
from tests.conftest import started_cluster
from tests.ports import BASE
from tests.test_cli import devdb

PORT = BASE + 514
SECRET = "laptop-secret-pw"


@pytest.fixture
async def laptop(runtime: Runtime) -> AsyncIterator[str]:
    """A developer's own PostgreSQL with an empty database; its URL, password included."""
    cluster = await started_cluster(runtime, PORT, SECRET)
    conn = await cluster.connect()
    await conn.execute("create database work")
    await conn.close()
    try:
        yield f"postgresql://devdb:{SECRET}@127.0.0.1:{PORT}/work"
    finally:
        await cluster.stop(immediate=True)
        await cluster.remove()


async def test_restore_into_a_server_of_ones_own(
    cli_env: dict[str, str], chinook_snapshot: Manifest, laptop: str
) -> None:
    done = devdb(cli_env, "restore", "--snapshot", chinook_snapshot.id, "--into", laptop)
    assert done.returncode == 0, done.stderr
    assert SECRET not in done.stdout + done.stderr, "the URL's password is never shown"
    assert "Restored snapshot" in done.stdout and "127.0.0.1" in done.stdout
    conn = await asyncpg.connect(laptop)
    try:
        keys = await conn.fetchval("select count(*) from pg_constraint where contype = 'f'")
        unchecked = await conn.fetchval(
            "select count(*) from pg_constraint where contype = 'f' and not convalidated"
        )
        assert keys >= 10 and unchecked == 0, "every foreign key is there and valid"
        assert await conn.fetchval("select count(*) from track") > 0
    finally:
        await conn.close()

    # Not empty any more: refused in one sentence, unless --clean.
    again = devdb(cli_env, "restore", "--snapshot", chinook_snapshot.id, "--into", laptop)
    assert again.returncode == 1 and "already holds" in again.stderr and "--clean" in again.stderr
    assert SECRET not in again.stderr and "Traceback" not in again.stderr
    clean = devdb(
        cli_env, "restore", "--snapshot", chinook_snapshot.id, "--into", laptop, "--clean"
    )
    assert clean.returncode == 0, clean.stderr

    for bad, said in (
        ("host=127.0.0.1 dbname=work", "takes a postgresql://"),
        (f"postgresql://devdb:{SECRET}@127.0.0.1:{PORT}/", "lacks one of them"),
    ):
        refused = devdb(cli_env, "restore", "--into", bad)
        assert refused.returncode != 0 and said in refused.stderr, refused.stderr
        assert SECRET not in refused.stderr
