"""The service API against real PostgreSQL: refresh, replace, quota, authorisation, audit,
and bad input that must leave nothing behind."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
from collections.abc import Callable
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import asyncpg
import pytest

from provisioning.drivers.base import Placement
from provisioning.drivers.local import LocalDriver
from provisioning.errors import (
    Conflict,
    InvalidInput,
    MigrationFailed,
    MissingBinary,
    NotAllowed,
    NotFound,
    ProvisioningFailed,
    QuotaExceeded,
    SnapshotInvalid,
)
from provisioning.jobs import JobOptions
from provisioning.models import EnvState, ProgressEvent
from provisioning.pg.programs import PgPrograms
from provisioning.policy import Policy
from provisioning.runtime import Runtime
from provisioning.service import Service
from provisioning.snapshots.manifest import Manifest
from tests.conftest import unique


def restoring_driver(local: LocalDriver) -> LocalDriver:
    """The local driver without golden copies: every environment is a full restore."""
    return LocalDriver(
        local.clusters_dir,
        programs=local.programs,
        account=local.account,
        port_range=local.port_range,
    )


def service_with(runtime: Runtime, **changes: object) -> Service:
    """The session's service with a different policy, job options, drivers or snapshots."""
    base = runtime.service
    return Service(
        store=base.store,
        drivers=changes.pop("drivers", base.drivers),  # type: ignore[arg-type]
        snapshots=changes.pop("snapshots", base.snapshots),  # type: ignore[arg-type]
        secrets=base.secrets,
        policy=changes.pop("policy", base.policy),  # type: ignore[arg-type]
        job_options=changes.pop("job_options", base.job_options),  # type: ignore[arg-type]
    )


async def footprint(runtime: Runtime) -> tuple[int, int, set[str]]:
    """Rows in the state store and cluster directories on disk."""
    async with runtime.store.connection() as tx:
        envs = await tx.conn.fetchval("select count(*) from devdb.environments")
        jobs = await tx.conn.fetchval("select count(*) from devdb.jobs")
    local = runtime.service.drivers["local"]
    assert isinstance(local, LocalDriver)
    clusters = local.clusters_dir
    dirs = {p.name for p in clusters.iterdir()} if clusters.is_dir() else set()
    return envs, jobs, dirs


