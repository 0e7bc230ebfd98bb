"""`devdb demo --dynamodb`: a DynamoDB "production" in the embedded endpoint, and its policy.

Three tables under `prod_`, shaped like a small SaaS's: `Tenants` (some of them sandboxes),
`Customers` (a composite key, an index on the email, a local index on the user name, names,
emails, phones and addresses in nested maps, a picture as binary, a set of tags) and
`Orders` (a time range key, a TTL attribute, line items in a list, a JSON document kept as
text). The shrink keeps the sandbox tenants, their customers and their last 30 days of
orders, and masks every personal value.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
from faker import Faker

from provisioning.drivers.base import Progress
from provisioning.dynamo.endpoint import CREDENTIALS, REGION, LocalEndpoint
from provisioning.dynamo.policy import DynamoPolicy, parse_dynamo_policy
from provisioning.dynamo.shrink import shrink_dynamo
from provisioning.dynamo.source import DynamoSource
from provisioning.models import ProgressEvent, Step
from provisioning.shrink.detect import PiiDetector
from provisioning.snapshots.base import SnapshotStore
from provisioning.snapshots.manifest import Manifest

PREFIX = "prod_"
TENANTS = 10
CUSTOMERS_PER_TENANT = 50
ORDERS_PER_CUSTOMER = 6

POLICY: dict[str, Any] = {
    "version": 1,
    "engine": "dynamodb",
    "tenant": {"table": "Tenants", "attribute": "tenantId"},
    "tables": {
        "Tenants": {
            "action": "subset",
            "where": {"sandbox": True},
            "attributes": {
                "tenantId": "internal",
                "sandbox": "internal",
                "plan": "public",
                "name": "internal",
            },
        },
        "Customers": {
            "action": "subset",
            "follow": {"attribute": "tenantId", "table": "Tenants", "key": "tenantId"},
            "attributes": {
                "tenantId": "internal",
                "customerId": "internal",
                "username": {"class": "pii", "rule": "fake", "kind": "user_name"},
                "email": {"class": "pii", "rule": "fake", "kind": "email"},
                "phone": {"class": "pii", "rule": "fake", "kind": "phone"},
                "picture": {"class": "pii", "rule": "null"},
                "tags": "internal",
                "profile": {
                    "class": "pii",
                    "rule": "json",
                    "paths": {
                        "$.name": {"rule": "fake", "kind": "name"},
                        "$.address.street": {"rule": "fake", "kind": "address"},
                        "$.address.city": {"rule": "fake", "kind": "city"},
                        "$.birthday": {"rule": "date_shift", "days": 30},
                    },
                },
            },
        },
        "Orders": {
            "action": "subset",
            "follow": {"attribute": "customerId", "table": "Customers", "key": "customerId"},
            "window": {"attribute": "orderedAt", "last": "30d"},
            "attributes": {
                "customerId": "internal",
                "orderedAt": "internal",
                "expiresAt": "internal",
                "total": "internal",
                "lines": "internal",
                "shipping": {
                    "class": "pii",
                    "rule": "json",
                    "paths": {
                        "$.recipient": {"rule": "fake", "kind": "name"},
                        "$.phone": {"rule": "fake", "kind": "phone"},
                    },
                },
            },
        },
    },
}


def demo_dynamo_policy() -> DynamoPolicy:
    return parse_dynamo_policy(POLICY)


def _make_tables(client: Any) -> None:
    def string(*names: str) -> list[dict[str, str]]:
        return [{"AttributeName": n, "AttributeType": "S"} for n in names]

    def key(hash_key: str, range_key: str | None = None) -> list[dict[str, str]]:
        parts = [{"AttributeName": hash_key, "KeyType": "HASH"}]
        return parts + ([{"AttributeName": range_key, "KeyType": "RANGE"}] if range_key else [])

    on_demand = {"BillingMode": "PAY_PER_REQUEST"}
    client.create_table(
        TableName=PREFIX + "Tenants",
        KeySchema=key("tenantId"),
        AttributeDefinitions=string("tenantId"),
        **on_demand,
    )
    client.create_table(
        TableName=PREFIX + "Customers",
        KeySchema=key("tenantId", "customerId"),
        AttributeDefinitions=string("tenantId", "customerId", "email", "username"),
        GlobalSecondaryIndexes=[
            {
                "IndexName": "byEmail",
                "KeySchema": key("email"),
                "Projection": {"ProjectionType": "KEYS_ONLY"},
            }
        ],
        LocalSecondaryIndexes=[
            {
                "IndexName": "byUsername",
                "KeySchema": key("tenantId", "username"),
                "Projection": {"ProjectionType": "ALL"},
            }
        ],
        **on_demand,
    )
    client.create_table(
        TableName=PREFIX + "Orders",
        KeySchema=key("customerId", "orderedAt"),
        AttributeDefinitions=string("customerId", "orderedAt"),
        **on_demand,
    )
    for name in ("Tenants", "Customers", "Orders"):
        client.get_waiter("table_exists").wait(TableName=PREFIX + name)
    client.update_time_to_live(
        TableName=PREFIX + "Orders",
        TimeToLiveSpecification={"Enabled": True, "AttributeName": "expiresAt"},
    )


def _items(scale: int) -> dict[str, list[dict[str, Any]]]:
    fake = Faker()
    Faker.seed(7)
    rng = random.Random(7)
    now = datetime.now(UTC)
    tenants, customers, orders = [], [], []
    for t in range(1, TENANTS * scale + 1):
        tenant = f"t{t:04d}"
        tenants.append(
            {
                "tenantId": {"S": tenant},
                "sandbox": {"BOOL": t % 5 == 1},
                "plan": {"S": rng.choice(["free", "team", "enterprise"])},
                "name": {"S": f"Tenant {t}"},
            }
        )
        for c in range(CUSTOMERS_PER_TENANT):
            customer = f"{tenant}-c{c:04d}"
            address = {"street": {"S": fake.street_address()}, "city": {"S": fake.city()}}
            profile = {
                "name": {"S": fake.name()},
                "address": {"M": address},
                "birthday": {"S": fake.date_of_birth().isoformat()},
            }
            customers.append(
                {
                    "tenantId": {"S": tenant},
                    "customerId": {"S": customer},
                    "username": {"S": f"{fake.user_name()}{c}"},
                    "email": {"S": f"{customer}.{fake.email()}"},
                    "phone": {"S": fake.phone_number()},
                    "picture": {"B": rng.randbytes(64)},
                    "tags": {"SS": rng.sample(["vip", "beta", "churn-risk", "new"], 2)},
                    "profile": {"M": profile},
                }
            )
            for _ in range(ORDERS_PER_CUSTOMER):
                when = now - timedelta(days=rng.uniform(0, 90))
                orders.append(
                    {
                        "customerId": {"S": customer},
                        "orderedAt": {"S": when.isoformat(timespec="microseconds")},
                        "expiresAt": {"N": str(int((when + timedelta(days=365)).timestamp()))},
                        "total": {"N": f"{rng.uniform(5, 500):.2f}"},
                        "lines": {
                            "L": [
                                {"M": {"sku": {"S": f"sku-{rng.randint(1, 99)}"}}}
                                for _ in range(rng.randint(1, 3))
                            ]
                        },
                        "shipping": {
                            "S": json.dumps(
                                {"recipient": fake.name(), "phone": fake.phone_number()}
                            )
                        },
                    }
                )
    return {"Tenants": tenants, "Customers": customers, "Orders": orders}


async def publish_demo(
    local: LocalEndpoint,
    store: SnapshotStore,
    *,
    scale: int,
    salt: bytes,
    detector: PiiDetector,
    progress: Progress,
) -> Manifest:
    """Make the demo production in the embedded endpoint, then shrink, mask, scan and
    publish a snapshot of it, as the nightly rebuild would of a real one."""

    def start() -> str:
        with local.lock():  # not alongside a launch starting it too
            return local.ensure()

    url = await asyncio.to_thread(start)
    client = boto3.session.Session(region_name=REGION, **CREDENTIALS).client(
        "dynamodb", endpoint_url=url
    )

    def told(message: str) -> None:
        progress(ProgressEvent(step=Step.RESTORE, message=message))

    await asyncio.to_thread(generate_dynamo, client, scale=scale, progress=told)
    return await shrink_dynamo(
        client,
        DynamoSource(region=REGION, prefix=PREFIX),
        demo_dynamo_policy(),
        store,
        salt=salt,
        progress=progress,
        detector=detector,
    )


def generate_dynamo(
    client: Any, *, scale: int = 1, progress: Callable[[str], None] | None = None
) -> int:
    """Make the demo production's tables afresh (under `prod_`) and fill them; the items
    written."""
    existing = {
        name
        for page in client.get_paginator("list_tables").paginate()
        for name in page["TableNames"]
        if name.startswith(PREFIX)
    }
    for name in existing:
        client.delete_table(TableName=name)
    for name in existing:
        client.get_waiter("table_not_exists").wait(TableName=name)
    _make_tables(client)
    written = 0
    for name, items in _items(scale).items():
        for start in range(0, len(items), 25):
            batch = [{"PutRequest": {"Item": item}} for item in items[start : start + 25]]
            requests = {PREFIX + name: batch}
            while requests:
                requests = client.batch_write_item(RequestItems=requests)["UnprocessedItems"]
        written += len(items)
        if progress is not None:
            progress(f"{len(items):,} items in {PREFIX}{name}")
    return written
