"""Socket Mode end to end: a local websocket server plays Slack's side of the socket, the
fake Web API answers apps.connections.open with its ws:// URL, and a /devdb refresh sent as
an envelope runs to a ready environment."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from aiohttp import WSMsgType, web
from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler

from bot.slack_app import build_app
from provisioning.runtime import Runtime
from provisioning.snapshots.manifest import Manifest
from tests.conftest import unique
from tests.test_slack import SECRET, FakeSlack, free_port


class SlackSocket:
    """Slack's end of a Socket Mode connection: says hello, sends envelopes, keeps acks."""

    def __init__(self) -> None:
        self.outbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.acks: list[dict[str, Any]] = []
        self.connected = asyncio.Event()

    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.send_json({"type": "hello", "num_connections": 1})
        self.connected.set()

        async def send() -> None:
            while True:
                await ws.send_json(await self.outbox.get())

        sender = asyncio.create_task(send())
        try:
            async for message in ws:
                if message.type == WSMsgType.TEXT:
                    self.acks.append(json.loads(message.data))
        finally:
            sender.cancel()
        return ws


async def test_a_refresh_runs_end_to_end_over_socket_mode(
    runtime: Runtime, demo_snapshot: Manifest
) -> None:
    slack = SlackSocket()
    fake = FakeSlack(free_port())
    runner = await fake.serve(("GET", "/link", slack.handle))
    fake.socket_url = f"ws://127.0.0.1:{fake.port}/link"
    app = build_app(runtime.service, token="xoxb-test", signing_secret=SECRET, api_url=fake.api_url)
    handler = AsyncSocketModeHandler(app, "xapp-test")
    await handler.connect_async()  # type: ignore[no-untyped-call]
    user, name = unique("U"), unique("socket")
    try:
        await asyncio.wait_for(slack.connected.wait(), 30)
        assert [m for m, _ in fake.calls if m == "apps.connections.open"]
        await slack.outbox.put(
            {
                "envelope_id": "env-1",
                "type": "slash_commands",
                "accepts_response_payload": True,
                "payload": {
                    "token": "x",
                    "team_id": "T1",
                    "channel_id": "C1",
                    "user_id": user,
                    "user_name": user,
                    "command": "/devdb",
                    "text": f"refresh {name} --snapshot {demo_snapshot.id}",
                    "response_url": fake.response_url(unique("cmd")),
                    "trigger_id": unique("trigger"),
                },
            }
        )
        details = await fake.wait_for("chat.postEphemeral", timeout=120)
        status = await runtime.service.status(user, name)
        assert status.endpoint is not None
        assert details["user"] == user and status.endpoint.password in json.dumps(details)
        assert "is ready" in json.dumps(fake.of("chat.update")[-1])
        deadline = time.monotonic() + 10
        while not any(a.get("envelope_id") == "env-1" for a in slack.acks):
            assert time.monotonic() < deadline, slack.acks
            await asyncio.sleep(0.05)
    finally:
        await handler.close_async()  # type: ignore[no-untyped-call]
        await runner.cleanup()
        if (await runtime.service.list(user)) != []:
            await runtime.service.destroy(user, name)
