"""The App Home tab (your environments with their buttons, the latest snapshot) and the
reaper's warning DM with its Keep / Destroy buttons."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp, AsyncRespond
from slack_sdk.web.async_client import AsyncWebClient

from bot import messages, views
from bot.words import in_slack, said, slack
from provisioning.durations import format_duration, parse_duration
from provisioning.errors import DevdbError, NotFound, Part
from provisioning.models import Environment
from provisioning.notify import Notifier
from provisioning.service import Service

KEEP_FOR = timedelta(hours=4)


async def publish_home(client: AsyncWebClient, service: Service, user: str) -> None:
    mine = await service.list(user)
    try:
        latest = await service.snapshots.latest()
    except NotFound:
        latest = None
    await client.views_publish(
        user_id=user, view={"type": "home", "blocks": views.home_blocks(mine, latest)}
    )


async def warn_owner(
    client: AsyncWebClient, env: Environment, reason: str, warning: timedelta
) -> None:
    """DM the owner that `env` will be reaped once `warning` has passed (the scheduler
    calls this)."""
    within = format_duration(warning)
    await client.chat_postMessage(
        channel=env.owner,
        text=messages.reap_warning(env.name, reason, within),
        blocks=views.reap_warning_blocks(env.name, reason, within),
    )


def direct_messages(client: AsyncWebClient) -> Notifier:
    """The core's notifier over Slack: a direct message to the owner (a Slack user id)."""

    async def notify(owner: str, *parts: Part) -> None:
        await client.chat_postMessage(channel=owner, text=said(parts, slack))

    return notify


def register(app: AsyncApp, service: Service) -> None:
    @app.event("app_home_opened")
    async def home_opened(event: dict[str, Any], client: AsyncWebClient) -> None:
        if event.get("tab", "home") == "home":
            await publish_home(client, service, event["user"])

    @app.action("extend_custom")
    async def extend_custom(ack: AsyncAck, body: dict[str, Any], client: AsyncWebClient) -> None:
        await ack()
        await client.views_open(
            trigger_id=body["trigger_id"], view=views.extend_modal(body["actions"][0]["value"])
        )

    @app.view("extend_modal")
    async def extend_submitted(
        ack: AsyncAck, body: dict[str, Any], view: dict[str, Any], client: AsyncWebClient
    ) -> None:
        user, name = body["user"]["id"], view["private_metadata"]
        raw = view["state"]["values"]["duration"]["value"]["value"] or ""
        try:
            env = await service.extend(user, name, parse_duration(raw))
        except DevdbError as exc:
            # Shown under the field, and the modal stays open to correct it.
            await ack(response_action="errors", errors={"duration": in_slack(exc)})
            return
        await ack()
        await client.chat_postMessage(
            channel=user, text=messages.extended(env.name, f"{env.expires_at:%Y-%m-%d %H:%M} UTC")
        )
        await publish_home(client, service, user)

    @app.action("keep")
    async def keep(ack: AsyncAck, body: dict[str, Any], respond: AsyncRespond) -> None:
        await ack()
        user, name = body["user"]["id"], body["actions"][0]["value"]
        try:
            env = await service.keep(user, name, KEEP_FOR)
            text = messages.kept(env.name, f"{env.expires_at:%Y-%m-%d %H:%M} UTC")
        except DevdbError as exc:
            text = in_slack(exc)
        await respond(replace_original=True, text=text)
