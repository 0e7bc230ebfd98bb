"""A snapshot's manifest: what the dump holds and how to check that it is intact.

A snapshot is a `pg_dump --format=directory` dump plus `manifest.json`:

    {"format": 1, "id": ..., "created": ISO-8601, "source": ..., "pg_version": ...,
     "files":  {"toc.dat": {"sha256": ..., "size": ...}, "3345.dat.gz": {...}},
     "tables": {"public.events": {"rows": 120000, "data_bytes": 18000000, "file": "3345.dat.gz"}},
     "extra":  {...}}

`data_bytes` is the uncompressed size of a table's COPY data: what PostgreSQL's
`pg_stat_progress_copy.bytes_processed` counts during a restore, so progress is exact.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from provisioning.errors import InvalidInput, Next, SnapshotInvalid

FORMAT = 1
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,79}")
_CHUNK = 1 << 20


def validate_snapshot_id(snapshot_id: str) -> str:
    if _ID.fullmatch(snapshot_id) and ".." not in snapshot_id:
        return snapshot_id
    shown = snapshot_id if len(snapshot_id) <= 24 else snapshot_id[:24] + "…"
    raise InvalidInput(f"{shown!r} is not a snapshot id: run ", Next("snapshots"), " to see them.")


def new_snapshot_id(now: datetime | None = None) -> str:
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%d-%H%M%S")
    return f"{stamp}-{secrets.token_hex(2)}"


@dataclass(frozen=True, kw_only=True)
class FileEntry:
    sha256: str
    size: int


@dataclass(frozen=True, kw_only=True)
class TableEntry:
    rows: int
    data_bytes: int
    file: str | None


@dataclass(frozen=True, kw_only=True)
class Manifest:
    """What one snapshot holds."""

    id: str
    created: datetime
    source: str
    pg_version: str
    files: dict[str, FileEntry]
    tables: dict[str, TableEntry]
    extra: dict[str, Any] = field(default_factory=dict)
    format: int = FORMAT

    @property
    def size(self) -> int:
        return sum(entry.size for entry in self.files.values())

    @property
    def data_bytes(self) -> int:
        return sum(entry.data_bytes for entry in self.tables.values())

    @property
    def rows(self) -> int:
        return sum(entry.rows for entry in self.tables.values())

    def to_json(self) -> str:
        body = asdict(self)
        body["created"] = self.created.isoformat()
        return json.dumps(body, indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Manifest:
        try:
            body = json.loads(text)
            if body.get("format") != FORMAT:
                raise ValueError(f"unknown manifest format {body.get('format')!r}")
            return cls(
                id=validate_snapshot_id(body["id"]),
                created=datetime.fromisoformat(body["created"]),
                source=str(body["source"]),
                pg_version=str(body["pg_version"]),
                files={name: FileEntry(**entry) for name, entry in body["files"].items()},
                tables={name: TableEntry(**entry) for name, entry in body["tables"].items()},
                extra=dict(body.get("extra") or {}),
            )
        except (ValueError, KeyError, TypeError, AttributeError, InvalidInput) as exc:
            raise SnapshotInvalid(f"the snapshot's manifest.json is unreadable ({exc}).") from exc


def _digest(path: Path) -> tuple[str, int, int]:
    """sha256, size on disk, and uncompressed size (gzip members are inflated to count)."""
    sha = hashlib.sha256()
    size = 0
    raw = 0
    inflate = zlib.decompressobj(wbits=47) if path.name.endswith(".gz") else None
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            sha.update(chunk)
            size += len(chunk)
            if inflate is None:
                raw += len(chunk)
                continue
            raw += len(inflate.decompress(chunk))
            while inflate.eof and inflate.unused_data:
                rest = inflate.unused_data
                inflate = zlib.decompressobj(wbits=47)
                raw += len(inflate.decompress(rest))
    return sha.hexdigest(), size, raw


def describe_files(dump_dir: Path, workers: int = 4) -> dict[str, tuple[str, int, int]]:
    """Hash every file of a dump directory in parallel: name -> (sha256, size, data bytes)."""
    names = sorted(p.name for p in dump_dir.iterdir() if p.is_file())
    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = pool.map(lambda name: _digest(dump_dir / name), names)
        return dict(zip(names, results, strict=True))


def manifest_for_dump(
    dump_dir: Path,
    *,
    source: str,
    pg_version: str,
    rows: dict[str, int],
    data_files: dict[str, str],
    extra: dict[str, Any],
    snapshot_id: str | None = None,
) -> Manifest:
    """Hash a finished dump and describe it: rows per table, and each table's data file.
    Blocking (it reads every file): call it in a thread."""
    described = describe_files(dump_dir)
    return Manifest(
        id=snapshot_id or new_snapshot_id(),
        created=datetime.now(UTC),
        source=source,
        pg_version=pg_version,
        files={
            name: FileEntry(sha256=sha, size=size) for name, (sha, size, _) in described.items()
        },
        tables={
            name: TableEntry(
                rows=count,
                data_bytes=described[data_files[name]][2] if name in data_files else 0,
                file=data_files.get(name),
            )
            for name, count in rows.items()
        },
        extra=extra,
    )


def verify(dump_dir: Path, manifest: Manifest, workers: int = 4) -> None:
    """Raise `SnapshotInvalid` unless every file the manifest lists is present and intact."""
    postgresql = manifest.extra.get("engine", "postgresql") == "postgresql"
    if postgresql and "toc.dat" not in manifest.files:  # a DynamoDB snapshot has none
        raise SnapshotInvalid(f"snapshot {manifest.id} has no table of contents (toc.dat).")
    for name, entry in manifest.files.items():
        path = dump_dir / name
        if "/" in name or name.startswith("."):
            raise SnapshotInvalid(f"snapshot {manifest.id} lists an unsafe file name {name!r}.")
        if not path.is_file():
            raise SnapshotInvalid(f"snapshot {manifest.id} is missing its file {name}.")
        if path.stat().st_size != entry.size:
            raise SnapshotInvalid(f"snapshot {manifest.id} is corrupt: {name} has the wrong size.")

    def check(name: str) -> str | None:
        sha = hashlib.sha256()
        with open(dump_dir / name, "rb") as handle:
            while chunk := handle.read(_CHUNK):
                sha.update(chunk)
        return None if sha.hexdigest() == manifest.files[name].sha256 else name

    with ThreadPoolExecutor(max_workers=workers) as pool:
        bad = [name for name in pool.map(check, sorted(manifest.files)) if name]
    if bad:
        raise SnapshotInvalid(
            f"snapshot {manifest.id} is corrupt: {', '.join(bad[:3])} does not match its checksum."
        )
