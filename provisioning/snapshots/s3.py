"""Snapshots in S3: `<prefix>snapshots/<id>/dump/<file>` and `.../<id>/manifest.json`.

Files move through boto3's transfer manager: multipart uploads, and downloads split into
ranged GETs that run in parallel, across files as well as within one. Every object is
encrypted at rest (SSE-KMS with a configured key, else SSE-S3). The manifest is written last
and deleted first, so a snapshot is listed only while all its files are there.

`fetch` keeps a verified copy under a local cache directory: restores on this machine and
the EC2 agent read from there, and every fetch checks each file's sha256 again.
"""

from __future__ import annotations

import asyncio
import builtins
import shutil
import tempfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from boto3.s3.transfer import TransferConfig, create_transfer_manager
from botocore.exceptions import BotoCoreError, ClientError
from s3transfer.subscribers import BaseSubscriber

from provisioning.errors import Next, NotFound, SnapshotInvalid
from provisioning.snapshots.base import SnapshotStore
from provisioning.snapshots.manifest import Manifest, validate_snapshot_id, verify

MIB = 1 << 20
DEFAULT_TRANSFER = TransferConfig(
    multipart_threshold=8 * MIB, multipart_chunksize=8 * MIB, max_concurrency=16
)
OnBytes = Callable[[int], None]


class _Counter(BaseSubscriber):  # type: ignore[misc]
    def __init__(self, on_bytes: OnBytes) -> None:
        self.on_bytes = on_bytes

    def on_progress(self, future: Any, bytes_transferred: int, **kwargs: Any) -> None:
        self.on_bytes(bytes_transferred)


def _missing(exc: ClientError) -> bool:
    return exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404", "NotFound")


def s3_error(exc: BotoCoreError | ClientError, doing: str) -> SnapshotInvalid:
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        reason = f"{error.get('Code', 'error')}: {error.get('Message', '')}".rstrip(": ")
    else:
        reason = str(exc)
    return SnapshotInvalid(f"S3 refused to {doing} ({reason}).")


