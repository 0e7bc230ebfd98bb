"""A DynamoDB source read from its exports to S3 instead of scans, against moto's server.

moto makes exports but writes neither DynamoDB's manifests nor `ExportManifest`, so the
tests play DynamoDB's part: each table's items are written to S3 in the layout AWS uses
(`AWSDynamoDB/<id>/manifest-summary.json`, `manifest-files.json`, `data/*.json.gz`), and
ListExports and DescribeExport answer for them. Everything else is moto's.
"""

from __future__ import annotations

import gzip
import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from provisioning.dynamo.items import to_json
from provisioning.dynamo.policy import parse_dynamo_policy
from provisioning.dynamo.shrink import shrink_dynamo
from provisioning.dynamo.source import parse_source
from provisioning.errors import NotFound
from provisioning.snapshots.local import LocalSnapshotStore
from provisioning.snapshots.manifest import Manifest
from tests.cloud import REGION, Moto
from tests.conftest import unique
from tests.test_dynamo_shrink import POLICY, production


class Exported:
    """The source's DynamoDB client, answering ListExports and DescribeExport as DynamoDB
    would for the exports written by `export`."""

    def __init__(self, client: Any, s3: Any, bucket: str) -> None:
        self.client, self.s3, self.bucket = client, s3, bucket
        self.exports: dict[str, list[dict[str, Any]]] = {}

    def __getattr__(self, name: str) -> Any:
        return getattr(self.client, name)

    def export(self, table: str, when: datetime, fmt: str = "DYNAMODB_JSON") -> None:
        arn = self.client.describe_table(TableName=table)["Table"]["TableArn"]
        export_id = uuid.uuid4().hex
        base = f"exports/AWSDynamoDB/{export_id}/"
        items = [
            item
            for page in self.client.get_paginator("scan").paginate(TableName=table)
            for item in page["Items"]
        ]
        files = []
        for number, start in enumerate(range(0, len(items), 7)):  # several data files
            key = f"{base}data/{number}.json.gz"
            lines = "".join(to_json({"Item": item}) + "\n" for item in items[start : start + 7])
            self.s3.put_object(Bucket=self.bucket, Key=key, Body=gzip.compress(lines.encode()))
            files.append({"itemCount": len(items[start : start + 7]), "dataFileS3Key": key})
        listing = "".join(json.dumps(f) + "\n" for f in files)
        self.s3.put_object(Bucket=self.bucket, Key=base + "manifest-files.json", Body=listing)
        summary = {"manifestFilesS3Key": base + "manifest-files.json", "itemCount": len(items)}
        self.s3.put_object(
            Bucket=self.bucket, Key=base + "manifest-summary.json", Body=json.dumps(summary)
        )
        self.exports.setdefault(arn, []).append(
            {
                "ExportArn": f"{arn}/export/{export_id}",
                "ExportStatus": "COMPLETED",
                "ExportTime": when,
                "ExportFormat": fmt,
                "S3Bucket": self.bucket,
                "ExportManifest": base + "manifest-summary.json",
            }
        )

    def get_paginator(self, name: str) -> Any:
        if name != "list_exports":
            return self.client.get_paginator(name)
        exports = self.exports

        class Pages:
            def paginate(self, TableArn: str) -> list[dict[str, Any]]:
                return [{"ExportSummaries": exports.get(TableArn, [])}]

        return Pages()

    def describe_export(self, ExportArn: str) -> dict[str, Any]:
        found = [e for es in self.exports.values() for e in es if e["ExportArn"] == ExportArn]
        return {"ExportDescription": found[0]}


def lines(store: LocalSnapshotStore, manifest: Manifest, table: str) -> list[str]:
    path = store.root / manifest.id / "dump" / f"{table}.json.gz"
    return sorted(gzip.decompress(path.read_bytes()).decode().splitlines())


@pytest.fixture
def exported(moto: Moto) -> tuple[Exported, str]:
    prefix = unique("exp").replace("-", "_") + "_"
    client = production(moto, prefix)
    s3 = moto.client("s3")
    bucket = unique("exports")
    s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": REGION})
    return Exported(client, s3, bucket), prefix


async def test_a_shrink_from_exports_equals_one_from_scans_as_of_the_export(
    exported: tuple[Exported, str], tmp_path: Path
) -> None:
    source, prefix = exported
    store = LocalSnapshotStore(tmp_path / "snapshots")
    now = datetime.now(UTC)
    for table in ("Accounts", "Events", "AuditTrail"):
        source.export(prefix + table, now - timedelta(days=2))  # an older export, then
        source.export(prefix + table, now - timedelta(hours=1))  # the newest: the one read
    policy = parse_dynamo_policy(POLICY)
    url = parse_source(f"dynamodb://{REGION}/{prefix}")
    scanned = await shrink_dynamo(source.client, url, policy, store, salt=b"same")
    # After the export, production changes: an item the snapshot holds is deleted, and the
    # export, as of its point in time, still has it.
    kept = json.loads(lines(store, scanned, "Events")[0])["Item"]
    source.client.delete_item(
        TableName=prefix + "Events", Key={k: kept[k] for k in ("accountId", "occurredAt")}
    )
    read = await shrink_dynamo(source, url, policy, store, salt=b"same", exports=source.s3)
    assert read.tables.keys() == scanned.tables.keys() == {"Accounts", "Events"}
    for table in read.tables:
        assert lines(store, read, table) == lines(store, scanned, table)
        assert read.tables[table].rows == scanned.tables[table].rows > 0


async def test_a_table_without_an_export_is_one_sentence(
    exported: tuple[Exported, str], tmp_path: Path
) -> None:
    source, prefix = exported
    source.export(prefix + "Accounts", datetime.now(UTC))
    store = LocalSnapshotStore(tmp_path / "snapshots")
    url = parse_source(f"dynamodb://{REGION}/{prefix}")
    with pytest.raises(NotFound) as missing:
        await shrink_dynamo(
            source, url, parse_dynamo_policy(POLICY), store, salt=b"s", exports=source.s3
        )
    assert str(missing.value) == (
        f"the DynamoDB table {prefix}Events has no completed export to S3: export it "
        "(ExportTableToPointInTime) or shrink without --exports."
    )
    assert await store.list() == [], "nothing published"
