"""The core's way to tell an owner something happened to their environment.

Front ends plug in how: Slack sends a direct message; without one, the audit log (which
every such event is recorded in anyway) is all there is. A notice is parts, text and the
commands it suggests (`errors.Next`), which each front end words in its own way.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol

from provisioning.errors import Part
from provisioning.models import Environment


class Notifier(Protocol):
    async def __call__(self, owner: str, *parts: Part) -> None: ...


async def nobody(owner: str, *parts: Part) -> None:
    """The notifier when no front end listens."""


# Warn an owner that an environment is about to be reaped, and why (Slack: Keep / Destroy).
Warner = Callable[[Environment, str], Awaitable[None]]
