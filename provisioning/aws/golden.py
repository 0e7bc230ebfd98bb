"""Golden copies on EC2: one EBS snapshot per devdb snapshot, of a data volume that an
instance restored, settled and shut down cleanly.

Mixed into `Ec2Driver`. `prepare` (the nightly rebuild, right after publishing) launches an
on-demand builder instance (it must be able to stop, which a one-time spot instance cannot)
whose agent restores from S3, vacuums, analyses, checkpoints and stops PostgreSQL, then powers
the instance off. The bot snapshots the stopped instance's data volume, tags the snapshot
`devdb:snapshot=<id>`, waits until it is complete and terminates the builder.

Environments of that snapshot then map their data volume from the EBS snapshot in their
launch template; the agent only starts the copied server and sets the password. While no
complete golden snapshot exists, environments restore from S3 as before. A builder is never
started while another for the same snapshot lives; builders a killed bot left behind and
EBS snapshots of deleted snapshots are removed by `prune`. A golden snapshot an agent could
not start from is deleted, so the next environment restores and the next build replaces it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from provisioning.aws import fleet
from provisioning.aws.agent_status import AgentState
from provisioning.aws.cleanup import BUILD_TAG, Cleanup
from provisioning.drivers.base import Handle, Placement, Progress
from provisioning.errors import ProvisioningFailed
from provisioning.models import ProgressEvent, Step
from provisioning.snapshots.base import SnapshotStore
from provisioning.snapshots.manifest import Manifest

SNAPSHOT_TAG = "devdb:snapshot"  # on a golden EBS snapshot: the devdb snapshot it holds
GOLDEN_DATABASE = "devdb_golden"
_ALIVE = ["pending", "running", "stopping", "stopped"]
log = logging.getLogger("devdb.ec2")


def builder_parameter(token: str) -> str:
    """Where a builder's (throw-away) password is kept for its agent."""
    return f"/devdb/{token}/password"


