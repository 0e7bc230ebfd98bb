"""Reading a DynamoDB source from its exports to S3 instead of scanning it
(`devdb shrink --source dynamodb://… --exports`): no read capacity is consumed on the
production tables, and the items are as of the export's point in time.

Each source table's newest completed export (ListExports, DescribeExport) is read through
the files DynamoDB writes: `manifest-summary.json` names `manifest-files.json`, whose lines
name the gzip data files, whose lines are `{"Item": …}` in DynamoDB JSON (binary values in
base64). Only exports in DynamoDB JSON are read; Ion exports are refused in one sentence.
"""

from __future__ import annotations

import gzip
import io
import json
from collections.abc import Generator
from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from provisioning.dynamo.load import typed_item
from provisioning.errors import NotFound, ProvisioningFailed


def newest_export(client: Any, table_arn: str, table: str) -> dict[str, Any]:
    """The description of the table's newest completed export; `NotFound` if none."""
    try:
        summaries = [
            summary
            for page in client.get_paginator("list_exports").paginate(TableArn=table_arn)
            for summary in page.get("ExportSummaries", [])
            if summary.get("ExportStatus") == "COMPLETED"
        ]
        described = [
            client.describe_export(ExportArn=summary["ExportArn"])["ExportDescription"]
            for summary in summaries
        ]
    except (ClientError, BotoCoreError) as exc:
        raise ProvisioningFailed(f"DynamoDB could not list the exports of {table}: {exc}.") from exc
    if not described:
        raise NotFound(
            f"the DynamoDB table {table} has no completed export to S3: export it "
            "(ExportTableToPointInTime) or shrink without --exports."
        )
    never = datetime.min.replace(tzinfo=UTC)
    newest: dict[str, Any] = max(
        described, key=lambda d: d.get("ExportTime") or d.get("EndTime") or never
    )
    if newest.get("ExportFormat", "DYNAMODB_JSON") != "DYNAMODB_JSON":
        raise ProvisioningFailed(
            f"the newest export of {table} is in {newest['ExportFormat']}; devdb reads "
            "exports in DYNAMODB_JSON."
        )
    if not newest.get("ExportManifest"):
        raise ProvisioningFailed(f"the newest export of {table} names no manifest.")
    return newest


def export_items(s3: Any, export: dict[str, Any], table: str) -> Generator[dict[str, Any]]:
    """Every item of an export, typed as a scan returns them, a file at a time."""
    bucket = export["S3Bucket"]

    def read(key: str) -> bytes:
        try:
            body: bytes = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        except (ClientError, BotoCoreError) as exc:
            raise ProvisioningFailed(
                f"the export of {table} could not be read from s3://{bucket}/{key}: {exc}."
            ) from exc
        return body

    try:
        summary = json.loads(read(export["ExportManifest"]))
        files = [
            json.loads(line)["dataFileS3Key"]
            for line in read(summary["manifestFilesS3Key"]).decode().splitlines()
            if line.strip()
        ]
    except (ValueError, KeyError) as exc:
        raise ProvisioningFailed(f"the export of {table} has a damaged manifest.") from exc
    for key in files:
        try:
            body = s3.get_object(Bucket=bucket, Key=key)["Body"]
            with gzip.GzipFile(fileobj=body) as unzipped:  # a file at a time, streamed
                for line in io.TextIOWrapper(unzipped, encoding="utf-8"):
                    if line.strip():
                        yield typed_item(json.loads(line)["Item"])
        except (ClientError, BotoCoreError, OSError, UnicodeDecodeError, ValueError) as exc:
            raise ProvisioningFailed(
                f"the export file s3://{bucket}/{key} of {table} could not be read: {exc}."
            ) from exc
