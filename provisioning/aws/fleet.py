"""Getting one spot instance: the network it lives in, its launch template, the request.

Blocking boto3 calls; the EC2 driver runs them in threads. Everything made for one
environment carries the tag `devdb:launch=<token>`, so it can always be found and removed,
even when the process that made it died half-way.
"""

from __future__ import annotations

import base64
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from provisioning.aws.failures import RETRYABLE, launch_failure
from provisioning.aws.settings import AwsSettings
from provisioning.errors import ProvisioningFailed
from provisioning.snapshots.manifest import Manifest

GIB = 1 << 30
PORT = 5432
GROUP_NAME = "devdb-postgres"  # and the installation id
INSTALLATION_TAG = "devdb:installation"
BASE_TAG = "devdb:base"  # on a team's launch template that devdb may add versions to
DATA_DEVICE = "/dev/sdf"
# Spot requests that fail for want of capacity or price, where trying another type helps.


def volume_size(manifest: Manifest) -> int:
    """GiB for the data volume: the dump, the restored tables (about twice their data) and
    room to work."""
    need = manifest.size + 2 * manifest.data_bytes
    return max(20, math.ceil(need / GIB) + 10)


def aws_reason(exc: BaseException) -> str:
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        return f"{error.get('Code', 'error')}: {error.get('Message', '')}".rstrip(": ")
    return str(exc)


def managed(installation: str) -> dict[str, str]:
    """The tags on everything devdb makes in AWS: which installation made it."""
    return {"devdb:managed": "true", INSTALLATION_TAG: installation}


def tag_list(tags: dict[str, str]) -> list[dict[str, str]]:
    return [{"Key": key, "Value": value} for key, value in tags.items()]


def base_template(configured: str) -> dict[str, str]:
    """DEVDB_EC2_LAUNCH_TEMPLATE as EC2 takes it: an id (lt-…) or a name."""
    key = "LaunchTemplateId" if configured.startswith("lt-") else "LaunchTemplateName"
    return {key: configured}


def template_name(token: str) -> str:
    return f"devdb-{token}"


@dataclass(frozen=True)
class Network:
    vpc: str
    subnets: tuple[str, ...]
    cidr: str


def network(ec2: Any, settings: AwsSettings) -> Network:
    """The configured subnets (or the default VPC's) and their VPC."""
    if settings.subnets:
        found = ec2.describe_subnets(SubnetIds=list(settings.subnets))["Subnets"]
        vpcs = {subnet["VpcId"] for subnet in found}
        if len(vpcs) != 1:
            raise ProvisioningFailed("DEVDB_EC2_SUBNETS must all be in one VPC.")
        vpc = vpcs.pop()
        subnets = settings.subnets
    else:
        defaults = ec2.describe_vpcs(Filters=[{"Name": "isDefault", "Values": ["true"]}])["Vpcs"]
        if not defaults:
            raise ProvisioningFailed(
                "there is no default VPC: set DEVDB_EC2_SUBNETS to the subnets to launch in."
            )
        vpc = defaults[0]["VpcId"]
        found = ec2.describe_subnets(Filters=[{"Name": "vpc-id", "Values": [vpc]}])["Subnets"]
        subnets = tuple(sorted(subnet["SubnetId"] for subnet in found))
    cidr = ec2.describe_vpcs(VpcIds=[vpc])["Vpcs"][0]["CidrBlock"]
    return Network(vpc=vpc, subnets=subnets, cidr=cidr)


