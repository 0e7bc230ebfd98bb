"""EC2 environments' passwords: SSM Parameter Store SecureStrings `/devdb/<env>/password`.

`<env>` is the environment's name and id (`alice-42`): while a refresh replaces an
environment, the old and the new one exist side by side, each with its own password.
The instance reads its parameter at boot; the bot deletes it when the environment goes.

As soon as the instance exists, its parameters are tagged `devdb:instance=<its ARN>`
(`bind`), and the instance policy lets an instance read only parameters whose tag is its
own ARN (`ec2:SourceInstanceARN`): no instance reads another environment's password.
"""

from __future__ import annotations

import asyncio
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from provisioning.errors import NotFound, ProvisioningFailed
from provisioning.models import Environment


def parameter_name(env: Environment) -> str:
    return f"/devdb/{env.name}-{env.id}/password"


def _reason(exc: BotoCoreError | ClientError) -> str:
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Code", "error"))
    return str(exc)


INSTANCE_TAG = "devdb:instance"  # on a parameter: the ARN of the one instance that may read it


class SsmSecrets:
    def __init__(self, client: Any, *, kms_key: str | None = None) -> None:
        self.client = client
        self.kms_key = kms_key

    async def put(self, env: Environment, password: str) -> None:
        await self.write(parameter_name(env), password)

    async def write(self, parameter: str, password: str) -> None:
        args: dict[str, Any] = {
            "Name": parameter,
            "Value": password,
            "Type": "SecureString",
            "Overwrite": True,
        }
        if self.kms_key:
            args["KeyId"] = self.kms_key
        try:
            await asyncio.to_thread(self.client.put_parameter, **args)
        except (BotoCoreError, ClientError) as exc:
            raise ProvisioningFailed(
                f"the password could not be stored in SSM ({_reason(exc)})."
            ) from exc

    async def bind(self, parameter: str, instance_arn: str) -> None:
        """Let only the instance `instance_arn` read `parameter` (see the module's note)."""
        try:
            await asyncio.to_thread(
                self.client.add_tags_to_resource,
                ResourceType="Parameter",
                ResourceId=parameter,
                Tags=[{"Key": INSTANCE_TAG, "Value": instance_arn}],
            )
        except (BotoCoreError, ClientError) as exc:
            raise ProvisioningFailed(
                f"the password could not be given to its instance in SSM ({_reason(exc)})."
            ) from exc

    async def get(self, env: Environment) -> str:
        return await self.read(parameter_name(env))

    async def read(self, parameter: str) -> str:
        try:
            reply = await asyncio.to_thread(
                self.client.get_parameter, Name=parameter, WithDecryption=True
            )
        except ClientError as exc:
            if _reason(exc) == "ParameterNotFound":
                raise NotFound(f"the password {parameter} is missing from SSM.") from None
            raise ProvisioningFailed(f"SSM refused the password ({_reason(exc)}).") from exc
        except BotoCoreError as exc:
            raise ProvisioningFailed(f"SSM could not be reached ({_reason(exc)}).") from exc
        return str(reply["Parameter"]["Value"])

    async def delete(self, env: Environment) -> None:
        await self.remove(parameter_name(env))

    async def remove(self, parameter: str) -> None:
        try:
            await asyncio.to_thread(self.client.delete_parameter, Name=parameter)
        except ClientError as exc:
            if _reason(exc) != "ParameterNotFound":
                raise ProvisioningFailed(
                    f"the password could not be deleted from SSM ({_reason(exc)})."
                ) from exc