class S3SnapshotStore(SnapshotStore):
    def __init__(
        self,
        client: Any,
        bucket: str,
        *,
        prefix: str = "devdb/",
        cache: Path,
        kms_key: str | None = None,
        transfer: TransferConfig = DEFAULT_TRANSFER,
        verify_workers: int = 4,
    ) -> None:
        self.client = client
        self.bucket = bucket
        self.prefix = prefix
        self.cache = cache
        self.transfer = transfer
        self.verify_workers = verify_workers
        self.encryption: dict[str, str] = (
            {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": kms_key}
            if kms_key
            else {"ServerSideEncryption": "AES256"}
        )

    def key(self, snapshot_id: str, name: str = "") -> str:
        return f"{self.prefix}snapshots/{validate_snapshot_id(snapshot_id)}/{name}"

    # -- reading ----------------------------------------------------------------------------

    def _read_manifest(self, snapshot_id: str) -> Manifest:
        try:
            body = self.client.get_object(
                Bucket=self.bucket, Key=self.key(snapshot_id, "manifest.json")
            )["Body"].read()
        except ClientError as exc:
            if _missing(exc):
                raise NotFound(
                    f"there is no snapshot {snapshot_id!r}: run ",
                    Next("snapshots"),
                    " to see them.",
                ) from None
            raise s3_error(exc, f"read snapshot {snapshot_id}") from exc
        except BotoCoreError as exc:
            raise s3_error(exc, f"read snapshot {snapshot_id}") from exc
        manifest = Manifest.from_json(body.decode())
        if manifest.id != snapshot_id:
            raise SnapshotInvalid(f"snapshot {snapshot_id}'s manifest names another id.")
        return manifest

    async def list(self) -> builtins.list[Manifest]:
        def scan() -> builtins.list[Manifest]:
            ids: builtins.list[str] = []
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=f"{self.prefix}snapshots/", Delimiter="/"
            )
            try:
                for page in pages:
                    for common in page.get("CommonPrefixes", []):
                        ids.append(common["Prefix"].rstrip("/").rsplit("/", 1)[-1])
            except (BotoCoreError, ClientError) as exc:
                raise s3_error(exc, "list snapshots") from exc

            def read(snapshot_id: str) -> Manifest | None:
                try:
                    return self._read_manifest(snapshot_id)
                except (NotFound, SnapshotInvalid):
                    return None  # an upload under way, or a snapshot being deleted

            with ThreadPoolExecutor(max_workers=8) as pool:
                found = [m for m in pool.map(read, ids) if m is not None]
            return sorted(found, key=lambda m: (m.created, m.id), reverse=True)

        return await asyncio.to_thread(scan)

    async def get(self, snapshot_id: str) -> Manifest:
        return await asyncio.to_thread(self._read_manifest, snapshot_id)

    async def fetch(self, manifest: Manifest, on_bytes: OnBytes | None = None) -> Path:
        """A verified local copy of the dump, downloaded in parallel ranged reads if needed."""
        final = self.cache / validate_snapshot_id(manifest.id)
        dump = final / "dump"
        if dump.is_dir():
            try:
                await asyncio.to_thread(verify, dump, manifest, self.verify_workers)
                return dump
            except SnapshotInvalid:
                await asyncio.to_thread(shutil.rmtree, final, True)
        self.cache.mkdir(parents=True, exist_ok=True, mode=0o700)
        partial = Path(tempfile.mkdtemp(prefix=f".partial-{manifest.id}-", dir=self.cache))
        try:
            await asyncio.to_thread(self._download, manifest, partial / "dump", on_bytes)
            await asyncio.to_thread(verify, partial / "dump", manifest, self.verify_workers)
            (partial / "manifest.json").write_text(manifest.to_json())
            try:
                partial.rename(final)
            except OSError:  # another process finished the same download first
                shutil.rmtree(partial, ignore_errors=True)
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise
        return dump

    def _download(self, manifest: Manifest, dest: Path, on_bytes: OnBytes | None) -> None:
        dest.mkdir(parents=True)
        for name in manifest.files:
            if "/" in name or name.startswith("."):
                raise SnapshotInvalid(f"snapshot {manifest.id} lists an unsafe file name {name!r}.")
        subscribers = [_Counter(on_bytes)] if on_bytes else None
        try:
            with create_transfer_manager(self.client, self.transfer) as manager:
                futures = [
                    manager.download(
                        self.bucket,
                        self.key(manifest.id, f"dump/{name}"),
                        str(dest / name),
                        subscribers=subscribers,
                    )
                    for name in sorted(manifest.files)
                ]
                for future in futures:
                    future.result()
        except ClientError as exc:
            if _missing(exc):
                raise SnapshotInvalid(
                    f"snapshot {manifest.id} is incomplete in S3: a file is missing."
                ) from exc
            raise s3_error(exc, f"download snapshot {manifest.id}") from exc
        except BotoCoreError as exc:
            raise s3_error(exc, f"download snapshot {manifest.id}") from exc

    # -- writing ----------------------------------------------------------------------------

    async def staging(self) -> Path:
        self.cache.mkdir(parents=True, exist_ok=True, mode=0o700)
        return Path(tempfile.mkdtemp(prefix=".staging-", dir=self.cache))

    async def publish(self, staged: Path, manifest: Manifest) -> Manifest:
        def upload() -> None:
            dump = staged / "dump"
            try:
                with create_transfer_manager(self.client, self.transfer) as manager:
                    futures = [
                        manager.upload(
                            str(dump / name),
                            self.bucket,
                            self.key(manifest.id, f"dump/{name}"),
                            extra_args=self.encryption,
                        )
                        for name in sorted(manifest.files)
                    ]
                    for future in futures:
                        future.result()
                self.client.put_object(
                    Bucket=self.bucket,
                    Key=self.key(manifest.id, "manifest.json"),
                    Body=manifest.to_json().encode(),
                    ContentType="application/json",
                    **self.encryption,
                )
            except (BotoCoreError, ClientError) as exc:
                self._delete_objects(manifest.id)
                raise s3_error(exc, f"store snapshot {manifest.id}") from exc
            # What was just uploaded is already verified: keep it as the local cached copy.
            (staged / "manifest.json").write_text(manifest.to_json())
            final = self.cache / manifest.id
            if final.exists():
                shutil.rmtree(staged, ignore_errors=True)
            else:
                staged.rename(final)

        await asyncio.to_thread(upload)
        return manifest

    async def put_file(self, path: Path, name: str) -> str:
        """Store a file beside the snapshots (under the prefix), encrypted like them; its
        s3:// address."""
        key = f"{self.prefix}{name}"

        def upload() -> None:
            try:
                with create_transfer_manager(self.client, self.transfer) as manager:
                    manager.upload(str(path), self.bucket, key, extra_args=self.encryption).result()
            except (BotoCoreError, ClientError) as exc:
                raise s3_error(exc, f"store {name}") from exc

        await asyncio.to_thread(upload)
        return f"s3://{self.bucket}/{key}"

    def _delete_objects(self, snapshot_id: str) -> None:
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=self.key(snapshot_id)
        )
        for page in pages:
            keys = [{"Key": item["Key"]} for item in page.get("Contents", [])]
            if keys:
                self.client.delete_objects(
                    Bucket=self.bucket, Delete={"Objects": keys, "Quiet": True}
                )

    async def delete(self, snapshot_id: str) -> None:
        def remove() -> None:
            self._read_manifest(snapshot_id)  # NotFound if absent
            try:
                self.client.delete_object(
                    Bucket=self.bucket, Key=self.key(snapshot_id, "manifest.json")
                )
                self._delete_objects(snapshot_id)
            except (BotoCoreError, ClientError) as exc:
                raise s3_error(exc, f"delete snapshot {snapshot_id}") from exc
            shutil.rmtree(self.cache / snapshot_id, ignore_errors=True)

        await asyncio.to_thread(remove)
