"""The core's way to tell an owner something happened to their environment.

Front ends plug in how: Slack sends a direct message; without one, the audit log (which
every such event is recorded in anyway) is all there is.
"""

from __future__ import annotations

from typing import Protocol


class Notifier(Protocol):
    async def __call__(self, owner: str, text: str) -> None: ...


async def nobody(owner: str, text: str) -> None:
    """The notifier when no front end listens."""
