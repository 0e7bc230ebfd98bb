"""Watching one instance: its state, its address, and its agent's status row.

Mixed into `Ec2Driver`; the golden builds (`golden.py`) use it too.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
from botocore.exceptions import BotoCoreError, ClientError

from provisioning.aws import agent_status
from provisioning.aws.agent import FAILED_MARK, NO_RESETS
from provisioning.aws.agent_status import AgentState, AgentStatus
from provisioning.aws.failures import early_death
from provisioning.aws.resets import CHANNEL as RESET_CHANNEL
from provisioning.aws.resets import reset_note
from provisioning.aws.settings import AwsSettings
from provisioning.drivers.base import Handle, Placement, Progress
from provisioning.errors import ProvisioningFailed
from provisioning.models import ProgressEvent
from provisioning.pg.probe import PROBE_APP

GONE = ("shutting-down", "terminated", "stopping", "stopped")
_ORDER = (AgentState.STARTING, AgentState.RESTORING, AgentState.READY)
Address = Callable[[dict[str, Any]], tuple[str, int] | None]


class InstanceWatch:
    settings: AwsSettings
    address: Address
    poll: float
    _call: Callable[..., Awaitable[Any]]
    reclaimed: Callable[[Handle], Awaitable[str | None]]

    async def discard_golden(self, ebs: str) -> None:
        """A golden snapshot an environment could not start from: never used again."""
        with contextlib.suppress(BotoCoreError, ClientError):
            await self._call("delete_snapshot", SnapshotId=ebs)

    async def _describe(self, instance_id: str) -> dict[str, Any] | None:
        try:
            reply = await self._call("describe_instances", InstanceIds=[instance_id])
        except ClientError as exc:
            if "NotFound" in str(exc.response.get("Error", {}).get("Code")):
                return None
            raise
        for reservation in reply.get("Reservations", []):
            for instance in reservation.get("Instances", []):
                return dict(instance)
        return None

    async def _wait_running(self, instance_id: str, deadline: float) -> dict[str, Any]:
        while True:
            instance = await self._describe(instance_id)
            state = instance["State"]["Name"] if instance else "missing"
            if state == "running" and instance is not None:
                return instance
            if state in GONE:
                reason = (instance or {}).get("StateReason", {})
                raise ProvisioningFailed(
                    early_death(
                        instance_id, state, reason.get("Code", ""), reason.get("Message", "")
                    )
                )
            if time.monotonic() > deadline:
                raise ProvisioningFailed(
                    f"the instance {instance_id} did not start within {self.settings.boot_timeout}."
                )
            await asyncio.sleep(self.poll)

    async def _wait_address(self, instance_id: str, deadline: float) -> tuple[str, int]:
        while True:
            instance = await self._describe(instance_id)
            if instance is not None and (found := self.address(instance)):
                return found
            if time.monotonic() > deadline:
                raise ProvisioningFailed(f"the instance {instance_id} has no address.")
            await asyncio.sleep(self.poll)

    async def _connect(self, placement: Placement, password: str) -> asyncpg.Connection:
        """devdb's own session on the instance's maintenance database, as the login role."""
        return await asyncpg.connect(
            host=placement.host,
            port=placement.port,
            user=placement.user,
            password=password,
            database="postgres",
            timeout=5,
            server_settings={"application_name": PROBE_APP},
        )

    async def _status(self, placement: Placement, password: str) -> AgentStatus | None:
        """The agent's status, or None while the server does not answer yet."""
        try:
            conn = await self._connect(placement, password)
        except (OSError, TimeoutError, asyncpg.PostgresError):
            return None  # still booting, or the role is not made yet
        try:
            return await agent_status.read(conn)
        except (OSError, asyncpg.PostgresError):
            return None  # the server went away while it was asked (a reset stops it)
        finally:
            await conn.close()

    async def _follow(
        self,
        placement: Placement,
        password: str,
        deadline: float,
        *,
        until: AgentState,
        emit: Progress | None,
    ) -> None:
        """Poll the agent until it reaches `until` (or gets past it); re-emit its progress."""
        instance_id = placement.handle["instance_id"]
        last: ProgressEvent | None = None
        checked = time.monotonic()
        while True:
            status = await self._status(placement, password)
            if status is not None:
                if status.state == AgentState.FAILED:
                    if golden := placement.handle.get("golden_ebs"):
                        await self.discard_golden(golden)  # the next one restores from S3
                    raise ProvisioningFailed(f"the instance could not restore: {status.error}")
                if emit and status.event is not None and status.event != last:
                    last = status.event
                    emit(status.event)
                if _ORDER.index(status.state) >= _ORDER.index(until):
                    return
            if time.monotonic() - checked > 5 * self.poll:
                checked = time.monotonic()
                if reason := await self.reclaimed(placement.handle):
                    raise ProvisioningFailed(f"the environment's server went away: {reason}.")
                if status is None and (failure := await self._console_failure(instance_id)):
                    raise ProvisioningFailed(failure)
            if time.monotonic() > deadline:
                tail = " | ".join((await self._console(instance_id)).strip().splitlines()[-3:])
                raise ProvisioningFailed(
                    f"the instance {instance_id} did not report {until.value} in time; it was "
                    f"terminated{f' (its console ended: {tail})' if tail else ''}."
                )
            await asyncio.sleep(self.poll / 2)

    async def _ask_reset(self, placement: Placement, password: str, token: str) -> None:
        """Wake the agent on its channel (again every few seconds: a notification is not
        kept while nobody listens) until its status names the token."""
        deadline = time.monotonic() + self.settings.boot_timeout.total_seconds()
        note = reset_note(token)
        notified = 0.0
        while True:
            status = await self._status(placement, password)  # None while it restarts
            if status is not None:
                message = status.event.message if status.event else ""
                if NO_RESETS in message:
                    raise ProvisioningFailed(
                        f"{placement.database!r} cannot be reset: its instance had no room "
                        "for a copy of the golden data; refresh it instead."
                    )
                if note in message and status.state == AgentState.READY:
                    return
                if status.state == AgentState.FAILED and note in (status.error or ""):
                    raise ProvisioningFailed(f"the instance could not reset: {status.error}")
                if time.monotonic() - notified > 3.0:
                    await self._notify(placement, password, token)
                    notified = time.monotonic()
            if time.monotonic() > deadline:
                raise ProvisioningFailed("the instance did not reset in time.")
            await asyncio.sleep(self.poll / 2)

    async def _notify(self, placement: Placement, password: str, token: str) -> None:
        with contextlib.suppress(OSError, TimeoutError, asyncpg.PostgresError):
            conn = await self._connect(placement, password)
            try:
                await conn.execute("select pg_notify($1, $2)", RESET_CHANNEL, token)
            finally:
                await conn.close()

    async def _console(self, instance_id: str) -> str:
        """The instance's console output so far ("" if EC2 has none or will not say)."""
        try:
            reply = await self._call("get_console_output", InstanceId=instance_id, Latest=True)
        except (BotoCoreError, ClientError):
            return ""
        return str(reply.get("Output") or "")

    async def _console_failure(self, instance_id: str) -> str | None:
        """The agent's own failure line from the console, with the lines before it."""
        lines = (await self._console(instance_id)).splitlines()
        for index, line in enumerate(lines):
            if FAILED_MARK in line:
                reason = line.split(FAILED_MARK, 1)[1].strip().rstrip(".")
                before = " | ".join(text.strip() for text in lines[max(0, index - 3) : index])
                context = f" (the console before it: {before})" if before else ""
                return f"the instance failed as it started: {reason}{context}."
        return None