def security_group(ec2: Any, settings: AwsSettings, net: Network, installation: str) -> str:
    """`devdb-postgres-<installation>` in the VPC, its rules brought to what the settings say
    at every launch: PostgreSQL from the VPC's own range (where the bot that polls the
    instances runs), plus `DEVDB_EC2_ALLOW_CIDR` and `DEVDB_EC2_BASTION_GROUP` if set, and
    nothing else. Safe to repeat: it also repairs a group that a failed launch left without
    its rule. A group of your own (`DEVDB_EC2_SECURITY_GROUP`, from the CloudFormation stack,
    say) is used as it is: its rules are yours."""
    if settings.security_group:
        return settings.security_group
    group_name = f"{GROUP_NAME}-{installation}"
    filters = [
        {"Name": "group-name", "Values": [group_name]},
        {"Name": "vpc-id", "Values": [net.vpc]},
    ]
    existing = ec2.describe_security_groups(Filters=filters)["SecurityGroups"]
    if not existing:
        try:
            ec2.create_security_group(
                GroupName=group_name,
                Description="devdb environments: PostgreSQL from the allowed network only",
                VpcId=net.vpc,
                TagSpecifications=[
                    {"ResourceType": "security-group", "Tags": tag_list(managed(installation))}
                ],
            )
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "InvalidGroup.Duplicate":
                raise
        existing = ec2.describe_security_groups(Filters=filters)["SecurityGroups"]
    group = existing[0]
    want_cidrs = {net.cidr} | ({settings.allow_cidr} if settings.allow_cidr else set())
    want_groups = {settings.bastion_group} if settings.bastion_group else set()
    have_cidrs: set[str] = set()
    have_groups: set[str] = set()
    extra: list[dict[str, Any]] = []
    for rule in group.get("IpPermissions", []):
        ours = (rule.get("IpProtocol"), rule.get("FromPort"), rule.get("ToPort")) == (
            "tcp",
            PORT,
            PORT,
        )
        if not ours:
            extra.append(rule)
            continue
        have_cidrs |= {r["CidrIp"] for r in rule.get("IpRanges", [])}
        have_groups |= {p["GroupId"] for p in rule.get("UserIdGroupPairs", [])}
    unwanted = _rule(have_cidrs - want_cidrs, have_groups - want_groups)
    if extra or unwanted:
        ec2.revoke_security_group_ingress(
            GroupId=group["GroupId"], IpPermissions=[*extra, *([unwanted] if unwanted else [])]
        )
    missing = _rule(want_cidrs - have_cidrs, want_groups - have_groups)
    if missing:
        ec2.authorize_security_group_ingress(GroupId=group["GroupId"], IpPermissions=[missing])
    return str(group["GroupId"])


def _rule(cidrs: set[str], groups: set[str]) -> dict[str, Any] | None:
    """One PostgreSQL ingress rule for these ranges and groups; None for neither."""
    if not cidrs and not groups:
        return None
    rule: dict[str, Any] = {"IpProtocol": "tcp", "FromPort": PORT, "ToPort": PORT}
    if cidrs:
        rule["IpRanges"] = [{"CidrIp": c, "Description": "devdb"} for c in sorted(cidrs)]
    if groups:
        rule["UserIdGroupPairs"] = [{"GroupId": g, "Description": "devdb"} for g in sorted(groups)]
    return rule


def gp3_throughput(volume_gib: int) -> int:
    """MiB/s for the data volume: gp3's free 125 for small ones, more as restores grow, up to
    750 (the most gp3's baseline 3,000 IOPS allow)."""
    return max(125, min(750, volume_gib * 4))


def version_label(token: str) -> str:
    """The description of the version devdb adds to a base launch template for one launch."""
    return f"devdb {token}"


