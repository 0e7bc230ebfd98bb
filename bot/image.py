"""`devdb image upload`: the wheel for the image recipe, stored in the snapshot bucket."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.text import Text

from provisioning.aws.image import upload_wheel
from provisioning.errors import InvalidInput
from provisioning.snapshots.base import SnapshotStore
from provisioning.snapshots.s3 import S3SnapshotStore


async def image_upload(store: SnapshotStore) -> tuple[Text, dict[str, Any]]:
    """Build and store the wheel; what to say, and the same as data. Progress goes to
    stderr, so `--json` output stays clean."""
    if not isinstance(store, S3SnapshotStore):
        raise InvalidInput(
            "devdb image upload stores the wheel in the snapshot bucket: set DEVDB_S3_BUCKET."
        )
    progress = Console(stderr=True, highlight=False)
    uri = await upload_wheel(store, lambda line: progress.print(line, style="dim"))
    text = Text(
        f"Stored {uri}. Give it to deploy/image.yaml as WheelUri, then run the image pipeline."
    )
    return text, {"wheel_uri": uri}
