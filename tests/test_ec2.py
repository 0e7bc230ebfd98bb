"""EC2 environments through the service, against moto, instances played by this machine."""

from __future__ import annotations

import base64
import dataclasses
import shutil
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, timedelta
from typing import Any

import asyncpg
import pytest
from botocore.exceptions import ClientError
from moto.backends import get_backend
from moto.ec2.models.instances import StateReason

from bot.words import said
from provisioning.aws import fleet
from provisioning.aws.checks import ec2_checks
from provisioning.drivers.ec2 import Ec2Driver, volume_size
from provisioning.errors import DevdbError, InvalidInput, Part, ProvisioningFailed, QuotaExceeded
from provisioning.jobs import JobOptions
from provisioning.models import EnvState, ProgressEvent
from provisioning.runtime import Runtime
from provisioning.scheduler import Scheduler
from provisioning.service import Service
from provisioning.snapshots.local import LocalSnapshotStore
from provisioning.snapshots.manifest import Manifest
from tests.cloud import ACCOUNT, REGION
from tests.conftest import Cloud, Configured, unique
from tests.test_cli import devdb


def tagged(cloud: Cloud, name: str) -> dict[str, list[str]]:
    """Every live resource devdb made for environment `name`, by kind."""
    ec2, ssm = cloud.moto.client("ec2"), cloud.moto.client("ssm")
    env_tag = [{"Name": "tag:devdb:env", "Values": [name]}]
    instances = [
        instance["InstanceId"]
        for reservation in ec2.describe_instances(Filters=env_tag)["Reservations"]
        for instance in reservation["Instances"]
        if instance["State"]["Name"] not in ("terminated", "shutting-down")
    ]
    volumes = [v["VolumeId"] for v in ec2.describe_volumes(Filters=env_tag)["Volumes"]]
    templates = [
        t["LaunchTemplateName"]
        for t in ec2.describe_launch_templates(Filters=env_tag)["LaunchTemplates"]
    ]
    parameters = [
        p["Name"]
        for p in ssm.describe_parameters(
            ParameterFilters=[
                {"Key": "Name", "Option": "BeginsWith", "Values": [f"/devdb/{name}-"]}
            ]
        )["Parameters"]
    ]
    return {
        "instances": instances,
        "volumes": volumes,
        "templates": templates,
        "parameters": parameters,
    }


NOTHING = {"instances": [], "volumes": [], "templates": [], "parameters": []}


def client_error(code: str) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": f"injected {code}"}}, "Injected")


