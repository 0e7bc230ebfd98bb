"""DynamoDB environments end to end: refresh, details, isolation, replacement, destroy, a
name that lands on someone else's table, AWS mode with capacity and an assumed role, a
refresh killed during the load."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import boto3
import pytest
from botocore.config import Config

from bot import views
from provisioning.drivers.base import Placement
from provisioning.drivers.dynamodb import DynamoDriver
from provisioning.drivers.local import LocalDriver
from provisioning.dynamo.endpoint import LocalEndpoint
from provisioning.dynamo.policy import parse_dynamo_policy
from provisioning.dynamo.shrink import shrink_dynamo
from provisioning.dynamo.source import parse_source
from provisioning.dynamo.wiring import dynamo_driver
from provisioning.errors import DevdbError
from provisioning.models import EnvState, ProgressEvent, TableSet
from provisioning.recovery import recover
from provisioning.runtime import Runtime
from provisioning.settings import Settings
from provisioning.snapshots.manifest import Manifest
from provisioning.snapshots.s3 import S3SnapshotStore
from tests.cloud import REGION, Moto
from tests.conftest import unique
from tests.test_cli import devdb
from tests.test_driver_contract import fake_env
from tests.test_dynamo_load import count
from tests.test_slack import free_port


def driver_of(runtime: Runtime) -> DynamoDriver:
    driver = runtime.service.drivers["dynamodb"]
    assert isinstance(driver, DynamoDriver)
    return driver


def parameters(driver: DynamoDriver, name: str) -> dict[str, str]:
    if driver.local is not None and not driver.local.running():
        return {}  # the embedded endpoint stopped with its last environment
    found = driver.clients("ssm").get_parameters_by_path(Path=f"/devdb/{name}/dynamodb/")
    return {p["Name"].rsplit("/", 1)[1]: p["Value"] for p in found["Parameters"]}


def tables_of(driver: DynamoDriver, prefix: str) -> list[str]:
    if driver.local is not None and not driver.local.running():
        return []
    names = driver.clients("dynamodb").list_tables()["TableNames"]
    return sorted(n for n in names if n.startswith(prefix))


async def test_refresh_details_isolation_and_destroy(
    runtime: Runtime, dynamo_snapshot: Manifest
) -> None:
    driver, service = driver_of(runtime), runtime.service
    client = driver.clients("dynamodb")
    alice, bob = unique("alice"), unique("bob")
    made = await service.refresh("alice", alice, kind="dynamodb")
    other = await service.refresh("bob", bob, kind="dynamodb")
    assert made.env.snapshot_id == dynamo_snapshot.id  # the latest DynamoDB snapshot
    tables = made.endpoint
    assert isinstance(tables, TableSet)
    prefix = f"dev_{alice}_"
    assert tables.prefix == prefix and tables.url == driver.url
    assert tables.tables == (prefix + "Accounts", prefix + "Events")
    assert tables.parameters == f"/devdb/{alice}/dynamodb/"
    assert parameters(driver, alice) == {
        "prefix": prefix,
        "region": driver.region,
        "endpoint": driver.url,
        "installation": driver.installation,
        "environment": str(made.env.id),
        "tables": f"{prefix}Accounts,{prefix}Events",
    }
    shape = client.describe_table(TableName=prefix + "Accounts")["Table"]
    assert [k["AttributeName"] for k in shape["KeySchema"]] == ["tenantId", "accountId"]
    assert shape["GlobalSecondaryIndexes"][0]["IndexName"] == "byEmail"
    assert shape["LocalSecondaryIndexes"][0]["IndexName"] == "byUsername"
    assert shape["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"  # the default
    for table, entry in dynamo_snapshot.tables.items():
        assert count(client, prefix + table) == entry.rows

    # Each sees its own tables: a write to alice's does not reach bob's.
    item = client.scan(TableName=prefix + "Accounts", Limit=1)["Items"][0]
    client.put_item(TableName=prefix + "Accounts", Item={**item, "accountId": {"S": "new"}})
    assert count(client, f"dev_{bob}_Accounts") == dynamo_snapshot.tables["Accounts"].rows
    status = await service.status("alice", alice)
    assert status.running is True and isinstance(status.endpoint, TableSet)
    assert status.to_dict()["prefix"] == prefix
    # list, in Slack and the terminal, says where the tables are
    listed = [v for v in await service.list("alice") if v.env.name == alice]
    assert f"{prefix}* at {driver.url}" in json.dumps(views.list_blocks(listed))
    assert (await service.status("carol", alice)).endpoint is None, "details for the owner only"

    await service.destroy("alice", alice)
    assert tables_of(driver, prefix) == [] and parameters(driver, alice) == {}
    assert len(tables_of(driver, f"dev_{bob}_")) == 2, "the other environment is untouched"
    assert await driver.is_running(other.env.handle)
    await service.destroy("bob", bob)
    assert tables_of(driver, f"dev_{bob}_") == [] and parameters(driver, bob) == {}
    assert driver.local is not None and not driver.local.running(), "stopped with the last one"


async def test_a_refresh_replaces_the_tables_in_place(
    runtime: Runtime, dynamo_snapshot: Manifest
) -> None:
    driver, service = driver_of(runtime), runtime.service
    name = unique("again")
    first = await service.refresh("alice", name, kind="dynamodb")
    client = driver.clients("dynamodb")
    client.delete_item(
        TableName=f"dev_{name}_Accounts",
        Key={
            k: v
            for k, v in client.scan(TableName=f"dev_{name}_Accounts", Limit=1)["Items"][0].items()
            if k in ("tenantId", "accountId")
        },
    )
    second = await service.refresh("alice", name, kind="dynamodb")
    assert second.env.id != first.env.id
    assert count(client, f"dev_{name}_Accounts") == dynamo_snapshot.tables["Accounts"].rows
    assert parameters(driver, name)["environment"] == str(second.env.id)
    assert [v.env.id for v in await service.list("alice") if v.env.name == name] == [second.env.id]
    await service.destroy("alice", name)
    assert tables_of(driver, f"dev_{name}_") == []


async def test_a_table_of_someone_else_is_refused_and_nothing_is_left(
    runtime: Runtime, dynamo_snapshot: Manifest
) -> None:
    driver, service = driver_of(runtime), runtime.service
    name = unique("squat")
    if driver.local is not None:
        await asyncio.to_thread(driver.local.ensure)
    client = driver.clients("dynamodb")
    squatter = f"dev_{name}_Events"
    client.create_table(
        TableName=squatter,
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    try:
        with pytest.raises(DevdbError) as refused:
            await service.refresh("alice", name, kind="dynamodb")
        assert str(refused.value) == (
            f"the table {squatter} already exists and belongs to nobody in devdb: "
            "choose another environment name."
        )
        assert tables_of(driver, f"dev_{name}_") == [squatter], "only the squatter's table"
        assert parameters(driver, name) == {}
        assert all(v.env.name != name for v in await service.list("alice"))
    finally:
        client.delete_table(TableName=squatter)


async def test_aws_mode_provisioned_capacity_through_an_assumed_role(
    moto: Moto, dynamo_snapshot: Manifest, runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Tables in another account (the role's), at 2 read and write units per table and
    index, and the parameters beside them."""
    for key, value in moto.env.items():
        monkeypatch.setenv(key, value)
    role = "arn:aws:iam::111122223333:role/devdb-tables"
    driver = dynamo_driver(
        Path("/nonexistent"),
        region=REGION,
        role_arn=role,
        capacity=2,
        port=1,
        installation="aws-test",
    )
    assert driver.local is None and driver.url is None
    env = fake_env("dynamodb", dynamo_snapshot)
    placement = await driver.place(env, set())
    assert placement.host == f"dynamodb.{REGION}.amazonaws.com" and placement.port == 443
    placement = await driver.launch(placement, "", lambda _: None)
    dump = await driver.stage(runtime.snapshots, dynamo_snapshot)
    await driver.restore(placement, dump, dynamo_snapshot, 2, lambda _: None)
    try:
        prefix = placement.handle["prefix"]
        mine = driver.clients("dynamodb")
        shape = mine.describe_table(TableName=prefix + "Accounts")["Table"]
        assert shape["TableArn"].split(":")[4] == "111122223333", "in the role's account"
        assert shape["ProvisionedThroughput"]["ReadCapacityUnits"] == 2
        assert (
            shape["GlobalSecondaryIndexes"][0]["ProvisionedThroughput"]["WriteCapacityUnits"] == 2
        )
        own_account = moto.client("dynamodb").list_tables()["TableNames"]
        assert prefix + "Accounts" not in own_account, "not in the bot's own account"
        assert (
            parameters(driver, env.name)["endpoint"] == f"https://dynamodb.{REGION}.amazonaws.com"
        )
        assert driver.key(placement.handle) in {driver.key(h) for h in await driver.inventory()}
    finally:
        await driver.terminate(placement.handle)
    assert not await driver.is_running(placement.handle)
    assert parameters(driver, env.name) == {}
    assert driver.key(placement.handle) not in {driver.key(h) for h in await driver.inventory()}


