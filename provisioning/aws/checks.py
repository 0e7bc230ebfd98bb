"""What an EC2 launch needs, checked before one is tried: for every refresh (once per
process) and on demand with `devdb doctor`.

- An instance profile: the agent reads its password from SSM and the snapshot from S3 with
  the instance's role; without one, an instance boots and can do nothing.
- The image, in this region.
- A DryRun launch: EC2 answers whether the launch would be allowed (IAM, the profile, the
  parameters) without starting anything.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from provisioning.aws.failures import launch_failure
from provisioning.aws.fleet import BASE_TAG, base_template
from provisioning.aws.settings import AwsSettings

SSM_IMAGE = "resolve:ssm:"  # DEVDB_EC2_AMI as an SSM parameter, as EC2 itself takes it


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _message(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Message", ""))


def _base_profile(ec2: Any, settings: AwsSettings) -> str | None:
    """The instance profile the configured base launch template names, if any."""
    if not settings.launch_template:
        return None
    versions = ec2.describe_launch_template_versions(
        **base_template(settings.launch_template), Versions=["$Default"]
    )["LaunchTemplateVersions"]
    profile = versions[0]["LaunchTemplateData"].get("IamInstanceProfile", {})
    return str(profile.get("Name") or profile.get("Arn") or "") or None


def _base_marked(ec2: Any, settings: AwsSettings) -> bool | str:
    """Whether the base launch template (if any) is marked for devdb to add versions to;
    "interfaces" if it describes network interfaces, which devdb cannot launch with."""
    if not settings.launch_template:
        return True
    versions = ec2.describe_launch_template_versions(
        **base_template(settings.launch_template), Versions=["$Default"]
    )["LaunchTemplateVersions"]
    if versions[0]["LaunchTemplateData"].get("NetworkInterfaces"):
        return "interfaces"
    key = (
        "LaunchTemplateIds" if settings.launch_template.startswith("lt-") else "LaunchTemplateNames"
    )
    found = ec2.describe_launch_templates(**{key: [settings.launch_template]})["LaunchTemplates"]
    tags = {tag["Key"]: tag["Value"] for tag in found[0].get("Tags", [])}
    return tags.get(BASE_TAG) == "true"


def _boundary(iam: Any | None, boundary: str) -> Check:
    """The permissions boundary each environment's own role is made within must exist."""
    if iam is None:
        return Check("role boundary", False, "no IAM client to make the instances' roles with.")
    try:
        iam.get_policy(PolicyArn=boundary)
    except ClientError as exc:
        return Check(
            "role boundary",
            False,
            f"the permissions boundary {boundary} could not be read ({_code(exc)}): "
            "DEVDB_EC2_ROLE_BOUNDARY must name the stack's InstanceRoleBoundary policy.",
        )
    return Check("role boundary", True, boundary)


def ec2_checks(
    ec2: Any,
    ssm: Any,
    settings: AwsSettings,
    region: str,
    subnet: str | None,
    *,
    iam: Any | None = None,
) -> list[Check]:
    """Each check's outcome, in order; a failed one says what to do."""
    checks: list[Check] = []
    try:
        profile = settings.instance_profile or _base_profile(ec2, settings)
        marked = _base_marked(ec2, settings)
    except (BotoCoreError, ClientError) as exc:
        return [Check("launch template", False, f"the base launch template is unreadable: {exc}.")]
    if marked == "interfaces":
        return [
            Check(
                "launch template",
                False,
                f"the base launch template {settings.launch_template} describes network "
                "interfaces; devdb places instances in subnets itself, which EC2 does not "
                "combine with them: take the interfaces out, and set DEVDB_EC2_SUBNETS.",
            )
        ]
    if not marked:
        return [
            Check(
                "launch template",
                False,
                f"the base launch template {settings.launch_template} needs the tag "
                f"{BASE_TAG}=true: devdb adds a version to it for each launch (which becomes "
                "its $Latest, so keep the template for devdb alone), and its IAM policy allows "
                "that only on templates so marked.",
            )
        ]
    if settings.role_boundary:
        checks.append(_boundary(iam, settings.role_boundary))
    checks.append(
        Check("instance profile", True, profile or "a role of its own for each environment")
        if profile or settings.role_boundary
        else Check(
            "instance profile",
            False,
            "EC2 environments need an instance profile (DEVDB_EC2_INSTANCE_PROFILE) whose role "
            "has docs/instance-policy.json: the agent reads its password from SSM and the "
            "snapshot from S3 with it.",
        )
    )
    ami = settings.ami
    if ami and ami.startswith(SSM_IMAGE):
        # The image pipeline publishes each new AMI there (deploy/image.yaml).
        parameter = ami.removeprefix(SSM_IMAGE)
        try:
            ami = str(ssm.get_parameter(Name=parameter)["Parameter"]["Value"])
        except ClientError as exc:
            detail = (
                f"DEVDB_EC2_AMI reads the image from the SSM parameter {parameter}, which "
                f"could not be read ({_code(exc)}): build the image (deploy/image.yaml) first."
            )
            return [*checks, Check("image", False, detail)]
    if ami:
        try:
            images = ec2.describe_images(ImageIds=[ami])["Images"]
            found = bool(images)
            shown = str(images[0].get("Name") or settings.ami) if images else ""
        except ClientError as exc:
            found, shown = False, _message(exc)
        checks.append(
            Check("image", True, shown)
            if found
            else Check(
                "image",
                False,
                f"DEVDB_EC2_AMI {ami} is not an image devdb can use in {region}"
                f"{f' ({shown})' if shown else ''}: images are per region; copy it here or "
                "set the id of this region's copy.",
            )
        )
    if all(check.ok for check in checks):
        checks.append(_dry_run(ec2, settings, ami, profile, subnet))
    return checks


def _dry_run(
    ec2: Any, settings: AwsSettings, ami: str | None, profile: str | None, subnet: str | None
) -> Check:
    args: dict[str, Any] = {
        "DryRun": True,
        "MinCount": 1,
        "MaxCount": 1,
        "InstanceType": settings.instance_types[0],
    }
    if ami:
        args["ImageId"] = ami
    if settings.launch_template:
        args["LaunchTemplate"] = {**base_template(settings.launch_template), "Version": "$Default"}
    if profile and settings.instance_profile:
        args["IamInstanceProfile"] = {"Name": profile}
    if subnet:
        args["SubnetId"] = subnet
    try:
        reply = ec2.run_instances(**args)
    except ClientError as exc:
        if _code(exc) == "DryRunOperation":
            return Check("dry run", True, "EC2 would allow the launch")
        return Check(
            "dry run", False, launch_failure([_code(exc)], settings.instance_types, _message(exc))
        )
    except BotoCoreError as exc:
        return Check("dry run", False, f"EC2 could not be asked ({exc}).")
    # Never on AWS; an endpoint that ignored the flag started something: stop it at once.
    ids = [instance["InstanceId"] for instance in reply.get("Instances", [])]
    if ids:
        ec2.terminate_instances(InstanceIds=ids)
    return Check("dry run", False, "the EC2 endpoint ignored the DryRun flag.")
