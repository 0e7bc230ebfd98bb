"""The nightly rebuild: shrink the source into a new dev-safe snapshot and announce it.

A failure is announced with its reason and leaves the previous snapshot current (the shrink
pipeline publishes nothing it did not finish). The warm pool notices the new snapshot at
its next sweep and replaces its environments.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

from provisioning.dynamo.shrink import shrink_dynamo_source
from provisioning.dynamo.source import is_dynamo
from provisioning.errors import DevdbError
from provisioning.pg.programs import PgPrograms
from provisioning.service import Service
from provisioning.shrink.detect import PiiDetector
from provisioning.shrink.pipeline import apply_retention, shrink
from provisioning.shrink.policy import load_policy
from provisioning.snapshots.base import POSTGRESQL
from provisioning.snapshots.manifest import Manifest

Announce = Callable[[str], Awaitable[None]]


def _size(nbytes: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if nbytes < 1000 or unit == "GB":
            return f"{nbytes:.0f} {unit}" if unit == "B" else f"{nbytes:.1f} {unit}"
        nbytes /= 1000  # type: ignore[assignment]
    return f"{nbytes} B"


def describe(manifest: Manifest, removed: list[str]) -> str:
    biggest = sorted(manifest.tables.items(), key=lambda item: -item[1].rows)[:5]
    tables = ", ".join(f"{name} {entry.rows:,}" for name, entry in biggest)
    text = (
        f"New dev-safe snapshot {manifest.id}: {_size(manifest.size)}, "
        f"{manifest.rows:,} rows in {len(manifest.tables)} tables ({tables})."
    )
    if removed:
        text += f" Removed by retention: {', '.join(removed)}."
    return text


log = logging.getLogger(__name__)


async def rebuild(
    service: Service,
    *,
    source: str,
    policy_file: Path,
    programs: PgPrograms,
    salt: bytes,
    jobs: int,
    keep_last: int,
    announce: Announce,
    detector: PiiDetector | None = None,
) -> Manifest | None:
    """Run the shrink pipeline and publish; announce the outcome either way."""
    engine = "dynamodb" if is_dynamo(source) else POSTGRESQL
    try:
        if engine == "dynamodb":
            manifest = await shrink_dynamo_source(
                source, policy_file, service.snapshots, salt=salt, detector=detector
            )
        else:
            manifest = await shrink(
                source,
                load_policy(policy_file),
                service.snapshots,
                programs,
                salt=salt,
                jobs=jobs,
                detector=detector,
            )
    except DevdbError as exc:
        try:
            current = f"snapshot {(await service.snapshots.latest(engine)).id} stays current"
        except DevdbError:
            current = "there is still no snapshot"
        async with service.store.connection() as tx:
            await tx.audit("devdb", "nightly", None, "failed", {"reason": str(exc)})
        await announce(f"The nightly snapshot failed: {exc} ({current}).")
        return None
    removed = await apply_retention(service.snapshots, keep_last, engine=engine)
    for driver in service.drivers.values():
        if driver.engine != engine:
            continue
        # The first environment of the new snapshot is then a clone too. A failure here
        # costs speed, not the snapshot: that environment restores, as before.
        try:
            await driver.prepare(service.snapshots, manifest)
        except DevdbError as exc:
            log.warning("%s could not prepare snapshot %s: %s", driver.kind, manifest.id, exc)
    async with service.store.connection() as tx:
        await tx.audit(
            "devdb",
            "nightly",
            manifest.id,
            "published",
            {"rows": manifest.rows, "removed": removed},
        )
    await announce(describe(manifest, removed))
    return manifest
