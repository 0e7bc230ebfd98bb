"""The EC2 driver: one spot instance per environment, restoring from S3 by itself.

`place` decides the launch token, the volume size (from the snapshot) and the SSM parameter;
`launch` makes the launch template, gets a spot instance (instant fleet, then spot
requests), waits for it to run and for its PostgreSQL to answer; `restore` follows the
agent's status row until the snapshot is in. Every resource carries `devdb:launch=<token>`,
so `terminate` finds everything from the handle recorded before the launch began.

devdb reaches the instance's private address (the bot runs in the VPC); developers reach it
through `devdb connect`, which forwards a local port.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from provisioning.aws import fleet, roles, warnings
from provisioning.aws.agent_status import AgentState
from provisioning.aws.checks import Check, ec2_checks
from provisioning.aws.fleet import volume_size
from provisioning.aws.golden import GoldenSnapshots
from provisioning.aws.instances import GONE, Address
from provisioning.aws.resets import reset_parameter
from provisioning.aws.settings import AwsSettings
from provisioning.aws.ssm import SsmSecrets, parameter_name
from provisioning.aws.userdata import render_user_data
from provisioning.drivers.base import Activity, Driver, Handle, Placement, Progress
from provisioning.errors import InvalidInput, ProvisioningFailed
from provisioning.models import Environment, ProgressEvent, Step
from provisioning.pg.probe import probe
from provisioning.snapshots.base import SnapshotStore
from provisioning.snapshots.manifest import Manifest
from provisioning.snapshots.s3 import S3SnapshotStore

DEV_USER = "dev"
PORT = fleet.PORT
GP3_PER_GIB_MONTH = 0.08  # US dollars, us-east-1 list price
GP3_PER_MIBS_MONTH = 0.04  # per MiB/s of throughput above the free 125
HOURS_PER_MONTH = 730.0
log = logging.getLogger("devdb.ec2")
PROFILE_TRIES = 12  # launches tried while EC2 does not know a new instance profile yet
PROFILE_WAIT = 5.0  # seconds between them
DRAIN_EVERY = 20.0  # seconds: one read of the warnings queue serves a whole sweep
_RECLAIMING = (
    "marked-for-termination",
    "marked-for-stop",
    "instance-terminated-by-price",
    "instance-terminated-no-capacity",
    "instance-terminated-capacity-oversubscribed",
    "instance-stopped-by-price",
    "instance-stopped-no-capacity",
)


def private_address(instance: dict[str, Any]) -> tuple[str, int] | None:
    address = instance.get("PrivateIpAddress")
    return (str(address), PORT) if address else None


__all__ = ["Ec2Driver", "private_address", "volume_size"]


class Ec2Driver(GoldenSnapshots, Driver):
    kind = "ec2"
    orphan_grace = timedelta(minutes=15)
    reclaimable = True

    def __init__(
        self,
        ec2: Any,
        settings: AwsSettings,
        *,
        snapshots: S3SnapshotStore,
        passwords: SsmSecrets,
        region: str,
        installation: str,
        address: Address = private_address,
        poll_seconds: float = 2.0,
        sqs: Any | None = None,
        iam: Any | None = None,
    ) -> None:
        self.ec2 = ec2
        self.iam = iam  # makes each instance's own role, with DEVDB_EC2_ROLE_BOUNDARY
        self.sqs = sqs  # reads spot warnings from DEVDB_EC2_INTERRUPTION_QUEUE
        self.settings = settings
        self.snapshots = snapshots
        self.passwords = passwords
        self.region = region
        self.installation = installation  # its resources are the only ones this driver sees
        self.address = address
        self.poll = poll_seconds
        self._checked = False  # preflight passed once in this process
        self._build_locks: dict[str, asyncio.Lock] = {}
        self._failed_builds: dict[str, float] = {}
        self._warned: dict[str, str] = {}  # instance id -> why, from the queue
        self._drained = float("-inf")

    async def _call(self, method: str, **kwargs: Any) -> Any:
        return await asyncio.to_thread(getattr(self.ec2, method), **kwargs)

    # -- before anything exists -------------------------------------------------------------

    async def preflight(self) -> None:
        """What a launch needs (`aws/checks.py`), checked once per process."""
        if self._checked:
            return
        failed = next((c for c in await self._checks() if not c.ok), None)
        if failed is not None:
            raise InvalidInput(failed.detail)
        self._checked = True

    async def _checks(self) -> list[Check]:
        if not self.settings.ec2_enabled:
            detail = "EC2 environments need DEVDB_EC2_AMI or DEVDB_EC2_LAUNCH_TEMPLATE."
            return [Check("settings", False, detail)]
        try:
            net = await asyncio.to_thread(fleet.network, self.ec2, self.settings)
        except (BotoCoreError, ClientError, ProvisioningFailed) as exc:
            reason = fleet.aws_reason(exc) if not isinstance(exc, ProvisioningFailed) else exc
            return [Check("network", False, f"the network could not be found: {reason}")]
        subnet = net.subnets[0] if net.subnets else None
        return await asyncio.to_thread(
            ec2_checks,
            self.ec2,
            self.passwords.client,
            self.settings,
            self.region,
            subnet,
            iam=self.iam,
        )

    async def diagnose(self) -> list[tuple[str, bool, str]]:
        return [(c.name, c.ok, c.detail) for c in await self._checks()]

    async def stage(self, snapshots: SnapshotStore, manifest: Manifest) -> Path | None:
        if not isinstance(snapshots, S3SnapshotStore):
            raise InvalidInput("EC2 environments restore from S3: set DEVDB_S3_BUCKET.")
        return None  # the instance downloads and verifies it

    async def place(self, env: Environment, avoid_ports: set[int]) -> Placement:
        if not env.snapshot_id:
            raise ProvisioningFailed("an EC2 environment needs a snapshot to size its volume.")
        manifest = await self.snapshots.get(env.snapshot_id)
        handle: Handle = {
            "golden_ebs": await self.golden_snapshot(manifest.id),
            "token": f"{env.id}-{secrets.token_hex(4)}",
            "region": self.region,
            "snapshot": manifest.id,
            "volume_gib": volume_size(manifest),
            "parameter": parameter_name(env),
            "tags": {
                **fleet.managed(self.installation),
                "devdb:env": env.name,
                "devdb:owner": env.owner,
                "devdb:expires": env.expires_at.astimezone(UTC).isoformat(timespec="seconds"),
            },
        }
        return Placement(handle=handle, host="pending", port=PORT, database=env.name, user=DEV_USER)

    # -- launch and restore -----------------------------------------------------------------

    async def launch(self, placement: Placement, password: str, progress: Progress) -> Placement:
        handle = placement.handle
        token = handle["token"]
        tags = {**handle["tags"], "devdb:launch": token}
        build = bool(handle.get("golden_build"))  # on demand, and it stops when done

        def step(message: str, percent: float) -> None:
            progress(ProgressEvent(step=Step.LAUNCH, message=message, percent=percent))

        step("preparing the network and launch template", 5.0)
        # The instance reads its password from here at boot (idempotent if already stored).
        await self.passwords.write(handle["parameter"], password)
        try:
            net = await asyncio.to_thread(fleet.network, self.ec2, self.settings)
            group = await asyncio.to_thread(
                fleet.security_group, self.ec2, self.settings, net, self.installation
            )
            profile = await self._own_role(handle, tags)
            user_data = render_user_data(
                region=self.region,
                bucket=self.snapshots.bucket,
                prefix=self.snapshots.prefix,
                snapshot=handle["snapshot"],
                parameter=handle["parameter"],
                database=placement.database,
                user=placement.user,
                golden=build,
                grace_seconds=int(self.settings.expiry_grace.total_seconds()),
            )
            spec = await asyncio.to_thread(
                fleet.launch_template,
                self.ec2,
                self.settings,
                token=token,
                group=group,
                user_data=user_data,
                volume_gib=handle["volume_gib"],
                tags=tags,
                golden=handle.get("golden_ebs"),
                init_rate=self.settings.volume_init_rate,
                shutdown="stop" if build else "terminate",
                profile=profile,
            )
            kind = "an on-demand" if build else "a spot"
            step(f"requesting {kind} instance ({', '.join(self.settings.instance_types)})", 15.0)
            for attempt in range(PROFILE_TRIES):
                try:
                    instance_id, instance_type = await asyncio.to_thread(
                        fleet.request_instance,
                        self.ec2,
                        spec,
                        self.settings.instance_types,
                        net.subnets,
                        spot=not build,
                    )
                    break
                except ProvisioningFailed as exc:
                    # IAM takes a few seconds to make a new instance profile known to EC2.
                    unknown = "instance profile" in str(exc).lower()
                    if not (profile and unknown and attempt + 1 < PROFILE_TRIES):
                        raise
                    step("waiting for EC2 to know the instance's new role", 15.0)
                    await asyncio.sleep(PROFILE_WAIT)
            arn = await asyncio.to_thread(fleet.instance_arn, self.ec2, self.region, instance_id)
        except (BotoCoreError, ClientError) as exc:
            raise ProvisioningFailed(f"EC2 refused the launch ({fleet.aws_reason(exc)}).") from exc
        # Only this instance may read its password (the agent waits for this at boot).
        await self.passwords.bind(handle["parameter"], arn)
        step(f"instance {instance_id} ({instance_type}) is starting", 30.0)
        deadline = time.monotonic() + self.settings.boot_timeout.total_seconds()
        instance = await self._wait_running(instance_id, deadline)
        zone = instance.get("Placement", {}).get("AvailabilityZone", "")
        price = await asyncio.to_thread(fleet.spot_price, self.ec2, instance_type, zone)
        launched_handle = {
            **handle,
            "made": "clone" if handle.get("golden_ebs") else "restore",
            "method": "ebs snapshot" if handle.get("golden_ebs") else None,
            "instance_id": instance_id,
            "instance_arn": arn,
            "instance_type": instance_type,
            "zone": zone,
            "spot_price": price,
            "launched_at": datetime.now(UTC).isoformat(),
        }
        shown = f"${price:.4f}/h" if price is not None else "price unknown"
        step(f"{instance_id} is running ({instance_type}, {shown}); waiting for PostgreSQL", 60.0)
        host, port = await self._wait_address(instance_id, deadline)
        launched = Placement(
            handle=launched_handle,
            host=host,
            port=port,
            database=placement.database,
            user=placement.user,
        )
        await self._follow(launched, password, deadline, until=AgentState.STARTING, emit=None)
        step("server is up", 100.0)
        return launched

    async def restore(
        self,
        placement: Placement,
        dump_dir: Path | None,
        manifest: Manifest,
        jobs: int,
        progress: Progress,
    ) -> None:
        password = await self.passwords.read(placement.handle["parameter"])
        deadline = time.monotonic() + self.settings.ready_timeout.total_seconds()
        await self._follow(placement, password, deadline, until=AgentState.READY, emit=progress)

    # -- while it lives ---------------------------------------------------------------------

    async def expiry_moved(self, handle: Handle, expires_at: datetime) -> None:
        """The instance powers off past its devdb:expires tag: move the tag with the expiry."""
        if not handle.get("instance_id"):
            return
        value = expires_at.astimezone(UTC).isoformat(timespec="seconds")
        try:
            await self._call(
                "create_tags",
                Resources=[handle["instance_id"]],
                Tags=[{"Key": "devdb:expires", "Value": value}],
            )
        except (BotoCoreError, ClientError) as exc:
            raise ProvisioningFailed(
                f"the instance's expiry could not be moved ({fleet.aws_reason(exc)}), so it "
                "would power itself off at the old one: try again."
            ) from exc

    async def reset(
        self,
        placement: Placement,
        password: str,
        manifest: Manifest,
        dump_dir: Path | None,
        jobs: int,
        progress: Progress,
    ) -> int:
        """The instance's agent swaps in a fresh copy of the golden data directory it kept
        (`aws/resets.py`): same instance, address, database, user and password."""
        if not placement.handle.get("golden_ebs"):
            raise ProvisioningFailed(
                f"{placement.database!r} was restored from S3, not made from a golden EBS "
                "snapshot, so it cannot be reset: refresh it instead."
            )
        ended = (await self.activity(placement.handle)).connections
        token = secrets.token_hex(16)
        parameter = reset_parameter(placement.handle["parameter"])
        await self.passwords.write(parameter, token)
        try:
            arn = str(
                placement.handle.get("instance_arn")
                or await asyncio.to_thread(
                    fleet.instance_arn, self.ec2, self.region, placement.handle["instance_id"]
                )
            )
            await self.passwords.bind(parameter, arn)
            progress(ProgressEvent(step=Step.LAUNCH, message="asking the instance to reset"))
            await self._ask_reset(placement, password, token)
        finally:
            await self.passwords.remove(parameter)
        return ended

    async def resume(self, handle: Handle) -> bool:
        return await self.is_running(handle)  # a one-time spot instance cannot be restarted

    async def activity(self, handle: Handle) -> Activity:
        instance = await self._describe(handle["instance_id"])
        address = self.address(instance) if instance else None
        if address is None:
            raise ProvisioningFailed(f"the instance {handle['instance_id']} is gone.")
        return await probe(
            host=address[0],
            port=address[1],
            user=DEV_USER,
            password=await self.passwords.read(handle["parameter"]),
            timeout=10,
        )

    async def interruption(self, handle: Handle) -> str | None:
        """For the interruption sweep: the warnings queue (read once per sweep) if there is
        one, else EC2's spot requests; and whether the instance is gone."""
        instance_id = handle.get("instance_id")
        if not instance_id:
            return None
        queue = self.settings.interruption_queue if self.sqs is not None else None
        if queue:
            await self._drain(queue)
            if reason := self._warned.pop(instance_id, None):
                return reason
        return await self.reclaimed(handle, ask_spot=not queue)

    async def reclaimed(self, handle: Handle, *, ask_spot: bool = True) -> str | None:
        """Whether the instance is gone or, asking EC2, its spot request is being reclaimed.
        A launch in progress looks here, not at the queue, whose reads belong to sweeps."""
        instance_id = handle.get("instance_id")
        if not instance_id:
            return None
        instance = await self._describe(instance_id)
        if instance is None:
            return f"its instance {instance_id} no longer exists"
        state = instance["State"]["Name"]
        if state in GONE:
            return f"its spot instance {instance_id} is {state}"
        if not ask_spot:
            return None  # warnings come through the queue
        requests = await self._call(
            "describe_spot_instance_requests",
            Filters=[{"Name": "instance-id", "Values": [instance_id]}],
        )
        for request in requests.get("SpotInstanceRequests", []):
            code = request.get("Status", {}).get("Code", "")
            if code in _RECLAIMING:
                return f"AWS is reclaiming its spot instance {instance_id} ({code})"
        return None

    async def _own_role(self, handle: Handle, tags: dict[str, str]) -> str | None:
        """With DEVDB_EC2_ROLE_BOUNDARY, this launch's own role and instance profile
        (`aws/roles.py`): its snapshot and its parameters, nothing else."""
        if not self.settings.role_boundary or self.iam is None:
            return None
        parameter = handle["parameter"]
        policy = roles.instance_policy(
            partition=getattr(self.ec2.meta, "partition", "aws"),
            region=self.region,
            bucket=self.snapshots.bucket,
            snapshot_prefix=self.snapshots.key(handle["snapshot"]),
            parameters=[parameter, reset_parameter(parameter)],
        )
        try:
            return await asyncio.to_thread(
                roles.make,
                self.iam,
                name=roles.role_name(handle["token"]),
                boundary=self.settings.role_boundary,
                policy=policy,
                tags=tags,
            )
        except (BotoCoreError, ClientError) as exc:
            raise ProvisioningFailed(
                f"the instance's own role could not be made in IAM ({fleet.aws_reason(exc)}): "
                "give devdb's role the RolesOfTheirOwn statements of docs/iam-policy.json."
            ) from exc

    async def _drain(self, queue: str) -> None:
        """Read the warnings queue once per sweep (a sweep asks about each environment)."""
        if time.monotonic() - self._drained < DRAIN_EVERY:
            return
        self._drained = time.monotonic()
        try:
            self._warned.update(
                await asyncio.to_thread(
                    warnings.drain,
                    self.sqs,
                    self.ec2,
                    queue,
                    self.installation,
                    fleet.INSTALLATION_TAG,
                )
            )
        except (BotoCoreError, ClientError) as exc:
            log.warning("the spot warnings queue could not be read: %s", fleet.aws_reason(exc))

    def cost(self, env: Environment, since: datetime, until: datetime) -> float:
        handle = env.handle
        if not handle.get("launched_at"):
            return 0.0
        start = max(since, datetime.fromisoformat(handle["launched_at"]))
        end = min(until, env.finished_at or until)
        hours = max(timedelta(0), end - start).total_seconds() / 3600
        per_hour = float(handle.get("spot_price") or 0.0)
        gib = int(handle.get("volume_gib") or 0)
        extra_throughput = fleet.gp3_throughput(gib) - 125 if gib else 0
        per_month = gib * GP3_PER_GIB_MONTH + extra_throughput * GP3_PER_MIBS_MONTH
        per_hour += per_month / HOURS_PER_MONTH
        return hours * per_hour
