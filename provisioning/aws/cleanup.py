"""Removing what an EC2 environment made, and finding what exists: `terminate` by the launch
token every resource carries, `discard` for a failed refresh (which may keep the instance
for debugging), and the inventory reconciliation compares with the state store.

Mixed into `Ec2Driver` (through `GoldenSnapshots`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from botocore.exceptions import ClientError

from provisioning.aws import fleet, roles
from provisioning.aws.instances import InstanceWatch
from provisioning.aws.resets import reset_parameter
from provisioning.aws.ssm import SsmSecrets
from provisioning.drivers.base import Handle

BUILD_TAG = "devdb:golden-build"  # on a builder instance: the devdb snapshot it builds
KEPT_TAG = "devdb:kept"  # a failed environment's instance, kept for debugging
log = logging.getLogger("devdb.ec2")


class Cleanup(InstanceWatch):
    passwords: SsmSecrets
    installation: str
    iam: Any | None

    async def is_running(self, handle: Handle) -> bool:
        if not handle.get("instance_id"):
            return False
        instance = await self._describe(handle["instance_id"])
        return bool(instance and instance["State"]["Name"] == "running")

    async def discard(self, handle: Handle) -> None:
        """With DEVDB_EC2_KEEP_FAILED, a failed environment's instance stays for debugging
        (tagged devdb:kept, which inventory leaves alone); it still powers itself off past its
        expiry and the grace, and its launch template and password go."""
        instance_id = handle.get("instance_id")
        if not (self.settings.keep_failed and instance_id and await self.is_running(handle)):
            await self.terminate(handle)
            return
        await self._call(
            "create_tags", Resources=[instance_id], Tags=[{"Key": KEPT_TAG, "Value": "failed"}]
        )
        log.warning(
            "kept the failed instance %s for debugging (DEVDB_EC2_KEEP_FAILED)", instance_id
        )
        await self.terminate({**handle, "instance_id": None, "keep": instance_id})

    async def terminate(self, handle: Handle) -> None:
        token = handle.get("token")
        if not token:
            if handle.get("instance_id"):  # found untagged by inventory: only the instance
                await self._call("terminate_instances", InstanceIds=[handle["instance_id"]])
            return
        launch_tag = [{"Name": "tag:devdb:launch", "Values": [token]}]
        reply = await self._call(
            "describe_instances",
            Filters=[
                *launch_tag,
                {
                    "Name": "instance-state-name",
                    "Values": ["pending", "running", "stopping", "stopped"],
                },
            ],
        )
        ids = [
            instance["InstanceId"]
            for reservation in reply.get("Reservations", [])
            for instance in reservation.get("Instances", [])
            if instance["InstanceId"] != handle.get("keep")
        ]
        if ids:
            await self._call("terminate_instances", InstanceIds=ids)
        # Volumes go with their instance (DeleteOnTermination); one left detached is deleted.
        volumes = await self._call(
            "describe_volumes",
            Filters=[*launch_tag, {"Name": "status", "Values": ["available"]}],
        )
        for volume in volumes.get("Volumes", []):
            with contextlib.suppress(ClientError):
                await self._call("delete_volume", VolumeId=volume["VolumeId"])
        if handle.get("parameter"):
            await self.passwords.remove(handle["parameter"])
            await self.passwords.remove(reset_parameter(handle["parameter"]))
        templates = await self._call("describe_launch_templates", Filters=launch_tag)
        for template in templates.get("LaunchTemplates", []):
            try:
                await self._call(
                    "delete_launch_template", LaunchTemplateId=template["LaunchTemplateId"]
                )
            except ClientError as exc:
                if "NotFound" not in str(exc.response.get("Error", {}).get("Code")):
                    raise
        if self.settings.launch_template:
            await self._remove_version(token)
        if self.iam is not None:  # the instance's own role, if it had one
            await asyncio.to_thread(roles.remove, self.iam, roles.role_name(token))

    async def _remove_version(self, token: str) -> None:
        """The version this launch added to the base launch template, found by its label."""
        base = fleet.base_template(str(self.settings.launch_template))
        label = fleet.version_label(token)
        numbers: list[str] = []
        reply: dict[str, Any] = {"NextToken": None}
        while "NextToken" in reply:
            more = {"NextToken": reply["NextToken"]} if reply["NextToken"] else {}
            reply = await self._call("describe_launch_template_versions", **base, **more)
            numbers += [
                str(version["VersionNumber"])
                for version in reply.get("LaunchTemplateVersions", [])
                if version.get("VersionDescription") == label and not version["DefaultVersion"]
            ]
        if numbers:
            done = await self._call("delete_launch_template_versions", **base, Versions=numbers)
            for failed in done.get("UnsuccessfullyDeletedLaunchTemplateVersions", []):
                log.warning(
                    "the launch template version %s of %s could not be deleted: %s",
                    failed.get("VersionNumber"),
                    self.settings.launch_template,
                    failed.get("ResponseError", {}).get("Message", "no reason given"),
                )

    async def inventory(self) -> list[Handle]:
        reply = await self._call(
            "describe_instances",
            Filters=[
                {"Name": f"tag:{fleet.INSTALLATION_TAG}", "Values": [self.installation]},
                {
                    "Name": "instance-state-name",
                    "Values": ["pending", "running", "stopping", "stopped"],
                },
            ],
        )
        handles: list[Handle] = []
        for reservation in reply.get("Reservations", []):
            for instance in reservation.get("Instances", []):
                tags = {tag["Key"]: tag["Value"] for tag in instance.get("Tags", [])}
                if BUILD_TAG in tags or KEPT_TAG in tags:
                    continue  # a golden build (it runs as long as a restore takes), or kept
                handles.append(
                    {"token": tags.get("devdb:launch", ""), "instance_id": instance["InstanceId"]}
                )
        return handles

    def key(self, handle: Handle) -> str:
        return str(handle.get("token") or handle.get("instance_id") or "")
