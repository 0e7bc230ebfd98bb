"""`devdb connect NAME [--port 15432]`: a stable local port that reaches an environment.

A local environment already listens on 127.0.0.1. A cloud one is reached through a port
forward: ssh through the configured bastion (DEVDB_BASTION), or else SSM Session Manager,
which needs the AWS CLI and its session-manager-plugin. The `[devdb-NAME]` entry in
pg_service.conf is pointed at the local port, so `psql service=devdb-NAME` keeps working
whichever environment runs behind it.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass

from provisioning.errors import MissingBinary
from provisioning.models import Environment


@dataclass(frozen=True)
class Forward:
    argv: list[str]
    needs: list[str]

    @property
    def shown(self) -> str:
        return " ".join(self.argv)

    def missing(self) -> list[str]:
        return [tool for tool in self.needs if shutil.which(tool) is None]


def forward_for(env: Environment, local_port: int, bastion: str | None) -> Forward:
    """The command that forwards `local_port` to `env`'s server."""
    assert env.host and env.port
    if bastion:
        return Forward(
            ["ssh", "-N", "-L", f"127.0.0.1:{local_port}:{env.host}:{env.port}", bastion],
            ["ssh"],
        )
    parameters = json.dumps(
        {"portNumber": [str(env.port)], "localPortNumber": [str(local_port)]},
        separators=(",", ":"),
    )
    return Forward(
        [
            "aws",
            "ssm",
            "start-session",
            "--region",
            str(env.handle.get("region", "")),
            "--target",
            str(env.handle.get("instance_id", "")),
            "--document-name",
            "AWS-StartPortForwardingSession",
            "--parameters",
            parameters,
        ],
        ["aws", "session-manager-plugin"],
    )


def check_tools(forward: Forward) -> None:
    """`MissingBinary` naming what is missing; the command itself is printed by the caller."""
    missing = forward.missing()
    if missing:
        raise MissingBinary(
            f"{' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} not installed: "
            "install it, or run the command above yourself where it is."
        )
