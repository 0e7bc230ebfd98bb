"""A role of its own for each EC2 environment's instance (DEVDB_EC2_ROLE_BOUNDARY).

With one shared instance profile every instance may read every snapshot in the bucket,
saved ones included. With a permissions boundary configured instead, devdb makes a role and
an instance profile `devdb-env-<token>` (path `/devdb/`) for each launch. Its policy allows
reading this environment's snapshot (its prefix in the bucket) and its own SSM parameters,
and the boundary caps it. devdb's IAM policy lets it create only roles that carry that
boundary, under that path and name. They go with the environment. Blocking boto3 calls; the
driver runs them in threads.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from botocore.exceptions import ClientError

from provisioning.aws.fleet import tag_list

PATH = "/devdb/"
POLICY_NAME = "this-environment"
TRUST = {
    "Version": "2012-10-17",
    "Statement": [
        {
            "Effect": "Allow",
            "Principal": {"Service": "ec2.amazonaws.com"},
            "Action": "sts:AssumeRole",
        }
    ],
}


# What the SSM agent needs for Session Manager (devdb connect), and nothing more: not
# AmazonSSMManagedInstanceCore, which also allows reading every SSM parameter.
SESSION_MANAGER = (
    "ssm:UpdateInstanceInformation",
    "ssmmessages:CreateControlChannel",
    "ssmmessages:CreateDataChannel",
    "ssmmessages:OpenControlChannel",
    "ssmmessages:OpenDataChannel",
)


def role_name(token: str) -> str:
    return f"devdb-env-{token}"


def instance_policy(
    *, partition: str, region: str, bucket: str, snapshot_prefix: str, parameters: list[str]
) -> dict[str, Any]:
    """What one environment's instance may do: read its snapshot and its own parameters,
    and decrypt them through S3 and SSM (the boundary names the key)."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "SessionManagerForDevdbConnect",
                "Effect": "Allow",
                "Action": list(SESSION_MANAGER),
                "Resource": "*",
            },
            {
                "Sid": "ItsSnapshot",
                "Effect": "Allow",
                "Action": ["s3:GetObject"],
                "Resource": f"arn:{partition}:s3:::{bucket}/{snapshot_prefix}*",
            },
            {
                "Sid": "ItsParameters",
                "Effect": "Allow",
                "Action": ["ssm:GetParameter"],
                "Resource": [
                    f"arn:{partition}:ssm:{region}:*:parameter{name}" for name in parameters
                ],
            },
            {
                "Sid": "DecryptThroughSsmAndS3Only",
                "Effect": "Allow",
                "Action": ["kms:Decrypt"],
                "Resource": "*",
                "Condition": {
                    "StringEquals": {
                        "kms:ViaService": [
                            f"ssm.{region}.amazonaws.com",
                            f"s3.{region}.amazonaws.com",
                        ]
                    }
                },
            },
        ],
    }


def make(
    iam: Any, *, name: str, boundary: str, policy: dict[str, Any], tags: dict[str, str]
) -> str:
    """The role and its instance profile (both named `name`); the profile's name."""
    iam.create_role(
        RoleName=name,
        Path=PATH,
        AssumeRolePolicyDocument=json.dumps(TRUST),
        PermissionsBoundary=boundary,
        Description="devdb: one environment's instance",
        Tags=tag_list(tags),
    )
    iam.put_role_policy(RoleName=name, PolicyName=POLICY_NAME, PolicyDocument=json.dumps(policy))
    iam.create_instance_profile(InstanceProfileName=name, Path=PATH, Tags=tag_list(tags))
    iam.add_role_to_instance_profile(InstanceProfileName=name, RoleName=name)
    return name


def _quietly(call: Callable[..., Any], **args: str) -> None:
    """An IAM removal that is done if what it removes is not there."""
    try:
        call(**args)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") != "NoSuchEntity":
            raise


def remove(iam: Any, name: str) -> None:
    """The instance profile and role `name`, whatever of them exists."""
    _quietly(iam.remove_role_from_instance_profile, InstanceProfileName=name, RoleName=name)
    _quietly(iam.delete_instance_profile, InstanceProfileName=name)
    _quietly(iam.delete_role_policy, RoleName=name, PolicyName=POLICY_NAME)
    _quietly(iam.delete_role, RoleName=name)
