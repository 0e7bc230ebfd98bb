"""Loading a DynamoDB snapshot into prefixed tables, against moto's server: keys, indexes,
TTL and items as the snapshot has them; two prefixes apart; throttling retried, and
throttling that never clears one sentence."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from provisioning.dynamo.load import create_tables, load_items
from provisioning.dynamo.policy import parse_dynamo_policy
from provisioning.dynamo.shrink import shrink_dynamo
from provisioning.dynamo.source import parse_source
from provisioning.errors import ProvisioningFailed
from provisioning.snapshots.local import LocalSnapshotStore
from provisioning.snapshots.manifest import Manifest
from tests.cloud import REGION, Moto
from tests.conftest import unique
from tests.test_dynamo_shrink import POLICY, production


async def snapshot(moto: Moto, tmp_path: Path) -> tuple[Manifest, Path]:
    prefix = unique("src").replace("-", "_") + "_"
    client = production(moto, prefix)
    store = LocalSnapshotStore(tmp_path / "snapshots")
    manifest = await shrink_dynamo(
        client,
        parse_source(f"dynamodb://{REGION}/{prefix}"),
        parse_dynamo_policy(POLICY),
        store,
        salt=b"s",
    )
    return manifest, store.root / manifest.id / "dump"


def count(client: Any, table: str) -> int:
    return sum(page["Count"] for page in client.get_paginator("scan").paginate(TableName=table))


async def test_a_snapshot_loads_into_tables_of_its_own(moto: Moto, tmp_path: Path) -> None:
    manifest, dump = await snapshot(moto, tmp_path)
    client = moto.client("dynamodb")
    alice, bob = (unique(f"dev_{who}").replace("-", "_") + "_" for who in ("alice", "bob"))
    seen: list[int] = []
    made = create_tables(client, manifest, alice, capacity=5)
    assert sorted(made) == [alice + "Accounts", alice + "Events"]
    assert (
        load_items(client, dump, manifest, alice, progress=lambda done, _: seen.append(done)) == 20
    )
    assert seen[-1] == 20
    create_tables(client, manifest, bob, capacity=None)
    load_items(client, dump, manifest, bob)
    table = client.describe_table(TableName=alice + "Accounts")["Table"]
    assert [k["AttributeName"] for k in table["KeySchema"]] == ["tenantId", "accountId"]
    assert table["GlobalSecondaryIndexes"][0]["IndexName"] == "byEmail"
    assert table["LocalSecondaryIndexes"][0]["IndexName"] == "byUsername"
    assert table["ProvisionedThroughput"]["WriteCapacityUnits"] == 5
    ttl = client.describe_time_to_live(TableName=alice + "Accounts")["TimeToLiveDescription"]
    assert ttl["AttributeName"] == "expiresAt"
    billing = client.describe_table(TableName=bob + "Accounts")["Table"]["BillingModeSummary"]
    assert billing["BillingMode"] == "PAY_PER_REQUEST"
    for prefix in (alice, bob):
        assert count(client, prefix + "Accounts") == manifest.tables["Accounts"].rows == 10
        assert count(client, prefix + "Events") == manifest.tables["Events"].rows == 10
    # Each developer's tables are their own: one's writes do not reach the other's.
    client.delete_item(
        TableName=alice + "Events",
        Key=next(
            iter(
                client.scan(
                    TableName=alice + "Events", ProjectionExpression="accountId, occurredAt"
                )["Items"]
            )
        ),
    )
    assert count(client, alice + "Events") == 9 and count(client, bob + "Events") == 10


class Throttled:
    """moto's client, with DynamoDB's throttling played: some calls refused, some items
    left unprocessed, `forever` never clearing."""

    def __init__(self, client: Any, *, forever: bool = False) -> None:
        self.client = client
        self.forever = forever
        self.calls = 0

    def batch_write_item(self, RequestItems: dict[str, Any]) -> dict[str, Any]:
        self.calls += 1
        ((table, requests),) = RequestItems.items()
        if self.forever:
            return {"UnprocessedItems": {table: requests}}
        if self.calls % 3 == 1:
            raise ClientError(
                {"Error": {"Code": "ProvisionedThroughputExceededException", "Message": "slow"}},
                "BatchWriteItem",
            )
        written, left = requests[: len(requests) // 2 or 1], requests[len(requests) // 2 or 1 :]
        self.client.batch_write_item(RequestItems={table: written})
        return {"UnprocessedItems": {table: left} if left else {}}


async def test_throttling_is_retried_and_one_that_never_clears_is_one_sentence(
    moto: Moto, tmp_path: Path
) -> None:
    manifest, dump = await snapshot(moto, tmp_path)
    client = moto.client("dynamodb")
    prefix = unique("dev_slow").replace("-", "_") + "_"
    create_tables(client, manifest, prefix, capacity=1)
    throttled = Throttled(client)
    assert load_items(throttled, dump, manifest, prefix, workers=2, pause=lambda _: None) == 20
    assert throttled.calls > 2 and count(client, prefix + "Accounts") == 10
    with pytest.raises(
        ProvisioningFailed, match=r"kept throttling writes to .*unprocessed after 10 attempts"
    ):
        load_items(Throttled(client, forever=True), dump, manifest, prefix, pause=lambda _: None)


async def test_a_table_that_cannot_be_made_leaves_none_of_the_others(
    moto: Moto, tmp_path: Path
) -> None:
    manifest, _ = await snapshot(moto, tmp_path)
    client = moto.client("dynamodb")
    prefix = unique("dev_taken").replace("-", "_") + "_"
    assert list(manifest.extra["tables"]) == ["Accounts", "Events"]
    client.create_table(  # someone else's table where the second one would go
        TableName=prefix + "Events",
        KeySchema=[{"AttributeName": "x", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "x", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    with pytest.raises(ProvisioningFailed, match=f"could not make the table {prefix}Events"):
        create_tables(client, manifest, prefix, capacity=None)
    left = [n for n in client.list_tables()["TableNames"] if n.startswith(prefix)]
    assert left == [prefix + "Events"]  # ours went again; theirs stays
