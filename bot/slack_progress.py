"""A refresh's progress as one Slack message, edited in place at most every 1.5 seconds."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from slack_sdk.web.async_client import AsyncWebClient

from bot.views import progress_blocks
from provisioning.models import ProgressEvent, Step

MIN_INTERVAL = 1.5  # Slack allows about one chat.update a second per message


class ChannelProgress:
    """Posts the message on the first event, then edits it; the last state always lands."""

    def __init__(self, client: AsyncWebClient, channel: str, name: str, owner: str) -> None:
        self.client = client
        self.channel = channel
        self.name = name
        self.owner = owner
        self.ts: str | None = None
        self.event: ProgressEvent | None = None
        self.done: set[Step] = set()
        self.sent_at = 0.0
        self.pending: asyncio.Task[None] | None = None

    def __call__(self, event: ProgressEvent) -> None:
        if (
            self.event is not None
            and isinstance(self.event.step, Step)
            and event.step != self.event.step
        ):
            self.done.add(self.event.step)
        self.event = event
        if self.pending is None or self.pending.done():
            self.pending = asyncio.ensure_future(self._flush())

    async def _flush(self) -> None:
        wait = self.sent_at + MIN_INTERVAL - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        await self._send(progress_blocks(self.name, self.owner, self.event, self.done))

    async def _send(self, blocks: list[dict[str, Any]]) -> None:
        text = f"Refresh of {self.name}"
        self.sent_at = time.monotonic()
        if self.ts is None:
            reply = await self.client.chat_postMessage(
                channel=self.channel, text=text, blocks=blocks
            )
            self.ts = reply["ts"]
        else:
            await self.client.chat_update(
                channel=self.channel, ts=self.ts, text=text, blocks=blocks
            )

    async def finish(self, *, failed: str | None = None) -> None:
        """Write the final state (ready or failed) after any edit still waiting."""
        if self.pending is not None:
            # Let an edit under way land first, so the message is never posted twice.
            with contextlib.suppress(Exception):
                await self.pending
        wait = self.sent_at + MIN_INTERVAL - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        await self._send(
            progress_blocks(
                self.name, self.owner, self.event, self.done, failed=failed, ready=failed is None
            )
        )
