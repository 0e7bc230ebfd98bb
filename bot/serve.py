"""`devdb serve`: Slack's requests (HTTP or Socket Mode), /metrics, and the scheduler."""

from __future__ import annotations

import asyncio
import gc
import sys

from bot import messages
from bot.slack_app import build_app, keep_admins_fresh, serve_http, serve_socket
from provisioning.errors import InvalidInput
from provisioning.runtime import Runtime
from provisioning.scheduler import Scheduler


async def serve(runtime: Runtime, *, socket: bool, port: int) -> None:
    """Serve until cancelled; the scheduler runs beside it."""
    settings, service = runtime.settings, runtime.service
    if not settings.slack_bot_token or not settings.slack_signing_secret:
        raise InvalidInput("serving Slack needs SLACK_BOT_TOKEN and SLACK_SIGNING_SECRET.")
    app = build_app(
        service,
        token=settings.slack_bot_token,
        signing_secret=settings.slack_signing_secret,
        api_url=settings.slack_api_url,
    )
    admins = asyncio.ensure_future(keep_admins_fresh(app, service, settings.slack_admin_group))
    channel = settings.announce_channel

    async def announce(text: str) -> None:
        if channel:
            await app.client.chat_postMessage(channel=channel, text=text)
        else:
            print(f"devdb: {text}", file=sys.stderr, flush=True)

    scheduler = Scheduler(runtime, announce=announce)
    scheduler.start()
    # What start-up made (modules, the app, the pools) lives as long as the process: kept
    # out of the collector's way, a burst of commands no longer waits on a full collection
    # of it (bench/ack.py: one 30-40 ms pause in a burst of 200, before).
    gc.freeze()
    try:
        if socket:  # Slack's requests over the socket; /metrics on the port
            metrics_only = asyncio.ensure_future(serve_http(None, port, service=service))
            try:
                await serve_socket(app, settings.slack_app_token)
            finally:
                metrics_only.cancel()
        else:
            await serve_http(
                app,
                port,
                service=service,
                on_listening=lambda: print(messages.serving(port), file=sys.stderr, flush=True),
            )
    finally:
        scheduler.stop()
        admins.cancel()