async def rows(dsn: str, table: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        count: int = await conn.fetchval(f"select count(*) from {table}")
        return count
    finally:
        await conn.close()


async def test_refresh_gives_a_connectable_copy(runtime: Runtime, demo_snapshot: Manifest) -> None:
    owner = unique("dev")
    events: list[ProgressEvent] = []
    view = await runtime.service.refresh(owner, snapshot=demo_snapshot.id, progress=events.append)
    assert view.env.state == EnvState.READY and view.endpoint is not None
    assert view.env.name == owner  # default name comes from the owner
    for table, entry in demo_snapshot.tables.items():
        assert await rows(view.endpoint.dsn, table) == entry.rows
    steps = [e.step.value for e in events]
    assert (
        steps.index("reserve")
        < steps.index("launch")
        < steps.index("restore")
        < steps.index("ready")
    )
    async with runtime.store.connection() as tx:
        job = await tx.latest_job(view.env.id)
        recorded = await tx.job_steps(job["id"])
        audit = await tx.audit_entries(view.env.name)
    assert job["state"] == "succeeded"
    assert recorded == [(s, "done") for s in ("reserve", "launch", "restore", "ready")]
    assert [(a["action"], a["result"]) for a in audit] == [
        ("refresh", "started"),
        ("refresh", "ready"),
    ]
    assert view.endpoint.password not in json.dumps([dict(a) for a in audit], default=str)
    await runtime.service.destroy(owner, view.env.name)


async def test_chinook_round_trip(runtime: Runtime, chinook_snapshot: Manifest) -> None:
    owner = unique("dev")
    view = await runtime.service.refresh(owner, "chinook", snapshot=chinook_snapshot.id)
    assert view.endpoint is not None
    assert chinook_snapshot.tables["public.track"].rows == 3503
    for table, entry in chinook_snapshot.tables.items():
        assert await rows(view.endpoint.dsn, table) == entry.rows
    conn = await asyncpg.connect(view.endpoint.dsn)
    try:
        fks = await conn.fetchval("select count(*) from pg_constraint where contype = 'f'")
    finally:
        await conn.close()
    assert fks == 11
    await runtime.service.destroy(owner, "chinook")


async def test_refresh_replaces_only_when_the_new_one_is_ready(
    runtime: Runtime, demo_snapshot: Manifest, chinook_snapshot: Manifest
) -> None:
    owner = unique("dev")
    name = unique("swap")
    # Restored, not cloned, so that the old environment is probed while the new one restores.
    local = runtime.service.drivers["local"]
    assert isinstance(local, LocalDriver)
    service = service_with(runtime, drivers={"local": restoring_driver(local)})
    first = await service.refresh(owner, name, snapshot=demo_snapshot.id)
    assert first.endpoint is not None
    old_dsn = first.endpoint.dsn
    restoring = asyncio.Event()
    served_during_restore: list[int] = []

    def watch(event: ProgressEvent) -> None:
        if event.step.value == "restore":
            restoring.set()

    async def probe_old() -> None:
        await restoring.wait()
        served_during_restore.append(await rows(old_dsn, "contacts"))

    second, _ = await asyncio.gather(
        service.refresh(owner, name, snapshot=chinook_snapshot.id, progress=watch),
        probe_old(),
    )
    assert served_during_restore[0] == demo_snapshot.tables["public.contacts"].rows
    assert second.endpoint is not None and second.endpoint.port != first.endpoint.port
    assert await rows(second.endpoint.dsn, "track") == 3503
    with pytest.raises((OSError, asyncpg.PostgresError)):
        await rows(old_dsn, "contacts")
    assert not await runtime.service.drivers["local"].is_running(first.env.handle)
    views = await runtime.service.list(owner)
    assert [(v.env.name, v.env.snapshot_id) for v in views] == [(name, chinook_snapshot.id)]
    await runtime.service.destroy(owner, name)


async def test_quota_counts_environments_not_refreshes(
    runtime: Runtime, demo_snapshot: Manifest
) -> None:
    owner = unique("dev")
    service = service_with(runtime, policy=Policy(quota=1))
    await service.refresh(owner, unique("one"), snapshot=demo_snapshot.id)
    envs = await service.list(owner)
    name = envs[0].env.name
    await service.refresh(owner, name, snapshot=demo_snapshot.id)  # a refresh, not a new one
    before = await footprint(runtime)
    with pytest.raises(QuotaExceeded, match="already has 1 environment"):
        await service.refresh(owner, unique("two"), snapshot=demo_snapshot.id)
    after = await footprint(runtime)
    assert after[2] == before[2]
    await service.destroy(owner, name)


async def test_authorisation_matrix(runtime: Runtime, demo_snapshot: Manifest) -> None:
    owner = unique("dev")
    name = unique("mine")
    service = runtime.service  # admins: boss
    await service.refresh(owner, name, snapshot=demo_snapshot.id)
    with pytest.raises(NotAllowed, match="only its owner or an admin may destroy"):
        await service.destroy("mallory", name)
    with pytest.raises(NotAllowed, match="may extend"):
        await service.extend("mallory", name, timedelta(hours=1))
    with pytest.raises(NotAllowed, match="may refresh"):
        await service.refresh("mallory", name, snapshot=demo_snapshot.id)
    status = await service.status("mallory", name)
    assert status.endpoint is None, "others never see the password"
    assert (await service.status(owner, name)).endpoint is not None

    extended = await service.extend("boss", name, timedelta(hours=1))
    assert extended.owner == owner
    mine = await service.extend(owner, name, timedelta(hours=2))
    assert mine.expires_at > extended.expires_at
    with pytest.raises(InvalidInput, match="maximum lifetime"):
        await service.extend(owner, name, timedelta(days=30))
    await service.destroy("boss", name)
    with pytest.raises(NotFound):
        await service.status(owner, name)
    async with service.store.connection() as tx:
        audit = [(a["actor"], a["action"], a["result"]) for a in await tx.audit_entries(name)]
    assert ("mallory", "destroy", "refused") in audit
    assert ("mallory", "extend", "refused") in audit
    assert ("boss", "extend", "extended") in audit
    assert ("boss", "destroy", "destroyed") in audit


async def test_two_concurrent_refreshes_of_one_name(
    runtime: Runtime, demo_snapshot: Manifest
) -> None:
    owner = unique("dev")
    name = unique("race")
    results = await asyncio.gather(
        runtime.service.refresh(owner, name, snapshot=demo_snapshot.id),
        runtime.service.refresh(owner, name, snapshot=demo_snapshot.id),
        return_exceptions=True,
    )
    errors = [r for r in results if isinstance(r, BaseException)]
    assert len(errors) == 1 and isinstance(errors[0], Conflict), results
    assert "already in progress" in str(errors[0])
    assert len(await runtime.service.list(owner)) == 1
    await runtime.service.destroy(owner, name)


async def test_unknown_snapshot_creates_nothing(runtime: Runtime) -> None:
    before = await footprint(runtime)
    with pytest.raises(NotFound, match="no snapshot 'does-not-exist'"):
        await runtime.service.refresh(unique("dev"), snapshot="does-not-exist")
    with pytest.raises(InvalidInput):
        await runtime.service.refresh(unique("dev"), snapshot="../etc")
    with pytest.raises(InvalidInput):
        await runtime.service.refresh(unique("dev"), "a;drop table")
    assert await footprint(runtime) == before


async def test_a_snapshot_from_a_newer_postgresql_is_refused_in_one_sentence(
    runtime: Runtime, demo_snapshot: Manifest
) -> None:
    root = runtime.settings.snapshots_dir
    copy_id = unique("future")
    shutil.copytree(root / demo_snapshot.id, root / copy_id)
    future = replace(demo_snapshot, id=copy_id, pg_version="99.1 (Debian 99.1-1)")
    (root / copy_id / "manifest.json").write_text(future.to_json())
    before = await footprint(runtime)
    with pytest.raises(ProvisioningFailed, match="comes from PostgreSQL 99, newer than the"):
        await runtime.service.refresh(unique("dev"), snapshot=copy_id)
    after = await footprint(runtime)
    assert after[2] == before[2], "no cluster directory is left"
    await runtime.snapshots.delete(copy_id)


@pytest.mark.parametrize("damage", ["flip", "truncate", "delete", "manifest"])
async def test_corrupt_snapshot_is_refused_and_creates_nothing(
    runtime: Runtime, demo_snapshot: Manifest, damage: str
) -> None:
    root = runtime.settings.snapshots_dir
    copy_id = unique("corrupt")
    shutil.copytree(root / demo_snapshot.id, root / copy_id)
    bad = replace(demo_snapshot, id=copy_id)
    (root / copy_id / "manifest.json").write_text(bad.to_json())
    data_file = root / copy_id / "dump" / next(e.file for e in bad.tables.values() if e.file)
    if damage == "flip":
        blob = bytearray(data_file.read_bytes())
        blob[len(blob) // 2] ^= 0xFF
        data_file.write_bytes(bytes(blob))
    elif damage == "truncate":
        data_file.write_bytes(data_file.read_bytes()[:-10])
    elif damage == "delete":
        data_file.unlink()
    else:
        (root / copy_id / "manifest.json").write_text("{not json")
    before = await footprint(runtime)
    try:
        with pytest.raises(SnapshotInvalid) as caught:
            await runtime.service.refresh(unique("dev"), snapshot=copy_id)
        assert "\n" not in str(caught.value)
        assert await footprint(runtime) == before
    finally:
        shutil.rmtree(root / copy_id)


async def test_missing_pg_restore_is_refused_before_anything_exists(
    runtime: Runtime, demo_snapshot: Manifest, tmp_path: Path
) -> None:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    real = PgPrograms()
    for program in ("initdb", "pg_ctl", "pg_dump"):
        os.symlink(real.path(program), bindir / program)
    local = runtime.service.drivers["local"]
    assert isinstance(local, LocalDriver)
    crippled = LocalDriver(
        local.clusters_dir,
        programs=PgPrograms(bindir),
        account=local.account,
        port_range=local.port_range,
    )
    before = await footprint(runtime)
    with pytest.raises(MissingBinary, match="pg_restore was not found"):
        await service_with(runtime, drivers={"local": crippled}).refresh(
            unique("dev"), snapshot=demo_snapshot.id
        )
    assert await footprint(runtime) == before


async def test_migrations_directory_is_applied_in_order(
    runtime: Runtime, demo_snapshot: Manifest, tmp_path: Path
) -> None:
    (tmp_path / "002_fill.sql").write_text("insert into feature_flags values ('dark_mode', true);")
    (tmp_path / "001_create.sql").write_text(
        "create table feature_flags (name text primary key, enabled boolean);"
        "alter table contacts add column nickname text;"
    )
    (tmp_path / "notes.txt").write_text("not a migration")
    options = JobOptions(restore_jobs=2, migrations_dir=tmp_path, migrations_command=None)
    owner = unique("dev")
    view = await service_with(runtime, job_options=options).refresh(
        owner, snapshot=demo_snapshot.id
    )
    assert view.endpoint is not None
    assert await rows(view.endpoint.dsn, "feature_flags") == 1
    async with runtime.store.connection() as tx:
        job = await tx.latest_job(view.env.id)
        assert ("migrate", "done") in await tx.job_steps(job["id"])
    await runtime.service.destroy(owner, view.env.name)


@pytest.mark.parametrize("hook", ["sql", "command"])
async def test_failed_migration_leaves_nothing(
    runtime: Runtime, demo_snapshot: Manifest, tmp_path: Path, hook: str
) -> None:
    (tmp_path / "001_broken.sql").write_text("alter table no_such_table add column x int;")
    options = JobOptions(
        restore_jobs=2,
        migrations_dir=tmp_path if hook == "sql" else None,
        migrations_command=None if hook == "sql" else "echo applying; exit 3",
    )
    before = await footprint(runtime)
    owner = unique("dev")
    message = "migration 001_broken.sql failed" if hook == "sql" else r"exit status 3\)"
    with pytest.raises(MigrationFailed, match=message) as failure:
        await service_with(runtime, job_options=options).refresh(owner, snapshot=demo_snapshot.id)
    # What it printed is for the owner alone: on the error, not in its message.
    private = "no_such_table" if hook == "sql" else "applying"
    assert private in failure.value.output and private not in str(failure.value)
    dirs = (await footprint(runtime))[2]
    assert dirs == before[2], "the half-made cluster was removed"
    assert await runtime.service.list(owner) == []
    async with runtime.store.connection() as tx:
        failed = await tx.conn.fetchrow(
            "select e.state, e.error, j.state as job from devdb.environments e"
            " join devdb.jobs j on j.environment_id = e.id where e.owner = $1",
            owner,
        )
    assert (failed["state"], failed["job"]) == ("failed", "failed")
    assert "failed" in failed["error"] and private not in failed["error"]


async def test_the_migrations_command_sees_only_what_it_needs(
    runtime: Runtime, demo_snapshot: Manifest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not devdb's own secrets: only the connection, PATH, HOME, LANG and what is listed."""
    monkeypatch.setenv("DEVDB_SLACK_BOT_TOKEN", "xoxb-secret")
    monkeypatch.setenv("DEVDB_MASK_SALT", "salt-secret")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "aws-secret")
    monkeypatch.setenv("APP_FEATURE", "on")
    seen = tmp_path / "env.txt"
    options = JobOptions(
        restore_jobs=2,
        migrations_dir=None,
        migrations_command=f"env > {seen}",
        migrations_env=("APP_FEATURE",),
    )
    owner = unique("dev")
    view = await service_with(runtime, job_options=options).refresh(
        owner, snapshot=demo_snapshot.id
    )
    names = {line.split("=", 1)[0] for line in seen.read_text().splitlines() if "=" in line}
    assert {"DATABASE_URL", "PGHOST", "PGPORT", "PGUSER", "PGPASSWORD", "PGDATABASE"} <= names
    assert {"PATH", "APP_FEATURE"} <= names
    assert not {"DEVDB_SLACK_BOT_TOKEN", "DEVDB_MASK_SALT", "AWS_SECRET_ACCESS_KEY"} & names
    assert not any(name.startswith(("DEVDB_", "AWS_")) for name in names)
    await runtime.service.destroy(owner, view.env.name)


async def test_destroying_what_does_not_exist(runtime: Runtime) -> None:
    with pytest.raises(NotFound, match="no environment named 'ghost'"):
        await runtime.service.destroy("alice", "ghost")
    with pytest.raises(InvalidInput):
        await runtime.service.destroy("alice", "../../x")


class PortSnatchingDriver(LocalDriver):
    """A local driver whose first launch finds its port taken by another program."""

    def __init__(self, base: LocalDriver) -> None:
        super().__init__(
            base.clusters_dir,
            programs=base.programs,
            account=base.account,
            port_range=base.port_range,
        )
        self.squatters: list[socket.socket] = []
        self.attempts: list[Placement] = []

    async def launch(
        self, placement: Placement, password: str, progress: Callable[[ProgressEvent], None]
    ) -> Placement:
        self.attempts.append(placement)
        if len(self.attempts) == 1:
            squatter = socket.socket()
            squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            squatter.bind(("127.0.0.1", placement.port))
            squatter.listen()
            self.squatters.append(squatter)
        return await super().launch(placement, password, progress)


async def test_port_taken_meanwhile_moves_to_another_port(
    runtime: Runtime, demo_snapshot: Manifest
) -> None:
    local = runtime.service.drivers["local"]
    assert isinstance(local, LocalDriver)
    snatching = PortSnatchingDriver(local)
    owner = unique("dev")
    try:
        view = await service_with(runtime, drivers={"local": snatching}).refresh(
            owner, snapshot=demo_snapshot.id
        )
    finally:
        for squatter in snatching.squatters:
            squatter.close()
    first, second = snatching.attempts
    assert view.endpoint is not None and view.endpoint.port == second.port != first.port
    assert not Path(first.handle["dir"]).exists(), "the failed attempt left nothing behind"
    assert await rows(view.endpoint.dsn, "tenants") == 10
    await runtime.service.destroy(owner, view.env.name)
