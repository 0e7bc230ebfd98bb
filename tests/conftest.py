"""Fixtures: one real DEVDB_HOME per test session, its control cluster, and real snapshots.

Every PostgreSQL server the tests start lives under that home and is stopped at the end.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import asyncpg
import pytest

from provisioning.aws.settings import AwsSettings
from provisioning.aws.ssm import SsmSecrets
from provisioning.demo import DEMO_DATABASE, generate
from provisioning.drivers.ec2 import Ec2Driver
from provisioning.dynamo.endpoint import LocalEndpoint
from provisioning.dynamo.policy import parse_dynamo_policy
from provisioning.dynamo.shrink import shrink_dynamo
from provisioning.dynamo.source import parse_source
from provisioning.pg.cluster import LocalCluster
from provisioning.pg.programs import ServerAccount, stop_servers_under
from provisioning.runtime import Runtime, open_runtime
from provisioning.secrets import Passwords
from provisioning.service import Service
from provisioning.settings import Settings
from provisioning.snapshots.dump import dump_snapshot
from provisioning.snapshots.manifest import Manifest
from provisioning.snapshots.s3 import S3SnapshotStore
from tests.cloud import REGION, InstanceHost, Moto, moto_server
from tests.ports import BASE

CHINOOK = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "chinook"
REALISTIC = Path(__file__).parent / "data" / "realistic.sql"
# Below 32768: the kernel never hands these out as ephemeral ports for outgoing connections.
PORTS = (BASE, BASE + 299)
SHARED_PORT = BASE + 360
DYNAMODB_PORT = BASE + 361


# Settings read the environment and devdb.toml: the suite sees neither the developer's
# DEVDB_* variables nor their config file (a test that wants some asks `configured`).
for _key in [key for key in os.environ if key.startswith("DEVDB_")]:
    del os.environ[_key]
os.environ["DEVDB_CONFIG"] = os.devnull


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


Configured = Callable[[dict[str, str]], Settings]


@pytest.fixture
def configured(monkeypatch: pytest.MonkeyPatch) -> Configured:
    """`Settings.from_env()` in a process whose DEVDB_* variables are exactly these."""

    def read(env: dict[str, str]) -> Settings:
        for key in [key for key in os.environ if key.startswith("DEVDB_")]:
            monkeypatch.delenv(key)
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        return Settings.from_env()

    return read


@pytest.fixture(scope="session")
def home() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="devdb-test-", dir="/tmp"))
    try:
        yield path
    finally:
        stop_servers_under(path)
        LocalEndpoint(path / "dynamodb", DYNAMODB_PORT).stop()
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def settings(home: Path) -> Settings:
    return Settings(
        home=home,
        user="alice",
        admins=frozenset({"boss"}),
        quota=2,
        port_range=PORTS,
        pg_service_file=home / "pg_service.conf",
        restore_jobs=2,
        shared_port=SHARED_PORT,
        dynamodb_port=DYNAMODB_PORT,
    )


@pytest.fixture(scope="session")
def cli_env(settings: Settings) -> dict[str, str]:
    """Environment for running the `devdb` command against the session's home."""
    return {
        **os.environ,
        "DEVDB_HOME": str(settings.home),
        "DEVDB_USER": "carol",
        "DEVDB_PORT_RANGE": f"{PORTS[0]}-{PORTS[1]}",
        "DEVDB_SHARED_PORT": str(SHARED_PORT),
        "DEVDB_DYNAMODB_PORT": str(DYNAMODB_PORT),
        "DEVDB_ADMINS": "boss",
        "PGSERVICEFILE": str(settings.pg_service_file),
    }


@pytest.fixture(scope="session")
async def runtime(settings: Settings) -> AsyncIterator[Runtime]:
    async with open_runtime(settings) as rt:
        yield rt


@pytest.fixture(scope="session")
async def demo_snapshot(runtime: Runtime) -> Manifest:
    await generate(runtime.server_dsn("postgres"), scale=1, progress=lambda _: None)
    return await dump_snapshot(
        runtime.server_dsn(DEMO_DATABASE), runtime.snapshots, runtime.programs
    )


@pytest.fixture(scope="session")
async def dynamo_snapshot(runtime: Runtime, moto: Moto) -> Manifest:
    """A masked DynamoDB snapshot in the runtime's store, shrunk from tables in moto."""
    from tests.test_dynamo_shrink import POLICY, production

    prefix = unique("prod").replace("-", "_") + "_"
    return await shrink_dynamo(
        production(moto, prefix),
        parse_source(f"dynamodb://{REGION}/{prefix}"),
        parse_dynamo_policy(POLICY),
        runtime.snapshots,
        salt=b"contract",
    )


@pytest.fixture(scope="session")
async def chinook_dsn(runtime: Runtime) -> str:
    """The Chinook sample database (a schema nobody here wrote), loaded once."""
    script = (CHINOOK / "Chinook_PostgreSql.sql").read_text()
    body = script.split("\\c chinook;", 1)[1]
    admin = await asyncpg.connect(runtime.server_dsn("postgres"))
    try:
        await admin.execute("drop database if exists chinook with (force)")
        await admin.execute("create database chinook")
    finally:
        await admin.close()
    conn = await asyncpg.connect(runtime.server_dsn("chinook"))
    try:
        await conn.execute(body)
    finally:
        await conn.close()
    return runtime.server_dsn("chinook")


