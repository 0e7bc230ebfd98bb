"""The scheduler's sweeps against real PostgreSQL: replicas, the warm pool, reconciliation,
activity detection, saving before a reap, the nightly rebuild, and the commands."""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest

from bot.words import said
from provisioning.drivers.local import LocalDriver
from provisioning.errors import InvalidInput, NotAllowed, Part
from provisioning.models import POOL_OWNER, EnvState
from provisioning.nightly import rebuild
from provisioning.pg.cluster import LocalCluster
from provisioning.runtime import Runtime
from provisioning.service import Service
from provisioning.snapshots.dump import dump_snapshot
from provisioning.snapshots.manifest import Manifest
from provisioning.sweeps import exclusive, pool_sweep, reap_sweep, reconcile_sweep
from tests.conftest import unique
from tests.test_cli import devdb
from tests.test_service import restoring_driver
from tests.test_service import service_with as with_drivers

DATA = Path(__file__).parent / "data"


def service_with(runtime: Runtime, **policy: object) -> Service:
    base = runtime.service
    return Service(
        store=base.store,
        drivers=base.drivers,
        snapshots=base.snapshots,
        secrets=base.secrets,
        policy=replace(base.policy, **policy),  # type: ignore[arg-type]
        job_options=base.job_options,
        programs=base.programs,
    )


async def test_two_replicas_run_each_sweep_once(runtime: Runtime) -> None:
    runs: list[tuple[str, datetime]] = []
    name = unique("sweep")
    interval = timedelta(minutes=5)

    async def work(replica: str, now: datetime) -> str:
        runs.append((replica, now))
        await asyncio.sleep(0.05)  # long enough for the other replica to try meanwhile
        return replica

    start = datetime(2030, 1, 1, tzinfo=UTC)
    for tick in range(12):
        now = start + tick * interval
        results = await asyncio.gather(
            exclusive(runtime.service, name, interval, now, lambda n=now: work("a", n)),
            exclusive(runtime.service, name, interval, now, lambda n=now: work("b", n)),
        )
        assert sum(r is not None for r in results) == 1, f"tick {tick}: {results}"
        # A replica whose timer fires a little later in the same interval does not run it again.
        late = now + timedelta(seconds=30)
        again = await exclusive(runtime.service, name, interval, late, lambda n=late: work("c", n))
        assert again is None
    assert [at for _, at in runs] == [start + t * interval for t in range(12)]


async def tiny_snapshot(runtime: Runtime) -> Manifest:
    """A one-table snapshot, now the latest: many refreshes of it stay cheap."""
    admin = await asyncpg.connect(runtime.server_dsn("postgres"))
    try:
        await admin.execute("drop database if exists tiny")
        await admin.execute("create database tiny")
    finally:
        await admin.close()
    conn = await asyncpg.connect(runtime.server_dsn("tiny"))
    try:
        await conn.execute(
            "create table items (id int primary key, label text);"
            " insert into items select g, 'item ' || g from generate_series(1, 100) g"
        )
    finally:
        await conn.close()
    return await dump_snapshot(runtime.server_dsn("tiny"), runtime.snapshots, runtime.programs)


async def test_twenty_refreshes_against_a_pool_of_five(
    runtime: Runtime, demo_snapshot: Manifest
) -> None:
    latest = await tiny_snapshot(runtime)  # what the pool holds and a refresh takes
    await pool_sweep(service_with(runtime, pool_size=0), datetime.now(UTC))
    service = service_with(runtime, pool_size=5)
    made = await pool_sweep(service, datetime.now(UTC))
    assert len(made["made"]) == 5, made
    async with runtime.store.connection() as tx:
        pool = [e for e in await tx.live_environments(POOL_OWNER) if e.state == EnvState.READY]
    pool_ids = {e.id for e in pool if e.snapshot_id == latest.id}
    assert len(pool_ids) == 5
    assert all(e.handle.get("made") == "clone" for e in pool), "the pool holds clones"

    users = [unique("u") for _ in range(20)]
    names = [unique("pooled") for _ in range(20)]
    views = await asyncio.gather(
        *(service.refresh(user, name) for user, name in zip(users, names, strict=True))
    )
    ids = [v.env.id for v in views]
    assert len(set(ids)) == 20, "no environment was handed out twice"
    warm = [v for v in views if v.env.id in pool_ids]
    assert len(warm) == 5, "every pooled environment was handed over"
    for view in warm + [v for v in views if v.env.id not in pool_ids][:2]:
        assert view.endpoint is not None
        conn = await asyncpg.connect(view.endpoint.dsn)
        try:
            assert await conn.fetchval("select current_database()") == view.env.name
            for table, entry in latest.tables.items():
                assert await conn.fetchval(f"select count(*) from {table}") == entry.rows
        finally:
            await conn.close()
    async with runtime.store.connection() as tx:
        audit = {
            row["target"]: row["detail"]
            for row in await tx.audit_entries()
            if row["action"] == "refresh" and row["result"] == "started" and row["target"] in names
        }
    assert sum(1 for detail in audit.values() if detail["warm"]) == 5
    for view in warm:  # the old pool password no longer works; the new one does
        assert view.env.owner in users and view.env.state == EnvState.READY

    refilled = await pool_sweep(service, datetime.now(UTC))
    assert len(refilled["made"]) == 5
    for user, name in zip(users, names, strict=True):
        await service.destroy(user, name)
    await runtime.snapshots.delete(latest.id)
    await pool_sweep(service_with(runtime, pool_size=0), datetime.now(UTC))
    async with runtime.store.connection() as tx:
        assert [e for e in await tx.live_environments(POOL_OWNER)] == []