BULK = 10_000  # items: enough for the load to take a few seconds, to be killed during it


@pytest.fixture(scope="module")
async def bulk_snapshot(runtime: Runtime, moto: Moto) -> Manifest:
    client = moto.client("dynamodb")
    prefix = unique("bulk").replace("-", "_") + "_"
    client.create_table(
        TableName=prefix + "Readings",
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )

    def fill() -> None:
        for start in range(0, BULK, 25):
            batch = [
                {"PutRequest": {"Item": {"id": {"S": f"r{n:06d}"}, "value": {"N": str(n)}}}}
                for n in range(start, start + 25)
            ]
            client.batch_write_item(RequestItems={prefix + "Readings": batch})

    await asyncio.to_thread(fill)
    policy = {
        "version": 1,
        "engine": "dynamodb",
        "tables": {"Readings": {"attributes": {"id": "internal", "value": "internal"}}},
    }
    return await shrink_dynamo(
        client,
        parse_source(f"dynamodb://{REGION}/{prefix}"),
        parse_dynamo_policy(policy),
        runtime.snapshots,
        salt=b"bulk",
    )


async def test_a_refresh_killed_during_the_load_is_cleaned_up_on_next_start(
    runtime: Runtime, cli_env: dict[str, str], bulk_snapshot: Manifest
) -> None:
    driver = driver_of(runtime)
    name = unique("killed")
    table = f"dev_{name}_Readings"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bot.cli",
            "refresh",
            name,
            "--dynamodb",
            "--snapshot",
            bulk_snapshot.id,
        ],
        env=cli_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 60
        while not (table in tables_of(driver, table) and count(driver.clients("dynamodb"), table)):
            assert proc.poll() is None, proc.stderr.read()  # type: ignore[union-attr]
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    loaded = count(driver.clients("dynamodb"), table)
    assert 0 < loaded < BULK, f"killed during the load ({loaded} of {BULK} items)"
    report = await recover(runtime.store, runtime.service.drivers, runtime.service.secrets)
    assert len(report.abandoned_jobs) == 1
    assert tables_of(driver, f"dev_{name}_") == [] and parameters(driver, name) == {}
    assert all(v.env.name != name for v in await runtime.service.list("carol"))
    # The name is free again, and a refresh of it has every item.
    view = await runtime.service.refresh("carol", name, snapshot=bulk_snapshot.id, kind="dynamodb")
    assert count(driver.clients("dynamodb"), table) == BULK
    assert view.env.state == EnvState.READY
    listed = devdb(cli_env, "list")
    assert f"{name}: tables dev_{name}_* at {driver.url}" in listed.stdout
    await runtime.service.destroy("carol", name)