async def test_refresh_on_ec2_end_to_end(cloud: Cloud, demo_snapshot: Manifest) -> None:
    name = unique("cloud")
    events: list[ProgressEvent] = []
    view = await cloud.service.refresh(
        "erin", name, snapshot=demo_snapshot.id, kind="ec2", progress=events.append
    )
    assert view.env.kind == "ec2" and view.env.state == EnvState.READY
    assert view.endpoint is not None
    conn = await asyncpg.connect(view.endpoint.dsn)
    try:
        for table, entry in demo_snapshot.tables.items():
            assert await conn.fetchval(f"select count(*) from {table}") == entry.rows
    finally:
        await conn.close()
    steps = [e.step.value for e in events]
    assert {"launch", "restore", "ready"} <= set(steps)
    assert any("downloading snapshot" in e.message for e in events)

    ec2 = cloud.moto.client("ec2")
    handle = view.env.handle
    instance = ec2.describe_instances(InstanceIds=[handle["instance_id"]])["Reservations"][0][
        "Instances"
    ][0]
    tags = {t["Key"]: t["Value"] for t in instance["Tags"]}
    assert tags["devdb:managed"] == "true"
    assert tags["devdb:env"] == name and tags["devdb:owner"] == "erin"
    assert tags["devdb:expires"].startswith(view.env.expires_at.strftime("%Y-%m-%dT%H"))
    assert instance["InstanceType"] in cloud.settings.instance_types
    assert handle["spot_price"] is not None and handle["instance_type"]

    # What devdb asked EC2 for, as the launch template records it.
    template = ec2.describe_launch_template_versions(
        LaunchTemplateName=fleet.template_name(handle["token"]), Versions=["$Latest"]
    )["LaunchTemplateVersions"][0]["LaunchTemplateData"]
    assert template["MetadataOptions"]["HttpTokens"] == "required"
    assert template["MetadataOptions"]["InstanceMetadataTags"] == "enabled"
    data_volume = next(
        m for m in template["BlockDeviceMappings"] if m["DeviceName"] == fleet.DATA_DEVICE
    )
    assert data_volume["Ebs"]["VolumeType"] == "gp3"
    assert data_volume["Ebs"]["VolumeSize"] == volume_size(demo_snapshot)
    assert data_volume["Ebs"]["Encrypted"] is True
    volume_tags = next(
        spec["Tags"] for spec in template["TagSpecifications"] if spec["ResourceType"] == "volume"
    )
    assert {"Key": "devdb:managed", "Value": "true"} in volume_tags
    user_data = base64.b64decode(template["UserData"]).decode()
    assert view.endpoint.password not in user_data
    assert "DEVDB_AGENT_EXPIRY_GRACE=3600" in user_data  # the instance's own expiry
    assert handle["parameter"] in user_data
    group = ec2.describe_security_groups(GroupIds=template["SecurityGroupIds"])["SecurityGroups"][0]
    # The allowed network, and the VPC's own range, where the bot that polls the instance runs.
    vpc_cidr = ec2.describe_vpcs(VpcIds=[group["VpcId"]])["Vpcs"][0]["CidrBlock"]
    assert [
        (rule["FromPort"], rule["ToPort"], sorted(r["CidrIp"] for r in rule["IpRanges"]))
        for rule in group["IpPermissions"]
    ] == [(5432, 5432, sorted(["10.20.0.0/16", vpc_cidr]))]
    assert data_volume["Ebs"]["Throughput"] == fleet.gp3_throughput(volume_size(demo_snapshot))
    ssm = cloud.moto.client("ssm")
    parameter = ssm.get_parameter(Name=handle["parameter"])["Parameter"]
    assert parameter["Type"] == "SecureString"
    # Only this instance may read it: the instance policy matches this tag to its ARN.
    bound = ssm.list_tags_for_resource(ResourceType="Parameter", ResourceId=handle["parameter"])
    arn = f"arn:aws:ec2:{REGION}:{ACCOUNT}:instance/{handle['instance_id']}"
    assert {"Key": "devdb:instance", "Value": arn} in bound["TagList"]

    # Extending moves the tag the instance enforces its expiry by.
    extended = await cloud.service.extend("erin", name, timedelta(hours=2))
    instance = ec2.describe_instances(InstanceIds=[handle["instance_id"]])["Reservations"][0][
        "Instances"
    ][0]
    tags = {t["Key"]: t["Value"] for t in instance["Tags"]}
    assert tags["devdb:expires"] == extended.expires_at.astimezone(UTC).isoformat(
        timespec="seconds"
    )

    listed = {v.env.name: v for v in await cloud.service.list("erin")}
    assert listed[name].cost > 0
    assert listed[name].made == "restore"
    with pytest.raises(ProvisioningFailed, match="restored from S3, not made from a golden EBS"):
        await cloud.service.reset("erin", name)

    await cloud.service.destroy("erin", name)
    assert tagged(cloud, name) == NOTHING