async def test_a_new_snapshot_replaces_the_pool(runtime: Runtime, demo_snapshot: Manifest) -> None:
    await pool_sweep(service_with(runtime, pool_size=0), datetime.now(UTC))
    service = service_with(runtime, pool_size=1)
    await pool_sweep(service, datetime.now(UTC))
    newer = replace(demo_snapshot, id=unique("newer"), created=datetime.now(UTC))
    staged = await runtime.snapshots.staging()
    shutil.copytree(await runtime.snapshots.fetch(demo_snapshot), staged / "dump")
    await runtime.snapshots.publish(staged, newer)
    try:
        done = await pool_sweep(service, datetime.now(UTC))
        assert len(done["retired"]) == 1 and len(done["made"]) == 1
        async with runtime.store.connection() as tx:
            pool = await tx.live_environments(POOL_OWNER)
        assert [e.snapshot_id for e in pool] == [newer.id]
    finally:
        await pool_sweep(service_with(runtime, pool_size=0), datetime.now(UTC))
        await runtime.snapshots.delete(newer.id)


async def test_reconciliation_resumes_marks_lost_and_removes_orphans(
    runtime: Runtime, demo_snapshot: Manifest
) -> None:
    told: list[tuple[str, str]] = []

    async def notify(owner: str, *parts: Part) -> None:
        told.append((owner, said(parts)))

    service = service_with(runtime)
    service.notify = notify
    owner = unique("rec")
    stopped, vanished = unique("stopped"), unique("vanished")
    a = await service.refresh(owner, stopped)
    b = await service.refresh(owner, vanished)
    driver = service.drivers["local"]
    assert isinstance(driver, LocalDriver)
    await driver._cluster(a.env.handle).stop()  # a reboot, say
    await driver._cluster(b.env.handle).remove()  # someone deleted it
    orphan = LocalCluster(
        driver.clusters_dir / "orphan-test",
        0,
        programs=driver.programs,
        account=driver.account,
        tcp=False,
    )
    await orphan.create()

    done = await reconcile_sweep(service, datetime.now(UTC))
    assert stopped in done["resumed"] and await driver.is_running(a.env.handle)
    assert vanished in done["lost"]
    assert any(key.endswith("orphan-test") for key in done["orphans_removed"])
    assert not orphan.root.exists()
    lost = (await service.status(owner, vanished)).env
    assert lost.state == EnvState.LOST
    assert told == [(owner, told[0][1])] and "is lost" in told[0][1]
    again = await service.refresh(owner, vanished)  # a lost one is simply refreshed
    assert again.env.state == EnvState.READY
    for name in (stopped, vanished):
        await service.destroy(owner, name)


