"""Buttons on an environment's message: Extend 4h, Connection details, Reset, Destroy."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp, AsyncRespond

from bot import messages, pgservice, views
from bot.listeners.commands import audit_reply
from bot.words import in_slack
from provisioning.errors import DevdbError
from provisioning.service import Service

EXTEND_BY = timedelta(hours=4)


def register(app: AsyncApp, service: Service) -> None:
    async def run(action: str, body: dict[str, Any], respond: AsyncRespond) -> None:
        user = body["user"]["id"]
        name = body["actions"][0]["value"]
        try:
            if action == "extend":
                env = await service.extend(user, name, EXTEND_BY)
                text = messages.extended(env.name, f"{env.expires_at:%Y-%m-%d %H:%M} UTC")
                await respond(response_type="ephemeral", replace_original=False, text=text)
            elif action == "reset":
                view, ended = await service.reset(user, name)
                await respond(
                    response_type="ephemeral",
                    replace_original=False,
                    text=messages.reset_done(view.env.name, ended),
                )
            elif action == "destroy":
                env = await service.destroy(user, name)
                await respond(
                    response_type="ephemeral",
                    replace_original=False,
                    text=messages.destroyed(env.name),
                )
            else:
                view = await service.status(user, name)
                if view.endpoint is None:
                    await respond(
                        response_type="ephemeral",
                        replace_original=False,
                        text=messages.not_yours(name, view.env.owner),
                    )
                    return
                await respond(
                    response_type="ephemeral",
                    replace_original=False,
                    text=f"Connection details for {name}",
                    blocks=views.connection_blocks(
                        name, view.endpoint, pgservice.section_name(name)
                    ),
                )
        except DevdbError as exc:
            await respond(response_type="ephemeral", replace_original=False, text=in_slack(exc))

    def listener(kind: str) -> Callable[..., Awaitable[None]]:
        # Bolt passes arguments by parameter name, so the kind travels in a closure, not as
        # a defaulted parameter (a parameter named `action` would receive Bolt's payload).
        async def handler(ack: AsyncAck, body: dict[str, Any], respond: AsyncRespond) -> None:
            await ack()
            await run(kind, body, respond)

        return handler

    for kind in ("extend", "reset", "destroy", "details"):
        app.action(kind)(listener(kind))

    @app.action("audit_older")
    async def audit_older(ack: AsyncAck, body: dict[str, Any], respond: AsyncRespond) -> None:
        await ack()
        user = body["user"]["id"]
        try:
            query = json.loads(body["actions"][0]["value"])
            blocks = await audit_reply(service, user, query)
        except (ValueError, KeyError, TypeError):
            await respond(response_type="ephemeral", text="That page could not be read.")
            return
        except DevdbError as exc:
            await respond(response_type="ephemeral", replace_original=False, text=in_slack(exc))
            return
        await respond(
            response_type="ephemeral", replace_original=True, text="Audit log", blocks=blocks
        )
