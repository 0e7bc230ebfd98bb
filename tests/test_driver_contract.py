"""The contract every driver passes. New drivers add themselves to `DRIVERS`."""

from __future__ import annotations

import asyncio
import random
import socket
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest

from provisioning.drivers.base import Activity, Driver, Placement
from provisioning.drivers.dynamodb import DynamoDriver
from provisioning.drivers.local import LocalDriver
from provisioning.errors import PortInUse
from provisioning.models import Environment, EnvState, ProgressEvent, TableSet
from provisioning.runtime import Runtime
from provisioning.secrets import new_password
from provisioning.snapshots.base import SnapshotStore
from provisioning.snapshots.manifest import Manifest
from tests.conftest import Cloud

DRIVERS = ["local", "ec2", "shared", "shared-db", "dynamodb"]


@pytest.fixture(params=DRIVERS)
def kit(request: pytest.FixtureRequest, runtime: Runtime) -> tuple[Driver, SnapshotStore]:
    """A driver and the snapshot store it restores from."""
    if request.param == "ec2":
        cloud: Cloud = request.getfixturevalue("cloud")
        return cloud.driver, cloud.store
    return runtime.service.drivers[request.param], runtime.snapshots


@pytest.fixture
def driver(kit: tuple[Driver, SnapshotStore]) -> Driver:
    return kit[0]


@pytest.fixture
def snapshot(driver: Driver, request: pytest.FixtureRequest) -> Manifest:
    """The demo snapshot of the driver's engine."""
    name = "dynamo_snapshot" if driver.engine == "dynamodb" else "demo_snapshot"
    value: Manifest = request.getfixturevalue(name)
    return value


def fake_env(kind: str, snapshot: Manifest) -> Environment:
    env_id = random.randint(10**6, 10**9)
    return Environment(
        id=env_id,
        name=f"contract-{env_id}",
        owner="contract",
        kind=kind,
        state=EnvState.PROVISIONING,
        snapshot_id=snapshot.id,
        handle={},
        host=None,
        port=None,
        database=None,
        user=None,
        created_at=datetime.now(UTC),
        ready_at=None,
        expires_at=datetime.now(UTC),
        last_active_at=None,
    )


def collect() -> tuple[list[ProgressEvent], Callable[[ProgressEvent], None]]:
    events: list[ProgressEvent] = []
    return events, events.append


async def connect(driver: Driver, placement: Placement, password: str) -> asyncpg.Connection:
    endpoint = await driver.endpoint(placement, password)
    return await asyncpg.connect(endpoint.dsn)


def dynamodb_client(driver: Driver) -> Any:
    assert isinstance(driver, DynamoDriver)
    return driver.clients("dynamodb")


async def check_tables(driver: Driver, placement: Placement, snapshot: Manifest) -> None:
    """Each of the snapshot's tables under the prefix, with its keys and every item."""
    tables = await driver.endpoint(placement, "")
    assert isinstance(tables, TableSet)
    prefix = placement.handle["prefix"]
    assert tables.tables == tuple(sorted(prefix + name for name in snapshot.tables))
    client = dynamodb_client(driver)
    for name, entry in snapshot.tables.items():
        shape = client.describe_table(TableName=prefix + name)["Table"]
        assert shape["KeySchema"] == snapshot.extra["tables"][name]["KeySchema"]
        items = await asyncio.to_thread(
            lambda t=prefix + name: sum(
                page["Count"] for page in client.get_paginator("scan").paginate(TableName=t)
            )
        )
        assert items == entry.rows


async def use_tables(driver: Driver, placement: Placement, first: Activity) -> None:
    """A read counts as use, and so does a write, through DynamoDB's consumed capacity."""
    client = dynamodb_client(driver)
    table = await driver.endpoint(placement, "")
    assert isinstance(table, TableSet)
    await asyncio.sleep(1.1)  # consumption counts from the second after the load
    client.scan(TableName=table.tables[0], Limit=1)
    read = await driver.activity(placement.handle)
    assert read.differs(first), "a read is use"
    assert not (await driver.activity(placement.handle)).differs(read)
    item = client.scan(TableName=table.tables[0], Limit=1)["Items"][0]
    client.put_item(TableName=table.tables[0], Item={**item, "note": {"S": "changed"}})
    written = await driver.activity(placement.handle)
    assert written.differs(read), "a write is use"
    client.execute_statement(Statement=f'SELECT * FROM "{table.tables[0]}"')
    assert (await driver.activity(placement.handle)).differs(written), "so is PartiQL"


async def test_place_creates_nothing(driver: Driver, snapshot: Manifest) -> None:
    before = await driver.inventory()
    await driver.place(fake_env(driver.kind, snapshot), set())
    assert await driver.inventory() == before


