"""Golden copies on EC2: an EBS snapshot of a restored, cleanly stopped data volume, and
environments whose data volume is made from it; against moto, instances played here."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import asyncpg
import pytest

from provisioning.aws import fleet
from provisioning.aws.golden import BUILD_TAG, SNAPSHOT_TAG, builder_parameter
from provisioning.drivers.base import Placement
from provisioning.errors import InvalidInput, ProvisioningFailed
from provisioning.models import ProgressEvent
from provisioning.snapshots.manifest import Manifest
from tests.conftest import Cloud, Configured, unique
from tests.test_ec2 import NOTHING, publish_corrupt, tagged


def golden_snapshots(cloud: Cloud) -> list[dict[str, object]]:
    return list(
        cloud.moto.client("ec2").describe_snapshots(
            OwnerIds=["self"], Filters=[{"Name": f"tag:{SNAPSHOT_TAG}", "Values": ["*"]}]
        )["Snapshots"]
    )


async def test_environments_are_made_from_the_golden_ebs_snapshot(
    cloud: Cloud, demo_snapshot: Manifest, monkeypatch: pytest.MonkeyPatch
) -> None:
    ec2, ssm = cloud.moto.client("ec2"), cloud.moto.client("ssm")
    monkeypatch.setattr(
        cloud.driver, "settings", cloud.settings.model_copy(update=dict(volume_init_rate=200))
    )
    built: list[ProgressEvent] = []
    ebs = await cloud.driver.build_golden(demo_snapshot, built.append)
    try:
        (snapshot,) = golden_snapshots(cloud)
        assert snapshot["SnapshotId"] == ebs and snapshot["State"] == "completed"
        tags = {t["Key"]: t["Value"] for t in snapshot["Tags"]}  # type: ignore[attr-defined]
        assert tags[SNAPSHOT_TAG] == demo_snapshot.id and tags["devdb:managed"] == "true"
        assert any("downloading snapshot" in e.message for e in built), "the builder restored"
        # The builder is gone with its launch template and password.
        builder_filter = [{"Name": f"tag:{BUILD_TAG}", "Values": [demo_snapshot.id]}]
        builders = [
            i
            for r in ec2.describe_instances(Filters=builder_filter)["Reservations"]
            for i in r["Instances"]
        ]
        assert builders and all(i["State"]["Name"] == "terminated" for i in builders)
        assert ec2.describe_launch_templates(Filters=builder_filter)["LaunchTemplates"] == []
        parameters = ssm.describe_parameters(
            ParameterFilters=[{"Key": "Name", "Option": "BeginsWith", "Values": ["/devdb/golden-"]}]
        )["Parameters"]
        assert parameters == []
        # It is never built twice.
        booted = len(cloud.host.booted)
        await cloud.driver.prepare(cloud.store, demo_snapshot)
        assert len(cloud.host.booted) == booted

        # moto's instant fleets drop a launch template's block device mappings (EC2 keeps
        # them); its spot run_instances keeps them, so the fleet is made to find no capacity.
        monkeypatch.setattr(
            cloud.driver.ec2,
            "create_fleet",
            lambda **_: {"Instances": [], "Errors": [{"ErrorMessage": "no capacity"}]},
        )
        name = unique("gold")
        events: list[ProgressEvent] = []
        view = await cloud.service.refresh(
            "erin", name, snapshot=demo_snapshot.id, kind="ec2", progress=events.append
        )
        handle = view.env.handle
        assert handle["golden_ebs"] == ebs and handle["made"] == "clone"
        assert not any("downloading snapshot" in e.message for e in events)
        assert any("golden EBS snapshot" in e.message for e in events)
        template = ec2.describe_launch_template_versions(
            LaunchTemplateName=fleet.template_name(handle["token"]), Versions=["$Latest"]
        )["LaunchTemplateVersions"][0]["LaunchTemplateData"]
        (data,) = [
            m for m in template["BlockDeviceMappings"] if m["DeviceName"] == fleet.DATA_DEVICE
        ]
        assert data["Ebs"]["SnapshotId"] == ebs
        assert int(data["Ebs"]["VolumeInitializationRate"]) == 200
        assert template["InstanceInitiatedShutdownBehavior"] == "terminate"
        assert view.endpoint is not None
        conn = await asyncpg.connect(view.endpoint.dsn)
        try:
            for table, entry in demo_snapshot.tables.items():
                assert await conn.fetchval(f"select count(*) from {table}") == entry.rows
            assert await conn.fetchval("select current_database()") == name
            await conn.execute(
                "insert into tenants values (9999, 'Scratch', 'scratch', false, 'free', now())"
            )
            # Anyone may notify the agent's channel; without devdb's token in SSM it is
            # ignored, however often.
            await conn.execute(
                "select pg_notify('devdb_reset', md5(g::text)) from generate_series(1, 500) g"
            )
            await asyncio.sleep(3)
            assert await conn.fetchval("select count(*) from tenants where id = 9999") == 1
            # Reset: the instance swaps in a fresh copy of the golden data directory it kept.
            after, ended = await cloud.service.reset("erin", name)
            assert ended == 1 and after.endpoint == view.endpoint
        finally:
            await conn.close()
        again = await asyncpg.connect(view.endpoint.dsn)
        try:
            assert await again.fetchval("select count(*) from tenants where id = 9999") == 0
            assert await again.fetchval("select current_database()") == name
        finally:
            await again.close()
        # The agent serves the next reset too.
        _, ended = await cloud.service.reset("erin", name)
        assert ended == 0
        listed = {v.env.name: v for v in await cloud.service.list("erin")}
        assert listed[name].made == "clone (ebs snapshot)"
        await cloud.service.destroy("erin", name)
        assert tagged(cloud, name) == NOTHING
    finally:
        removed = await cloud.driver.prune(set())
    assert any(ebs in entry for entry in removed)
    assert golden_snapshots(cloud) == []


def test_the_volume_initialization_rate_is_checked(
    configured: Configured,
) -> None:
    with pytest.raises(InvalidInput, match="DEVDB_EC2_VOLUME_INIT_RATE must be a whole number"):
        configured({"DEVDB_EC2_VOLUME_INIT_RATE": "50"})
    assert configured({"DEVDB_EC2_VOLUME_INIT_RATE": "300"}).aws.volume_init_rate == 300


async def test_a_failed_golden_build_leaves_nothing_and_a_leaked_builder_is_pruned(
    cloud: Cloud, demo_snapshot: Manifest, monkeypatch: pytest.MonkeyPatch
) -> None:
    ec2, ssm = cloud.moto.client("ec2"), cloud.moto.client("ssm")

    def leftovers() -> dict[str, list[str]]:
        builders = [
            i["InstanceId"]
            for r in ec2.describe_instances(
                Filters=[
                    {"Name": f"tag:{BUILD_TAG}", "Values": ["*"]},
                    {"Name": "instance-state-name", "Values": ["pending", "running", "stopped"]},
                ]
            )["Reservations"]
            for i in r["Instances"]
        ]
        templates = ec2.describe_launch_templates(
            Filters=[{"Name": f"tag:{BUILD_TAG}", "Values": ["*"]}]
        )["LaunchTemplates"]
        parameters = ssm.describe_parameters(
            ParameterFilters=[{"Key": "Name", "Option": "BeginsWith", "Values": ["/devdb/golden-"]}]
        )["Parameters"]
        return {
            "builders": builders,
            "templates": [t["LaunchTemplateName"] for t in templates],
            "parameters": [p["Name"] for p in parameters],
            "snapshots": [str(s["SnapshotId"]) for s in golden_snapshots(cloud)],
        }

    empty: dict[str, list[str]] = {
        "builders": [],
        "templates": [],
        "parameters": [],
        "snapshots": [],
    }
    # A corrupt dump: the builder's agent fails its checksum and says so.
    corrupt = await publish_corrupt(cloud, demo_snapshot)
    with pytest.raises(ProvisioningFailed, match=r"golden copy could not be restored: .*corrupt"):
        await cloud.driver.build_golden(corrupt, lambda _: None)
    assert leftovers() == empty

    # A builder whose bot was killed: it is not an orphan environment (a build may take
    # longer than the orphan grace), and prune removes it once it is older than a build
    # could take.
    token = f"golden-{unique('leak')}"
    handle = {
        "token": token,
        "region": cloud.driver.region,
        "snapshot": demo_snapshot.id,
        "volume_gib": 20,
        "parameter": builder_parameter(token),
        "golden_build": True,
        "tags": {**fleet.managed(cloud.driver.installation), BUILD_TAG: demo_snapshot.id},
    }
    placement = Placement(
        handle=handle, host="pending", port=0, database="devdb_golden", user="dev"
    )
    launched = await cloud.driver.launch(placement, "secret-password", lambda _: None)
    keys = {cloud.driver.key(h) for h in await cloud.driver.inventory()}
    assert cloud.driver.key(launched.handle) not in keys
    assert await cloud.driver.prune({demo_snapshot.id}) == []  # young: it may be working
    monkeypatch.setattr(
        cloud.driver,
        "settings",
        cloud.settings.model_copy(
            update=dict(boot_timeout=timedelta(0), ready_timeout=timedelta(0))
        ),
    )
    assert await cloud.driver.prune({demo_snapshot.id}) == [launched.handle["instance_id"]]
    assert leftovers() == empty
