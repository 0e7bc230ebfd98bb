"""The Slack app: a Bolt AsyncApp with devdb's listeners, served over HTTP or Socket Mode."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import replace

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST
from slack_bolt.async_app import AsyncApp
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_bolt.response import BoltResponse
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
)
from slack_sdk.web.async_client import AsyncWebClient

from bot.listeners import actions, commands, home
from provisioning import metrics
from provisioning.errors import InvalidInput
from provisioning.models import Environment
from provisioning.service import Service

DEFAULT_API_URL = "https://slack.com/api/"


def web_client(token: str, api_url: str | None = None) -> AsyncWebClient:
    return AsyncWebClient(
        token=token,
        base_url=api_url or DEFAULT_API_URL,
        # 429s wait for Retry-After and go again rather than being lost.
        retry_handlers=[
            AsyncRateLimitErrorRetryHandler(max_retry_count=5),
            AsyncConnectionErrorRetryHandler(max_retry_count=2),
        ],
    )


def notify_through_slack(service: Service, client: AsyncWebClient) -> None:
    """Owners hear from the core by direct message; reap warnings come with Keep/Destroy."""
    service.notify = home.direct_messages(client)

    async def warn(env: Environment, reason: str) -> None:
        await home.warn_owner(client, env, reason, service.policy.reap.warning)

    service.warn = warn


def build_app(
    service: Service, *, token: str, signing_secret: str, api_url: str | None = None
) -> AsyncApp:
    app = AsyncApp(signing_secret=signing_secret, client=web_client(token, api_url))

    @app.middleware
    async def drop_retries(
        req: AsyncBoltRequest, resp: BoltResponse, next: Callable[[], Awaitable[BoltResponse]]
    ) -> BoltResponse:
        # Slack redelivers when an ack is late; the first delivery is already doing the work.
        if req.headers.get("x-slack-retry-num"):
            return BoltResponse(status=200, body="")
        return await next()

    commands.register(app, service)
    actions.register(app, service)
    home.register(app, service)
    notify_through_slack(service, app.client)
    return app


ADMIN_GROUP_EVERY = 300.0


async def refresh_admins(
    client: AsyncWebClient, service: Service, group: str, configured: frozenset[str]
) -> frozenset[str]:
    """Admins are the configured user ids plus the members of a Slack user group."""
    reply = await client.usergroups_users_list(usergroup=group)
    admins = configured | frozenset(reply.get("users") or [])
    service.policy = replace(service.policy, admins=admins)
    return admins


async def keep_admins_fresh(app: AsyncApp, service: Service, group: str | None) -> None:
    """Re-read the admin group every few minutes while serving."""
    if not group:
        return
    configured = service.policy.admins
    while True:
        with contextlib.suppress(Exception):  # Slack unreachable: keep the last answer
            await refresh_admins(app.client, service, group, configured)
        await asyncio.sleep(ADMIN_GROUP_EVERY)


def metrics_route(web_app: web.Application, service: Service) -> web.Application:
    """Prometheus's scrape target at /metrics (`provisioning/metrics.py`)."""

    async def scrape(_: web.Request) -> web.Response:
        body = await metrics.render(service)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    web_app.router.add_get("/metrics", scrape)
    return web_app


async def serve_http(
    app: AsyncApp | None,
    port: int,
    *,
    service: Service | None = None,
    host: str = "0.0.0.0",
    on_listening: Callable[[], None] | None = None,
) -> None:
    """Serve Slack's requests at /slack/events, and /metrics with a service, until
    cancelled; with no app (Socket Mode takes Slack's requests), /metrics alone."""
    web_app = app.web_app(path="/slack/events", port=port) if app else web.Application()
    if service is not None:
        metrics_route(web_app, service)
    runner = web.AppRunner(web_app)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
        if on_listening:
            on_listening()  # only now: announcing earlier invites requests that are refused
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


async def serve_socket(app: AsyncApp, app_token: str | None) -> None:
    """Serve over Socket Mode (no public URL needed) until cancelled."""
    if not app_token:
        raise InvalidInput("Socket Mode needs SLACK_APP_TOKEN (an xapp- token).")
    from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler

    await AsyncSocketModeHandler(app, app_token).start_async()  # type: ignore[no-untyped-call]