async def test_launch_restore_use_terminate(
    kit: tuple[Driver, SnapshotStore], snapshot: Manifest
) -> None:
    driver, snapshots = kit
    env = fake_env(driver.kind, snapshot)
    # As a refresh does it: the snapshot staged first, then placed, launched and restored. A
    # local environment is a clone of the snapshot's golden copy, made here if need be.
    dump = await driver.stage(snapshots, snapshot)
    if isinstance(driver, LocalDriver) and driver.golden is not None and dump is not None:
        await driver.golden.ensure(snapshot, dump, lambda _: None)
    placement = await driver.place(env, set())
    password = new_password()
    events, progress = collect()
    try:
        placement = await driver.launch(placement, password, progress)
        assert await driver.is_running(placement.handle)
        assert driver.key(placement.handle) in {driver.key(h) for h in await driver.inventory()}
        if driver.kind == "local":
            assert placement.handle["made"] == "clone"

        await driver.restore(placement, dump, snapshot, 2, progress)
        restore_events = [e for e in events if e.step.value == "restore"]
        assert restore_events[-1].percent == 100.0
        assert restore_events[-1].bytes_done == snapshot.data_bytes > 0
        percents = [e.percent for e in restore_events if e.percent is not None]
        assert percents == sorted(percents), "progress never goes backwards"

        if driver.engine == "dynamodb":
            await check_tables(driver, placement, snapshot)
            return
        conn = await connect(driver, placement, password)
        try:
            for table, entry in snapshot.tables.items():
                # Unqualified: a schema environment holds the public tables in its own schema.
                name = table.removeprefix("public.")
                assert await conn.fetchval(f"select count(*) from {name}") == entry.rows
            owner = await conn.fetchval(
                "select tableowner from pg_tables where tablename = 'contacts'"
            )
            assert owner == placement.user
            assert await conn.fetchval("show listen_addresses") == "127.0.0.1"
            assert (
                await conn.fetchval("select rolsuper from pg_roles where rolname = current_user")
                is False
            )
        finally:
            await conn.close()

        with pytest.raises(asyncpg.InvalidPasswordError):
            await connect(driver, placement, "wrong-password")
    finally:
        await driver.terminate(placement.handle)
    assert not await driver.is_running(placement.handle)
    assert driver.key(placement.handle) not in {driver.key(h) for h in await driver.inventory()}
    await driver.terminate(placement.handle)  # idempotent


async def test_activity_counts_clients_not_the_probe(
    kit: tuple[Driver, SnapshotStore], snapshot: Manifest
) -> None:
    driver, snapshots = kit
    env = fake_env(driver.kind, snapshot)
    placement = await driver.place(env, set())
    password = new_password()
    try:
        placement = await driver.launch(placement, password, lambda _: None)
        dump = await driver.stage(snapshots, snapshot)
        await driver.restore(placement, dump, snapshot, 2, lambda _: None)
        first = await driver.activity(placement.handle)
        again = await driver.activity(placement.handle)
        assert first.connections == again.connections == 0
        assert not again.differs(first), "the probe must not count as use"
        if driver.engine == "dynamodb":
            await use_tables(driver, placement, first)
            return
        conn = await connect(driver, placement, password)
        try:
            await conn.execute("create table t (x int)")
            await conn.execute("insert into t select generate_series(1, 10)")
            busy = await driver.activity(placement.handle)
        finally:
            await conn.close()
        assert busy.connections == 1 and busy.differs(first)
        await asyncio.sleep(1.2)  # the server publishes session statistics at most every second
        after = await driver.activity(placement.handle)
        assert after.connections == 0
        assert after.differs(first), "a session that came and went counts as use"
    finally:
        await driver.terminate(placement.handle)


async def test_terminate_a_handle_that_never_launched(driver: Driver, snapshot: Manifest) -> None:
    placement = await driver.place(fake_env(driver.kind, snapshot), set())
    await driver.terminate(placement.handle)
    await driver.terminate({})
    # A refresh killed before its placement was recorded leaves an empty handle behind.
    assert not await driver.is_running({})


async def test_port_taken_meanwhile_is_reported_and_leaves_nothing(
    driver: Driver, snapshot: Manifest
) -> None:
    if driver.kind != "local":
        pytest.skip("ports are a local concern")
    placement = await driver.place(fake_env(driver.kind, snapshot), set())
    with socket.socket() as squatter:
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.bind(("127.0.0.1", placement.port))
        squatter.listen()
        with pytest.raises(PortInUse, match=f"port {placement.port}"):
            await driver.launch(placement, new_password(), lambda _: None)
    await driver.terminate(placement.handle)
    assert driver.key(placement.handle) not in {driver.key(h) for h in await driver.inventory()}
