"""A refresh killed at any point leaves a record the next start cleans up: no orphan clusters,
ports, directories, passwords or live rows; the environment it would have replaced serves on."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time

import asyncpg
import pytest

from provisioning.demo import DEMO_DATABASE, generate
from provisioning.drivers.local import LocalDriver
from provisioning.models import EnvState
from provisioning.pg.cluster import LocalCluster
from provisioning.recovery import recover
from provisioning.runtime import Runtime
from provisioning.snapshots.dump import dump_snapshot
from provisioning.snapshots.manifest import Manifest
from tests.conftest import PORTS, unique


@pytest.fixture(scope="module")
async def slow_snapshot(runtime: Runtime) -> Manifest:
    """Large enough (scale 3, ~70 MB of rows) that a restore takes a few seconds."""
    await generate(runtime.server_dsn("postgres"), scale=3, progress=lambda _: None)
    return await dump_snapshot(
        runtime.server_dsn(DEMO_DATABASE), runtime.snapshots, runtime.programs
    )


async def running_job(runtime: Runtime, name: str) -> tuple[str | None, str | None]:
    """The step of `name`'s running refresh, and how its environment was made (once
    launched: "restore" or "clone")."""
    async with runtime.store.connection() as tx:
        row = await tx.conn.fetchrow(
            "select j.step, e.handle->>'made' as made from devdb.jobs j join devdb.environments e"
            " on e.id = j.environment_id where e.name = $1 and j.state = 'running'",
            name,
        )
    return (row["step"], row["made"]) if row else (None, None)


async def kill_refresh_at(
    runtime: Runtime,
    env: dict[str, str],
    name: str,
    snapshot: str,
    step: str,
    sig: signal.Signals = signal.SIGKILL,
) -> str:
    # No golden copies: the refresh restores, so there is a restore step to kill it in.
    driver = runtime.service.drivers["local"]
    assert isinstance(driver, LocalDriver) and driver.golden is not None
    await driver.prune(set())
    assert driver.golden.ready(snapshot) is None
    proc = subprocess.Popen(
        [sys.executable, "-m", "bot.cli", "refresh", name, "--snapshot", snapshot],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        # As from a terminal: a suite started in the background (nohup, `&`) ignores SIGINT,
        # and a program rightly keeps an inherited ignore, so Ctrl-C would never arrive.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.monotonic() + 60
    try:
        while (await running_job(runtime, name))[0] != step:
            assert proc.poll() is None, f"refresh ended before {step}: {proc.stderr.read()!r}"  # type: ignore[union-attr]
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
        if step == "restore":
            made = (await running_job(runtime, name))[1]
            golden = sorted(p.name for p in driver.golden.root.iterdir())
            assert made == "restore", f"the refresh was {made}; golden copies: {golden}"
            await asyncio.sleep(0.5)  # let pg_restore get going
        proc.send_signal(sig)
    finally:
        proc.wait()
    return proc.stderr.read().decode()  # type: ignore[union-attr]


async def assert_nothing_left(runtime: Runtime, name: str) -> None:
    async with runtime.store.connection() as tx:
        rows = await tx.conn.fetch(
            "select e.id, e.state, e.handle, j.state as job from devdb.environments e"
            " join devdb.jobs j on j.environment_id = e.id"
            " where e.name = $1 and e.state <> 'ready'",
            name,
        )
        used_ports = await tx.used_local_ports()
    assert rows, "the interrupted refresh left a record"
    driver = runtime.service.drivers["local"]
    on_disk = {driver.key(h) for h in await driver.inventory()}
    for row in rows:
        assert (row["state"], row["job"]) == ("failed", "failed")
        assert driver.key(row["handle"]) not in on_disk
        assert not await driver.is_running(row["handle"])
        assert not (runtime.settings.secrets_dir / f"env-{row['id']}.password").exists()
        if row["handle"].get("port"):
            assert row["handle"]["port"] not in used_ports


@pytest.mark.parametrize("step", ["launch", "restore", "migrate"])
async def test_killed_refresh_is_cleaned_up_on_next_start(
    runtime: Runtime, cli_env: dict[str, str], slow_snapshot: Manifest, step: str
) -> None:
    name = unique("killed")
    env = {**cli_env, "DEVDB_MIGRATIONS_COMMAND": "sleep 60"} if step == "migrate" else cli_env
    await kill_refresh_at(runtime, env, name, slow_snapshot.id, step)
    report = await recover(runtime.store, runtime.service.drivers, runtime.service.secrets)
    assert len(report.abandoned_jobs) == 1
    await assert_nothing_left(runtime, name)
    assert all(v.env.name != name for v in await runtime.service.list("carol"))
    # The name is free again.
    view = await runtime.service.refresh("carol", name, snapshot=slow_snapshot.id)
    await runtime.service.destroy("carol", view.env.name)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
async def test_interrupted_refresh_cleans_up_before_exiting(
    runtime: Runtime, cli_env: dict[str, str], slow_snapshot: Manifest, sig: signal.Signals
) -> None:
    name = unique("ctrl-c")
    stderr = await kill_refresh_at(runtime, cli_env, name, slow_snapshot.id, "restore", sig)
    assert stderr.strip().splitlines()[-1] == (
        "devdb: interrupted; anything the command had started was cleaned up."
    )
    assert "Traceback" not in stderr
    await assert_nothing_left(runtime, name)  # without any recovery run


async def test_killed_replacement_keeps_the_old_environment(
    runtime: Runtime, cli_env: dict[str, str], demo_snapshot: Manifest, slow_snapshot: Manifest
) -> None:
    name = unique("keep")
    old = await runtime.service.refresh("carol", name, snapshot=demo_snapshot.id)
    assert old.endpoint is not None
    await kill_refresh_at(runtime, cli_env, name, slow_snapshot.id, "restore")
    await recover(runtime.store, runtime.service.drivers, runtime.service.secrets)
    status = await runtime.service.status("carol", name)
    assert status.env.id == old.env.id and status.env.state == EnvState.READY
    conn = await asyncpg.connect(old.endpoint.dsn)
    try:
        assert await conn.fetchval("select count(*) from tenants") == 10
    finally:
        await conn.close()
    await runtime.service.destroy("carol", name)


async def test_orphan_cluster_and_interrupted_destroy_are_finished(
    runtime: Runtime, demo_snapshot: Manifest
) -> None:
    driver = runtime.service.drivers["local"]
    assert isinstance(driver, LocalDriver)
    orphan = LocalCluster(
        driver.clusters_dir / "999999-orphan",
        PORTS[1] - 1,
        programs=driver.programs,
        account=driver.account,
        durable=False,
    )
    await orphan.create()
    await orphan.start()
    name = unique("halfgone")
    view = await runtime.service.refresh("dave", name, snapshot=demo_snapshot.id)
    async with runtime.store.connection() as tx:  # as if killed in the middle of a destroy
        await tx.set_state(view.env.id, EnvState.DESTROYING)

    report = await recover(runtime.store, runtime.service.drivers, runtime.service.secrets)
    assert name in report.finished_destroys
    assert driver.key({"dir": str(orphan.root)}) in report.orphans_removed
    assert not orphan.root.exists() and orphan.running_pid() is None
    assert not await driver.is_running(view.env.handle)
    async with runtime.store.connection() as tx:
        assert (await tx.environment(view.env.id)).state == EnvState.DESTROYED


async def test_stopped_environment_is_started_again(
    runtime: Runtime, demo_snapshot: Manifest
) -> None:
    name = unique("reboot")
    view = await runtime.service.refresh("erin", name, snapshot=demo_snapshot.id)
    driver = runtime.service.drivers["local"]
    assert isinstance(driver, LocalDriver)
    pid = driver._cluster(view.env.handle).running_pid()
    assert pid is not None
    os.kill(pid, signal.SIGTERM)  # what a shutdown does
    while await driver.is_running(view.env.handle):
        await asyncio.sleep(0.05)
    report = await recover(runtime.store, runtime.service.drivers, runtime.service.secrets)
    assert name in report.resumed
    assert view.endpoint is not None
    conn = await asyncpg.connect(view.endpoint.dsn)
    await conn.close()
    await runtime.service.destroy("erin", name)