def launch_template(
    ec2: Any,
    settings: AwsSettings,
    *,
    token: str,
    group: str,
    user_data: str,
    volume_gib: int,
    tags: dict[str, str],
    golden: str | None = None,
    init_rate: int | None = None,
    shutdown: str = "terminate",
    profile: str | None = None,
) -> dict[str, str]:
    """The launch template version this environment's instance starts from.

    Without a base template it is a template of its own. With DEVDB_EC2_LAUNCH_TEMPLATE it
    is a new version of that template, made from its default version (`SourceVersion`), so
    everything the base says and devdb does not set is kept as EC2 has it: devdb adds its
    security group beside the base's groups, its tags beside the base's tags, and its data
    volume beside the base's other disks.

    With `golden` (an EBS snapshot id) the data volume is made from that snapshot, at
    `init_rate` MiB/s if given. A golden build's instance stops instead of terminating when
    it shuts itself down, so its volume can be snapshotted."""
    data_volume: dict[str, Any] = {
        "VolumeSize": volume_gib,
        "VolumeType": "gp3",
        "Throughput": gp3_throughput(volume_gib),
        "DeleteOnTermination": True,
        "Encrypted": True,
    }
    if golden:
        data_volume["SnapshotId"] = golden
        if init_rate:
            data_volume["VolumeInitializationRate"] = init_rate
    base: dict[str, Any] = {}
    source: dict[str, Any] | None = None
    if settings.launch_template:
        source = ec2.describe_launch_template_versions(
            **base_template(settings.launch_template), Versions=["$Default"]
        )["LaunchTemplateVersions"][0]
        base = source["LaunchTemplateData"]
    data: dict[str, Any] = {}
    if settings.ami:
        data["ImageId"] = settings.ami
    if profile or settings.instance_profile:
        data["IamInstanceProfile"] = {"Name": profile or settings.instance_profile}
    data.update(
        UserData=base64.b64encode(user_data.encode()).decode(),
        # IMDSv2 only: a token is needed for every metadata read.
        MetadataOptions={
            "HttpTokens": "required",
            "HttpEndpoint": "enabled",
            "HttpPutResponseHopLimit": 1,
            # The instance reads its own devdb:expires tag to enforce its expiry.
            "InstanceMetadataTags": "enabled",
        },
        InstanceInitiatedShutdownBehavior=shutdown,
        BlockDeviceMappings=[
            *[
                mapping
                for mapping in base.get("BlockDeviceMappings", [])
                if mapping.get("DeviceName") != DATA_DEVICE
            ],
            {"DeviceName": DATA_DEVICE, "Ebs": data_volume},
        ],
        TagSpecifications=merged_tags(
            base.get("TagSpecifications", []), {"instance": tags, "volume": tags}
        ),
        **with_group(base, group),
    )
    if source is None:
        reply = ec2.create_launch_template(
            LaunchTemplateName=template_name(token),
            LaunchTemplateData=data,
            TagSpecifications=[{"ResourceType": "launch-template", "Tags": tag_list(tags)}],
        )
        return {
            "LaunchTemplateId": str(reply["LaunchTemplate"]["LaunchTemplateId"]),
            "Version": "1",
        }
    made = ec2.create_launch_template_version(
        LaunchTemplateId=source["LaunchTemplateId"],
        SourceVersion=str(source["VersionNumber"]),
        VersionDescription=version_label(token),
        LaunchTemplateData=data,
    )["LaunchTemplateVersion"]
    return {
        "LaunchTemplateId": str(made["LaunchTemplateId"]),
        "Version": str(made["VersionNumber"]),
    }


def with_group(base: dict[str, Any], group: str) -> dict[str, Any]:
    """devdb's security group beside the base's own."""
    return {
        "SecurityGroupIds": [*(g for g in base.get("SecurityGroupIds", []) if g != group), group]
    }


def merged_tags(
    specs: Sequence[dict[str, Any]], ours: dict[str, dict[str, str]]
) -> list[dict[str, Any]]:
    """The base's tag specifications with devdb's tags added (devdb's win on the same key)."""
    by_type: dict[str, dict[str, str]] = {}
    for spec in specs:
        by_type.setdefault(spec["ResourceType"], {}).update(
            {tag["Key"]: tag["Value"] for tag in spec.get("Tags", [])}
        )
    for kind, tags in ours.items():
        by_type.setdefault(kind, {}).update(tags)
    return [{"ResourceType": kind, "Tags": tag_list(tags)} for kind, tags in by_type.items()]


