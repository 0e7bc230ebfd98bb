"""The Slack front end over real HTTP: signed requests in, a local fake Web API recording out."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Any
from urllib.parse import urlencode

import aiohttp
import pytest
from aiohttp import web
from slack_sdk.web.async_client import AsyncWebClient

from bot.listeners.home import warn_owner
from bot.slack_app import build_app, refresh_admins
from provisioning.errors import Next
from provisioning.jobs import JobOptions
from provisioning.models import TableSet
from provisioning.runtime import Runtime
from provisioning.snapshots.manifest import Manifest
from tests.conftest import unique
from tests.test_cli import devdb

SECRET = "test-signing-secret"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class FakeSlack:
    """Slack's Web API and response_url endpoints, recording every call."""

    port: int
    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    rate_limit_once: set[str] = field(default_factory=set)
    socket_url: str | None = None  # what apps.connections.open answers (Socket Mode)

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/"

    def response_url(self, key: str) -> str:
        return f"http://127.0.0.1:{self.port}/respond/{key}"

    async def handle(self, request: web.Request) -> web.Response:
        if request.method == "GET":
            data: dict[str, Any] = dict(request.query)
        elif request.content_type == "application/json":
            data = await request.json()
        else:
            data = dict(await request.post())
        method = request.match_info.get("method") or "respond:" + request.match_info["key"]
        self.calls.append((method, data))
        if method in self.rate_limit_once:
            self.rate_limit_once.discard(method)
            return web.json_response(
                {"ok": False, "error": "ratelimited"}, status=429, headers={"Retry-After": "1"}
            )
        reply: dict[str, Any] = {"ok": True}
        if method == "auth.test":
            reply |= {
                "user_id": "UBOT",
                "bot_id": "BBOT",
                "team_id": "T1",
                "user": "devdb",
                "team": "test",
                "url": "https://test.slack.com/",
            }
        elif method == "apps.connections.open":
            reply |= {"url": self.socket_url}
        elif method == "usergroups.users.list":
            reply |= {"users": ["UGROUP1", "UGROUP2"]}
        elif method == "chat.postMessage":
            reply |= {"ts": f"{len(self.calls)}.0001", "channel": data.get("channel")}
        return web.json_response(reply)

    async def serve(self, *routes: tuple[str, str, Any]) -> web.AppRunner:
        """Listen on this fake's port: the Web API, response_url, and any `routes`
        (method, path, handler) a test adds; cleaned up by the caller."""
        app = web.Application()
        app.router.add_post("/api/{method}", self.handle)
        app.router.add_get("/api/{method}", self.handle)
        app.router.add_post("/respond/{key}", self.handle)
        for method, path, handler in routes:
            app.router.add_route(method, path, handler)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", self.port).start()
        return runner

    def of(self, method: str) -> list[dict[str, Any]]:
        return [data for name, data in self.calls if name == method]

    async def wait_for(self, method: str, timeout: float = 90) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while not self.of(method):
            assert time.monotonic() < deadline, f"no {method} call: {self.calls}"
            await asyncio.sleep(0.05)
        return self.of(method)[-1]