async def test_activity_is_not_fooled_by_autovacuum_or_the_time_zone(
    runtime: Runtime, demo_snapshot: Manifest
) -> None:
    owner, name = unique("quiet"), unique("quiet")
    local = runtime.service.drivers["local"]
    assert isinstance(local, LocalDriver)
    # Restored, not cloned: a clone of an analysed golden copy leaves autovacuum no work.
    driver = restoring_driver(local)
    view = await with_drivers(runtime, drivers={"local": driver}).refresh(owner, name)
    cluster = driver._cluster(view.env.handle)

    async def configure(settings: list[tuple[str, str]]) -> None:
        admin = await cluster.connect()  # the maintenance database: not counted
        try:
            for setting, value in settings:
                await admin.execute(f"alter system set {setting} = {value}")
            await admin.execute("select pg_reload_conf()")
        finally:
            await admin.close()

    await configure([("autovacuum", "off"), ("timezone", "'Pacific/Kiritimati'")])  # UTC+14
    await asyncio.sleep(1.2)  # the restore's sessions reach the statistics
    before = await driver.activity(view.env.handle)
    quiet_since = datetime.now(UTC)
    await configure(
        [
            ("autovacuum", "on"),
            ("autovacuum_naptime", "1"),
            ("autovacuum_vacuum_threshold", "1"),
            ("autovacuum_vacuum_scale_factor", "0"),
            ("autovacuum_analyze_threshold", "1"),
            ("autovacuum_analyze_scale_factor", "0"),
        ]
    )
    # The freshly restored tables were never analyzed: autovacuum now works on them, in a
    # database nobody connects to. The probe must see nothing.
    for _ in range(6):
        await asyncio.sleep(0.8)
        reading = await driver.activity(view.env.handle)
        assert not reading.differs(before), "autovacuum must not look like use"
    check = await cluster.connect(view.env.database or name)  # counts, but comes after
    try:
        worked_at = await check.fetchval(
            "select max(greatest(last_autovacuum, last_autoanalyze)) from pg_stat_user_tables"
        )
    finally:
        await check.close()
    assert worked_at is not None and worked_at > quiet_since, "autovacuum ran meanwhile"

    service = service_with(runtime, idle_ttl=timedelta(hours=1))
    report = await reap_sweep(service, datetime.now(UTC), dry_run=True)
    verdict = next(v for v in report.verdicts if v.env.name == name)
    assert verdict.action.value == "keep"
    assert verdict.due_at > datetime.now(UTC) + timedelta(minutes=50)
    await runtime.service.destroy(owner, name)


async def test_a_reaped_environment_can_be_saved_and_brought_back(
    runtime: Runtime, demo_snapshot: Manifest
) -> None:
    told: list[str] = []

    async def notify(owner: str, *parts: Part) -> None:
        told.append(said(parts))

    service = service_with(runtime, idle_ttl=timedelta(minutes=1), save_before_reap=True)
    service.notify = notify
    owner, name = unique("saver"), unique("work")
    view = await service.refresh(owner, name)
    assert view.endpoint is not None
    conn = await asyncpg.connect(view.endpoint.dsn)
    try:
        await conn.execute("create table my_work (note text); insert into my_work values ('wip')")
    finally:
        await conn.close()
    later = datetime.now(UTC) + timedelta(hours=2)
    warned = await reap_sweep(service, later)
    assert name in warned.warned
    reaped = await reap_sweep(service, later + timedelta(minutes=31))
    assert name in reaped.reaped
    async with runtime.store.connection() as tx:
        entries = [r for r in await tx.audit_entries(name) if r["action"] == "reap"]
    assert [r["result"] for r in entries] == ["warned", "reaped"]
    snapshot = entries[-1]["detail"]["saved"]
    assert snapshot.startswith(f"saved-{view.env.id}-"), "the environment's id, not its name"
    assert any(snapshot in text for text in told)

    with pytest.raises(NotAllowed, match="saved work"):
        await service.refresh(unique("other"), unique("peek"), snapshot=snapshot)
    back = await service.refresh(owner, name, snapshot=snapshot)
    assert back.endpoint is not None
    conn = await asyncpg.connect(back.endpoint.dsn)
    try:
        assert await conn.fetchval("select note from my_work") == "wip"
    finally:
        await conn.close()
    assert (await runtime.snapshots.latest()).id != snapshot, "a saved snapshot is nobody's latest"
    await service.destroy(owner, name)
    await runtime.snapshots.delete(snapshot)


async def test_protection_and_keep(runtime: Runtime, demo_snapshot: Manifest) -> None:
    service = service_with(runtime, idle_ttl=timedelta(minutes=1), max_lease=timedelta(days=1))
    owner, name = unique("lease"), unique("lease")
    await service.refresh(owner, name)
    with pytest.raises(InvalidInput, match="at most 1d"):
        await service.protect(owner, name, timedelta(days=2))
    with pytest.raises(NotAllowed):
        await service.protect(unique("stranger"), name, timedelta(hours=1))
    await service.protect(owner, name, timedelta(hours=3))
    soon = datetime.now(UTC) + timedelta(hours=2)
    report = await reap_sweep(service, soon)
    assert name not in report.warned and name not in report.reaped
    after = datetime.now(UTC) + timedelta(hours=3, minutes=10)
    report = await reap_sweep(service, after)
    assert name in report.warned
    kept = await service.keep(owner, name, timedelta(hours=4))
    assert kept.warned_at is None and kept.last_active_at is not None
    await service.destroy(owner, name)


