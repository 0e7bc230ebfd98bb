"""Acknowledgement latency of the Slack app: 200 concurrent signed `/devdb` commands over HTTP.

    python bench/ack.py [--requests 200]

The app runs in this process against a local fake Web API, with the real service behind it
(embedded state store in a temporary DEVDB_HOME). The commands are cheap ones (`list`,
`status`, a malformed `extend`, `help`), so what is measured is the time to the HTTP
response, which is what Slack's 3-second limit applies to. Prints p50, p99 and max, and,
as a baseline in the same run, the same number of requests to a bare aiohttp handler.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import hashlib
import hmac
import multiprocessing
import shutil
import socket
import statistics
import tempfile
import time
from multiprocessing.queues import Queue
from pathlib import Path
from urllib.parse import urlencode

import aiohttp
from aiohttp import web

from bot.slack_app import build_app
from provisioning.pg.programs import stop_servers_under
from provisioning.runtime import open_runtime
from provisioning.settings import Settings

SECRET = "bench-secret"
TEXTS = ["list", "list --all", "status", "extend x soon", "help"]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def serve(app: web.Application) -> tuple[web.AppRunner, int]:
    port = free_port()
    runner = web.AppRunner(app)
    await runner.setup()
    # A backlog above the burst size: otherwise the 129th connect waits for a SYN retry (1 s).
    await web.TCPSite(runner, "127.0.0.1", port, backlog=1024).start()
    return runner, port


def signed(body: str) -> dict[str, str]:
    stamp = str(int(time.time()))
    digest = hmac.new(SECRET.encode(), f"v0:{stamp}:{body}".encode(), hashlib.sha256)
    return {
        "Content-Type": "application/x-www-form-urlencoded",
        "X-Slack-Request-Timestamp": stamp,
        "X-Slack-Signature": "v0=" + digest.hexdigest(),
    }


async def fire(url: str, count: int, fake_port: int) -> list[float]:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:

        async def one(index: int) -> float:
            body = urlencode(
                {
                    "team_id": "T1",
                    "channel_id": "C1",
                    "user_id": f"U{index % 20}",
                    "user_name": f"user{index % 20}",
                    "command": "/devdb",
                    "text": TEXTS[index % len(TEXTS)],
                    "trigger_id": f"trig-{index}-{time.time()}",
                    "response_url": f"http://127.0.0.1:{fake_port}/respond/{index}",
                }
            )
            started = time.perf_counter()
            async with session.post(url, data=body.encode(), headers=signed(body)) as response:
                await response.read()
                assert response.status == 200, response.status
            return time.perf_counter() - started

        return list(await asyncio.gather(*(one(i) for i in range(count))))


def _client(url: str, count: int, fake_port: int, results: Queue[list[float]]) -> None:
    results.put(asyncio.run(fire(url, count, fake_port)))


async def fire_from_another_process(url: str, count: int, fake_port: int) -> list[float]:
    """The load comes from its own process (its own core), so the server is what is timed."""
    context = multiprocessing.get_context("spawn")
    results: Queue[list[float]] = context.Queue()
    process = context.Process(target=_client, args=(url, count, fake_port, results))
    process.start()
    times = await asyncio.to_thread(results.get)
    await asyncio.to_thread(process.join)
    return times


def summary(label: str, times: list[float]) -> str:
    ordered = sorted(times)
    p99 = ordered[max(0, int(len(ordered) * 0.99) - 1)]
    return (
        f"{label:<28} p50 {statistics.median(ordered) * 1000:7.1f} ms   "
        f"p99 {p99 * 1000:7.1f} ms   max {ordered[-1] * 1000:7.1f} ms"
    )


async def main(count: int) -> None:
    home = Path(tempfile.mkdtemp(prefix="devdb-bench-", dir="/tmp"))
    try:
        async with open_runtime(
            Settings(home=home, user="bench", pg_service_file=home / "pgs")
        ) as runtime:
            fake = web.Application()

            async def ok(request: web.Request) -> web.Response:
                await request.read()
                method = request.match_info.get("method", "")
                extra = (
                    {"user_id": "UBOT", "team_id": "T1", "bot_id": "B1"}
                    if method == "auth.test"
                    else {}
                )
                return web.json_response({"ok": True, **extra})

            fake.router.add_post("/api/{method}", ok)
            fake.router.add_post("/respond/{key}", ok)
            fake_runner, fake_port = await serve(fake)
            app = build_app(
                runtime.service,
                token="xoxb-bench",
                signing_secret=SECRET,
                api_url=f"http://127.0.0.1:{fake_port}/api/",
            )
            app_runner, app_port = await serve(app.web_app(path="/slack/events", port=0))
            gc.freeze()  # as devdb serve does once it has started
            bare = web.Application()
            bare.router.add_post("/", ok)
            bare_runner, bare_port = await serve(bare)
            url = f"http://127.0.0.1:{app_port}/slack/events"
            await fire(url, 5, fake_port)  # warm up (auth.test, connections)
            baseline = await fire_from_another_process(
                f"http://127.0.0.1:{bare_port}/", count, fake_port
            )
            acks = await fire_from_another_process(url, count, fake_port)
            await asyncio.sleep(1)  # let the work after the acks finish
            for runner in (app_runner, bare_runner, fake_runner):
                await runner.cleanup()
    finally:
        stop_servers_under(home)
        shutil.rmtree(home, ignore_errors=True)
    print(f"{count} concurrent signed requests")
    print(summary("bare aiohttp handler", baseline))
    print(summary("devdb Slack app (ack)", acks))
    index = max(0, int(count * 0.99) - 1)
    ratio = sorted(acks)[index] / sorted(baseline)[index]
    print(f"p99 ratio to the bare handler: {ratio:.1f}x (goal: p99 <= 100 ms; Slack allows 3 s)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200)
    asyncio.run(main(parser.parse_args().requests))
