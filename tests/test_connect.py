"""`devdb connect`: the forward it runs, the tool it lacks, the local case."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

from provisioning.drivers.local import port_is_free
from provisioning.runtime import Runtime
from provisioning.snapshots.manifest import Manifest
from tests.cloud import REGION
from tests.conftest import Cloud, unique
from tests.ports import BASE
from tests.test_cli import devdb, psql

RECORDER = """#!/bin/sh
printf '%s\\n' "$0" "$@" > "$RECORD"
"""


def fake_tools(folder: Path, *names: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        path = folder / name
        path.write_text(RECORDER)
        path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return folder


def cloud_cli_env(
    cli_env: dict[str, str], cloud: Cloud, tools: Path, **extra: str
) -> dict[str, str]:
    return {
        **cli_env,
        **cloud.moto.env,
        "DEVDB_S3_BUCKET": cloud.store.bucket,
        "DEVDB_EC2_AMI": cloud.settings.ami or "",
        "DEVDB_AWS_REGION": REGION,
        "PATH": f"{tools}:{os.environ['PATH']}",
        "RECORD": str(tools / "record.txt"),
        **extra,
    }


def service_entry(path: Path, name: str) -> str:
    text = path.read_text()
    return text.split(f"[devdb-{name}]", 1)[1].split("\n[", 1)[0]


async def test_connect_forwards_a_cloud_environment_through_ssm_or_a_bastion(
    cloud: Cloud, demo_snapshot: Manifest, cli_env: dict[str, str], tmp_path: Path
) -> None:
    name = unique("remote")
    view = await cloud.service.refresh("carol", name, snapshot=demo_snapshot.id, kind="ec2")
    try:
        tools = fake_tools(tmp_path / "bin", "aws", "session-manager-plugin", "ssh")
        env = cloud_cli_env(cli_env, cloud, tools)
        result = devdb(env, "connect", name, "--port", "15999")
        assert result.returncode == 0, result.stderr
        argv = (tools / "record.txt").read_text().splitlines()
        assert argv[0].endswith("/aws")
        assert argv[1:3] == ["ssm", "start-session"]
        assert argv[argv.index("--target") + 1] == view.env.handle["instance_id"]
        assert argv[argv.index("--document-name") + 1] == "AWS-StartPortForwardingSession"
        parameters = json.loads(argv[argv.index("--parameters") + 1])
        assert parameters == {"portNumber": [str(view.env.port)], "localPortNumber": ["15999"]}
        entry = service_entry(Path(env["PGSERVICEFILE"]), name)
        assert "host=localhost" in entry and "port=15999" in entry

        bastion = devdb({**env, "DEVDB_BASTION": "ops@bastion.example"}, "connect", name)
        assert bastion.returncode == 0, bastion.stderr
        argv = (tools / "record.txt").read_text().splitlines()
        assert argv[0].endswith("/ssh")
        assert argv[1:] == [
            "-N",
            "-L",
            f"127.0.0.1:15432:{view.env.host}:{view.env.port}",
            "ops@bastion.example",
        ]

        no_plugin = fake_tools(tmp_path / "bin2", "aws")
        missing = devdb(cloud_cli_env(cli_env, cloud, no_plugin), "connect", name)
        assert missing.returncode == 1
        assert "session-manager-plugin" in missing.stderr and "not installed" in missing.stderr
        assert "aws ssm start-session" in missing.stdout, "the command is printed to run elsewhere"
        assert "Traceback" not in missing.stderr

        stranger = devdb({**env, "DEVDB_USER": "mallory"}, "connect", name)
        assert stranger.returncode == 1 and "only its owner" in stranger.stderr

        # devdb use: the stable entry, through the same SSM forward on the port given.
        used = devdb(env, "use", name, "--port", "15998")
        assert used.returncode == 0, used.stderr
        argv = (tools / "record.txt").read_text().splitlines()
        parameters = json.loads(argv[argv.index("--parameters") + 1])
        assert parameters == {"portNumber": [str(view.env.port)], "localPortNumber": ["15998"]}
        text = Path(env["PGSERVICEFILE"]).read_text()
        stable = text.split("[devdb]\n", 1)[1].split("\n[", 1)[0]
        assert "host=localhost" in stable and "port=15998" in stable
        without = devdb(env, "use", name)
        assert without.returncode == 1 and "give it a local port" in without.stderr
    finally:
        await cloud.service.destroy("carol", name)


async def test_connect_to_a_local_environment_says_it_is_already_local(
    runtime: Runtime, demo_snapshot: Manifest, cli_env: dict[str, str]
) -> None:
    name = unique("near")
    view = await runtime.service.refresh("carol", name)
    try:
        result = devdb(cli_env, "connect", name)
        assert result.returncode == 0, result.stderr
        assert f"127.0.0.1:{view.env.port}" in result.stdout
    finally:
        await runtime.service.destroy("carol", name)
    # A shared environment needs no forward either (it was sent `--target ""` once).
    shared = unique("sharedc")
    await runtime.service.refresh("carol", shared, kind="shared-db", snapshot=demo_snapshot.id)
    try:
        result = devdb(cli_env, "connect", shared)
        assert result.returncode == 0, result.stderr
        assert "reached directly" in result.stdout and "--target" not in result.stdout
        assert psql(cli_env, f"devdb-{shared}", "select count(*) > 0 from contacts") == "t"
    finally:
        await runtime.service.destroy("carol", shared)
    bad = devdb(cli_env, "connect", name, "--port", "99999")
    assert bad.returncode == 2 and "--port must be a port number" in bad.stderr


def test_ec2_without_aws_settings_says_what_to_set(cli_env: dict[str, str]) -> None:
    result = devdb(cli_env, "refresh", unique("nocloud"), "--ec2")
    assert result.returncode == 1
    assert "EC2 needs DEVDB_EC2_AMI or DEVDB_EC2_LAUNCH_TEMPLATE, and DEVDB_S3_BUCKET" in (
        result.stderr
    )
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


async def test_use_switches_one_stable_entry_between_environments(
    runtime: Runtime, demo_snapshot: Manifest, cli_env: dict[str, str]
) -> None:
    """`service=devdb` reaches a local environment, then a shared one; with --port the same
    localhost port is relayed to whichever was chosen."""
    here, there = unique("here"), unique("there")
    await runtime.service.refresh("carol", here, snapshot=demo_snapshot.id)
    await runtime.service.refresh("carol", there, kind="shared-db", snapshot=demo_snapshot.id)
    seen = "select current_database() || ':' || inet_server_port()"
    try:
        for name, kind in ((here, "local"), (there, "shared-db")):
            switched = devdb(cli_env, "use", name)
            assert switched.returncode == 0, switched.stderr
            status = await runtime.service.status("carol", name)
            assert status.endpoint is not None and status.env.kind == kind
            expected = f"{status.endpoint.database}:{status.endpoint.port}"
            assert psql(cli_env, "devdb", seen) == expected
        # One stable local port, relayed to the environment chosen.
        port = BASE + 516
        relay = subprocess.Popen(
            [sys.executable, "-m", "bot.cli", "use", here, "--port", str(port)],
            env=cli_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            deadline = time.monotonic() + 30
            while port_is_free(port):
                assert relay.poll() is None and time.monotonic() < deadline, relay.stderr
                await asyncio.sleep(0.1)
            local = await runtime.service.status("carol", here)
            assert local.endpoint is not None
            assert (
                psql(cli_env, "devdb", seen) == f"{local.endpoint.database}:{local.endpoint.port}"
            )
            entry = Path(cli_env["PGSERVICEFILE"]).read_text().split("[devdb]")[1]
            assert f"port={port}" in entry.split("[")[0]
        finally:
            relay.send_signal(signal.SIGTERM)
            relay.wait(timeout=30)
    finally:
        for name in (here, there):
            await runtime.service.destroy("carol", name)