def request_instance(
    ec2: Any,
    spec: dict[str, str],
    types: Sequence[str],
    subnets: Sequence[str],
    *,
    spot: bool = True,
) -> tuple[str, str]:
    """One instance (id, type). Spot: an instant fleet first, then plain spot requests.
    On demand (a golden build, which must be able to stop): plain requests only."""
    codes: list[str] = []  # every error code EC2 gave, for the sentence
    detail = "no reason given"
    market: dict[str, Any] = {}
    if spot:
        market["InstanceMarketOptions"] = {
            "MarketType": "spot",
            "SpotOptions": {
                "SpotInstanceType": "one-time",
                "InstanceInterruptionBehavior": "terminate",
            },
        }
        try:
            reply = ec2.create_fleet(
                Type="instant",
                LaunchTemplateConfigs=[
                    {
                        "LaunchTemplateSpecification": spec,
                        "Overrides": [
                            {"InstanceType": kind, "SubnetId": subnet}
                            for kind in types
                            for subnet in subnets
                        ],
                    }
                ],
                TargetCapacitySpecification={
                    "TotalTargetCapacity": 1,
                    "SpotTargetCapacity": 1,
                    "DefaultTargetCapacityType": "spot",
                },
                SpotOptions={"AllocationStrategy": "price-capacity-optimized"},
            )
            for group in reply.get("Instances", []):
                if group.get("InstanceIds"):
                    return str(group["InstanceIds"][0]), str(group["InstanceType"])
            for error in reply.get("Errors", []):
                codes.append(str(error.get("ErrorCode", "")))
                detail = str(error.get("ErrorMessage", "")) or detail
        except ClientError as exc:
            codes.append(str(exc.response.get("Error", {}).get("Code", "")))
            detail = aws_reason(exc)
        except BotoCoreError as exc:
            detail = aws_reason(exc)
    for kind in types:
        for subnet in subnets:
            try:
                reply = ec2.run_instances(
                    LaunchTemplate=spec,
                    InstanceType=kind,
                    SubnetId=subnet,
                    MinCount=1,
                    MaxCount=1,
                    **market,
                )
                return str(reply["Instances"][0]["InstanceId"]), kind
            except ClientError as exc:
                code = str(exc.response.get("Error", {}).get("Code", ""))
                codes.append(code)
                detail = str(exc.response.get("Error", {}).get("Message", "")) or detail
                if code not in RETRYABLE:  # another type or subnet will not help
                    raise ProvisioningFailed(launch_failure(codes, types, detail)) from exc
    raise ProvisioningFailed(launch_failure(codes, types, detail))


def instance_arn(ec2: Any, region: str, instance_id: str, tries: int = 10) -> str:
    """The instance's ARN, as IAM gives it in `ec2:SourceInstanceARN`. Just after a launch
    EC2 may not describe the instance yet (eventual consistency): asked again meanwhile."""
    for attempt in range(tries):
        try:
            found = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"]
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "InvalidInstanceID.NotFound":
                raise
            found = []
        if found:
            partition = getattr(ec2.meta, "partition", "aws")
            owner = found[0]["OwnerId"]
            return f"arn:{partition}:ec2:{region}:{owner}:instance/{instance_id}"
        if attempt + 1 < tries:
            time.sleep(min(2.0, 0.25 * 2**attempt))
    raise ProvisioningFailed(f"EC2 did not describe the new instance {instance_id} in time.")


def spot_price(ec2: Any, instance_type: str, zone: str) -> float | None:
    """The current spot price per hour, as EC2 reports it; None if it does not."""
    try:
        history = ec2.describe_spot_price_history(
            InstanceTypes=[instance_type],
            AvailabilityZone=zone,
            ProductDescriptions=["Linux/UNIX"],
            MaxResults=1,
        ).get("SpotPriceHistory", [])
    except (BotoCoreError, ClientError):
        return None
    return float(history[0]["SpotPrice"]) if history else None
