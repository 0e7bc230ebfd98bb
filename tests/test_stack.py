"""deploy/cloudformation.yaml: linted, deployed into moto's CloudFormation, and EC2
environments made and removed with nothing but the stack's outputs as settings."""

from __future__ import annotations

import io
import json
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import yaml

from bot.connect import forward_for
from provisioning.aws import fleet, roles
from provisioning.aws.settings import AwsSettings
from provisioning.aws.ssm import SsmSecrets
from provisioning.drivers import ec2 as ec2_driver
from provisioning.drivers.ec2 import Ec2Driver
from provisioning.errors import ProvisioningFailed
from provisioning.models import EnvState
from provisioning.service import Service
from provisioning.snapshots.manifest import Manifest
from provisioning.snapshots.s3 import S3SnapshotStore
from tests.cloud import REGION
from tests.conftest import Cloud, unique
from tests.test_cli import devdb
from tests.test_ec2 import NOTHING, tagged

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = ROOT / "deploy" / "cloudformation.yaml"
IMAGE = ROOT / "deploy" / "image.yaml"


class _Loader(yaml.SafeLoader):
    """YAML with CloudFormation's short tags (!Ref, !Sub, …) read as plain values."""


def _tag(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> Any:
    if isinstance(node, yaml.ScalarNode):
        return {suffix: loader.construct_scalar(node)}
    if isinstance(node, yaml.SequenceNode):
        return {suffix: loader.construct_sequence(node, deep=True)}
    return {suffix: loader.construct_mapping(node, deep=True)}  # type: ignore[arg-type]


_Loader.add_multi_constructor("!", _tag)


def actions(document: dict[str, Any]) -> set[str]:
    found: set[str] = set()
    for statement in document["Statement"]:
        listed = statement["Action"]
        found |= {listed} if isinstance(listed, str) else set(listed)
    return found


def test_the_templates_pass_cfn_lint() -> None:
    lint = shutil.which("cfn-lint", path=str(Path(sys.executable).parent)) or "cfn-lint"
    for template in (TEMPLATE, IMAGE):
        result = subprocess.run([lint, str(template)], capture_output=True, text=True, check=False)
        assert result.returncode == 0, result.stdout + result.stderr


def test_the_image_component_installs_what_the_agent_needs() -> None:
    """Packer is not installable here; the Image Builder component document (a string cfn-lint
    does not look into) is checked for its shape and for what the agent relies on."""
    resources = yaml.load(IMAGE.read_text(), Loader=_Loader)["Resources"]
    document = yaml.safe_load(resources["Component"]["Properties"]["Data"]["Sub"])
    assert document["schemaVersion"] == 1.0
    phases = {phase["name"]: phase["steps"] for phase in document["phases"]}
    assert set(phases) == {"build", "validate"}
    for steps in phases.values():
        for step in steps:
            assert step["action"] == "ExecuteBash" and step["inputs"]["commands"], step
    build = "\n".join(c for step in phases["build"] for c in step["inputs"]["commands"])
    validate = "\n".join(c for step in phases["validate"] for c in step["inputs"]["commands"])
    assert "postgresql${PostgresMajor}-server" in build and "python3.11" in build
    assert "xfsprogs" in build  # reflink data volumes for resets
    assert "ln -sf /opt/devdb/bin/devdb /usr/local/bin/devdb" in build  # on cloud-init's PATH
    assert "devdb help" in validate and "pg_restore --version" in validate
    ssm = resources["Distribution"]["Properties"]["Distributions"][0]
    assert ssm["SsmParameterConfigurations"][0]["ParameterName"] == "/devdb/ami"


def test_the_stacks_roles_grant_what_the_docs_policies_do() -> None:
    """tests/test_iam.py checks docs/*.json against the code; this ties the stack to them."""
    resources = yaml.load(TEMPLATE.read_text(), Loader=_Loader)["Resources"]
    for role, doc in (("BotRole", "iam-policy.json"), ("InstanceRole", "instance-policy.json")):
        (policy,) = resources[role]["Properties"]["Policies"]
        documented = json.loads((ROOT / "docs" / doc).read_text())
        assert actions(policy["PolicyDocument"]) == actions(documented), role
    # The boundary allows what the shared instance role does; each own role, no more.
    boundary = resources["InstanceRoleBoundary"]["Properties"]["PolicyDocument"]
    documented_instance = json.loads((ROOT / "docs" / "instance-policy.json").read_text())
    assert actions(boundary) == actions(documented_instance)
    own = roles.instance_policy(
        partition="aws", region=REGION, bucket="b", snapshot_prefix="p/", parameters=["/x"]
    )
    assert actions(own) <= actions(boundary)
    # An instance reads only the parameters tagged with its own ARN.
    (instance_policy,) = resources["InstanceRole"]["Properties"]["Policies"]
    reads = next(
        s
        for s in instance_policy["PolicyDocument"]["Statement"]
        if "ssm:GetParameter" in s["Action"]
    )
    condition = reads["Condition"]["StringEquals"]["ssm:resourceTag/devdb:instance"]
    assert condition == "${ec2:SourceInstanceARN}"
    documented = json.loads((ROOT / "docs" / "instance-policy.json").read_text())
    assert any(s.get("Condition") == reads["Condition"] for s in documented["Statement"])
    # devdb connect: sessions to the developer's own instances only, by tag, port forwarding.
    connect = resources["DeveloperConnectPolicy"]["Properties"]["PolicyDocument"]["Statement"]
    own = next(s for s in connect if s["Sid"] == "OwnInstancesOnly")
    assert own["Action"] == ["ssm:StartSession"]
    assert own["Condition"]["StringEquals"]["ssm:resourceTag/devdb:owner"] == "${aws:username}"
    document = next(s for s in connect if s["Sid"] == "PortForwardingOnly")
    assert "AWS-StartPortForwardingSession" in document["Resource"]["Sub"]


async def test_environments_run_on_the_stacks_outputs(
    cloud: Cloud, demo_snapshot: Manifest, monkeypatch: pytest.MonkeyPatch
) -> None:
    ec2 = cloud.moto.client("ec2")
    vpc = ec2.describe_vpcs(Filters=[{"Name": "isDefault", "Values": ["true"]}])["Vpcs"][0]
    subnets = ec2.describe_subnets(Filters=[{"Name": "vpc-id", "Values": [vpc["VpcId"]]}])
    tables = ec2.describe_route_tables(Filters=[{"Name": "vpc-id", "Values": [vpc["VpcId"]]}])
    formation = cloud.moto.client("cloudformation")
    name = unique("devdb")
    formation.create_stack(
        StackName=name,
        TemplateBody=TEMPLATE.read_text(),
        Capabilities=["CAPABILITY_NAMED_IAM"],
        Parameters=[
            {"ParameterKey": "VpcId", "ParameterValue": vpc["VpcId"]},
            {"ParameterKey": "VpcCidr", "ParameterValue": vpc["CidrBlock"]},
            {
                "ParameterKey": "SubnetIds",
                "ParameterValue": ",".join(s["SubnetId"] for s in subnets["Subnets"]),
            },
            {
                "ParameterKey": "RouteTableIds",
                "ParameterValue": ",".join(t["RouteTableId"] for t in tables["RouteTables"]),
            },
        ],
    )
    stack = formation.describe_stacks(StackName=name)["Stacks"][0]
    assert stack["StackStatus"] == "CREATE_COMPLETE", stack.get("StackStatusReason")
    outputs = {o["OutputKey"]: o["OutputValue"] for o in stack["Outputs"]}

    s3 = cloud.moto.client("s3")
    settings = AwsSettings(
        region=REGION,
        bucket=outputs["BucketName"],
        kms_key=outputs["KeyArn"],
        ami="ami-12c6146b",
        instance_types=cloud.settings.instance_types,
        role_boundary=outputs["InstanceRoleBoundaryArn"],  # a role of its own per instance
        security_group=outputs["SecurityGroupId"],
        interruption_queue=outputs["InterruptionQueueUrl"],
        boot_timeout=cloud.settings.boot_timeout,
        ready_timeout=cloud.settings.ready_timeout,
    )
    store = S3SnapshotStore(
        s3, settings.bucket or "", cache=cloud.store.cache / name, kms_key=settings.kms_key
    )
    dump = await cloud.store.fetch(demo_snapshot)
    staged = await store.staging()
    shutil.copytree(dump, staged / "dump")
    await store.publish(staged, demo_snapshot)
    passwords = SsmSecrets(cloud.moto.client("ssm"), kms_key=settings.kms_key)
    driver = Ec2Driver(
        cloud.driver.ec2,
        settings,
        snapshots=store,
        passwords=passwords,
        region=REGION,
        installation=cloud.driver.installation,
        address=cloud.host.address,
        poll_seconds=0.2,
        sqs=cloud.moto.client("sqs"),
        iam=cloud.moto.client("iam"),
    )
    base = cloud.service
    service = Service(
        store=base.store,
        drivers={"ec2": driver},
        snapshots=store,
        secrets=base.secrets.__class__(base.secrets.local, {"ec2": passwords}),
        policy=base.policy,
        job_options=base.job_options,
    )
    env = unique("stacked")
    # IAM makes a new instance profile known to EC2 after a few seconds: until then EC2
    # refuses it (moto knows it at once), and devdb tries again.
    real_request = fleet.request_instance
    refused: list[str] = []

    def not_yet(*args: Any, **kwargs: Any) -> Any:
        if not refused:
            refused.append("once")
            raise ProvisioningFailed(
                "EC2 refused the launch (InvalidParameterValue: Value (devdb-env-x) for "
                "parameter iamInstanceProfile.name is invalid. Invalid IAM Instance Profile name)."
            )
        return real_request(*args, **kwargs)

    monkeypatch.setattr(fleet, "request_instance", not_yet)
    monkeypatch.setattr(ec2_driver, "PROFILE_WAIT", 0.1)
    view = await service.refresh("erin", env, snapshot=demo_snapshot.id, kind="ec2")
    assert refused == ["once"]
    try:
        assert view.endpoint is not None
        conn = await asyncpg.connect(view.endpoint.dsn)
        try:
            assert await conn.fetchval("select count(*) from contacts") == 2000
        finally:
            await conn.close()
        template = view.env.handle["token"]
        data = ec2.describe_launch_template_versions(
            LaunchTemplateName=f"devdb-{template}", Versions=["$Latest"]
        )["LaunchTemplateVersions"][0]["LaunchTemplateData"]
        assert data["SecurityGroupIds"] == [outputs["SecurityGroupId"]]
        # The instance's own role: this snapshot and these parameters, within the boundary.
        own = roles.role_name(view.env.handle["token"])
        assert data["IamInstanceProfile"]["Name"] == own
        iam = cloud.moto.client("iam")
        role = iam.get_role(RoleName=own)["Role"]
        assert role["Path"] == "/devdb/"
        assert role["PermissionsBoundary"]["PermissionsBoundaryArn"] == settings.role_boundary
        policy = iam.get_role_policy(RoleName=own, PolicyName=roles.POLICY_NAME)
        statements = {s["Sid"]: s for s in policy["PolicyDocument"]["Statement"]}
        snapshot_prefix = store.key(demo_snapshot.id)
        assert statements["ItsSnapshot"]["Resource"].endswith(
            f":::{store.bucket}/{snapshot_prefix}*"
        )
        assert [r.rsplit("parameter", 1)[1] for r in statements["ItsParameters"]["Resource"]] == [
            view.env.handle["parameter"],
            view.env.handle["parameter"].rsplit("/", 1)[0] + "/reset",
        ]
        profiles = iam.list_instance_profiles_for_role(RoleName=own)["InstanceProfiles"]
        assert [p["InstanceProfileName"] for p in profiles] == [own]

        # devdb connect: the session the developer policy allows (their own instance by its
        # devdb:owner tag, the port-forwarding document).
        resources = yaml.load(TEMPLATE.read_text(), Loader=_Loader)["Resources"]
        allowed = resources["DeveloperConnectPolicy"]["Properties"]["PolicyDocument"]
        document = next(s for s in allowed["Statement"] if s["Sid"] == "PortForwardingOnly")
        argv = forward_for(view.env, 15432, None).argv
        target = argv[argv.index("--target") + 1]
        assert argv[argv.index("--document-name") + 1] in document["Resource"]["Sub"]
        instance = ec2.describe_instances(InstanceIds=[target])["Reservations"][0]["Instances"]
        assert {"Key": "devdb:owner", "Value": "erin"} in instance[0]["Tags"]

        # EC2's spot warning, through the stack's EventBridge rule and queue, is acted on at
        # the next sweep; a warning about another installation's instance is left queued.
        others = [
            ec2.run_instances(ImageId="ami-12c6146b", MinCount=1, MaxCount=1, **tags)["Instances"][
                0
            ]["InstanceId"]
            for tags in (
                {  # another installation's: its warning is left for it
                    "TagSpecifications": [
                        {
                            "ResourceType": "instance",
                            "Tags": [{"Key": "devdb:installation", "Value": "staging"}],
                        }
                    ]
                },
                {},  # no devdb instance at all: its warning is deleted
            )
        ]
        events = cloud.moto.client("events")
        for instance_id in (target, *others):
            events.put_events(
                Entries=[
                    {
                        "Source": "aws.ec2",
                        "DetailType": "EC2 Spot Instance Interruption Warning",
                        "Detail": json.dumps(
                            {"instance-id": instance_id, "instance-action": "terminate"}
                        ),
                    }
                ]
            )
        sqs = cloud.moto.client("sqs")
        sqs.send_message(QueueUrl=outputs["InterruptionQueueUrl"], MessageBody="not an event")
        assert await service.check_interruptions() == [env]
        interrupted = await service.status("erin", env)
        assert interrupted.env.state == EnvState.INTERRUPTED
        assert "interruption warning" in (interrupted.env.error or "")
        counts = sqs.get_queue_attributes(
            QueueUrl=outputs["InterruptionQueueUrl"],
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        # Only the other installation's is left, out of sight a while, then back for it.
        assert counts == {
            "ApproximateNumberOfMessages": "0",
            "ApproximateNumberOfMessagesNotVisible": "1",
        }
        ec2.terminate_instances(InstanceIds=others)
    finally:
        await service.destroy("erin", env)
    assert tagged(cloud, env) == NOTHING
    iam = cloud.moto.client("iam")
    assert [r for r in iam.list_roles()["Roles"] if r["RoleName"] == own] == []
    profiles = iam.list_instance_profiles()["InstanceProfiles"]
    assert [p for p in profiles if p["InstanceProfileName"] == own] == []
    formation.delete_stack(StackName=name)


def test_image_upload_stores_the_wheel_where_the_recipe_reads_it(
    cli_env: dict[str, str], cloud: Cloud
) -> None:
    env = {**cli_env, **cloud.moto.env, "DEVDB_S3_BUCKET": cloud.store.bucket}
    result = devdb(env, "--json", "image", "upload")
    assert result.returncode == 0, result.stderr
    uri = json.loads(result.stdout)["wheel_uri"]
    assert "building the wheel" in result.stderr and "uploading devdb-" in result.stderr
    parameters = yaml.load(IMAGE.read_text(), Loader=_Loader)["Parameters"]
    assert re.fullmatch(parameters["WheelUri"]["AllowedPattern"], uri)
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    assert bucket == cloud.store.bucket and key.startswith(f"{cloud.store.prefix}image/devdb-")
    stored = cloud.moto.client("s3").get_object(Bucket=bucket, Key=key)
    assert stored["ServerSideEncryption"] in ("AES256", "aws:kms")
    with zipfile.ZipFile(io.BytesIO(stored["Body"].read())) as wheel:
        names = wheel.namelist()
    assert "provisioning/aws/agent.py" in names and "provisioning/aws/userdata.sh" in names
    # Without a bucket there is nowhere to put it: one sentence.
    bare = devdb(cli_env, "image", "upload")
    assert bare.returncode != 0 and "set DEVDB_S3_BUCKET" in bare.stderr + bare.stdout
    assert "Traceback" not in bare.stderr
