"""Downloading a snapshot from S3: the store's parallel ranged reads against one plain read.

    python bench/s3_restore.py                    # 4 files of 64 MiB plus a small toc.dat
    python bench/s3_restore.py --files 2 --mib 32 --repeats 5

Against a moto server this script starts in its own process. It publishes one synthetic multi-part
snapshot with `S3SnapshotStore`, then alternates, each round into an empty directory:
  store  `S3SnapshotStore.fetch` (transfer manager: ranged GETs in parallel across and
         within files, then every sha256 checked);
  plain  one streaming `get_object` per file, read in 1 MiB chunks, one file after another,
         no checksum.
It prints the medians, the store's time split into download and checksum, and the ratio
store / plain (below 1 means the store is faster). moto is one Python process on the same
two cores; against S3, parallel reads also add network bandwidth one stream cannot use.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3

from provisioning.snapshots.manifest import FileEntry, Manifest, new_snapshot_id, verify
from provisioning.snapshots.s3 import S3SnapshotStore

MIB = 1 << 20


def client(url: str) -> Any:
    return boto3.session.Session(
        aws_access_key_id="bench", aws_secret_access_key="bench", region_name="us-east-1"
    ).client("s3", endpoint_url=url)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_for(url: str) -> None:
    for _ in range(100):
        try:
            client(url).list_buckets()
            return
        except Exception:
            time.sleep(0.1)
    raise SystemExit("the moto server did not start")


async def publish(store: S3SnapshotStore, files: int, mib: int) -> Manifest:
    staged = await store.staging()
    dump = staged / "dump"
    dump.mkdir()
    entries = {}
    for index in range(files + 1):
        name = "toc.dat" if index == 0 else f"{4000 + index}.dat.gz"
        body = os.urandom(4096 if index == 0 else mib * MIB)
        (dump / name).write_bytes(body)
        entries[name] = FileEntry(sha256=hashlib.sha256(body).hexdigest(), size=len(body))
    manifest = Manifest(
        id=new_snapshot_id(),
        created=datetime.now(UTC),
        source="bench",
        pg_version="15",
        files=entries,
        tables={},
    )
    return await store.publish(staged, manifest)


def plain(s3: Any, store: S3SnapshotStore, manifest: Manifest, dest: Path) -> None:
    dest.mkdir(parents=True)
    for name in sorted(manifest.files):
        body = s3.get_object(Bucket=store.bucket, Key=store.key(manifest.id, f"dump/{name}"))
        with open(dest / name, "wb") as out:
            for chunk in body["Body"].iter_chunks(MIB):
                out.write(chunk)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--files", type=int, default=4)
    parser.add_argument("--mib", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    wait_for(url)
    work = Path(tempfile.mkdtemp(prefix="devdb-bench-s3-"))
    try:
        s3 = client(url)
        s3.create_bucket(Bucket="bench")
        writer = S3SnapshotStore(s3, "bench", cache=work / "writer")
        manifest = await publish(writer, args.files, args.mib)
        total = manifest.size
        print(f"snapshot: {len(manifest.files)} files, {total / MIB:.0f} MiB")
        times: dict[str, list[float]] = {"store": [], "plain": [], "checksum": []}
        for round_ in range(args.repeats):
            order = ["store", "plain"] if round_ % 2 == 0 else ["plain", "store"]
            for side in order:
                dest = work / f"{side}-{round_}"
                started = time.perf_counter()
                if side == "store":
                    reader = S3SnapshotStore(client(url), "bench", cache=dest)
                    await reader.fetch(manifest)
                else:
                    await asyncio.to_thread(plain, client(url), writer, manifest, dest)
                times[side].append(time.perf_counter() - started)
                if side == "plain":  # what the store's sha256 check costs on the same files
                    started = time.perf_counter()
                    verify(dest, manifest)
                    times["checksum"].append(time.perf_counter() - started)
                shutil.rmtree(dest, ignore_errors=True)
        store_s, plain_s, check_s = (
            statistics.median(times[k]) for k in ("store", "plain", "checksum")
        )
        runs = {k: ", ".join(f"{t:.2f}" for t in v) for k, v in times.items()}
        print(
            f"store fetch:  {store_s:.2f} s ({total / MIB / store_s:.0f} MiB/s) [{runs['store']}]"
        )
        print(f"  of which the sha256 check: about {check_s:.2f} s [{runs['checksum']}]")
        print(
            f"plain stream: {plain_s:.2f} s ({total / MIB / plain_s:.0f} MiB/s) [{runs['plain']}]"
        )
        print(f"ratio store / plain: {store_s / plain_s:.2f}")
        print(f"ratio store without its check / plain: {(store_s - check_s) / plain_s:.2f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
        server.terminate()
        server.wait()


if __name__ == "__main__":
    asyncio.run(main())
