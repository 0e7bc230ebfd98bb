"""`devdb serve`'s /metrics: Prometheus's text format, parsed by Prometheus's own parser."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime, timedelta

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from bot.slack_app import serve_http
from provisioning.errors import DevdbError
from provisioning.runtime import Runtime
from provisioning.scheduler import Scheduler
from provisioning.snapshots.manifest import Manifest
from tests.conftest import unique
from tests.ports import BASE

PORT = BASE + 520


async def said(_: str) -> None:
    return None


async def test_metrics_count_refreshes_failures_sweeps_and_environments(
    runtime: Runtime, demo_snapshot: Manifest
) -> None:
    server = asyncio.create_task(serve_http(None, PORT, service=runtime.service, host="127.0.0.1"))
    owner = unique("metered")
    try:
        view = await runtime.service.refresh(owner, None, snapshot=demo_snapshot.id)
        with pytest.raises(DevdbError):
            await runtime.service.refresh(owner, None, snapshot="20990101-000000-dead")
        # A time slot no other test has claimed (interruptions: a sweep that leaves others be).
        later = datetime.now(UTC) + timedelta(days=3650)
        scheduler = Scheduler(runtime, announce=said, clock=lambda: later)
        assert await scheduler.run("interruptions") is not None
        for _ in range(50):  # the server may still be starting
            try:
                async with (
                    aiohttp.ClientSession() as session,
                    session.get(f"http://127.0.0.1:{PORT}/metrics") as response,
                ):
                    assert response.status == 200
                    assert response.headers["Content-Type"].startswith("text/plain")
                    text = await response.text()
                break
            except aiohttp.ClientConnectionError:
                await asyncio.sleep(0.1)
        families = {family.name: family for family in text_string_to_metric_families(text)}
        samples = {
            (sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in families.values()
            for sample in family.samples
        }

        def value(name: str, **labels: str) -> float:
            return samples.get((name, tuple(sorted(labels.items()))), 0.0)

        made = view.env.handle.get("made") or "restore"
        assert value("devdb_refresh_seconds_count", kind="local", made=made) >= 1
        assert value("devdb_failures_total", action="refresh", reason="not_found") >= 1
        assert value("devdb_sweep_seconds_count", sweep="interruptions") >= 1
        assert value("devdb_environments", kind="local", state="ready") >= 1
        assert ("devdb_spend_month_to_date_dollars", (("kind", "local"),)) in samples
        assert families["devdb_reaps"].type == "counter"
    finally:
        server.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await server
        await runtime.service.destroy(owner, view.env.name)
