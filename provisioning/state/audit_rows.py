"""The audit log and the Slack deliveries already taken, in the state store."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import asyncpg


class AuditRows:
    """`Tx`'s audit queries, inside the caller's transaction."""

    conn: asyncpg.Connection

    async def audit(
        self,
        actor: str,
        action: str,
        target: str | None,
        result: str,
        detail: dict[str, Any] | None = None,
    ) -> None:
        await self.conn.execute(
            "insert into devdb.audit_log (actor, action, target, result, detail)"
            " values ($1, $2, $3, $4, $5)",
            actor,
            action,
            target,
            result,
            detail,
        )

    async def audit_entries(self, target: str | None = None) -> list[asyncpg.Record]:
        return list(
            await self.conn.fetch(
                "select at, actor, action, target, result, detail from devdb.audit_log"
                " where $1::text is null or target = $1 order by id",
                target,
            )
        )


class DeliveriesAndAuditPages:
    """`StateStore`'s own: each on a connection of its own from the pool."""

    pool: asyncpg.Pool

    async def audit_page(
        self,
        *,
        target: str | None,
        since: datetime,
        actor: str | None,
        visible_to: str | None,
        before: int | None,
        limit: int,
    ) -> list[asyncpg.Record]:
        """Audit entries, newest first; `visible_to` keeps those a user may see (theirs, and
        those about environments they own)."""
        async with self.pool.acquire() as conn:
            return list(
                await conn.fetch(
                    "select id, at, actor, action, target, result, detail from devdb.audit_log"
                    " where ($1::text is null or target = $1) and at >= $2"
                    " and ($3::text is null or actor = $3)"
                    " and ($4::text is null or actor = $4 or target in"
                    "      (select name from devdb.environments where owner = $4))"
                    " and ($5::bigint is null or id < $5)"
                    " order by id desc limit $6",
                    target,
                    since,
                    actor,
                    visible_to,
                    before,
                    limit,
                )
            )

    async def first_delivery(self, key: str, remember: float = 600.0) -> bool:
        """Whether no replica has taken delivery `key` in the last `remember` seconds; it
        is taken now if so."""
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "delete from devdb.deliveries where seen_at < now() - make_interval(secs => $1)",
                remember,
            )
            taken = await conn.fetchval(
                "insert into devdb.deliveries (key) values ($1) on conflict do nothing"
                " returning true",
                key,
            )
        return bool(taken)
