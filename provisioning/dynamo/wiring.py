"""Building the DynamoDB driver from settings: on AWS in the configured region (through an
assumed role when one is set), else in the embedded endpoint under DEVDB_HOME."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import boto3
import botocore.session
from botocore.credentials import AssumeRoleCredentialFetcher, DeferredRefreshableCredentials

from provisioning.drivers.dynamodb import Clients, DynamoDriver
from provisioning.dynamo import endpoint
from provisioning.dynamo.source import RETRIES
from provisioning.snapshots.base import SnapshotStore
from provisioning.snapshots.s3 import S3SnapshotStore


def _session(region: str, role_arn: str | None) -> boto3.session.Session:
    """A session with the process's credentials, or with a role they assume (renewed by
    botocore before it expires): the tables then live in the role's account."""
    if not role_arn:
        return boto3.session.Session(region_name=region)
    source = boto3.session.Session(region_name=region)
    fetcher = AssumeRoleCredentialFetcher(
        client_creator=source._session.create_client,
        source_credentials=source.get_credentials(),
        role_arn=role_arn,
        extra_args={"RoleSessionName": "devdb"},
    )
    core = botocore.session.Session()
    core._credentials = DeferredRefreshableCredentials(
        method="assume-role", refresh_using=fetcher.fetch_credentials
    )
    return boto3.session.Session(botocore_session=core, region_name=region)


def _cached(make: Clients) -> Clients:
    made: dict[str, Any] = {}
    lock = threading.Lock()

    def client(service: str) -> Any:
        with lock:
            if service not in made:
                made[service] = make(service)
            return made[service]

    return client


def dynamo_driver(
    home: Path,
    *,
    region: str | None,
    role_arn: str | None,
    capacity: int,
    port: int,
    installation: str,
    snapshots: SnapshotStore | None = None,
    import_above_mb: int = 1024,
) -> DynamoDriver:
    """With `region`, on AWS; snapshots in S3 there are imported by ImportTable from
    `import_above_mb` MB of items on."""
    if region:
        session = _session(region, role_arn)
        imports = (
            (snapshots.bucket, snapshots.key) if isinstance(snapshots, S3SnapshotStore) else None
        )
        return DynamoDriver(
            _cached(lambda service: session.client(service, config=RETRIES)),
            region=region,
            url=None,
            installation=installation,
            capacity=capacity,
            imports=imports,
            import_above=import_above_mb << 20,
        )
    local = endpoint.LocalEndpoint(home / "dynamodb", port)
    embedded = boto3.session.Session(region_name=endpoint.REGION, **endpoint.CREDENTIALS)
    return DynamoDriver(
        _cached(lambda service: embedded.client(service, endpoint_url=local.url, config=RETRIES)),
        region=endpoint.REGION,
        url=local.url,
        installation=installation,
        capacity=capacity,
        local=local,
    )
