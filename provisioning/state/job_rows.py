"""Refresh jobs and their steps in the state store: `Tx`'s queries about them."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import asyncpg

from provisioning.models import JobState, Step


class JobRows:
    conn: asyncpg.Connection

    async def insert_job(
        self, *, kind: str, env_id: int, requested_by: str, worker: str, lease_until: datetime
    ) -> int:
        job_id: int = await self.conn.fetchval(
            "insert into devdb.jobs (kind, environment_id, requested_by, state, worker,"
            " lease_until) values ($1, $2, $3, 'running', $4, $5) returning id",
            kind,
            env_id,
            requested_by,
            worker,
            lease_until,
        )
        return job_id

    async def step_started(self, job_id: int, step: Step) -> None:
        await self.conn.execute(
            "insert into devdb.job_steps (job_id, step, state) values ($1, $2, 'started')"
            " on conflict (job_id, step) do update set state = 'started', started_at = now(),"
            " finished_at = null",
            job_id,
            step.value,
        )
        await self.conn.execute("update devdb.jobs set step = $2 where id = $1", job_id, step.value)

    async def step_finished(
        self, job_id: int, step: Step, *, ok: bool, detail: dict[str, Any] | None = None
    ) -> None:
        await self.conn.execute(
            "update devdb.job_steps set state = $3, finished_at = now(), detail = $4"
            " where job_id = $1 and step = $2",
            job_id,
            step.value,
            "done" if ok else "failed",
            detail,
        )

    async def job_steps(self, job_id: int) -> list[tuple[str, str]]:
        rows = await self.conn.fetch(
            "select step, state from devdb.job_steps where job_id = $1 order by started_at",
            job_id,
        )
        return [(r["step"], r["state"]) for r in rows]

    async def renew_lease(self, job_id: int, lease_until: datetime, progress: Any) -> None:
        await self.conn.execute(
            "update devdb.jobs set lease_until = $2, progress = coalesce($3, progress)"
            " where id = $1 and state = 'running'",
            job_id,
            lease_until,
            progress,
        )

    async def finish_job(self, job_id: int, state: JobState, error: str | None = None) -> None:
        await self.conn.execute(
            "update devdb.jobs set state = $2, error = $3, finished_at = now() where id = $1",
            job_id,
            state.value,
            error,
        )

    async def running_jobs(self) -> list[asyncpg.Record]:
        """Running jobs, locked for this transaction; jobs another recovery holds are skipped."""
        return list(
            await self.conn.fetch(
                "select id, environment_id, worker, lease_until, lease_until < now() as expired"
                " from devdb.jobs where state = 'running' for update skip locked"
            )
        )

    async def claim_job(self, job_id: int, worker: str, lease_until: datetime) -> None:
        await self.conn.execute(
            "update devdb.jobs set worker = $2, lease_until = $3 where id = $1",
            job_id,
            worker,
            lease_until,
        )

    async def latest_job(self, env_id: int) -> asyncpg.Record | None:
        return await self.conn.fetchrow(
            "select id, state, step, error, progress from devdb.jobs where environment_id = $1"
            " order by id desc limit 1",
            env_id,
        )

    # audit --------------------------------------------------------------------------------
