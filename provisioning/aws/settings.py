"""AWS settings: read with the rest of devdb's settings, at the edge.

EC2 environments are available when an AMI or a launch template is configured; snapshots
live in S3 when a bucket is. Credentials are never settings: boto3 finds them as usual
(instance profile, environment, ~/.aws), and `AWS_ENDPOINT_URL` points it elsewhere.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated

from pydantic import Field
from pydantic_settings import NoDecode

from provisioning.config import (
    DevdbSettings,
    Dollars,
    Duration,
    Network,
    Words,
    parsed,
    setting,
    whole,
)

DEFAULT_INSTANCE_TYPES = ("m6i.large", "m5.large", "r6i.large")


def _prefix(raw: str) -> str:
    return raw.strip("/") + "/" if raw.strip("/") else ""


def _role_boundary(raw: str) -> str:
    if not re.fullmatch(r"arn:[\w-]+:iam::\d{12}:policy/.+", raw):
        raise ValueError(
            "must be a managed policy's ARN, like "
            f"arn:aws:iam::123456789012:policy/devdb-instance-boundary, not {raw[:80]!r}"
        )
    return raw


def _installation(raw: str) -> str:
    if not re.fullmatch(r"[a-z0-9][a-z0-9-]{0,31}", raw):
        raise ValueError(f"must be up to 32 lowercase letters, digits and dashes, not {raw[:40]!r}")
    return raw


def _teams(raw: str) -> dict[str, frozenset[str]]:
    """`data:alice,bob;web:carol` → {"data": {alice, bob}, "web": {carol}}."""
    teams: dict[str, frozenset[str]] = {}
    for part in raw.split(";"):
        if not part.strip():
            continue
        team, sep, members = part.partition(":")
        if not sep or not team.strip():
            raise ValueError(f"must look like 'data:alice,bob;web:carol', not {raw[:60]!r}")
        teams[team.strip()] = frozenset(m.strip() for m in members.split(",") if m.strip())
    return teams


class AwsSettings(DevdbSettings):
    region: str | None = setting(None, key="aws_region")
    bucket: str | None = setting(None, key="s3_bucket")
    prefix: Annotated[str, parsed(_prefix)] = setting("devdb/", key="s3_prefix")
    kms_key: str | None = None
    ami: str | None = setting(None, key="ec2_ami")
    launch_template: str | None = setting(None, key="ec2_launch_template")
    instance_types: Words = setting(DEFAULT_INSTANCE_TYPES, key="ec2_instance_types")
    subnets: Words = setting((), key="ec2_subnets")
    allow_cidr: Network | None = setting(None, key="ec2_allow_cidr")
    bastion_group: str | None = setting(None, key="ec2_bastion_group")
    instance_profile: str | None = setting(None, key="ec2_instance_profile")
    # A managed policy's ARN: each environment's instance gets a role of its own within it.
    role_boundary: Annotated[str | None, parsed(_role_boundary)] = setting(
        None, key="ec2_role_boundary"
    )
    # a group of your own (a stack's): used as it is
    security_group: str | None = setting(None, key="ec2_security_group")
    bastion: str | None = None  # user@host for `devdb connect` over ssh
    # An SQS queue EventBridge fills with spot interruption warnings (deploy/ makes one).
    interruption_queue: str | None = setting(None, key="ec2_interruption_queue")
    auto_replace: bool = False
    keep_failed: bool = setting(False, key="ec2_keep_failed")  # keep a failed instance to debug
    monthly_cap: Dollars | None = None  # US dollars of cloud spend per team per month
    teams: Annotated[dict[str, frozenset[str]], NoDecode, parsed(_teams)] = Field(
        default_factory=dict
    )
    boot_timeout: Duration = setting(timedelta(minutes=10), key="ec2_boot_timeout")
    ready_timeout: Duration = setting(timedelta(minutes=60), key="ec2_ready_timeout")
    # An instance past its expiry by this much powers itself off (the bot may be down).
    expiry_grace: Duration = setting(timedelta(hours=1), key="ec2_expiry_grace")
    # MiB/s at which a volume made from a golden EBS snapshot is filled (EBS Provisioned Rate
    # for Volume Initialization, 100-300); None leaves EBS's default, lazy loading.
    volume_init_rate: Annotated[int | None, whole(100, 300)] = setting(
        None, key="ec2_volume_init_rate"
    )
    # Tags everything this installation makes; default: an id made once in the state store.
    installation: Annotated[str | None, parsed(_installation)] = None

    @property
    def ec2_enabled(self) -> bool:
        return bool(self.ami or self.launch_template)