async def test_a_failure_at_each_step_leaves_nothing_behind(
    cloud: Cloud, demo_snapshot: Manifest, monkeypatch: pytest.MonkeyPatch
) -> None:
    ec2 = cloud.driver.ec2

    def fail(code: str) -> Callable[..., Any]:
        def raiser(*args: Any, **kwargs: Any) -> Any:
            raise client_error(code)

        return raiser

    def refused_everywhere(code: str) -> Callable[[], None]:
        def inject() -> None:
            reply = {"Instances": [], "Errors": [{"ErrorCode": code, "ErrorMessage": "no"}]}
            monkeypatch.setattr(ec2, "create_fleet", lambda **_: reply)
            monkeypatch.setattr(ec2, "run_instances", fail(code))

        return inject

    def dies_at_once(reason: str | None) -> Callable[[], None]:
        def inject() -> None:
            real = fleet.request_instance

            def request(*args: Any, **kwargs: Any) -> tuple[str, str]:
                instance_id, kind = real(*args, **kwargs)
                cloud.moto.client("ec2").terminate_instances(InstanceIds=[instance_id])
                if reason:  # what EC2 says when EBS cannot use the KMS key
                    instance = get_backend("ec2")[ACCOUNT][REGION].get_instance(instance_id)
                    instance.state_reason = StateReason(f"{reason}: Client error", reason)
                return instance_id, kind

            monkeypatch.setattr(fleet, "request_instance", request)

        return inject

    injections: dict[str, tuple[Callable[[], None], str]] = {
        "password": (
            lambda: monkeypatch.setattr(
                cloud.ssm.client, "put_parameter", fail("AccessDeniedException")
            ),
            "could not be stored in SSM",
        ),
        "security group": (
            lambda: monkeypatch.setattr(
                ec2, "describe_security_groups", fail("UnauthorizedOperation")
            ),
            "EC2 refused the launch",
        ),
        "launch template": (
            lambda: monkeypatch.setattr(ec2, "create_launch_template", fail("LimitExceeded")),
            "EC2 refused the launch",
        ),
        "spot capacity": (
            refused_everywhere("InsufficientInstanceCapacity"),
            r"no spare capacity .*\(InsufficientInstanceCapacity\)",
        ),
        "spot quota": (
            refused_everywhere("MaxSpotInstanceCountExceeded"),
            r"quota is used up \(MaxSpotInstanceCountExceeded\).*Service Quotas",
        ),
        "encryption key": (
            refused_everywhere("KMS.DisabledException"),
            "EBS could not use its KMS key",
        ),
        "terminated before running": (dies_at_once(None), "before it started"),
        "dies with Client.InternalError": (
            dies_at_once("Client.InternalError"),
            "stopped at once .*KMS key",
        ),
    }
    for label, (inject, expected) in injections.items():
        name = unique("broken")
        with monkeypatch.context():
            inject()
            with pytest.raises(ProvisioningFailed, match=expected):
                await cloud.service.refresh("erin", name, snapshot=demo_snapshot.id, kind="ec2")
        monkeypatch.undo()
        assert tagged(cloud, name) == NOTHING, label
        async with cloud.service.store.connection() as tx:
            [env] = [e for e in await tx.live_environments("erin") if e.name == name] or [None]
        assert env is None, f"{label}: no live environment is left"


async def publish_corrupt(cloud: Cloud, snapshot: Manifest) -> Manifest:
    """A copy of `snapshot` in S3 with one data file overwritten: its checksum fails."""
    corrupt = replace(snapshot, id=unique("corrupt"))
    dump = await cloud.store.fetch(snapshot)
    staged = await cloud.store.staging()
    shutil.copytree(dump, staged / "dump")
    await cloud.store.publish(staged, corrupt)
    victim = next(name for name in corrupt.files if name != "toc.dat")
    cloud.moto.client("s3").put_object(
        Bucket=cloud.store.bucket, Key=cloud.store.key(corrupt.id, f"dump/{victim}"), Body=b"x"
    )
    return corrupt


async def test_a_failure_on_the_instance_leaves_nothing_behind(
    cloud: Cloud, demo_snapshot: Manifest
) -> None:
    # A corrupt snapshot: the instance's checksum check fails; the bot never downloads it.
    corrupt = await publish_corrupt(cloud, demo_snapshot)
    name = unique("corrupt")
    with pytest.raises(ProvisioningFailed, match=r"could not restore: .*corrupt"):
        await cloud.service.refresh("erin", name, snapshot=corrupt.id, kind="ec2")
    assert tagged(cloud, name) == NOTHING

    # Migrations that fail after the instance restored.
    failing = Service(
        store=cloud.service.store,
        drivers=cloud.service.drivers,
        snapshots=cloud.store,
        secrets=cloud.service.secrets,
        policy=cloud.service.policy,
        job_options=JobOptions(restore_jobs=2, migrations_dir=None, migrations_command="exit 3"),
    )
    name = unique("migrate")
    with pytest.raises(DevdbError, match="exit"):
        await failing.refresh("erin", name, snapshot=demo_snapshot.id, kind="ec2")
    assert tagged(cloud, name) == NOTHING


