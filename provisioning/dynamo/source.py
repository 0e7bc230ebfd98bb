"""Reading a DynamoDB source: the tables under a prefix, their shape, and their items by
parallel segmented scans. boto3's errors are translated here, into one sentence each."""

from __future__ import annotations

import contextlib
import queue
import re
import threading
from collections.abc import Generator
from dataclasses import dataclass
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from provisioning.errors import InvalidInput, NotFound, ProvisioningFailed

# Throttled reads are retried with backoff; past this many attempts a scan gives up.
RETRIES = Config(retries={"mode": "adaptive", "max_attempts": 8})
_URL = re.compile(r"dynamodb://(?P<region>[a-z]{2}(-[a-z]+)+-\d)/(?P<prefix>[A-Za-z0-9_.-]*)")


@dataclass(frozen=True)
class DynamoSource:
    region: str
    prefix: str

    @property
    def url(self) -> str:
        return f"dynamodb://{self.region}/{self.prefix}"


def dynamo_client(source: DynamoSource) -> Any:
    """A DynamoDB client for the source's region; credentials and AWS_ENDPOINT_URL as boto3
    finds them."""
    return boto3.client("dynamodb", region_name=source.region, config=RETRIES)


def is_dynamo(source: str) -> bool:
    return source.startswith("dynamodb://")


def parse_source(source: str) -> DynamoSource:
    """`dynamodb://REGION/PREFIX`, the tables whose names start with PREFIX."""
    match = _URL.fullmatch(source)
    if match is None:
        raise InvalidInput(
            f"{source[:80]!r} is not a DynamoDB source: write dynamodb://REGION/PREFIX, as in "
            "dynamodb://eu-west-1/prod_."
        )
    return DynamoSource(region=match["region"], prefix=match["prefix"])


@dataclass(frozen=True)
class TableShape:
    """What a table is, apart from its items: enough to make it again."""

    name: str  # without the prefix
    key_schema: list[dict[str, str]]
    attribute_definitions: list[dict[str, str]]
    global_indexes: list[dict[str, Any]]
    local_indexes: list[dict[str, Any]]
    ttl_attribute: str | None

    def to_json(self) -> dict[str, Any]:
        return {
            "KeySchema": self.key_schema,
            "AttributeDefinitions": self.attribute_definitions,
            "GlobalSecondaryIndexes": self.global_indexes,
            "LocalSecondaryIndexes": self.local_indexes,
            "TimeToLiveAttribute": self.ttl_attribute,
        }

    @property
    def keys(self) -> list[str]:
        return [part["AttributeName"] for part in self.key_schema]

    def attribute_type(self, attribute: str) -> str:
        """A key attribute's type: S, N or B."""
        types = {d["AttributeName"]: d["AttributeType"] for d in self.attribute_definitions}
        return types.get(attribute, "S")

    @property
    def key_attributes(self) -> set[str]:
        """The table's key and every index's key."""
        schemas = [self.key_schema] + [
            i["KeySchema"] for i in self.global_indexes + self.local_indexes
        ]
        return {part["AttributeName"] for schema in schemas for part in schema}


def _failed(what: str, exc: Exception) -> ProvisioningFailed:
    if isinstance(exc, ClientError):
        code = exc.response.get("Error", {}).get("Code", "")
        if "Throttl" in code or code == "ProvisionedThroughputExceededException":
            tries = RETRIES.retries["max_attempts"]
            return ProvisioningFailed(f"DynamoDB kept throttling {what}, after {tries} attempts.")
        return ProvisioningFailed(f"DynamoDB refused {what} ({code}).")
    return ProvisioningFailed(f"DynamoDB could not be reached for {what}: {exc}.")


def list_tables(client: Any, source: DynamoSource) -> list[str]:
    """The tables under the prefix, without it; `NotFound` when there is none."""
    try:
        names = [
            name
            for page in client.get_paginator("list_tables").paginate()
            for name in page.get("TableNames", [])
            if name.startswith(source.prefix)
        ]
    except (ClientError, BotoCoreError) as exc:
        raise _failed(f"the list of tables in {source.region}", exc) from exc
    if not names:
        raise NotFound(
            f"no DynamoDB table in {source.region} starts with {source.prefix!r}: check the "
            "prefix, the region and the account the credentials belong to."
        )
    return sorted(name[len(source.prefix) :] for name in names)


def describe(client: Any, source: DynamoSource, name: str) -> TableShape:
    full = source.prefix + name
    try:
        table = client.describe_table(TableName=full)["Table"]
        ttl = client.describe_time_to_live(TableName=full)["TimeToLiveDescription"]
    except client.exceptions.ResourceNotFoundException as exc:
        raise NotFound(f"the DynamoDB table {full} went away while it was read.") from exc
    except (ClientError, BotoCoreError) as exc:
        raise _failed(f"a description of {full}", exc) from exc

    def index(spec: dict[str, Any]) -> dict[str, Any]:
        return {k: spec[k] for k in ("IndexName", "KeySchema", "Projection") if k in spec}

    return TableShape(
        name=name,
        key_schema=table["KeySchema"],
        attribute_definitions=table["AttributeDefinitions"],
        global_indexes=[index(i) for i in table.get("GlobalSecondaryIndexes", [])],
        local_indexes=[index(i) for i in table.get("LocalSecondaryIndexes", [])],
        ttl_attribute=ttl.get("AttributeName")
        if ttl.get("TimeToLiveStatus") == "ENABLED"
        else None,
    )


def scan(client: Any, table: str, *, segments: int = 4) -> Generator[dict[str, Any]]:
    """Every item of `table` (typed, as DynamoDB sends them), read by `segments` scans in
    parallel and handed over a page at a time (a few pages are held, never the table); a
    table that goes away meanwhile is `NotFound`."""
    pages: queue.Queue[list[dict[str, Any]] | BaseException | None] = queue.Queue(maxsize=8)
    stop = threading.Event()

    def segment(number: int) -> None:
        request: dict[str, Any] = {"TableName": table, "Segment": number, "TotalSegments": segments}
        try:
            while not stop.is_set():
                page = client.scan(**request)
                pages.put(page.get("Items", []))
                if "LastEvaluatedKey" not in page:
                    break
                request["ExclusiveStartKey"] = page["LastEvaluatedKey"]
        except BaseException as exc:  # handed to the reader, which raises it
            pages.put(exc)
        finally:
            pages.put(None)

    workers = [threading.Thread(target=segment, args=(n,), daemon=True) for n in range(segments)]
    for worker in workers:
        worker.start()
    running = segments
    try:
        while running:
            got = pages.get()
            if got is None:
                running -= 1
            elif isinstance(got, BaseException):
                raise got
            else:
                yield from got
    except client.exceptions.ResourceNotFoundException as exc:
        raise NotFound(f"the DynamoDB table {table} went away while it was read.") from exc
    except (ClientError, BotoCoreError) as exc:
        raise _failed(f"a scan of {table}", exc) from exc
    finally:
        stop.set()
        while any(worker.is_alive() for worker in workers):  # let blocked puts finish
            with contextlib.suppress(queue.Empty):
                pages.get(timeout=0.1)