class GoldenSnapshots(Cleanup):
    region: str
    installation: str
    _build_locks: dict[str, asyncio.Lock]
    _failed_builds: dict[str, float]
    launch: Callable[[Placement, str, Progress], Awaitable[Placement]]

    async def golden_snapshot(self, snapshot_id: str) -> str | None:
        """The newest complete golden EBS snapshot of `snapshot_id`, or None (also when EC2
        cannot be asked: the environment then restores from S3)."""
        try:
            found = await self._golden_snapshots(snapshot_id)
        except (BotoCoreError, ClientError) as exc:
            log.warning("golden EBS snapshots could not be listed: %s", fleet.aws_reason(exc))
            return None
        complete = [s for s in found if s["State"] == "completed"]
        complete.sort(key=lambda s: s["StartTime"], reverse=True)
        return str(complete[0]["SnapshotId"]) if complete else None

    async def _golden_snapshots(self, snapshot_id: str | None = None) -> list[dict[str, Any]]:
        value = [snapshot_id] if snapshot_id else ["*"]
        reply = await self._call(
            "describe_snapshots",
            OwnerIds=["self"],
            Filters=[
                {"Name": f"tag:{SNAPSHOT_TAG}", "Values": value},
                {"Name": f"tag:{fleet.INSTALLATION_TAG}", "Values": [self.installation]},
            ],
        )
        return list(reply.get("Snapshots", []))

    async def _builders(self, snapshot_id: str | None = None) -> list[dict[str, Any]]:
        value = [snapshot_id] if snapshot_id else ["*"]
        reply = await self._call(
            "describe_instances",
            Filters=[
                {"Name": f"tag:{BUILD_TAG}", "Values": value},
                {"Name": f"tag:{fleet.INSTALLATION_TAG}", "Values": [self.installation]},
                {"Name": "instance-state-name", "Values": _ALIVE},
            ],
        )
        return [i for r in reply.get("Reservations", []) for i in r.get("Instances", [])]

    async def prepare(self, snapshots: SnapshotStore, manifest: Manifest) -> None:
        """Make the golden EBS snapshot of `manifest` unless it exists or is being made.
        After a failed build, callers (the nightly rebuild, the pool) do not start another
        for an hour: each costs an on-demand instance for as long as a restore takes."""
        failed = self._failed_builds.get(manifest.id)
        if failed is not None and time.monotonic() - failed < 3600:
            return
        try:
            await self.build_golden(manifest, lambda _: None)
        except ProvisioningFailed:
            self._failed_builds[manifest.id] = time.monotonic()
            raise

    async def build_golden(self, manifest: Manifest, progress: Progress) -> str:
        """The golden EBS snapshot of `manifest`: found, waited for, or made."""
        lock = self._build_locks.setdefault(manifest.id, asyncio.Lock())
        async with lock:  # one build per snapshot in this process; tags guard the others
            try:
                return await self._build_golden(manifest, progress)
            except (BotoCoreError, ClientError) as exc:
                raise ProvisioningFailed(
                    f"the golden copy of {manifest.id} could not be made ({fleet.aws_reason(exc)})."
                ) from exc

    async def _build_golden(self, manifest: Manifest, progress: Progress) -> str:
        deadline = time.monotonic() + self.settings.ready_timeout.total_seconds()
        while await self._builders(manifest.id) or any(
            s["State"] == "pending" for s in await self._golden_snapshots(manifest.id)
        ):
            if time.monotonic() > deadline:  # another process's build: wait for it
                raise ProvisioningFailed(f"the golden copy of {manifest.id} is still being made.")
            await asyncio.sleep(self.poll)
        if found := await self.golden_snapshot(manifest.id):
            return found
        token = f"golden-{secrets.token_hex(4)}"
        handle: Handle = {
            "token": token,
            "region": self.region,
            "snapshot": manifest.id,
            "volume_gib": fleet.volume_size(manifest),  # as each environment's
            "parameter": builder_parameter(token),
            "golden_build": True,
            "tags": {**fleet.managed(self.installation), BUILD_TAG: manifest.id},
        }
        placement = Placement(
            handle=handle, host="pending", port=0, database=GOLDEN_DATABASE, user="dev"
        )
        password = secrets.token_urlsafe(24)
        try:
            launched = await self.launch(placement, password, progress)
            await self._follow_build(launched, password, deadline, progress)
            volume = await self._data_volume(launched.handle["instance_id"])
            progress(ProgressEvent(step=Step.RESTORE, message=f"snapshotting {volume}"))
            reply = await self._call(
                "create_snapshot",
                VolumeId=volume,
                Description=f"devdb golden copy of snapshot {manifest.id}",
                TagSpecifications=[
                    {
                        "ResourceType": "snapshot",
                        "Tags": fleet.tag_list(
                            {**fleet.managed(self.installation), SNAPSHOT_TAG: manifest.id}
                        ),
                    }
                ],
            )
            ebs = str(reply["SnapshotId"])
            try:
                # A first snapshot of a volume copies all of it: a time limit of its own.
                await self._wait_snapshot(
                    ebs, time.monotonic() + self.settings.ready_timeout.total_seconds()
                )
            except BaseException:
                with contextlib.suppress(BotoCoreError, ClientError):
                    await self._call("delete_snapshot", SnapshotId=ebs)
                raise
        finally:
            await self.terminate(handle)
        return ebs

    async def _follow_build(
        self, builder: Placement, password: str, deadline: float, progress: Progress
    ) -> None:
        """Until the builder has restored, settled and powered itself off."""
        instance_id = builder.handle["instance_id"]
        last = None
        while True:
            status = await self._status(builder, password)  # None once its server stopped
            if status is not None and status.state == AgentState.FAILED:
                raise ProvisioningFailed(f"the golden copy could not be restored: {status.error}")
            if status is not None and status.event is not None and status.event != last:
                last = status.event
                progress(status.event)
            instance = await self._describe(instance_id)
            state = instance["State"]["Name"] if instance else "missing"
            if state == "stopped" and instance is not None:
                # Only the agent's own power-off means a settled volume: EC2 may stop an
                # instance for maintenance or retirement, and someone may stop it by hand.
                reason = instance.get("StateReason", {}).get("Code", "")
                if reason != "Client.InstanceInitiatedShutdown":
                    raise ProvisioningFailed(
                        f"the golden copy's builder {instance_id} was stopped ({reason})."
                    )
                return
            if state not in ("pending", "running", "stopping"):
                raise ProvisioningFailed(f"the golden copy's builder {instance_id} is {state}.")
            if time.monotonic() > deadline:
                raise ProvisioningFailed(
                    f"the golden copy's builder {instance_id} did not finish in time."
                )
            await asyncio.sleep(self.poll)

    async def _data_volume(self, instance_id: str) -> str:
        instance = await self._describe(instance_id)
        for mapping in (instance or {}).get("BlockDeviceMappings", []):
            if mapping.get("DeviceName") == fleet.DATA_DEVICE:
                return str(mapping["Ebs"]["VolumeId"])
        raise ProvisioningFailed(f"the builder {instance_id} has no data volume.")

    async def _wait_snapshot(self, ebs: str, deadline: float) -> None:
        while True:
            reply = await self._call("describe_snapshots", SnapshotIds=[ebs])
            state = reply["Snapshots"][0]["State"] if reply.get("Snapshots") else "missing"
            if state == "completed":
                return
            if state != "pending":
                raise ProvisioningFailed(f"the EBS snapshot {ebs} is {state}.")
            if time.monotonic() > deadline:
                raise ProvisioningFailed(f"the EBS snapshot {ebs} did not complete in time.")
            await asyncio.sleep(self.poll)

    async def prune(self, snapshot_ids: set[str]) -> list[str]:
        """Golden EBS snapshots of deleted snapshots, and builders a killed bot left behind."""
        removed: list[str] = []
        for found in await self._golden_snapshots():
            tags = {t["Key"]: t["Value"] for t in found.get("Tags", [])}
            if tags.get(SNAPSHOT_TAG) not in snapshot_ids and found["State"] != "pending":
                await self.discard_golden(found["SnapshotId"])
                removed.append(f"{found['SnapshotId']} ({tags.get(SNAPSHOT_TAG)})")
        limit = self.settings.boot_timeout + 2 * self.settings.ready_timeout  # + the snapshot
        for builder in await self._builders():
            if datetime.now(UTC) - builder["LaunchTime"] > limit:
                tags = {t["Key"]: t["Value"] for t in builder.get("Tags", [])}
                token = tags.get("devdb:launch", "")
                await self.terminate(
                    {
                        "token": token,
                        "instance_id": builder["InstanceId"],
                        "parameter": builder_parameter(token) if token else None,
                    }
                )
                removed.append(builder["InstanceId"])
        return removed
