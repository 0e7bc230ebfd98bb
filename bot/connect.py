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
import sys
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from bot import messages, pgservice
from bot.forward import forward
from provisioning.errors import InvalidInput, MissingBinary, Next, NotAllowed
from provisioning.models import Endpoint, Environment, TableSet
from provisioning.service import Service
from provisioning.settings import Settings


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


@dataclass(frozen=True)
class Plan:
    """How `devdb connect` reaches an environment: the pg_service entry to write, what to
    say, and the forward to run (None when the server is reached as it is)."""

    entry: Endpoint
    message: str
    data: dict[str, Any]
    forward: Forward | None


async def plan_connect(
    service: Service, settings: Settings, user: str, name: str, port: int
) -> Plan:
    view = await service.status(user, name)
    env = view.env
    if env.kind not in service.drivers:
        raise InvalidInput(f"{name!r} is an {env.kind} environment, not set up on this machine.")
    if view.endpoint is None:
        raise NotAllowed(
            f"{name!r} is {env.state.value} or not yours: only its owner or an admin can "
            "connect to a ready environment."
        )
    if isinstance(view.endpoint, TableSet):
        raise InvalidInput(
            f"{name!r} is a set of DynamoDB tables, reached at its endpoint with no tunnel: ",
            Next("status", name),
            " shows where.",
        )
    endpoint, section = view.endpoint, pgservice.section_name(name)
    data = {"name": env.name, "host": endpoint.host, "port": endpoint.port}
    if env.kind == "local":
        return Plan(endpoint, messages.already_local(env.name, endpoint.port, section), data, None)
    if env.kind in ("shared", "shared-db"):  # the shared server is reached as it is
        said = messages.reachable_directly(env.name, endpoint.host, endpoint.port, section)
        return Plan(endpoint, said, data, None)
    forward = forward_for(env, port, settings.aws.bastion)
    local = replace(endpoint, host="localhost", port=port)
    return Plan(local, messages.forwarding(env.name, port, section), data, forward)


async def use(
    service: Service,
    settings: Settings,
    user: str,
    name: str,
    port: int | None,
    *,
    emit: Callable[[str, dict[str, Any]], None],
) -> list[str] | None:
    """`devdb use NAME [--port P]`: `service=devdb` reaches `name` from now on; with a port,
    as localhost:P too (relayed here, or by the environment's SSM or ssh forward, whose argv
    is returned for the process to become)."""
    plan = await plan_connect(service, settings, user, name, port or 15432)
    if port is None and plan.forward is not None:
        raise InvalidInput(
            f"{name!r} is reached through a forward: give it a local port "
            f"(devdb use {name} --port 15432)."
        )
    entry = plan.entry if port is None else replace(plan.entry, host="localhost", port=port)
    if plan.forward is not None:
        print(plan.forward.shown)
        check_tools(plan.forward)
    pgservice.write_entry(settings.pg_service_file, name, entry, pgservice.STABLE)
    said = messages.using(name, entry.host, entry.port)
    if port is None:
        emit(said, {"name": name, "host": entry.host, "port": entry.port})
        return None
    if plan.forward is not None:
        print(said, file=sys.stderr)
        return plan.forward.argv
    await forward(
        port,
        plan.entry.host,
        plan.entry.port,
        on_listening=lambda: print(said, file=sys.stderr, flush=True),
    )
    return None