@dataclass
class SlackRig:
    fake: FakeSlack
    url: str
    session: aiohttp.ClientSession
    answered: str = ""

    async def post(
        self,
        body: str,
        *,
        timestamp: int | None = None,
        sign: bool = True,
        headers: dict[str, str] | None = None,
        content_type: str = "application/x-www-form-urlencoded",
    ) -> aiohttp.ClientResponse:
        stamp = str(timestamp or int(time.time()))
        signature = (
            "v0="
            + hmac.new(SECRET.encode(), f"v0:{stamp}:{body}".encode(), hashlib.sha256).hexdigest()
        )
        sent = {
            "Content-Type": content_type,
            "X-Slack-Request-Timestamp": stamp,
            **(headers or {}),
        }
        if sign:
            sent["X-Slack-Signature"] = signature
        async with self.session.post(self.url, data=body.encode(), headers=sent) as response:
            self.answered = await response.text()  # the ack's body
            return response

    async def answer(self, text: str, user: str, timeout: float = 30) -> dict[str, Any]:
        """Post `/devdb text` as `user` and wait for the reply to its response_url."""

        def replies() -> list[dict[str, Any]]:
            return [data for name, data in self.fake.calls if name.startswith("respond:")]

        before = len(replies())
        await self.post(self.command(user, text))
        deadline = time.monotonic() + timeout
        while len(replies()) <= before:
            assert time.monotonic() < deadline, f"no reply to {text!r}"
            await asyncio.sleep(0.05)
        return replies()[-1]

    def command(self, user: str, text: str, trigger: str | None = None) -> str:
        return urlencode(
            {
                "token": "x",
                "team_id": "T1",
                "channel_id": "C1",
                "user_id": user,
                "user_name": user,
                "command": "/devdb",
                "text": text,
                "response_url": self.fake.response_url(unique("cmd")),
                "trigger_id": trigger or unique("trigger"),
            }
        )

    def click(self, user: str, action: str, name: str, block: str | None = None) -> str:
        """A button press; `name` is the button's value, `block` its block id."""
        payload = {
            "type": "block_actions",
            "team": {"id": "T1"},
            "user": {"id": user},
            "channel": {"id": "C1"},
            "trigger_id": unique("trigger"),
            "response_url": self.fake.response_url(unique("click")),
            "actions": [
                {
                    "action_id": action,
                    "block_id": block or f"env:{name}",
                    "value": name,
                    "type": "button",
                    "action_ts": str(time.time()),
                }
            ],
        }
        return urlencode({"payload": json.dumps(payload)})


@pytest.fixture
async def slack(runtime: Runtime) -> AsyncIterator[SlackRig]:
    fake = FakeSlack(free_port())
    fake_runner = await fake.serve()
    port = free_port()
    app = build_app(runtime.service, token="xoxb-test", signing_secret=SECRET, api_url=fake.api_url)
    runner = web.AppRunner(app.web_app(path="/slack/events", port=port))
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    async with aiohttp.ClientSession() as session:
        yield SlackRig(fake, f"http://127.0.0.1:{port}/slack/events", session)
    await runner.cleanup()
    await fake_runner.cleanup()


async def test_unsigned_or_stale_requests_are_refused(slack: SlackRig) -> None:
    body = slack.command("U1", "help")
    assert (await slack.post(body, sign=False)).status == 401
    assert (await slack.post(body, timestamp=int(time.time()) - 3600)).status == 401
    assert (await slack.post(body)).status == 200


async def test_bad_input_gets_an_ephemeral_sentence_and_usage(slack: SlackRig) -> None:
    body = slack.command("U1", "extend x soon")
    async with slack.session.post(slack.url, data=body.encode(), headers=_signed(body)) as r:
        reply = await r.json()
    assert reply["response_type"] == "ephemeral"
    assert reply["text"].splitlines() == [
        "'soon' is not a duration: use a number and a unit, like 30m, 4h or 2d.",
        "Usage: `/devdb extend NAME DURATION`",
    ]
    unknown = slack.command("U1", "demo")
    async with slack.session.post(slack.url, data=unknown.encode(), headers=_signed(unknown)) as r:
        assert "unknown command 'demo'" in (await r.json())["text"]
    # help on one command: its Slack usage and what each option means, to the asker alone
    helped = slack.command("U1", "help audit")
    async with slack.session.post(slack.url, data=helped.encode(), headers=_signed(helped)) as r:
        reply = await r.json()
    assert reply["response_type"] == "ephemeral"
    assert "/devdb audit [NAME] [--since 1d] [--user U]" in reply["text"]
    assert "--user U" in reply["text"] and "only this user's actions" in reply["text"]


def _signed(body: str) -> dict[str, str]:
    stamp = str(int(time.time()))
    return {
        "Content-Type": "application/x-www-form-urlencoded",
        "X-Slack-Request-Timestamp": stamp,
        "X-Slack-Signature": "v0="
        + hmac.new(SECRET.encode(), f"v0:{stamp}:{body}".encode(), hashlib.sha256).hexdigest(),
    }


