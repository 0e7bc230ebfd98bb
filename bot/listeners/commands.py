"""The `/devdb` slash command: acknowledge at once, then call the service and answer."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp, AsyncRespond
from slack_sdk.web.async_client import AsyncWebClient

from bot import grammar, messages, pgservice, usage, views
from bot.slack_progress import ChannelProgress
from bot.terminal import human_bytes
from bot.words import in_slack
from provisioning.audit import audit_page
from provisioning.errors import DevdbError, MigrationFailed
from provisioning.models import default_name
from provisioning.service import Service


def register(app: AsyncApp, service: Service) -> None:

    @app.command("/devdb")
    async def devdb(
        ack: AsyncAck, command: dict[str, Any], respond: AsyncRespond, client: AsyncWebClient
    ) -> None:
        try:
            parsed = grammar.parse(grammar.split(command.get("text", "")), slack=True)
        except grammar.UsageError as exc:
            await ack(
                response_type="ephemeral", text=f"{in_slack(exc)}\n{usage.slack_usage(exc.usage)}"
            )
            return
        if isinstance(parsed, grammar.Help):
            await ack(response_type="ephemeral", text=usage.slack_help(parsed.topic))
            return
        user = command["user_id"]
        name = None
        if isinstance(parsed, grammar.Refresh):
            name = parsed.name or default_name(command.get("user_name") or user)
            await ack(response_type="ephemeral", text=messages.refresh_started(name))
        else:
            await ack()
        # Acknowledged first (Slack keeps the first answer to a delivery and waits for it),
        # then taken once across every replica: Slack redelivers, a balancer may double.
        key = command.get("trigger_id") or repr(sorted(command.items()))
        if not await service.store.first_delivery(key):
            return
        if isinstance(parsed, grammar.Refresh):
            assert name is not None
            await refresh(service, client, command["channel_id"], user, name, parsed)
            return
        try:
            await answer(service, parsed, user, command.get("user_name") or user, respond)
        except DevdbError as exc:
            await respond(response_type="ephemeral", text=in_slack(exc))


async def refresh(
    service: Service,
    client: AsyncWebClient,
    channel: str,
    user: str,
    name: str,
    command: grammar.Refresh,
) -> None:
    progress = ChannelProgress(client, channel, name, user)
    try:
        view = await service.refresh(
            user,
            name,
            snapshot=command.snapshot,
            ttl=command.ttl,
            kind=command.kind,
            progress=progress,
        )
    except DevdbError as exc:
        if progress.event is None:
            await client.chat_postEphemeral(channel=channel, user=user, text=in_slack(exc))
        else:
            await progress.finish(failed=in_slack(exc))
        if isinstance(exc, MigrationFailed) and exc.output:
            # What the migrations printed may hold anything: the requester sees it alone.
            await client.chat_postEphemeral(
                channel=channel, user=user, text=messages.migration_output(name, exc.output)
            )
        return
    await progress.finish()
    assert view.endpoint is not None
    await client.chat_postEphemeral(
        channel=channel,
        user=user,
        text=f"Connection details for {name}",
        blocks=views.connection_blocks(name, view.endpoint, pgservice.section_name(name)),
    )


async def answer(
    service: Service, command: grammar.Command, user: str, user_name: str, respond: AsyncRespond
) -> None:
    match command:
        case grammar.ListEnvironments(everyone=everyone):
            found = await service.list(user, everyone=everyone)
            created = {m.id: m.created for m in await service.list_snapshots(user)}
            blocks = (
                views.team_list_blocks(
                    found,
                    created,
                    await service.spend_by_team(),
                    team_of=lambda owner: service.policy.team_of(owner)[0],
                    cap=service.policy.monthly_cap,
                )
                if everyone
                else views.list_blocks(found, created)
            )
            await respond(response_type="ephemeral", text="Environments", blocks=blocks)
        case grammar.Audit(name=name, since=since, user=who):
            query = {"name": name, "since": int(since.total_seconds()), "user": who}
            await respond(
                response_type="ephemeral",
                text="Audit log",
                blocks=await audit_reply(service, user, query),
            )
        case grammar.Status(name=name):
            view = await service.status(user, name or default_name(user_name))
            text = messages.slack_status(view.env.name, view.env.state.value, view.env.snapshot_id)
            blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": text}}]
            if view.endpoint is not None:
                blocks += views.connection_blocks(
                    view.env.name, view.endpoint, pgservice.section_name(view.env.name)
                )
            await respond(response_type="ephemeral", text=text, blocks=blocks)
        case grammar.SaveEnvironment(name=name):
            manifest = await service.save(user, name)
            await respond(response_type="ephemeral", text=messages.saved(name, manifest.id))
        case grammar.ResetEnvironment(name=name):
            view, ended = await service.reset(user, name)
            await respond(response_type="ephemeral", text=messages.reset_done(view.env.name, ended))
        case grammar.Destroy(name=name):
            env = await service.destroy(user, name)
            await respond(response_type="ephemeral", text=messages.destroyed(env.name))
        case grammar.Extend(name=name, by=by):
            env = await service.extend(user, name, by)
            await respond(
                response_type="ephemeral",
                text=messages.extended(env.name, f"{env.expires_at:%Y-%m-%d %H:%M} UTC"),
            )
        case grammar.Protect(name=name, duration=duration):
            env = await service.protect(user, name, duration)
            until = f"{env.protected_until:%Y-%m-%d %H:%M} UTC"
            await respond(response_type="ephemeral", text=messages.protected(env.name, until))
        case grammar.Snapshots():
            manifests = await service.list_snapshots(user)
            lines = [f"• `{m.id}` · {m.rows:,} rows · {human_bytes(m.size)}" for m in manifests]
            await respond(response_type="ephemeral", text="\n".join(lines) or "No snapshots yet.")


async def audit_reply(service: Service, viewer: str, query: dict[str, Any]) -> views.Blocks:
    """A page of the audit log for `viewer`; `query` rides on the Older button."""
    page = await audit_page(
        service.store,
        viewer,
        admin=service.is_admin(viewer),
        name=query.get("name"),
        since=timedelta(seconds=int(query["since"])),
        user=query.get("user"),
        before=query.get("before"),
    )
    return views.audit_blocks(page, {k: v for k, v in query.items() if k != "before"})
