"""Loading a DynamoDB snapshot: devdb's parallel BatchWriteItem loader against a
single-threaded BatchWriteItem loop, on the same items, in the same run.

    python bench/dynamodb.py [--items 100000] [--workers 8]

Both write into moto's DynamoDB server (its own process, on loopback: there is no AWS account
here), each into tables of its own made from the same snapshot. Prints both times and the
ratio. moto does its work under one Python GIL, so on this machine the server bounds both;
the ratio says what parallel writes gain against that server, not what AWS would give.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import boto3

from provisioning.dynamo.load import BATCH, create_tables, load_items
from provisioning.snapshots.manifest import Manifest, manifest_for_dump

SHAPE = {
    "KeySchema": [{"AttributeName": "id", "KeyType": "HASH"}],
    "AttributeDefinitions": [{"AttributeName": "id", "AttributeType": "S"}],
    "GlobalSecondaryIndexes": [],
    "LocalSecondaryIndexes": [],
    "TimeToLiveAttribute": None,
}


def snapshot(root: Path, items: int) -> tuple[Manifest, Path]:
    dump = root / "dump"
    dump.mkdir(parents=True)
    with gzip.open(dump / "Events.json.gz", "wt") as out:
        for n in range(items):
            item = {
                "id": {"S": f"event-{n:07d}"},
                "kind": {"S": "login" if n % 3 else "purchase"},
                "amount": {"N": str(n % 997)},
                "payload": {"M": {"ip": {"S": f"198.51.100.{n % 250}"}, "ok": {"BOOL": True}}},
            }
            out.write(json.dumps({"Item": item}) + "\n")
    manifest = manifest_for_dump(
        dump,
        source="bench",
        pg_version="",
        rows={"Events": items},
        data_files={"Events": "Events.json.gz"},
        extra={"engine": "dynamodb", "tables": {"Events": SHAPE}},
    )
    return manifest, dump


def one_thread(client: Any, dump: Path, table: str) -> int:
    """The plain way: read the items and write them 25 at a time, one call after another."""
    written = 0
    batch: list[dict[str, Any]] = []

    def flush() -> None:
        requests = [{"PutRequest": {"Item": item}} for item in batch]
        while requests:
            answer = client.batch_write_item(RequestItems={table: requests})
            requests = answer.get("UnprocessedItems", {}).get(table, [])

    with gzip.open(dump / "Events.json.gz", "rt") as lines:
        for line in lines:
            batch.append(json.loads(line)["Item"])
            if len(batch) == BATCH:
                flush()
                written += len(batch)
                batch = []
    if batch:
        flush()
        written += len(batch)
    return written


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_for(host: str, port: int) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=1):
            return
        time.sleep(0.1)
    raise SystemExit("moto_server did not start")


def main(items: int, workers: int) -> None:
    root = Path(tempfile.mkdtemp(prefix="devdb-bench-dynamo-"))
    # moto in a process of its own, so the server's work and the client's share no GIL.
    port = free_port()
    server = subprocess.Popen(
        [str(Path(sys.executable).with_name("moto_server")), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    host = "127.0.0.1"
    try:
        wait_for(host, port)
        client = boto3.client(
            "dynamodb",
            region_name="eu-west-1",
            endpoint_url=f"http://{host}:{port}",
            aws_access_key_id="bench",
            aws_secret_access_key="bench",
        )
        manifest, dump = snapshot(root, items)
        create_tables(client, manifest, "plain_", capacity=None)
        create_tables(client, manifest, "devdb_", capacity=None)
        started = time.perf_counter()
        plain = one_thread(client, dump, "plain_Events")
        baseline = time.perf_counter() - started
        started = time.perf_counter()
        loaded = load_items(client, dump, manifest, "devdb_", workers=workers)
        ours = time.perf_counter() - started
        assert plain == loaded == items, (plain, loaded)
    finally:
        server.terminate()
        server.wait(timeout=10)
        shutil.rmtree(root, ignore_errors=True)
    print(f"{items:,} items, moto's DynamoDB on loopback")
    print(
        f"single-threaded BatchWriteItem loop  {baseline:7.2f} s  {items / baseline:9,.0f} items/s"
    )
    print(f"devdb load_items, {workers} workers       {ours:7.2f} s  {items / ours:9,.0f} items/s")
    print(f"ratio devdb / loop: {ours / baseline:.2f}x (below 1 is faster)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--workers", type=int, default=8)
    arguments = parser.parse_args()
    main(arguments.items, arguments.workers)