async def test_refresh_shows_progress_in_channel_and_secrets_only_to_requester(
    slack: SlackRig, runtime: Runtime, demo_snapshot: Manifest
) -> None:
    user = unique("U")
    name = unique("slack")
    started = time.monotonic()
    response = await slack.post(
        slack.command(user, f"refresh {name} --snapshot {demo_snapshot.id}")
    )
    assert response.status == 200 and time.monotonic() - started < 3
    details = await slack.fake.wait_for("chat.postEphemeral")
    status = await runtime.service.status(user, name)
    assert status.endpoint is not None
    password = status.endpoint.password
    assert details["user"] == user and password in json.dumps(details)
    posted = slack.fake.of("chat.postMessage")
    updates = slack.fake.of("chat.update")
    assert len(posted) == 1 and posted[0]["channel"] == "C1"
    assert updates and all(u["ts"] == updates[0]["ts"] for u in updates)
    assert "is ready" in json.dumps(updates[-1])
    for message in posted + updates:
        assert password not in json.dumps(message), "no channel message carries the password"
    await runtime.service.destroy(user, name)


async def test_a_retried_command_makes_one_environment(
    slack: SlackRig, runtime: Runtime, demo_snapshot: Manifest
) -> None:
    user = unique("U")
    name = unique("retry")
    body = slack.command(user, f"refresh {name} --snapshot {demo_snapshot.id}", "T-fixed")
    first = asyncio.ensure_future(slack.post(body))
    await asyncio.sleep(0.2)
    assert (
        await slack.post(
            body, headers={"X-Slack-Retry-Num": "1", "X-Slack-Retry-Reason": "http_timeout"}
        )
    ).status == 200
    assert (await slack.post(body)).status == 200  # the same delivery without the header
    await first
    await slack.fake.wait_for("chat.postEphemeral")
    await asyncio.sleep(0.5)
    assert len(slack.fake.of("chat.postMessage")) == 1
    assert [v.env.name for v in await runtime.service.list(user)] == [name]
    await runtime.service.destroy(user, name)


async def test_buttons_respect_ownership(
    slack: SlackRig, runtime: Runtime, demo_snapshot: Manifest
) -> None:
    owner = unique("U")
    name = unique("buttons")
    view = await runtime.service.refresh(owner, name, snapshot=demo_snapshot.id)
    assert view.endpoint is not None

    async def click(user: str, action: str) -> dict[str, Any]:
        """Click, then wait for the reply that click sends to its response_url."""
        replies = [data for method, data in slack.fake.calls if method.startswith("respond:")]
        assert (await slack.post(slack.click(user, action, name))).status == 200
        deadline = time.monotonic() + 30
        while True:
            now = [data for method, data in slack.fake.calls if method.startswith("respond:")]
            if len(now) > len(replies):
                return now[-1]
            assert time.monotonic() < deadline, f"no reply to {user}'s {action}"
            await asyncio.sleep(0.05)

    for action in ("destroy", "extend", "details", "reset"):
        reply = await click("mallory", action)
        assert reply["response_type"] == "ephemeral" and "belongs to" in reply["text"]
        assert view.endpoint.password not in json.dumps(reply)
    assert view.endpoint.password in json.dumps(await click(owner, "details"))
    assert "now expires at" in (await click("boss", "extend"))["text"]
    assert "is back to its snapshot" in (await click(owner, "reset"))["text"]
    await slack.post(slack.click("boss", "destroy", name))
    deadline = time.monotonic() + 30
    while await runtime.service.list(owner):
        assert time.monotonic() < deadline
        await asyncio.sleep(0.1)
    async with runtime.store.connection() as tx:
        audit = [(a["actor"], a["action"], a["result"]) for a in await tx.audit_entries(name)]
    assert ("mallory", "destroy", "refused") in audit and ("boss", "destroy", "destroyed") in audit


