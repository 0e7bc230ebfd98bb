"""The S3 snapshot store against a moto server: round trips, multipart, checksums, retention."""

from __future__ import annotations

import hashlib
import os
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from boto3.s3.transfer import TransferConfig

from provisioning.errors import NotFound, SnapshotInvalid
from provisioning.runtime import Runtime
from provisioning.shrink.pipeline import apply_retention
from provisioning.snapshots.base import SnapshotStore
from provisioning.snapshots.manifest import FileEntry, Manifest, new_snapshot_id
from provisioning.snapshots.s3 import S3SnapshotStore
from tests.cloud import Moto
from tests.conftest import unique

MIB = 1 << 20
SMALL_PARTS = TransferConfig(
    multipart_threshold=5 * MIB, multipart_chunksize=5 * MIB, max_concurrency=4
)


def make_store(moto: Moto, tmp: Path, bucket: str, **kwargs: object) -> S3SnapshotStore:
    return S3SnapshotStore(
        moto.client("s3"),
        bucket,
        cache=tmp / unique("cache"),
        transfer=SMALL_PARTS,
        **kwargs,  # type: ignore[arg-type]
    )


@pytest.fixture
def bucket(moto: Moto) -> str:
    name = unique("snapshots")
    moto.client("s3").create_bucket(
        Bucket=name, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"}
    )
    return name


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


async def publish_files(
    store: SnapshotStore, files: dict[str, bytes], *, created: datetime | None = None
) -> Manifest:
    staged = await store.staging()
    (staged / "dump").mkdir()
    for name, body in files.items():
        (staged / "dump" / name).write_bytes(body)
    manifest = Manifest(
        id=new_snapshot_id(created),
        created=created or datetime.now(UTC),
        source="test",
        pg_version="15",
        files={
            name: FileEntry(sha256=hashlib.sha256(body).hexdigest(), size=len(body))
            for name, body in files.items()
        },
        tables={},
        extra={"kind": "shrink"},
    )
    return await store.publish(staged, manifest)


async def copy_snapshot(source: SnapshotStore, target: SnapshotStore, manifest: Manifest) -> None:
    dump = await source.fetch(manifest)
    staged = await target.staging()
    shutil.copytree(dump, staged / "dump")
    await target.publish(staged, manifest)


async def test_a_real_snapshot_round_trips(
    moto: Moto, bucket: str, tmp_path: Path, runtime: Runtime, demo_snapshot: Manifest
) -> None:
    writer = make_store(moto, tmp_path, bucket)
    await copy_snapshot(runtime.snapshots, writer, demo_snapshot)

    reader = make_store(moto, tmp_path, bucket)  # another machine: an empty cache
    assert [m.id for m in await reader.list()] == [demo_snapshot.id]
    assert await reader.get(demo_snapshot.id) == demo_snapshot
    dump = await reader.fetch(demo_snapshot)
    assert dump.parent.parent == reader.cache
    for name, entry in demo_snapshot.files.items():
        assert sha(dump / name) == entry.sha256
    s3 = moto.client("s3")
    head = s3.head_object(Bucket=bucket, Key=reader.key(demo_snapshot.id, "dump/toc.dat"))
    assert head["ServerSideEncryption"] == "AES256"


async def test_a_large_file_moves_in_parts_and_is_verified(
    moto: Moto, bucket: str, tmp_path: Path
) -> None:
    big = os.urandom(12 * MIB + 123)
    writer = make_store(moto, tmp_path, bucket)
    manifest = await publish_files(writer, {"toc.dat": b"toc", "4000.dat.gz": big})
    s3 = moto.client("s3")
    head = s3.head_object(Bucket=bucket, Key=writer.key(manifest.id, "dump/4000.dat.gz"))
    assert head["ETag"].strip('"').endswith("-3"), "uploaded as a three-part multipart upload"
    assert head["ContentLength"] == len(big)

    reader = make_store(moto, tmp_path, bucket)
    counted: list[int] = []
    dump = await reader.fetch(manifest, on_bytes=counted.append)
    assert (dump / "4000.dat.gz").read_bytes() == big
    assert sum(counted) == manifest.size
    again = await reader.fetch(manifest, on_bytes=counted.append)  # cached and re-verified
    assert again == dump and sum(counted) == manifest.size


async def test_a_tampered_object_is_refused_and_nothing_is_kept(
    moto: Moto, bucket: str, tmp_path: Path
) -> None:
    writer = make_store(moto, tmp_path, bucket)
    manifest = await publish_files(writer, {"toc.dat": b"toc", "4001.dat": b"a" * 1000})
    moto.client("s3").put_object(
        Bucket=bucket, Key=writer.key(manifest.id, "dump/4001.dat"), Body=b"b" * 1000
    )
    reader = make_store(moto, tmp_path, bucket)
    with pytest.raises(SnapshotInvalid, match=r"4001\.dat does not match its checksum"):
        await reader.fetch(manifest)
    assert not reader.cache.exists() or list(reader.cache.iterdir()) == []

    moto.client("s3").delete_object(Bucket=bucket, Key=writer.key(manifest.id, "dump/4001.dat"))
    with pytest.raises(SnapshotInvalid, match="incomplete"):
        await make_store(moto, tmp_path, bucket).fetch(manifest)


async def test_unknown_snapshot_and_kms_encryption(moto: Moto, bucket: str, tmp_path: Path) -> None:
    key = moto.client("kms").create_key()["KeyMetadata"]["KeyId"]
    store = make_store(moto, tmp_path, bucket, kms_key=key)
    with pytest.raises(NotFound, match="no snapshot 'nope'"):
        await store.get("nope")
    with pytest.raises(NotFound):
        await store.delete("nope")
    manifest = await publish_files(store, {"toc.dat": b"toc"})
    head = moto.client("s3").head_object(Bucket=bucket, Key=store.key(manifest.id, "manifest.json"))
    assert head["ServerSideEncryption"] == "aws:kms"
    assert key in head["SSEKMSKeyId"]


async def test_retention_deletes_whole_snapshots(moto: Moto, bucket: str, tmp_path: Path) -> None:
    store = make_store(moto, tmp_path, bucket)
    now = datetime.now(UTC)
    made = [
        await publish_files(store, {"toc.dat": bytes([i])}, created=now - timedelta(hours=3 - i))
        for i in range(3)
    ]
    doomed = await apply_retention(store, keep_last=1)
    assert sorted(doomed) == sorted(m.id for m in made[:2])
    assert [m.id for m in await store.list()] == [made[2].id]
    listed = moto.client("s3").list_objects_v2(Bucket=bucket, Prefix=store.prefix)
    keys = [item["Key"] for item in listed.get("Contents", [])]
    assert keys and all(made[2].id in key for key in keys)
    assert not (store.cache / made[0].id).exists()
