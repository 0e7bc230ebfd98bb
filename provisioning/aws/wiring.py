"""Building the AWS parts from settings: the S3 store, the SSM password store, the driver."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config

from provisioning.aws.settings import AwsSettings
from provisioning.aws.ssm import SsmSecrets
from provisioning.drivers.ec2 import Ec2Driver
from provisioning.snapshots.s3 import S3SnapshotStore

# Adaptive retries: back off on throttling instead of failing a refresh.
_CONFIG = Config(retries={"mode": "adaptive", "max_attempts": 8})


@dataclass(frozen=True)
class AwsParts:
    snapshots: S3SnapshotStore | None
    passwords: SsmSecrets | None
    driver: Ec2Driver | None


def aws_parts(settings: AwsSettings, cache: Path, installation: str) -> AwsParts:
    """What the AWS settings turn on: nothing at all when none are set."""
    if not (settings.bucket or settings.ec2_enabled):
        return AwsParts(None, None, None)
    session = boto3.session.Session(region_name=settings.region)

    def client(service: str) -> Any:
        return session.client(service, config=_CONFIG)

    snapshots = (
        S3SnapshotStore(
            client("s3"),
            settings.bucket,
            prefix=settings.prefix,
            cache=cache,
            kms_key=settings.kms_key,
        )
        if settings.bucket
        else None
    )
    if snapshots is None or not settings.ec2_enabled:
        return AwsParts(snapshots, None, None)
    passwords = SsmSecrets(client("ssm"), kms_key=settings.kms_key)
    region = session.region_name or "us-east-1"
    driver = Ec2Driver(
        client("ec2"),
        settings,
        snapshots=snapshots,
        passwords=passwords,
        region=region,
        installation=installation,
        sqs=client("sqs") if settings.interruption_queue else None,
        iam=client("iam") if settings.role_boundary else None,
    )
    return AwsParts(snapshots, passwords, driver)