async def test_a_large_snapshot_in_s3_is_imported_by_dynamodb(
    moto: Moto, runtime: Runtime, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ImportTable reads the snapshot's files from S3: nothing is downloaded, the tables
    have their keys, global index, TTL and tags, and every item."""
    for key, value in moto.env.items():
        monkeypatch.setenv(key, value)
    client = moto.client("dynamodb")
    prefix = unique("imp").replace("-", "_") + "_"
    client.create_table(
        TableName=prefix + "Devices",
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
        AttributeDefinitions=[
            {"AttributeName": "id", "AttributeType": "S"},
            {"AttributeName": "model", "AttributeType": "S"},
        ],
        GlobalSecondaryIndexes=[
            {
                "IndexName": "byModel",
                "KeySchema": [{"AttributeName": "model", "KeyType": "HASH"}],
                "Projection": {"ProjectionType": "ALL"},
            }
        ],
        BillingMode="PAY_PER_REQUEST",
    )
    client.update_time_to_live(
        TableName=prefix + "Devices",
        TimeToLiveSpecification={"Enabled": True, "AttributeName": "expiresAt"},
    )
    for n in range(300):
        item = {
            "id": {"S": f"d{n:04d}"},
            "model": {"S": f"m{n % 7}"},
            "expiresAt": {"N": "4102444800"},
            "owner": {"M": {"email": {"S": f"owner{n}@corp.example"}}},
        }
        client.put_item(TableName=prefix + "Devices", Item=item)
    s3 = moto.client("s3")
    bucket = unique("devdb-imports")
    s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": REGION})
    store = S3SnapshotStore(s3, bucket, cache=settings.home / "import-cache")
    policy = {
        "version": 1,
        "engine": "dynamodb",
        "tables": {
            "Devices": {
                "attributes": {
                    "id": "internal",
                    "model": "public",
                    "expiresAt": "internal",
                    "owner": {
                        "class": "pii",
                        "rule": "json",
                        "paths": {"$.email": {"rule": "fake", "kind": "email"}},
                    },
                }
            }
        },
    }
    manifest = await shrink_dynamo(
        client,
        parse_source(f"dynamodb://{REGION}/{prefix}"),
        parse_dynamo_policy(policy),
        store,
        salt=b"import",
    )
    driver = dynamo_driver(
        Path("/nonexistent"),
        region=REGION,
        role_arn=None,
        capacity=0,
        port=1,
        installation="import-test",
        snapshots=store,
        import_above_mb=0,
    )
    shutil.rmtree(settings.home / "import-cache", ignore_errors=True)
    assert await driver.stage(store, manifest) is None, "DynamoDB reads it from S3 itself"
    env = fake_env("dynamodb", manifest)
    placement = await driver.launch(await driver.place(env, set()), "", lambda _: None)
    events: list[ProgressEvent] = []
    try:
        await driver.restore(placement, None, manifest, 2, events.append)
        await asyncio.sleep(0)
        table = placement.handle["prefix"] + "Devices"
        assert count(client, table) == 300
        shape = client.describe_table(TableName=table)["Table"]
        assert shape["GlobalSecondaryIndexes"][0]["IndexName"] == "byModel"
        ttl = client.describe_time_to_live(TableName=table)["TimeToLiveDescription"]
        assert ttl["AttributeName"] == "expiresAt"
        item = client.get_item(TableName=table, Key={"id": {"S": "d0001"}})["Item"]
        assert item["owner"]["M"]["email"]["S"].endswith("@example.com"), "masked"
        assert any("imported from S3" in e.message for e in events)
        assert parameters(driver, env.name).keys() == {
            "prefix",
            "region",
            "endpoint",
            "installation",
            "environment",
            "tables",
        }, "the import's list of untagged tables is gone once they are tagged"
        assert not (settings.home / "import-cache").exists(), "nothing downloaded"
    finally:
        await driver.terminate(placement.handle)
    assert tables_of(driver, placement.handle["prefix"]) == []


async def test_a_table_deleted_during_the_load_fails_the_refresh_cleanly(
    runtime: Runtime, bulk_snapshot: Manifest
) -> None:
    """Someone deletes a table while devdb loads it: one sentence, and nothing is left."""
    driver = driver_of(runtime)
    name = unique("vanish")
    table = f"dev_{name}_Readings"
    refresh = asyncio.create_task(
        runtime.service.refresh("dora", name, snapshot=bulk_snapshot.id, kind="dynamodb")
    )
    client = driver.clients("dynamodb")
    deadline = time.monotonic() + 60
    while not (table in tables_of(driver, table) and count(client, table)):
        assert not refresh.done() and time.monotonic() < deadline
        await asyncio.sleep(0.05)
    client.delete_table(TableName=table)
    with pytest.raises(DevdbError) as failed:
        await refresh
    assert str(failed.value) == f"the table {table} disappeared while its items were being loaded."
    assert tables_of(driver, f"dev_{name}_") == [] and parameters(driver, name) == {}
    assert all(v.env.name != name for v in await runtime.service.list("dora"))


def aws_driver(moto: Moto, installation: str) -> DynamoDriver:
    """The driver as on AWS (no embedded endpoint), in moto's account."""
    clients = {service: moto.client(service) for service in ("dynamodb", "ssm", "cloudwatch")}
    return DynamoDriver(clients.__getitem__, region=REGION, url=None, installation=installation)


async def made(
    driver: DynamoDriver, name: str, env_id: int, snapshot: Manifest, runtime: Runtime
) -> Placement:
    env = replace(fake_env("dynamodb", snapshot), name=name, id=env_id)
    placement = await driver.launch(await driver.place(env, set()), "", lambda _: None)
    dump = await driver.stage(runtime.snapshots, snapshot)
    await driver.restore(placement, dump, snapshot, 2, lambda _: None)
    return placement


async def test_another_installation_keeps_its_tables_and_parameters(
    moto: Moto, runtime: Runtime, dynamo_snapshot: Manifest
) -> None:
    """Two installations in one account, with the same environment ids: `a` of one and
    `a_b` of the other share a table prefix, and `shop` a parameters path."""
    ours, theirs = aws_driver(moto, unique("x")), aws_driver(moto, unique("y"))
    stem = unique("a").replace("-", "_")
    env_id = 7_000_000 + int(stem[-4:], 16) % 1000
    mine = await made(ours, stem, env_id, dynamo_snapshot, runtime)
    other = await made(theirs, stem + "_b", env_id, dynamo_snapshot, runtime)
    await ours.terminate(mine.handle)
    assert tables_of(theirs, f"dev_{stem}_b_") == [f"dev_{stem}_b_Accounts", f"dev_{stem}_b_Events"]
    assert await theirs.is_running(other.handle)
    assert ours.key(other.handle) not in {ours.key(h) for h in await ours.inventory()}
    # A refresh of a name whose parameters are another installation's is refused at once.
    env = replace(fake_env("dynamodb", dynamo_snapshot), name=stem + "_b", id=env_id + 1)
    placement = await ours.place(env, set())
    with pytest.raises(DevdbError) as refused:
        await ours.launch(placement, "", lambda _: None)
    assert str(refused.value) == (
        f"the parameters under /devdb/{stem}_b/dynamodb/ belong to another devdb installation: "
        "choose another environment name."
    )
    await ours.terminate(placement.handle)  # as the refresh's cleanup does
    assert parameters(theirs, stem + "_b")["environment"] == str(env_id)
    await theirs.terminate(other.handle)
    assert tables_of(theirs, f"dev_{stem}_b_") == []


async def test_a_cancelled_load_stops_before_the_cleanup(
    runtime: Runtime, bulk_snapshot: Manifest
) -> None:
    """Ctrl-C during the load: the writing stops, then the cleanup runs, and no table is
    made after it."""
    driver = driver_of(runtime)
    name = unique("cancel")
    table = f"dev_{name}_Readings"
    refresh = asyncio.create_task(
        runtime.service.refresh("erin", name, snapshot=bulk_snapshot.id, kind="dynamodb")
    )
    deadline = time.monotonic() + 60
    while not (table in tables_of(driver, table) and count(driver.clients("dynamodb"), table)):
        assert not refresh.done() and time.monotonic() < deadline
        await asyncio.sleep(0.05)
    refresh.cancel()
    with pytest.raises(asyncio.CancelledError):
        await refresh
    await asyncio.sleep(1.0)
    assert tables_of(driver, f"dev_{name}_") == [] and parameters(driver, name) == {}


async def test_aws_out_of_reach_is_one_sentence_and_holds_up_nothing_else(
    runtime: Runtime, dynamo_snapshot: Manifest
) -> None:
    gone = f"http://127.0.0.1:{free_port()}"
    config = Config(retries={"max_attempts": 1}, connect_timeout=1)
    session = boto3.session.Session(
        aws_access_key_id="x", aws_secret_access_key="x", region_name=REGION
    )
    driver = DynamoDriver(
        lambda service: session.client(service, endpoint_url=gone, config=config),
        region=REGION,
        url=None,
        installation="unreachable",
    )
    handle = {"env": 1, "name": "n", "prefix": "dev_n_", "region": REGION, "url": None}
    for call in (driver.terminate(handle), driver.inventory(), driver.preflight()):
        with pytest.raises(DevdbError) as failed:
            await call
        said = str(failed.value)
        assert "\n" not in said and ("could not" in said or "cannot be reached" in said), said
    with pytest.raises(DevdbError):  # not a no: a no would get it marked lost
        await driver.is_running(handle)
    drivers = {**runtime.service.drivers, "dynamodb": driver}
    report = await recover(runtime.store, drivers, runtime.service.secrets)
    assert report is not None  # the other kinds were recovered; nothing was raised


def test_the_embedded_endpoint_starts_once_when_asked_at_once(tmp_path: Path) -> None:
    """Two launches at the same moment start one endpoint; stopping it leaves none."""
    local = LocalEndpoint(tmp_path / "dynamodb", free_port())

    def launch(_: int) -> tuple[str, int | None]:
        with local.lock():
            return local.ensure(), local.pid()

    try:
        with ThreadPoolExecutor(2) as pool:
            answers = list(pool.map(launch, range(2)))
        assert answers[0] == answers[1] and answers[0][1] is not None
        assert local.running()
    finally:
        with local.lock():
            local.stop()
    assert not local.running() and local.pid() is None


async def test_the_nightly_rebuild_takes_a_dynamodb_source(
    runtime: Runtime,
    moto: Moto,
    demo_snapshot: Manifest,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """DEVDB_SOURCE_URL=dynamodb://…: the nightly shrink publishes a DynamoDB snapshot, the
    latest of its engine, and no PostgreSQL golden copy is attempted for it."""
    from provisioning.nightly import rebuild
    from tests.test_dynamo_shrink import POLICY, production

    for key, value in moto.env.items():
        monkeypatch.setenv(key, value)
    prefix = unique("nightly").replace("-", "_") + "_"
    production(moto, prefix)
    policy = tmp_path / "policy.yml"
    policy.write_text(json.dumps(POLICY))  # YAML reads JSON
    said: list[str] = []

    async def announce(text: str) -> None:
        said.append(text)

    postgres_before = await runtime.snapshots.latest()
    manifest = await rebuild(
        runtime.service,
        source=f"dynamodb://{REGION}/{prefix}",
        policy_file=policy,
        programs=runtime.programs,
        salt=b"nightly",
        jobs=2,
        keep_last=50,
        announce=announce,
    )
    try:
        assert manifest is not None and manifest.extra["engine"] == "dynamodb"
        assert said[-1].startswith(f"New dev-safe snapshot {manifest.id}:")
        assert (await runtime.snapshots.latest("dynamodb")).id == manifest.id
        assert (await runtime.snapshots.latest()).id == postgres_before.id
        local = runtime.service.drivers["local"]
        assert isinstance(local, LocalDriver) and local.golden is not None
        assert local.golden.ready(manifest.id) is None
    finally:
        if manifest is not None:
            await runtime.snapshots.delete(manifest.id)


async def test_two_launches_at_once_in_one_process_both_finish(
    runtime: Runtime, dynamo_snapshot: Manifest
) -> None:
    """The endpoint's lock is taken off the event loop: two refreshes in one bot do not
    wait on each other forever."""
    driver = driver_of(runtime)
    envs = [fake_env("dynamodb", dynamo_snapshot) for _ in range(2)]
    placements = [await driver.place(env, set()) for env in envs]
    launched = await asyncio.wait_for(
        asyncio.gather(*(driver.launch(p, "", lambda _: None) for p in placements)), 30
    )
    for placement in launched:
        assert await driver.is_running(placement.handle)
        await driver.terminate(placement.handle)


async def test_reconciling_during_a_replacement_marks_nothing_lost(
    runtime: Runtime, bulk_snapshot: Manifest, dynamo_snapshot: Manifest
) -> None:
    """While a refresh replaces a DynamoDB environment in place, the old one has no tables:
    the reconcile sweep leaves it to the refresh instead of calling it lost."""
    from provisioning.sweeps import reconcile_sweep

    driver, service = driver_of(runtime), runtime.service
    name = unique("inplace")
    old = await service.refresh("fay", name, snapshot=dynamo_snapshot.id, kind="dynamodb")
    refresh = asyncio.create_task(
        service.refresh("fay", name, snapshot=bulk_snapshot.id, kind="dynamodb")
    )
    table = f"dev_{name}_Readings"
    deadline = time.monotonic() + 60
    while table not in tables_of(driver, table):  # the old tables are gone by now
        assert not refresh.done() and time.monotonic() < deadline
        await asyncio.sleep(0.05)
    assert not await driver.is_running(old.env.handle)
    done = await reconcile_sweep(service, datetime.now(UTC))
    assert name not in done["lost"]
    new = await refresh
    assert await driver.is_running(new.env.handle)
    assert parameters(driver, name)["environment"] == str(new.env.id)
    await service.destroy("fay", name)