async def test_nightly_rebuild_announces_success_and_failure(
    runtime: Runtime, chinook_dsn: str
) -> None:
    said: list[str] = []

    async def announce(text: str) -> None:
        said.append(text)

    before = await runtime.snapshots.latest()
    manifest = await rebuild(
        runtime.service,
        source=chinook_dsn,
        policy_file=DATA / "chinook_policy.yml",
        programs=runtime.programs,
        salt=b"nightly-test",
        jobs=2,
        keep_last=50,
        announce=announce,
    )
    assert manifest is not None
    assert said[-1].startswith(f"New dev-safe snapshot {manifest.id}:")
    assert f"{manifest.rows:,} rows in {len(manifest.tables)} tables" in said[-1]
    assert (await runtime.snapshots.latest()).id == manifest.id
    local = runtime.service.drivers["local"]
    assert isinstance(local, LocalDriver) and local.golden is not None
    assert local.golden.ready(manifest.id) is not None, "its golden copy was made right away"

    failed = await rebuild(
        runtime.service,
        source="postgresql://nobody@127.0.0.1:1/none",
        policy_file=DATA / "chinook_policy.yml",
        programs=runtime.programs,
        salt=b"nightly-test",
        jobs=2,
        keep_last=50,
        announce=announce,
    )
    assert failed is None
    assert said[-1].startswith("The nightly snapshot failed:")
    assert f"snapshot {manifest.id} stays current" in said[-1]
    assert (await runtime.snapshots.latest()).id == manifest.id
    await runtime.snapshots.delete(manifest.id)
    assert (await runtime.snapshots.latest()).id == before.id


async def test_reap_and_protect_from_the_command_line(
    runtime: Runtime, demo_snapshot: Manifest, cli_env: dict[str, str]
) -> None:
    name = unique("cli-reap")
    await runtime.service.refresh("carol", name)
    dry = devdb(cli_env, "--json", "reap", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    data = json.loads(dry.stdout)
    assert data["dry_run"] is True and data["reaped"] == []
    assert any(v["name"] == name and v["action"] == "keep" for v in data["verdicts"])
    refused = devdb(cli_env, "reap")
    assert refused.returncode == 1 and "only an admin" in refused.stderr
    protect = devdb(cli_env, "protect", name, "1d")
    assert protect.returncode == 0 and "will not be reaped" in protect.stdout
    too_long = devdb(cli_env, "protect", name, "30d")
    assert too_long.returncode == 1 and "at most" in too_long.stderr
    await runtime.service.destroy("carol", name)


async def test_a_pooled_refresh_through_the_command_line(
    runtime: Runtime, demo_snapshot: Manifest, cli_env: dict[str, str]
) -> None:
    await pool_sweep(service_with(runtime, pool_size=1), datetime.now(UTC))
    name = unique("cli-warm")
    result = devdb(cli_env, "--json", "refresh", name)
    assert result.returncode == 0, result.stderr
    view = json.loads(result.stdout)
    assert view["state"] == "ready" and view["database"] == name and view["owner"] == "carol"
    conn = await asyncpg.connect(view["dsn"])
    try:
        assert await conn.fetchval("select current_database()") == name
    finally:
        await conn.close()
    async with runtime.store.connection() as tx:
        started = [
            r["detail"]
            for r in await tx.audit_entries(name)
            if r["action"] == "refresh" and r["result"] == "started"
        ]
    assert started[-1]["warm"] is True
    await runtime.service.destroy("carol", name)


async def test_scheduler_processes_fill_the_pool_and_keep_it_at_its_size(
    runtime: Runtime, demo_snapshot: Manifest, cli_env: dict[str, str]
) -> None:
    env = {**cli_env, "DEVDB_POOL_SIZE": "1", "DEVDB_POOL_EVERY": "2s"}
    replicas = [
        subprocess.Popen(
            [sys.executable, "-m", "bot.cli", "scheduler"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    try:
        deadline = time.monotonic() + 60
        ready: list[object] = []
        while time.monotonic() < deadline:
            async with runtime.store.connection() as tx:
                pool = await tx.live_environments(POOL_OWNER)
            ready = [e for e in pool if e.state == EnvState.READY]
            if ready:
                break
            await asyncio.sleep(0.5)
        assert len(ready) == 1
        await asyncio.sleep(5)  # both replicas take more turns; the pool stays at one
        async with runtime.store.connection() as tx:
            pool = await tx.live_environments(POOL_OWNER)
        assert len(pool) == 1, pool
    finally:
        for replica in replicas:
            replica.send_signal(signal.SIGTERM)
        outputs = [replica.communicate(timeout=30) for replica in replicas]
        await pool_sweep(service_with(runtime, pool_size=0), datetime.now(UTC))
    for replica, (_, err) in zip(replicas, outputs, strict=True):
        assert "Traceback" not in err, err
        assert "scheduler" in err
        assert replica.returncode in (0, 130)