async def test_rate_limited_calls_are_retried_not_lost(
    slack: SlackRig, runtime: Runtime, demo_snapshot: Manifest
) -> None:
    slack.fake.rate_limit_once.add("chat.postMessage")
    user = unique("U")
    name = unique("ratelimit")
    await slack.post(slack.command(user, f"refresh {name} --snapshot {demo_snapshot.id}"))
    await slack.fake.wait_for("chat.postEphemeral")
    assert len(slack.fake.of("chat.postMessage")) == 2, "the 429 was retried"
    assert "is ready" in json.dumps(slack.fake.of("chat.update")[-1])
    await runtime.service.destroy(user, name)


async def test_app_home_and_reaper_warning(
    slack: SlackRig, runtime: Runtime, demo_snapshot: Manifest
) -> None:
    owner = unique("U")
    name = unique("home")
    view = await runtime.service.refresh(owner, name, snapshot=demo_snapshot.id)
    event = {
        "token": "x",
        "team_id": "T1",
        "api_app_id": "A1",
        "type": "event_callback",
        "event_id": unique("Ev"),
        "event_time": int(time.time()),
        "event": {
            "type": "app_home_opened",
            "user": owner,
            "channel": "D1",
            "tab": "home",
            "event_ts": str(time.time()),
        },
    }
    response = await slack.post(json.dumps(event), content_type="application/json")
    assert response.status == 200
    home = await slack.fake.wait_for("views.publish")
    assert home["user_id"] == owner
    text = json.dumps(home["view"])
    assert name in text and '"action_id": "destroy"' in text and "Latest snapshot" in text

    client = AsyncWebClient(token="xoxb-test", base_url=slack.fake.api_url)
    await runtime.service.notify(owner, f"Your environment {name} was interrupted.")
    notice = slack.fake.of("chat.postMessage")[-1]
    assert notice["channel"] == owner and "was interrupted" in notice["text"]
    # A notice's suggested command, in Slack's words.
    await runtime.service.notify(owner, "Run ", Next("status", name), " to see it.")
    assert slack.fake.of("chat.postMessage")[-1]["text"] == f"Run `/devdb status {name}` to see it."
    await warn_owner(client, view.env, "idle for 4h", timedelta(hours=2))
    warning = slack.fake.of("chat.postMessage")[-1]
    assert warning["channel"] == owner and '"action_id": "keep"' in json.dumps(warning)
    # The warning tells the time DEVDB_REAP_WARNING gives, not a fixed one.
    assert "in about 2h" in warning["text"] and "in about 2h" in json.dumps(warning["blocks"])
    assert (await runtime.service.status(owner, name)).env.last_active_at is None
    await slack.post(slack.click(owner, "keep", name))
    deadline = time.monotonic() + 30
    while (await runtime.service.status(owner, name)).env.last_active_at is None:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    await runtime.service.destroy(owner, name)


async def test_devdb_serve_http_runs_a_refresh_end_to_end(
    runtime: Runtime, cli_env: dict[str, str], demo_snapshot: Manifest
) -> None:
    fake = FakeSlack(free_port())
    fake_app = web.Application()
    fake_app.router.add_post("/api/{method}", fake.handle)
    fake_app.router.add_post("/respond/{key}", fake.handle)
    fake_runner = web.AppRunner(fake_app)
    await fake_runner.setup()
    await web.TCPSite(fake_runner, "127.0.0.1", fake.port).start()
    port = free_port()
    env = {
        **cli_env,
        "SLACK_BOT_TOKEN": "xoxb-test",
        "SLACK_SIGNING_SECRET": SECRET,
        "DEVDB_SLACK_API_URL": fake.api_url,
    }
    server = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot.cli",
        "serve",
        "--http",
        "--port",
        str(port),
        env=env,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert server.stderr is not None
        line = b""
        while f"port {port}".encode() not in line:
            line = await asyncio.wait_for(server.stderr.readline(), 60)
            assert line, "devdb serve exited"
        async with aiohttp.ClientSession() as session:
            rig = SlackRig(fake, f"http://127.0.0.1:{port}/slack/events", session)
            user = unique("U")
            name = unique("served")
            started = time.monotonic()
            response = await rig.post(
                rig.command(user, f"refresh {name} --snapshot {demo_snapshot.id}")
            )
            assert response.status == 200 and time.monotonic() - started < 3
            details = await fake.wait_for("chat.postEphemeral")
        status = await runtime.service.status(user, name)
        assert status.endpoint is not None and status.endpoint.password in json.dumps(details)
        updates = fake.of("chat.update")
        assert fake.of("chat.postMessage") and "is ready" in json.dumps(updates[-1])
        await runtime.service.destroy(user, name)
    finally:
        server.send_signal(signal.SIGTERM)
        await asyncio.wait_for(server.wait(), 30)
        await fake_runner.cleanup()


