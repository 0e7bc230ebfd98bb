"""Loading a large DynamoDB snapshot kept in S3 by ImportTable: DynamoDB reads the gzip
DynamoDB JSON files itself, with no write capacity consumed and nothing downloaded here.

ImportTable makes each table itself, with the keys, billing and global indexes given, but
takes no local indexes (a snapshot with any loads by BatchWriteItem instead) and no tags
(the driver tags each table once its import is done). On AWS an import takes minutes even
for a small table, so only snapshots above a size are imported (`DEVDB_DYNAMODB_IMPORT_ABOVE`).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from provisioning.dynamo.items import data_file
from provisioning.dynamo.load import enable_ttl
from provisioning.dynamo.parameters import Parameters
from provisioning.dynamo.tables import tag
from provisioning.errors import ProvisioningFailed
from provisioning.snapshots.manifest import Manifest

KeyOf = Callable[[str, str], str]  # (snapshot id, file under the snapshot) → S3 key


def importable(manifest: Manifest) -> bool:
    """Whether ImportTable can make every table of the snapshot (none has local indexes)."""
    tables = manifest.extra.get("tables", {})
    return bool(tables) and not any(shape["LocalSecondaryIndexes"] for shape in tables.values())


def import_tables(
    client: Any,
    manifest: Manifest,
    prefix: str,
    *,
    bucket: str,
    key_of: KeyOf,
    capacity: int | None,
    token: str,
    progress: Callable[[int, int], None],
    pause: Callable[[float], None] = time.sleep,
    stop: threading.Event | None = None,
) -> list[str]:
    """Start an import per table, then wait for all; the tables made. `token` makes a
    retried call the same import rather than a second one."""
    started: dict[str, str] = {}
    for name, shape in manifest.extra["tables"].items():
        throughput = {"ReadCapacityUnits": capacity, "WriteCapacityUnits": capacity}
        creation: dict[str, Any] = {
            "TableName": prefix + name,
            "KeySchema": shape["KeySchema"],
            "AttributeDefinitions": shape["AttributeDefinitions"],
            "BillingMode": "PROVISIONED" if capacity else "PAY_PER_REQUEST",
        }
        if capacity:
            creation["ProvisionedThroughput"] = throughput
        if shape["GlobalSecondaryIndexes"]:
            creation["GlobalSecondaryIndexes"] = [
                {**index, **({"ProvisionedThroughput": throughput} if capacity else {})}
                for index in shape["GlobalSecondaryIndexes"]
            ]
        try:
            answer = client.import_table(
                ClientToken=str(uuid.uuid5(uuid.NAMESPACE_URL, f"{token}/{name}")),
                S3BucketSource={
                    "S3Bucket": bucket,
                    "S3KeyPrefix": key_of(manifest.id, f"dump/{data_file(name)}"),
                },
                InputFormat="DYNAMODB_JSON",
                InputCompressionType="GZIP",
                TableCreationParameters=creation,
            )
        except (ClientError, BotoCoreError) as exc:
            raise ProvisioningFailed(
                f"DynamoDB could not start importing {prefix}{name} from S3: {exc}."
            ) from exc
        started[prefix + name] = answer["ImportTableDescription"]["ImportArn"]
    waiting = dict(started)
    delay = 0.2
    while waiting:
        if stop is not None and stop.is_set():
            raise ProvisioningFailed("the imports were left unfinished: the refresh was stopped.")
        for table, arn in list(waiting.items()):
            described = client.describe_import(ImportArn=arn)["ImportTableDescription"]
            status = described["ImportStatus"]
            if status == "COMPLETED":
                del waiting[table]
                progress(len(started) - len(waiting), len(started))
            elif status in ("FAILED", "CANCELLING", "CANCELLED"):
                reason = described.get("FailureMessage") or described.get("FailureCode") or status
                raise ProvisioningFailed(f"DynamoDB could not import {table} from S3: {reason}.")
        if waiting:
            pause(delay)
            delay = min(delay * 2, 15.0)
    return list(started)


def import_and_tag(
    client: Any,
    parameters: Parameters,
    manifest: Manifest,
    handle: dict[str, Any],
    *,
    imports: tuple[str, KeyOf],
    capacity: int | None,
    token: str,
    tags: dict[str, str],
    progress: Callable[[int, int], None],
    stop: threading.Event,
) -> None:
    """An environment's tables by ImportTable, then tagged and given their TTL. They are
    listed in SSM while untagged, so that an import cut short is still the environment's
    to remove."""
    bucket, key_of = imports
    prefix, name = handle["prefix"], handle["name"]
    parameters.publish(name, {"importing": ",".join(prefix + t for t in manifest.tables)})
    import_tables(
        client,
        manifest,
        prefix,
        bucket=bucket,
        key_of=key_of,
        capacity=capacity,
        token=token,
        progress=progress,
        stop=stop,
    )
    for table, shape in manifest.extra["tables"].items():
        tag(client, prefix + table, tags)
        enable_ttl(client, prefix + table, shape)
    parameters.imported(name)
