"""AWS settings: read with the rest of devdb's settings, at the edge.

EC2 environments are available when an AMI or a launch template is configured; snapshots
live in S3 when a bucket is. Credentials are never settings: boto3 finds them as usual
(instance profile, environment, ~/.aws), and `AWS_ENDPOINT_URL` points it elsewhere.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta

from provisioning.durations import parse_duration
from provisioning.errors import InvalidInput

DEFAULT_INSTANCE_TYPES = ("m6i.large", "m5.large", "r6i.large")


@dataclass(frozen=True, kw_only=True)
class AwsSettings:
    region: str | None = None
    bucket: str | None = None
    prefix: str = "devdb/"
    kms_key: str | None = None
    ami: str | None = None
    launch_template: str | None = None
    instance_types: tuple[str, ...] = DEFAULT_INSTANCE_TYPES
    subnets: tuple[str, ...] = ()
    allow_cidr: str | None = None
    bastion_group: str | None = None
    instance_profile: str | None = None
    # A managed policy's ARN: each environment's instance gets a role of its own within it.
    role_boundary: str | None = None
    security_group: str | None = None  # a group of your own (a stack's): used as it is
    bastion: str | None = None  # user@host for `devdb connect` over ssh
    # An SQS queue EventBridge fills with spot interruption warnings (deploy/ makes one).
    interruption_queue: str | None = None
    auto_replace: bool = False
    keep_failed: bool = False  # keep a failed environment's instance for debugging
    monthly_cap: float | None = None  # US dollars of cloud spend per team per month
    teams: dict[str, frozenset[str]] = field(default_factory=dict)
    boot_timeout: timedelta = timedelta(minutes=10)
    ready_timeout: timedelta = timedelta(minutes=60)
    # An instance past its expiry by this much powers itself off (the bot may be down).
    expiry_grace: timedelta = timedelta(hours=1)
    # MiB/s at which a volume made from a golden EBS snapshot is filled (EBS Provisioned Rate
    # for Volume Initialization, 100-300); None leaves EBS's default, lazy loading.
    volume_init_rate: int | None = None
    # Tags everything this installation makes; default: an id made once in the state store.
    installation: str | None = None

    @property
    def ec2_enabled(self) -> bool:
        return bool(self.ami or self.launch_template)

    @classmethod
    def from_values(cls, pick: Callable[[str], str | None]) -> AwsSettings:
        kwargs: dict[str, object] = {}
        names = {
            "bucket": "s3_bucket",
            "kms_key": "kms_key",
            "ami": "ec2_ami",
            "launch_template": "ec2_launch_template",
            "instance_profile": "ec2_instance_profile",
            "role_boundary": "ec2_role_boundary",
            "security_group": "ec2_security_group",
            "bastion": "bastion",
            "bastion_group": "ec2_bastion_group",
            "interruption_queue": "ec2_interruption_queue",
        }
        for key, name in names.items():
            if (raw := pick(name)) is not None:
                kwargs[key] = raw
        kwargs["region"] = pick("aws_region")
        if (raw := pick("s3_prefix")) is not None:
            kwargs["prefix"] = raw.strip("/") + "/" if raw.strip("/") else ""
        for key, name in (("instance_types", "ec2_instance_types"), ("subnets", "ec2_subnets")):
            if (raw := pick(name)) is not None:
                kwargs[key] = tuple(part.strip() for part in raw.split(",") if part.strip())
        if (raw := pick("ec2_allow_cidr")) is not None:
            try:
                kwargs["allow_cidr"] = str(ipaddress.ip_network(raw, strict=False))
            except ValueError:
                raise InvalidInput(
                    f"DEVDB_EC2_ALLOW_CIDR must be a network like 10.0.0.0/16, not {raw!r}."
                ) from None
        boundary = kwargs.get("role_boundary")
        if isinstance(boundary, str) and not re.fullmatch(
            r"arn:[\w-]+:iam::\d{12}:policy/.+", boundary
        ):
            raise InvalidInput(
                "DEVDB_EC2_ROLE_BOUNDARY must be a managed policy's ARN, like "
                f"arn:aws:iam::123456789012:policy/devdb-instance-boundary, not {boundary!r}."
            )
        if (raw := pick("auto_replace")) is not None:
            kwargs["auto_replace"] = raw.lower() in ("1", "true", "yes", "on")
        if (raw := pick("ec2_keep_failed")) is not None:
            kwargs["keep_failed"] = raw.lower() in ("1", "true", "yes", "on")
        if (raw := pick("monthly_cap")) is not None:
            try:
                kwargs["monthly_cap"] = float(raw)
            except ValueError:
                raise InvalidInput(
                    f"DEVDB_MONTHLY_CAP must be an amount in dollars, like 250, not {raw!r}."
                ) from None
        if (raw := pick("teams")) is not None:
            kwargs["teams"] = _teams(raw)
        if raw := pick("installation"):
            if not re.fullmatch(r"[a-z0-9][a-z0-9-]{0,31}", raw):
                raise InvalidInput(
                    "DEVDB_INSTALLATION must be up to 32 lowercase letters, digits and dashes, "
                    f"not {raw!r}."
                )
            kwargs["installation"] = raw
        if (raw := pick("ec2_volume_init_rate")) is not None:
            if not raw.isdigit() or not 100 <= int(raw) <= 300:
                raise InvalidInput(
                    f"DEVDB_EC2_VOLUME_INIT_RATE must be 100 to 300 (MiB/s), not {raw!r}."
                )
            kwargs["volume_init_rate"] = int(raw)
        for key in ("boot_timeout", "ready_timeout", "expiry_grace"):
            if (raw := pick(f"ec2_{key}")) is not None:
                kwargs[key] = parse_duration(raw)
        return cls(**kwargs)  # type: ignore[arg-type]


def _teams(raw: str) -> dict[str, frozenset[str]]:
    """`data:alice,bob;web:carol` → {"data": {alice, bob}, "web": {carol}}."""
    teams: dict[str, frozenset[str]] = {}
    for part in raw.split(";"):
        if not part.strip():
            continue
        team, sep, members = part.partition(":")
        if not sep or not team.strip():
            raise InvalidInput(
                f"DEVDB_TEAMS must look like 'data:alice,bob;web:carol', not {raw!r}."
            )
        teams[team.strip()] = frozenset(m.strip() for m in members.split(",") if m.strip())
    return teams