async def test_admins_from_a_user_group_and_list_shows_snapshot_age(
    slack: SlackRig, runtime: Runtime, demo_snapshot: Manifest
) -> None:
    owner = unique("U")
    name = unique("group")
    await runtime.service.refresh(owner, name, snapshot=demo_snapshot.id)
    original = runtime.service.policy
    try:
        client = AsyncWebClient(token="xoxb-test", base_url=slack.fake.api_url)
        admins = await refresh_admins(client, runtime.service, "S123", original.admins)
        assert admins == original.admins | {"UGROUP1", "UGROUP2"}
        assert slack.fake.of("usergroups.users.list")[-1]["usergroup"] == "S123"
        await slack.post(slack.command(owner, "list"))
        deadline = time.monotonic() + 30
        while not any(name in json.dumps(d) for m, d in slack.fake.calls if "respond" in m):
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        listed = next(d for m, d in slack.fake.calls if "respond" in m and name in json.dumps(d))
        assert f"snapshot `{demo_snapshot.id}` (" in json.dumps(listed) and "old)" in json.dumps(
            listed
        )
        await runtime.service.destroy("UGROUP2", name)  # a group member may
    finally:
        runtime.service.policy = original


async def test_extend_modal_validates_in_the_modal(
    slack: SlackRig, runtime: Runtime, demo_snapshot: Manifest
) -> None:
    owner = unique("U")
    name = unique("modal")
    await runtime.service.refresh(owner, name, snapshot=demo_snapshot.id)
    await slack.post(slack.click(owner, "extend_custom", name))
    opened = await slack.fake.wait_for("views.open")
    assert opened["view"]["callback_id"] == "extend_modal"
    assert opened["view"]["private_metadata"] == name

    async def submit(user: str, value: str) -> dict[str, Any]:
        payload = {
            "type": "view_submission",
            "team": {"id": "T1"},
            "user": {"id": user, "username": user, "team_id": "T1"},
            "api_app_id": "A1",
            "token": "x",
            "trigger_id": unique("trigger"),
            "view": {
                "id": "V1",
                "team_id": "T1",
                "type": "modal",
                "callback_id": "extend_modal",
                "private_metadata": name,
                "hash": "1.abc",
                "blocks": opened["view"]["blocks"],
                "state": {
                    "values": {"duration": {"value": {"type": "plain_text_input", "value": value}}}
                },
            },
            "response_urls": [],
        }
        body = urlencode({"payload": json.dumps(payload)})
        async with slack.session.post(
            slack.url, data=body.encode(), headers=_signed(body)
        ) as response:
            assert response.status == 200
            text = await response.text()
            return json.loads(text) if text else {}

    bad = await submit(owner, "soon")
    assert bad["response_action"] == "errors"
    assert "'soon' is not a duration" in bad["errors"]["duration"]
    refused = await submit("mallory", "2h")
    assert "belongs to" in refused["errors"]["duration"]
    before = (await runtime.service.status(owner, name)).env.expires_at
    assert await submit(owner, "2h") == {}
    after = (await runtime.service.status(owner, name)).env.expires_at
    assert (after - before).total_seconds() >= 7190
    await runtime.service.destroy(owner, name)


