"""Loading a DynamoDB snapshot into a set of tables under a prefix: the tables made with the
snapshot's keys, indexes and TTL attribute, then the items written by parallel
BatchWriteItem calls, each retried with backoff while DynamoDB throttles or leaves items
unprocessed. This is what the DynamoDB driver will run for an environment."""

from __future__ import annotations

import base64
import contextlib
import gzip
import json
import random
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from provisioning.dynamo.items import data_file
from provisioning.errors import InvalidInput, ProvisioningFailed
from provisioning.snapshots.manifest import Manifest

BATCH = 25  # BatchWriteItem's most items per call
ATTEMPTS = 10  # per batch, while DynamoDB throttles or leaves items unprocessed
_THROTTLED = (
    "ProvisionedThroughputExceededException",
    "ThrottlingException",
    "RequestLimitExceeded",
)


def create_tables(
    client: Any,
    manifest: Manifest,
    prefix: str,
    *,
    capacity: int | None,
    tags: dict[str, str] | None = None,
    stop: threading.Event | None = None,
) -> list[str]:
    """The snapshot's tables under `prefix`, active and tagged with `tags`: on demand, or
    with `capacity` read and write units (and as many for each global index)."""
    if manifest.extra.get("engine") != "dynamodb":
        raise InvalidInput(f"snapshot {manifest.id} holds no DynamoDB tables.")
    made = []
    for name, shape in manifest.extra["tables"].items():
        if stop is not None and stop.is_set():
            raise ProvisioningFailed("the tables were not all made: the refresh was stopped.")
        throughput = {"ReadCapacityUnits": capacity, "WriteCapacityUnits": capacity}
        request: dict[str, Any] = {
            "TableName": prefix + name,
            "KeySchema": shape["KeySchema"],
            "AttributeDefinitions": shape["AttributeDefinitions"],
        }
        if capacity:
            request["BillingMode"] = "PROVISIONED"
            request["ProvisionedThroughput"] = throughput
        else:
            request["BillingMode"] = "PAY_PER_REQUEST"
        if shape["GlobalSecondaryIndexes"]:
            request["GlobalSecondaryIndexes"] = [
                {**index, **({"ProvisionedThroughput": throughput} if capacity else {})}
                for index in shape["GlobalSecondaryIndexes"]
            ]
        if shape["LocalSecondaryIndexes"]:
            request["LocalSecondaryIndexes"] = shape["LocalSecondaryIndexes"]
        if tags:
            request["Tags"] = [{"Key": key, "Value": value} for key, value in tags.items()]
        try:
            client.create_table(**request)
            made.append(prefix + name)
            client.get_waiter("table_exists").wait(TableName=prefix + name)
            enable_ttl(client, prefix + name, shape)
        except (ClientError, BotoCoreError) as exc:
            for table in made:  # nothing half-made: the tables made so far go again
                with contextlib.suppress(ClientError, BotoCoreError):
                    client.delete_table(TableName=table)
            raise ProvisioningFailed(
                f"DynamoDB could not make the table {prefix}{name}: {exc}."
            ) from exc
    return made


def enable_ttl(client: Any, table: str, shape: dict[str, Any]) -> None:
    """The snapshot's TTL attribute, if the table had one, on the table made from it."""
    if shape.get("TimeToLiveAttribute"):
        client.update_time_to_live(
            TableName=table,
            TimeToLiveSpecification={
                "Enabled": True,
                "AttributeName": shape["TimeToLiveAttribute"],
            },
        )


def load_items(
    client: Any,
    dump: Path,
    manifest: Manifest,
    prefix: str,
    *,
    workers: int = 8,
    progress: Callable[[int, int], None] | None = None,
    pause: Callable[[float], None] = time.sleep,
    stop: threading.Event | None = None,
) -> int:
    """Write every item of the snapshot into its table under `prefix`; the items written.
    `progress(done, total)` is told after each batch; `stop` ends the writing early."""
    total = sum(entry.rows for entry in manifest.tables.values())
    done = 0
    lock = threading.Lock()
    stop = stop or threading.Event()

    def write(table: str, batch: list[dict[str, Any]]) -> None:
        nonlocal done
        _write_batch(client, table, batch, stop, pause)
        with lock:
            done += len(batch)
            if progress is not None:
                progress(done, total)

    with ThreadPoolExecutor(max_workers=workers) as pool:
        pending: set[Future[None]] = set()
        try:
            for table, batch in _batches(dump, manifest, prefix):
                if stop.is_set():
                    raise ProvisioningFailed("the load was stopped before it finished.")
                if len(pending) >= workers * 4:  # a few batches ahead, never the table
                    finished, pending = wait(pending, return_when=FIRST_EXCEPTION)
                    for future in finished:
                        future.result()
                pending.add(pool.submit(write, table, batch))
            for future in pending:
                future.result()
            if stop.is_set():
                raise ProvisioningFailed("the load was stopped before it finished.")
        except BaseException:
            stop.set()
            raise
    return done


def _batches(
    dump: Path, manifest: Manifest, prefix: str
) -> Iterator[tuple[str, list[dict[str, Any]]]]:
    for name in manifest.tables:
        batch: list[dict[str, Any]] = []
        with gzip.open(dump / data_file(name), "rt", encoding="utf-8") as lines:
            for line in lines:
                batch.append(typed_item(json.loads(line)["Item"]))
                if len(batch) == BATCH:
                    yield prefix + name, batch
                    batch = []
        if batch:
            yield prefix + name, batch


def typed_item(item: dict[str, Any]) -> dict[str, Any]:
    """DynamoDB JSON as snapshots and exports hold it (binary in base64) is what the
    low-level client sends for S, N, maps and lists; its B and BS values it wants as bytes."""

    def value(typed: dict[str, Any]) -> dict[str, Any]:
        ((kind, inner),) = typed.items()
        if kind == "B":
            return {"B": base64.b64decode(inner)}
        if kind == "BS":
            return {"BS": [base64.b64decode(part) for part in inner]}
        if kind == "M":
            return {"M": {k: value(v) for k, v in inner.items()}}
        if kind == "L":
            return {"L": [value(v) for v in inner]}
        return typed

    return {name: value(typed) for name, typed in item.items()}


def _write_batch(
    client: Any,
    table: str,
    batch: list[dict[str, Any]],
    stop: threading.Event,
    pause: Callable[[float], None],
) -> None:
    requests = [{"PutRequest": {"Item": item}} for item in batch]
    for attempt in range(ATTEMPTS):
        if stop.is_set():
            return
        try:
            answer = client.batch_write_item(RequestItems={table: requests})
            requests = answer.get("UnprocessedItems", {}).get(table, [])
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code == "ResourceNotFoundException":
                raise ProvisioningFailed(
                    f"the table {table} disappeared while its items were being loaded."
                ) from exc
            if code not in _THROTTLED:
                raise ProvisioningFailed(f"DynamoDB refused writes to {table} ({code}).") from exc
        except BotoCoreError as exc:
            raise ProvisioningFailed(
                f"DynamoDB could not be reached to write {table}: {exc}."
            ) from exc
        if not requests:
            return
        pause(min(5.0, 0.05 * 2**attempt) * random.uniform(0.5, 1.0))  # backoff with jitter
    raise ProvisioningFailed(
        f"DynamoDB kept throttling writes to {table}: {len(requests)} item(s) were still "
        f"unprocessed after {ATTEMPTS} attempts."
    )