async def test_snapshots_that_are_not_in_s3_are_refused(
    cloud: Cloud, demo_snapshot: Manifest
) -> None:
    local = LocalSnapshotStore(cloud.store.cache / "elsewhere")
    with pytest.raises(InvalidInput, match="DEVDB_S3_BUCKET"):
        await cloud.driver.stage(local, demo_snapshot)


def spot_requests(instance_id: str) -> list[Any]:
    backend = get_backend("ec2")[ACCOUNT][REGION]
    return [r for r in backend.spot_instance_requests.values() if r.instance.id == instance_id]


async def notify_none(text: str) -> None:
    return None


@pytest.mark.parametrize("how", ["gone", "marked"])
async def test_an_interrupted_environment_is_reported_and_replaced(
    cloud: Cloud, demo_snapshot: Manifest, how: str, runtime: Runtime
) -> None:
    told: list[tuple[str, str]] = []

    async def notify(owner: str, *parts: Part) -> None:
        told.append((owner, said(parts)))

    service = Service(
        store=cloud.service.store,
        drivers=cloud.service.drivers,
        snapshots=cloud.store,
        secrets=cloud.service.secrets,
        policy=replace(cloud.service.policy, auto_replace=how == "marked"),
        job_options=cloud.service.job_options,
        notify=notify,
    )
    name = unique("spot")
    view = await service.refresh("erin", name, snapshot=demo_snapshot.id, kind="ec2")
    instance_id = view.env.handle["instance_id"]
    assert await service.check_interruptions() == []

    if how == "gone":
        cloud.moto.client("ec2").terminate_instances(InstanceIds=[instance_id])
        assert await service.check_interruptions() == [name]
    else:
        # The scheduler looks every minute where servers can be taken back (AWS warns two
        # minutes ahead), not only at reconciliation's 15.
        scheduler = Scheduler(dataclasses.replace(runtime, service=service), announce=notify_none)
        scheduler.start()
        # Its first look is due at once; paused, it cannot take the turn the sweep below
        # asks for (the two raced: whichever claimed the sweep first ran it, the other got
        # None, and the test failed when the background one won).
        scheduler.aps.pause()
        try:
            job = scheduler.aps.get_job("interruptions")
            assert job is not None and job.trigger.interval <= timedelta(minutes=1)
            [request] = spot_requests(instance_id)
            request._status_code = "marked-for-termination"
            assert await scheduler.run("interruptions") == [name]
        finally:
            scheduler.stop()

    async with service.store.connection() as tx:
        old = await tx.environment(view.env.id)
        audit = await tx.audit_entries(name)
    # Replaced at once with auto_replace; otherwise left for its owner to see.
    assert old.state == (EnvState.DESTROYED if how == "marked" else EnvState.INTERRUPTED)
    assert any(row["action"] == "interrupt" and row["actor"] == "devdb" for row in audit)
    assert told and told[0][0] == "erin" and "interrupted" in told[0][1]
    if how == "gone":
        assert "devdb refresh" in told[0][1]
        listed = {v.env.name: v.env.state for v in await service.list("erin")}
        assert listed[name] == EnvState.INTERRUPTED
        await service.destroy("erin", name)
    else:
        assert "is back" in told[-1][1]
        current = await service.status("erin", name)
        assert current.env.state == EnvState.READY
        assert current.env.handle["instance_id"] != instance_id
        await service.destroy("erin", name)
    assert tagged(cloud, name) == NOTHING