async def test_refresh_shared_and_protect_from_slack(
    slack: SlackRig, runtime: Runtime, demo_snapshot: Manifest
) -> None:
    user = unique("U")
    name = unique("slackshared")
    await slack.post(slack.command(user, f"refresh {name} --shared --snapshot {demo_snapshot.id}"))
    details = await slack.fake.wait_for("chat.postEphemeral")
    status = await runtime.service.status(user, name)
    assert status.env.kind == "shared-db" and status.endpoint is not None  # the default
    assert details["user"] == user and status.endpoint.user in json.dumps(details)
    assert (await slack.post(slack.command(user, f"protect {name} 1d"))).status == 200
    deadline = time.monotonic() + 30
    while (await runtime.service.status(user, name)).env.protected_until is None:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    await runtime.service.destroy(user, name)


async def test_failed_migrations_print_to_the_requester_only(
    slack: SlackRig, runtime: Runtime, demo_snapshot: Manifest, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The channel hears that migrations failed; what they printed goes to the requester."""
    failing = JobOptions(
        restore_jobs=2,
        migrations_dir=None,
        migrations_command="echo 'FATAL: row (alice@corp.example) broke it'; exit 2",
    )
    monkeypatch.setattr(runtime.service, "job_options", failing)
    user, name = unique("U"), unique("mig")
    await slack.post(slack.command(user, f"refresh {name} --snapshot {demo_snapshot.id}"))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not any(
        "alice@corp.example" in json.dumps(e) for e in slack.fake.of("chat.postEphemeral")
    ):
        await asyncio.sleep(0.2)
    private = [e for e in slack.fake.of("chat.postEphemeral") if "alice@corp" in json.dumps(e)]
    assert len(private) == 1 and private[0]["user"] == user
    channel = slack.fake.of("chat.postMessage") + slack.fake.of("chat.update")
    assert any("migrations command failed" in json.dumps(m) for m in channel)
    assert not any("alice@corp.example" in json.dumps(m) for m in channel)


async def test_two_replicas_given_the_same_delivery_act_once(
    slack: SlackRig, runtime: Runtime, demo_snapshot: Manifest
) -> None:
    """Two app replicas (one state store) each receive the same command at once: the
    delivery is taken once, through the state store, so one environment is made."""
    port = free_port()
    other = build_app(
        runtime.service, token="xoxb-test", signing_secret=SECRET, api_url=slack.fake.api_url
    )
    runner = web.AppRunner(other.web_app(path="/slack/events", port=port))
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        user, name = unique("U"), unique("twice")
        body = slack.command(user, f"refresh {name} --snapshot {demo_snapshot.id}", unique("T"))
        replica = replace(slack, url=f"http://127.0.0.1:{port}/slack/events")
        first, second = await asyncio.gather(slack.post(body), replica.post(body))
        assert first.status == second.status == 200
        await slack.fake.wait_for("chat.postEphemeral")
        await asyncio.sleep(0.5)
        assert len(slack.fake.of("chat.postMessage")) == 1, "one progress message: one refresh"
        assert [v.env.name for v in await runtime.service.list(user)] == [name]
        await runtime.service.destroy(user, name)
    finally:
        await runner.cleanup()


async def test_audit_is_listed_and_paged_in_slack(slack: SlackRig, runtime: Runtime) -> None:
    """/devdb audit: the newest 20 entries a user may see, then Older pages in place."""
    user, stranger = unique("U"), unique("U")
    async with runtime.store.connection() as tx:
        for index in range(25):
            await tx.audit(user, "extend", f"env-{index}", "extended")
        await tx.audit(stranger, "destroy", "theirs", "destroyed")

    def replies() -> list[dict[str, Any]]:
        return [data for method, data in slack.fake.calls if method.startswith("respond:")]

    async def reply(count: int) -> dict[str, Any]:
        deadline = time.monotonic() + 10
        while len(replies()) < count:
            assert time.monotonic() < deadline, slack.fake.calls
            await asyncio.sleep(0.05)
        return replies()[-1]

    before = len(replies())
    await slack.post(slack.command(user, "audit --since 1h"))
    first = await reply(before + 1)
    text = json.dumps(first)
    assert text.count("*extend*") == 20 and "env-24" in text and "env-5 " in text
    assert "theirs" not in text, "another user's entries are not shown"
    older = next(e for b in first["blocks"] if b["type"] == "actions" for e in b["elements"])
    await slack.post(slack.click(user, "audit_older", older["value"], block="audit"))
    second = await reply(before + 2)
    assert second["replace_original"] is True
    text = json.dumps(second)
    assert text.count("*extend*") == 5 and "env-0 " in text and "env-5 " not in text
    assert '"audit_older"' not in text, "the last page has no Older button"
    await slack.post(slack.command(user, f"audit --user {stranger}"))
    assert "only an admin" in json.dumps(await reply(before + 3))


async def test_list_all_groups_by_team_with_spend_against_the_cap(
    slack: SlackRig, runtime: Runtime, demo_snapshot: Manifest, monkeypatch: pytest.MonkeyPatch
) -> None:
    ann, bob, cy = unique("UA"), unique("UB"), unique("UC")
    policy = replace(
        runtime.service.policy, teams={"data": frozenset({ann, bob})}, monthly_cap=100.0
    )
    monkeypatch.setattr(runtime.service, "policy", policy)
    made = [
        await runtime.service.refresh(owner, None, snapshot=demo_snapshot.id)
        for owner in (ann, bob, cy)
    ]
    try:
        reply = await slack.answer("list --all", cy)
        texts = [b["text"]["text"] for b in reply["blocks"] if b["type"] == "section"]
        data = texts.index("*data* · $0.00 of $100.00 this month")
        assert ann in texts[data + 1] and bob in texts[data + 1], "the team's owners together"
        assert f"*{cy}* · $0.00 of $100.00 this month" in texts, "a team of one"
    finally:
        for view in made:
            await runtime.service.destroy(view.env.owner, view.env.name)


async def test_a_refusal_names_the_command_in_each_front_ends_words(
    slack: SlackRig, cli_env: dict[str, str]
) -> None:
    """The core names a command to suggest; Slack says `/devdb …`, the terminal `devdb …`."""
    user = unique("U")
    said = (await slack.answer("status no-such-env", user))["text"]
    assert "`/devdb list --all` shows them" in said and "`devdb " not in said
    # A malformed snapshot id is refused while parsing: in Slack's words too.
    response = await slack.post(slack.command(user, "refresh x --snapshot ../../etc"))
    assert response.status == 200 and "run `/devdb snapshots` to see them" in slack.answered
    terminal = devdb(cli_env, "status", "no-such-env")
    assert terminal.returncode == 1
    assert "`devdb list --all` shows them" in terminal.stderr and "/devdb" not in terminal.stderr
    usage = devdb(cli_env, "refresh", "x", "--snapshot", "../../etc")
    assert usage.returncode == 2 and "run `devdb snapshots` to see them" in usage.stderr


async def test_refresh_dynamodb_from_slack(
    slack: SlackRig, runtime: Runtime, dynamo_snapshot: Manifest
) -> None:
    """Progress in the channel; the prefix, endpoint and SSM path to the requester alone."""
    user, name = unique("U"), unique("slackdynamo")
    await slack.post(
        slack.command(user, f"refresh {name} --dynamodb --snapshot {dynamo_snapshot.id}")
    )
    details = await slack.fake.wait_for("chat.postEphemeral")
    assert details["user"] == user
    shown = json.dumps(details)
    assert f"dev_{name}_Accounts" in shown and f"/devdb/{name}/dynamodb/" in shown
    tables = (await runtime.service.status(user, name)).endpoint
    assert isinstance(tables, TableSet) and tables.url is not None and tables.url in shown
    channel = slack.fake.of("chat.postMessage") + slack.fake.of("chat.update")
    assert channel and not any(f"/devdb/{name}/dynamodb/" in json.dumps(m) for m in channel)
    status = await runtime.service.status(user, name)
    assert status.env.kind == "dynamodb" and status.env.snapshot_id == dynamo_snapshot.id
    await slack.post(slack.command(user, "refresh --dynamodb --ec2"))
    assert "choose one of --ec2, --dynamodb or --shared." in slack.answered
    await runtime.service.destroy(user, name)