@pytest.fixture(scope="session")
async def realistic_dsn(runtime: Runtime) -> str:
    """A database shaped like a real product's (tests/data/realistic.sql), loaded once."""
    admin = await asyncpg.connect(runtime.server_dsn("postgres"))
    try:
        await admin.execute("drop database if exists realistic with (force)")
        await admin.execute("create database realistic")
    finally:
        await admin.close()
    conn = await asyncpg.connect(runtime.server_dsn("realistic"))
    try:
        await conn.execute(REALISTIC.read_text())
    finally:
        await conn.close()
    return runtime.server_dsn("realistic")


@pytest.fixture(scope="session")
async def chinook_snapshot(runtime: Runtime, chinook_dsn: str) -> Manifest:
    return await dump_snapshot(chinook_dsn, runtime.snapshots, runtime.programs)


@pytest.fixture
async def scratch_copy(runtime: Runtime) -> AsyncIterator[Callable[..., Awaitable[str]]]:
    """Copies of a database (CREATE DATABASE … TEMPLATE) that a test may change; dropped after."""
    made: list[str] = []

    async def copy(template: str, setup: str = "") -> str:
        """A copy of `template`, with `setup` (SQL) run in it."""
        name = unique("scratch").replace("-", "_")
        admin = await asyncpg.connect(runtime.server_dsn("postgres"))
        try:
            await admin.execute(f'create database "{name}" template "{template}"')
        finally:
            await admin.close()
        made.append(name)
        if setup:
            conn = await asyncpg.connect(runtime.server_dsn(name))
            try:
                await conn.execute(setup)
            finally:
                await conn.close()
        return runtime.server_dsn(name)

    yield copy
    admin = await asyncpg.connect(runtime.server_dsn("postgres"))
    try:
        for name in made:
            await admin.execute(f'drop database if exists "{name}" with (force)')
    finally:
        await admin.close()


@pytest.fixture(scope="session")
def moto() -> Iterator[Moto]:
    """A moto server for the session; AWS tests use their own buckets and tags."""
    yield from moto_server()


@dataclass(frozen=True)
class Cloud:
    """EC2 environments against moto, their instances played by this machine."""

    moto: Moto
    host: InstanceHost
    settings: AwsSettings
    store: S3SnapshotStore
    ssm: SsmSecrets
    driver: Ec2Driver
    service: Service


@pytest.fixture(scope="session")
async def cloud(
    moto: Moto, runtime: Runtime, demo_snapshot: Manifest, settings: Settings
) -> AsyncIterator[Cloud]:
    s3 = moto.client("s3")
    bucket = unique("devdb-snapshots")
    s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": REGION})
    store = S3SnapshotStore(s3, bucket, cache=settings.home / "s3-cache")
    dump = await runtime.snapshots.fetch(demo_snapshot)
    staged = await store.staging()
    shutil.copytree(dump, staged / "dump")
    await store.publish(staged, demo_snapshot)

    # The instance profile the agent's role comes with (checked by preflight's dry run).
    moto.client("iam").create_instance_profile(InstanceProfileName="devdb-test-instance")
    aws = AwsSettings(
        region=REGION,
        bucket=bucket,
        ami="ami-12c6146b",
        instance_profile="devdb-test-instance",
        instance_types=("m6i.large", "m5.large"),
        allow_cidr="10.20.0.0/16",
        boot_timeout=timedelta(seconds=60),
        ready_timeout=timedelta(seconds=120),
    )
    ssm = SsmSecrets(moto.client("ssm"))
    host = InstanceHost(moto, settings.home / "instances")
    ec2 = moto.client("ec2")
    # moto's console output is a fixed sample; an instance's console here is its user data's
    # output, as cloud-init tees it to the console on EC2.
    ec2.get_console_output = lambda InstanceId, **_: {"Output": host.log(InstanceId)}
    driver = Ec2Driver(
        ec2,
        aws,
        snapshots=store,
        passwords=ssm,
        region=REGION,
        installation=await runtime.store.installation(),
        address=host.address,
        poll_seconds=0.2,
    )
    base = runtime.service
    service = Service(
        store=runtime.store,
        drivers={"local": base.drivers["local"], "ec2": driver},
        snapshots=store,
        secrets=Passwords(base.secrets.local, {"ec2": ssm}),
        policy=base.policy,
        job_options=base.job_options,
    )
    try:
        yield Cloud(moto, host, aws, store, ssm, driver, service)
    finally:
        host.close()


async def started_cluster(runtime: Runtime, port: int, password: str | None = None) -> LocalCluster:
    """A PostgreSQL cluster of the test's own on `port`, started (stop and remove it after);
    devdb's login given `password`, for connections over TCP."""
    cluster = LocalCluster(
        runtime.settings.home / unique("cluster"),
        port,
        programs=runtime.programs,
        account=ServerAccount.for_current_process(runtime.settings.server_user),
        durable=False,
    )
    await cluster.create()
    await cluster.start()
    if password:
        conn = await cluster.connect()
        try:
            await conn.execute(f"alter role devdb password '{password}'")
        finally:
            await conn.close()
    return cluster