async def test_the_monthly_cap_refuses_new_cloud_environments(
    cloud: Cloud, demo_snapshot: Manifest
) -> None:
    first = unique("spend")
    await cloud.service.refresh("frank", first, snapshot=demo_snapshot.id, kind="ec2")
    team_policy = replace(
        cloud.service.policy, teams={"data": frozenset({"frank", "gina"})}, monthly_cap=None
    )
    probe = Service(
        store=cloud.service.store,
        drivers=cloud.service.drivers,
        snapshots=cloud.store,
        secrets=cloud.service.secrets,
        policy=team_policy,
        job_options=cloud.service.job_options,
    )
    team, spent = await probe.spent_this_month("gina", "ec2")
    assert team == "data" and spent > 0
    capped = Service(
        store=cloud.service.store,
        drivers=cloud.service.drivers,
        snapshots=cloud.store,
        secrets=cloud.service.secrets,
        policy=replace(team_policy, monthly_cap=spent / 2),
        job_options=cloud.service.job_options,
    )
    refused = unique("over")
    with pytest.raises(QuotaExceeded, match=r"team data has spent \$.* monthly cap on ec2"):
        await capped.refresh("gina", refused, snapshot=demo_snapshot.id, kind="ec2")
    assert tagged(cloud, refused) == NOTHING
    async with cloud.service.store.connection() as tx:
        audit = await tx.audit_entries(refused)
    assert [(row["result"], row["detail"]["reason"]) for row in audit] == [("refused", "budget")]
    await cloud.service.destroy("frank", first)


async def test_installations_in_one_account_see_and_clean_only_their_own(
    cloud: Cloud, demo_snapshot: Manifest
) -> None:
    """A staging bot, a second team or a CLI with its own state store share the account:
    each installation's reconciliation must never take the others' instances for orphans."""
    other = Ec2Driver(
        cloud.moto.client("ec2"),
        cloud.settings,
        snapshots=cloud.store,
        passwords=cloud.ssm,
        region=REGION,
        installation="staging",
        address=cloud.host.address,
        poll_seconds=0.2,
    )
    name = unique("mine")
    view = await cloud.service.refresh("erin", name, snapshot=demo_snapshot.id, kind="ec2")
    try:
        ec2 = cloud.moto.client("ec2")
        instance = ec2.describe_instances(InstanceIds=[view.env.handle["instance_id"]])[
            "Reservations"
        ][0]["Instances"][0]
        tags = {t["Key"]: t["Value"] for t in instance["Tags"]}
        assert tags[fleet.INSTALLATION_TAG] == cloud.driver.installation != "staging"
        ours = {cloud.driver.key(h) for h in await cloud.driver.inventory()}
        assert cloud.driver.key(view.env.handle) in ours
        assert await other.inventory() == [], "the other installation sees none of ours"
        assert await other.prune(set()) == []
        assert await cloud.driver.is_running(view.env.handle)
    finally:
        await cloud.service.destroy("erin", name)
    assert tagged(cloud, name) == NOTHING


