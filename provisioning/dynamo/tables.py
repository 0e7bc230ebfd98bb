"""DynamoDB tables as the driver sees them: listed with their devdb tags, tagged, deleted,
and their consumed capacity read from CloudWatch."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from botocore.exceptions import ClientError

from provisioning.errors import ProvisioningFailed

TAG_ENV = "devdb:environment"
TAG_NAME = "devdb:name"
TAG_INSTALLATION = "devdb:installation"
TAG_LOADED = "devdb:loaded"  # when the items were loaded: the load itself is not use


def code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", "error"))


def tagged(client: Any, prefix: str) -> list[tuple[str, dict[str, str]]]:
    """Each table under `prefix` and its tags (tables gone meanwhile skipped)."""
    found = []
    for page in client.get_paginator("list_tables").paginate():
        for name in page["TableNames"]:
            if not name.startswith(prefix):
                continue
            try:
                arn = client.describe_table(TableName=name)["Table"]["TableArn"]
                tags = client.list_tags_of_resource(ResourceArn=arn).get("Tags", [])
            except ClientError as exc:
                if code(exc) == "ResourceNotFoundException":
                    continue
                raise
            found.append((name, {t["Key"]: t["Value"] for t in tags}))
    return found


def tag(client: Any, table: str, tags: dict[str, str]) -> None:
    arn = client.describe_table(TableName=table)["Table"]["TableArn"]
    client.tag_resource(
        ResourceArn=arn, Tags=[{"Key": key, "Value": value} for key, value in tags.items()]
    )


def delete_tables(client: Any, tables: list[str]) -> None:
    """Delete the tables and wait until each is gone: a name is free only then. A table
    still being made (an import under way) is waited for, then deleted; one already being
    deleted is only waited for."""
    for name in tables:
        try:
            client.delete_table(TableName=name)
        except ClientError as exc:
            if code(exc) == "ResourceInUseException" and _status(client, name) != "DELETING":
                client.get_waiter("table_exists").wait(  # being made: then it can go
                    TableName=name, WaiterConfig={"Delay": 5, "MaxAttempts": 360}
                )
                client.delete_table(TableName=name)
            elif code(exc) not in ("ResourceNotFoundException", "ResourceInUseException"):
                raise
    for name in tables:
        client.get_waiter("table_not_exists").wait(
            TableName=name, WaiterConfig={"Delay": 2, "MaxAttempts": 150}
        )


def _status(client: Any, table: str) -> str | None:
    try:
        return str(client.describe_table(TableName=table)["Table"]["TableStatus"])
    except ClientError as exc:
        if code(exc) == "ResourceNotFoundException":
            return None
        raise


def clear_the_way(client: Any, prefix: str, name: str, installation: str, wanted: set[str]) -> None:
    """Delete what stands where environment `name`'s tables go: an earlier environment of
    the same name (the new one replaces it) or this one's own half-made tables; refuse, in
    one sentence, a wanted name that is someone else's table."""
    doomed = []
    for table, tags in tagged(client, prefix):
        mine = tags.get(TAG_NAME) == name and tags.get(TAG_ENV)
        if mine and tags.get(TAG_INSTALLATION) == installation:
            doomed.append(table)
        elif table in wanted:
            owner = (
                "nobody in devdb"
                if TAG_NAME not in tags
                else f"environment {tags[TAG_NAME]!r}"
                if tags.get(TAG_INSTALLATION) == installation
                else "another devdb installation"
            )
            raise ProvisioningFailed(
                f"the table {table} already exists and belongs to {owner}: "
                "choose another environment name."
            )
    delete_tables(client, doomed)


def consumed(cloudwatch: Any, table: str, since: datetime, until: datetime) -> float:
    """Read and write capacity units the table consumed between `since` and `until`."""
    total = 0.0
    for metric in ("ConsumedReadCapacityUnits", "ConsumedWriteCapacityUnits"):
        points = cloudwatch.get_metric_statistics(
            Namespace="AWS/DynamoDB",
            MetricName=metric,
            Dimensions=[{"Name": "TableName", "Value": table}],
            StartTime=since,
            EndTime=until,
            Period=86400,  # a day per point: an environment lives a few
            Statistics=["Sum"],
        )["Datapoints"]
        total += sum(point["Sum"] for point in points)
    return total
