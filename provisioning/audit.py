"""Reading the audit log: `devdb audit [NAME] [--since 1d] [--user U]`, in pages.

Admins see every entry. Anyone else sees their own: what they did, and what was done to
environments they own (a reap, a reset, a privilege granted to their role).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from provisioning.errors import NotAllowed
from provisioning.models import validate_name
from provisioning.state.store import StateStore

PAGE = 20


@dataclass(frozen=True)
class Entry:
    id: int
    at: datetime
    actor: str
    action: str
    target: str | None
    result: str
    detail: dict[str, Any] | None


@dataclass(frozen=True)
class Page:
    entries: list[Entry]
    older: int | None  # the `before` that shows the next page, if there is one


async def audit_page(
    store: StateStore,
    viewer: str,
    *,
    admin: bool,
    name: str | None = None,
    since: timedelta = timedelta(days=1),
    user: str | None = None,
    before: int | None = None,
    size: int = PAGE,
) -> Page:
    """The newest `size` entries older than `before`, as `viewer` may see them."""
    if user is not None and user != viewer and not admin:
        raise NotAllowed("only an admin may read another user's audit entries.")
    rows = await store.audit_page(
        target=validate_name(name) if name else None,
        since=datetime.now(UTC) - since,
        actor=user,
        visible_to=None if admin else viewer,
        before=before,
        limit=size + 1,
    )
    entries = [Entry(**dict(row)) for row in rows[:size]]
    return Page(entries, entries[-1].id if len(rows) > size else None)