async def test_a_failure_before_the_agent_reports_is_read_from_the_console(
    cloud: Cloud, demo_snapshot: Manifest, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The agent's first step, reading the password from SSM, is denied: no status can be
    written, so the reason reaches the user from the console, within a few polls."""
    elsewhere = f"/devdb/elsewhere-{unique('p')}/password"
    real_write = cloud.ssm.write

    async def misplaced(parameter: str, password: str) -> None:
        await real_write(elsewhere, password)  # the instance's parameter is never there

    async def unbound(parameter: str, instance_arn: str) -> None:
        return None  # there is nothing to give the instance

    monkeypatch.setattr(cloud.ssm, "write", misplaced)
    monkeypatch.setattr(cloud.ssm, "bind", unbound)
    name = unique("denied")
    started = time.monotonic()
    with pytest.raises(ProvisioningFailed) as failure:
        await cloud.service.refresh("erin", name, snapshot=demo_snapshot.id, kind="ec2")
    took = time.monotonic() - started
    message = str(failure.value)
    assert "failed as it started: the password could not be read from SSM" in message
    assert "ParameterNotFound" in message
    assert took < cloud.settings.boot_timeout.total_seconds() / 2, took
    await cloud.ssm.remove(elsewhere)
    assert tagged(cloud, name) == NOTHING


async def test_the_security_group_is_brought_to_the_settings_at_every_launch(
    cloud: Cloud,
) -> None:
    """A group a failed launch left without its rule, or one with a rule someone added, is
    repaired by the next launch's reconciling step; changed settings are applied."""
    ec2 = cloud.moto.client("ec2")
    net = fleet.network(ec2, cloud.settings)
    installation = unique("sg")
    group = fleet.security_group(ec2, cloud.settings, net, installation)

    def rules() -> set[tuple[int, str]]:
        found = ec2.describe_security_groups(GroupIds=[group])["SecurityGroups"][0]
        return {
            (rule["FromPort"], entry.get("CidrIp") or entry.get("GroupId"))
            for rule in found["IpPermissions"]
            for entry in [*rule.get("IpRanges", []), *rule.get("UserIdGroupPairs", [])]
        }

    wanted = {(5432, net.cidr), (5432, "10.20.0.0/16")}
    assert rules() == wanted
    # Half-made: the rule is gone; and someone opened SSH to the world.
    found = ec2.describe_security_groups(GroupIds=[group])["SecurityGroups"][0]
    ec2.revoke_security_group_ingress(GroupId=group, IpPermissions=found["IpPermissions"])
    ec2.authorize_security_group_ingress(
        GroupId=group,
        IpPermissions=[
            {
                "IpProtocol": "tcp",
                "FromPort": 22,
                "ToPort": 22,
                "IpRanges": [{"CidrIp": "0.0.0.0/0"}],
            }
        ],
    )
    assert fleet.security_group(ec2, cloud.settings, net, installation) == group
    assert rules() == wanted
    # The office network changes: the old one goes, the new one and the VPC stay.
    moved = cloud.settings.model_copy(update=dict(allow_cidr="192.168.7.0/24"))
    fleet.security_group(ec2, moved, net, installation)
    assert rules() == {(5432, net.cidr), (5432, "192.168.7.0/24")}
    ec2.delete_security_group(GroupId=group)


async def test_preflight_and_doctor_check_what_a_launch_needs(
    cloud: Cloud, cli_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The instance profile, the image in this region, and a DryRun launch: each failure is
    one sentence before anything is made."""
    assert [(name, ok) for name, ok, _ in await cloud.driver.diagnose()] == [
        ("instance profile", True),
        ("image", True),
        ("dry run", True),
    ]

    def with_settings(**changes: Any) -> Ec2Driver:
        return Ec2Driver(
            cloud.driver.ec2,
            cloud.settings.model_copy(update=changes),
            snapshots=cloud.store,
            passwords=cloud.ssm,
            region=REGION,
            installation=cloud.driver.installation,
        )

    # The image pipeline publishes the AMI id in SSM; EC2 and devdb read it from there.
    from_ssm = with_settings(ami="resolve:ssm:/devdb/ami-test")
    with pytest.raises(InvalidInput, match=r"could not be read .*ParameterNotFound.*deploy/image"):
        await from_ssm.preflight()
    cloud.moto.client("ssm").put_parameter(
        Name="/devdb/ami-test", Value="ami-12c6146b", Type="String", Overwrite=True
    )
    assert all(ok for _, ok, _ in await from_ssm.diagnose())
    no_profile = with_settings(instance_profile=None)
    with pytest.raises(InvalidInput, match="need an instance profile"):
        await no_profile.preflight()
    elsewhere = with_settings(ami="ami-0000000000000dead")
    with pytest.raises(InvalidInput, match="is not an image devdb can use in eu-west-1"):
        await elsewhere.preflight()
    denied = with_settings()
    monkeypatch.setattr(
        cloud.driver.ec2,
        "run_instances",
        lambda **_: (_ for _ in ()).throw(client_error("UnauthorizedOperation")),
    )
    checks = await denied.diagnose()
    assert checks[-1][:2] == ("dry run", False) and "AWS denied the launch" in checks[-1][2]
    # The command: one line per check, exit 1 on a failure (here only local is set up).
    result = devdb(cli_env, "doctor")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ok   local: ready" in result.stdout


async def test_a_failed_instance_can_be_kept_for_debugging(
    cloud: Cloud, demo_snapshot: Manifest, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DEVDB_EC2_KEEP_FAILED: the instance of a failed refresh stays (tagged devdb:kept, left
    alone by reconciliation, still bound by its own expiry); its template and password go."""
    monkeypatch.setattr(
        cloud.driver, "settings", cloud.settings.model_copy(update=dict(keep_failed=True))
    )
    corrupt = await publish_corrupt(cloud, demo_snapshot)
    name = unique("kept")
    with pytest.raises(ProvisioningFailed, match="could not restore"):
        await cloud.service.refresh("erin", name, snapshot=corrupt.id, kind="ec2")
    left = tagged(cloud, name)
    assert len(left["instances"]) == 1 and left["templates"] == [] and left["parameters"] == []
    ec2 = cloud.moto.client("ec2")
    instance = ec2.describe_instances(InstanceIds=left["instances"])["Reservations"][0][
        "Instances"
    ][0]
    assert {"Key": "devdb:kept", "Value": "failed"} in instance["Tags"]
    keys = {h.get("instance_id") for h in await cloud.driver.inventory()}
    assert left["instances"][0] not in keys, "reconciliation leaves it alone"
    ec2.terminate_instances(InstanceIds=left["instances"])


def fleet_checks(ec2: Any, cloud: Cloud, settings: Any) -> list[Any]:
    return ec2_checks(ec2, cloud.moto.client("ssm"), settings, REGION, None)


async def test_a_base_launch_template_is_extended_by_a_version_not_copied(
    cloud: Cloud, demo_snapshot: Manifest, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With DEVDB_EC2_LAUNCH_TEMPLATE each launch adds a version to the team's template
    (`SourceVersion`): the base's security groups, tags and disks stay beside devdb's, what
    devdb does not set is kept as EC2 has it, and destroy deletes only that version."""
    ec2 = cloud.moto.client("ec2")
    net = fleet.network(ec2, cloud.settings)
    team_group = ec2.create_security_group(
        GroupName=unique("team"), Description="the team's own rules", VpcId=net.vpc
    )["GroupId"]

    def base_template(**marked: str) -> str:
        return str(
            ec2.create_launch_template(
                LaunchTemplateName=unique("team-base"),
                LaunchTemplateData={
                    "ImageId": "ami-12c6146b",
                    "Monitoring": {"Enabled": True},
                    "SecurityGroupIds": [team_group],
                    "BlockDeviceMappings": [{"DeviceName": "/dev/xvda", "Ebs": {"VolumeSize": 30}}],
                    "TagSpecifications": [
                        {
                            "ResourceType": "instance",
                            "Tags": [
                                {"Key": "team", "Value": "data"},
                                {"Key": "devdb:owner", "Value": "spoofed"},
                            ],
                        }
                    ],
                },
                TagSpecifications=[
                    {"ResourceType": "launch-template", "Tags": fleet.tag_list(marked)}
                ],
            )["LaunchTemplate"]["LaunchTemplateId"]
        )

    # A base with network interfaces cannot take devdb's subnets: refused before a launch.
    with_nics = ec2.create_launch_template(
        LaunchTemplateName=unique("team-nics"),
        LaunchTemplateData={"NetworkInterfaces": [{"DeviceIndex": 0, "Groups": [team_group]}]},
        TagSpecifications=[
            {"ResourceType": "launch-template", "Tags": [{"Key": fleet.BASE_TAG, "Value": "true"}]}
        ],
    )["LaunchTemplate"]["LaunchTemplateId"]
    refused = fleet_checks(
        ec2, cloud, cloud.settings.model_copy(update=dict(launch_template=with_nics))
    )
    assert "describes network interfaces" in refused[0].detail
    ec2.delete_launch_template(LaunchTemplateId=with_nics)
    # devdb adds versions only to a template its owners marked for it.
    unmarked = base_template(team="data")
    refused = fleet_checks(
        ec2, cloud, cloud.settings.model_copy(update=dict(launch_template=unmarked))
    )
    assert f"needs the tag {fleet.BASE_TAG}=true" in refused[0].detail
    ec2.delete_launch_template(LaunchTemplateId=unmarked)
    base = base_template(team="data", **{fleet.BASE_TAG: "true"})
    based = cloud.settings.model_copy(update=dict(launch_template=base, ami=None))
    assert [c.detail for c in fleet_checks(ec2, cloud, based) if not c.ok] == []
    monkeypatch.setattr(cloud.driver, "settings", based)
    name = unique("based")
    view = await cloud.service.refresh("erin", name, snapshot=demo_snapshot.id, kind="ec2")
    try:
        assert view.endpoint is not None
        conn = await asyncpg.connect(view.endpoint.dsn)
        assert await conn.fetchval("select count(*) from tenants") > 0
        await conn.close()
        handle = view.env.handle
        instance = ec2.describe_instances(InstanceIds=[handle["instance_id"]])["Reservations"][0][
            "Instances"
        ][0]
        tags = {t["Key"]: t["Value"] for t in instance["Tags"]}
        assert tags["team"] == "data" and tags["devdb:owner"] == "erin"
        assert tags["devdb:env"] == name
        versions = ec2.describe_launch_template_versions(LaunchTemplateId=base)[
            "LaunchTemplateVersions"
        ]
        ours = [
            v
            for v in versions
            if v.get("VersionDescription") == fleet.version_label(handle["token"])
        ]
        assert len(ours) == 1 and not ours[0]["DefaultVersion"]
        data = ours[0]["LaunchTemplateData"]
        assert data["Monitoring"] == {"Enabled": True}  # kept from the source version
        assert data["ImageId"] == "ami-12c6146b"
        assert team_group in data["SecurityGroupIds"] and len(data["SecurityGroupIds"]) == 2
        assert {m["DeviceName"] for m in data["BlockDeviceMappings"]} == {
            "/dev/xvda",
            fleet.DATA_DEVICE,
        }
        assert tagged(cloud, name)["templates"] == [], "no template of its own"
    finally:
        await cloud.service.destroy("erin", name)
    left = ec2.describe_launch_template_versions(LaunchTemplateId=base)["LaunchTemplateVersions"]
    assert [v["VersionNumber"] for v in left] == [1], "only the team's own version is left"
    assert tagged(cloud, name) == NOTHING
    ec2.delete_launch_template(LaunchTemplateId=base)


def test_a_role_boundary_is_checked_before_a_launch(cloud: Cloud, configured: Configured) -> None:
    """DEVDB_EC2_ROLE_BOUNDARY: a malformed value is one sentence; a policy that does not
    exist fails preflight in one sentence; one that does passes."""
    with pytest.raises(InvalidInput, match="must be a managed policy's ARN"):
        configured({"DEVDB_EC2_ROLE_BOUNDARY": "devdb-boundary"})
    ec2, iam = cloud.moto.client("ec2"), cloud.moto.client("iam")
    missing = f"arn:aws:iam::{ACCOUNT}:policy/{unique('nope')}"
    settings = cloud.settings.model_copy(update=dict(instance_profile=None, role_boundary=missing))
    checks = ec2_checks(ec2, cloud.moto.client("ssm"), settings, REGION, None, iam=iam)
    failed = [c.detail for c in checks if not c.ok]
    assert len(failed) == 1 and "could not be read (NoSuchEntity)" in failed[0]
    arn = iam.create_policy(
        PolicyName=unique("boundary"),
        PolicyDocument='{"Version": "2012-10-17", "Statement": [{"Effect": "Allow", '
        '"Action": "s3:GetObject", "Resource": "*"}]}',
    )["Policy"]["Arn"]
    settings = settings.model_copy(update=dict(role_boundary=arn))
    checks = ec2_checks(ec2, cloud.moto.client("ssm"), settings, REGION, None, iam=iam)
    assert [c.detail for c in checks if not c.ok] == []
    iam.delete_policy(PolicyArn=arn)
