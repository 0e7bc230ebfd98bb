"""`devdb`, the terminal front end: parse, call the service, render. Nothing more.

Exit status: 0 done, 1 devdb refused or failed (one sentence on stderr), 2 bad usage,
130 interrupted.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import traceback
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
from rich.console import Console, RenderableType

from bot import grammar, messages, pgservice, usage
from bot.agent import agent_command
from bot.connect import check_tools, plan_connect
from bot.connect import use as use_environment
from bot.doctor import doctor
from bot.image import image_upload
from bot.policy import policy_command
from bot.scan import scan_command
from bot.serve import serve
from bot.slack_app import (
    notify_through_slack,
    web_client,
)
from bot.terminal import (
    TerminalProgress,
    audit_table,
    environments_table,
    manifest_dict,
    reap_table,
    snapshots_table,
)
from bot.words import in_terminal
from provisioning.audit import audit_page
from provisioning.demo import DEMO_DATABASE, demo_policy, generate
from provisioning.drivers.local import LocalDriver
from provisioning.dynamo.demo import publish_demo
from provisioning.dynamo.endpoint import LocalEndpoint
from provisioning.dynamo.shrink import shrink_dynamo_source
from provisioning.dynamo.source import is_dynamo
from provisioning.errors import (
    DevdbError,
    InvalidInput,
    MigrationFailed,
    NotAllowed,
    PolicyViolation,
)
from provisioning.models import default_name
from provisioning.nightly import Announce
from provisioning.pg.dsn import redact
from provisioning.runtime import Runtime, open_runtime
from provisioning.scheduler import Scheduler
from provisioning.settings import Settings
from provisioning.shrink.detect import PiiDetector
from provisioning.shrink.pipeline import shrink
from provisioning.shrink.policy import load_policy
from provisioning.sweeps import reap_sweep


class Cli:
    def __init__(self, runtime: Runtime, *, as_json: bool) -> None:
        self.runtime = runtime
        self.service = runtime.service
        self.settings = runtime.settings
        self.user = runtime.settings.user
        self.as_json = as_json
        self.out = Console(highlight=False, soft_wrap=True)
        self.exec_argv: list[str] | None = None  # a program to become once the runtime closed

    def emit(self, text: RenderableType, data: Any) -> None:
        if self.as_json:
            print(json.dumps(data, indent=2, default=str))
        else:
            self.out.print(text)

    async def run(self, command: grammar.Command) -> int:
        match command:
            case grammar.Refresh(name=name, snapshot=snapshot, ttl=ttl, kind=kind):
                with TerminalProgress(quiet=self.as_json) as progress:
                    view = await self.service.refresh(
                        self.user, name, snapshot=snapshot, ttl=ttl, kind=kind, progress=progress
                    )
                assert view.endpoint is not None
                pgservice.write_entry(self.settings.pg_service_file, view.env.name, view.endpoint)
                section = pgservice.section_name(view.env.name)
                self.tip_once(view.env.handle.get("method"))
                self.emit(
                    messages.connection_details(view.env.name, view.endpoint, section),
                    view.to_dict(),
                )
            case grammar.Status(name=name):
                view = await self.service.status(self.user, name or default_name(self.user))
                if view.endpoint is not None:
                    pgservice.write_entry(
                        self.settings.pg_service_file, view.env.name, view.endpoint
                    )
                data = view.to_dict()
                lines = [
                    f"{key:<11} {value}"
                    for key, value in data.items()
                    if value is not None and key != "job"
                ]
                self.emit("\n".join(lines), data)
            case grammar.ListEnvironments(everyone=everyone):
                views = await self.service.list(self.user, everyone=everyone)
                if not views and not self.as_json:
                    self.out.print("No environments. Make one with: devdb refresh")
                else:
                    self.emit(environments_table(views), [v.to_dict() for v in views])
                    for view in views if not self.as_json else []:
                        if view.where:  # too wide for a column
                            self.out.print(f"{view.env.name}: tables {view.where}")
                local = self.service.drivers.get("local")
                if isinstance(local, LocalDriver) and not self.as_json:
                    self.out.print(messages.clone_method(local.clone_method()))
            case grammar.Destroy(name=name):
                env = await self.service.destroy(self.user, name)
                pgservice.remove_entry(self.settings.pg_service_file, env.name)
                self.emit(messages.destroyed(env.name), {"name": env.name, "state": "destroyed"})
            case grammar.ResetEnvironment(name=name):
                with TerminalProgress(quiet=self.as_json) as progress:
                    view, ended = await self.service.reset(self.user, name, progress)
                self.emit(
                    messages.reset_done(view.env.name, ended),
                    {"name": view.env.name, "state": "ready", "sessions_ended": ended},
                )
            case grammar.SaveEnvironment(name=name):
                manifest = await self.service.save(self.user, name)
                self.emit(messages.saved(name, manifest.id), manifest_dict(manifest))
            case grammar.Extend(name=name, by=by):
                env = await self.service.extend(self.user, name, by)
                until = f"{env.expires_at.astimezone(UTC):%Y-%m-%d %H:%M} UTC"
                self.emit(
                    messages.extended(env.name, until),
                    {"name": env.name, "expires_at": env.expires_at.isoformat()},
                )
            case grammar.Audit(name=name, since=since, user=who):
                page = await audit_page(
                    self.service.store,
                    self.user,
                    admin=self.service.is_admin(self.user),
                    name=name,
                    since=since,
                    user=who,
                    size=AUDIT_LINES,
                )
                self.emit(audit_table(page.entries), [asdict(e) for e in page.entries])
            case grammar.RestoreInto(into=into, snapshot=snapshot, clean=clean):
                with TerminalProgress(quiet=self.as_json) as progress:
                    manifest = await self.service.restore_into(
                        self.user, into, snapshot=snapshot, clean=clean, progress=progress
                    )
                shown = redact(into)
                self.emit(
                    messages.restored_into(manifest.id, shown, manifest.rows),
                    {"snapshot": manifest.id, "into": shown, "rows": manifest.rows},
                )
            case grammar.ImageUpload():
                self.emit(*await image_upload(self.service.snapshots))
            case grammar.Doctor():
                report, rows, healthy = await doctor(self.service.drivers)
                self.emit(report, rows)
                return 0 if healthy else 1
            case grammar.Snapshots():
                manifests = await self.service.list_snapshots(self.user)
                if not manifests and not self.as_json:
                    self.out.print("No snapshots yet. Make one with: devdb demo")
                else:
                    self.emit(snapshots_table(manifests), [manifest_dict(m) for m in manifests])
            case grammar.Demo(scale=scale, dynamodb=dynamodb):
                await self.demo(scale, dynamodb=dynamodb)
            case grammar.Shrink():
                await self.shrink(command)
            case grammar.Serve(socket=socket, port=port):
                await self.serve(socket, port)
            case grammar.Connect(name=name, port=port):
                await self.connect(name, port)
            case grammar.Use(name=name, port=port):
                await self.use(name, port)
            case grammar.Protect(name=name, duration=duration):
                env = await self.service.protect(self.user, name, duration)
                assert env.protected_until is not None
                lease = env.protected_until.astimezone(UTC)
                self.emit(
                    messages.protected(env.name, f"{lease:%Y-%m-%d %H:%M} UTC"),
                    {"name": env.name, "protected_until": lease.isoformat()},
                )
            case grammar.Reap(dry_run=dry_run):
                await self.reap(dry_run)
            case grammar.RunScheduler():
                await self.run_scheduler()
        return 0

    async def reap(self, dry_run: bool) -> None:
        if not dry_run and not self.service.is_admin(self.user):
            raise NotAllowed(
                "only an admin may run the reaper by hand; `devdb reap --dry-run` shows what "
                "it would do."
            )
        now = datetime.now(UTC)
        report = await reap_sweep(self.service, now, dry_run=dry_run)
        rows = [
            {
                "name": v.env.name,
                "owner": v.env.owner,
                "action": v.action.value,
                "due_at": v.due_at.isoformat(),
                "reason": v.reason,
            }
            for v in report.verdicts
        ]
        data = {
            "dry_run": dry_run,
            "verdicts": rows,
            "warned": report.warned,
            "reaped": report.reaped,
            "unreachable": report.unreachable,
        }
        self.emit(reap_table(report.verdicts, now, dry_run), data)

    def _announcer(self) -> Announce:
        settings = self.settings
        if settings.slack_bot_token and settings.announce_channel:
            client = web_client(settings.slack_bot_token, settings.slack_api_url)
            notify_through_slack(self.service, client)
            channel = settings.announce_channel

            async def to_slack(text: str) -> None:
                await client.chat_postMessage(channel=channel, text=text)

            return to_slack

        async def to_terminal(text: str) -> None:
            print(f"devdb: {text}", file=sys.stderr, flush=True)

        return to_terminal

    async def run_scheduler(self, announce: Announce | None = None) -> None:
        scheduler = Scheduler(self.runtime, announce=announce or self._announcer())
        scheduler.start()
        print(messages.scheduling(), file=sys.stderr, flush=True)
        try:
            await asyncio.Event().wait()
        finally:
            scheduler.stop()

    async def connect(self, name: str, port: int) -> None:
        plan = await plan_connect(self.service, self.settings, self.user, name, port)
        if plan.forward is not None:
            print(plan.forward.shown)
            check_tools(plan.forward)  # before the entry points at a port nothing serves
        pgservice.write_entry(self.settings.pg_service_file, name, plan.entry)
        if plan.forward is None:
            self.emit(plan.message, plan.data)
            return
        print(plan.message, file=sys.stderr)
        self.exec_argv = plan.forward.argv

    async def use(self, name: str, port: int | None) -> None:
        self.exec_argv = await use_environment(
            self.service, self.settings, self.user, name, port, emit=self.emit
        )

    async def demo(self, scale: int, *, dynamodb: bool) -> None:
        runtime = self.runtime
        if dynamodb:
            with TerminalProgress(quiet=self.as_json) as progress:
                manifest = await publish_demo(
                    LocalEndpoint(self.settings.home / "dynamodb", self.settings.dynamodb_port),
                    runtime.snapshots,
                    scale=scale,
                    salt=self.salt(),
                    detector=PiiDetector(self.settings.pii_regions),
                    progress=progress,
                )
            self.emit(
                messages.demo_published(manifest.id, manifest.rows, dynamodb=True),
                manifest_dict(manifest),
            )
            return
        with TerminalProgress(quiet=self.as_json) as progress:
            await generate(runtime.server_dsn("postgres"), scale=scale, progress=progress)
            manifest = await shrink(
                runtime.server_dsn(DEMO_DATABASE),
                demo_policy(),
                runtime.snapshots,
                runtime.programs,
                salt=self.salt(),
                jobs=self.settings.restore_jobs,
                progress=progress,
                detector=PiiDetector(self.settings.pii_regions),
            )
        self.emit(messages.demo_published(manifest.id, manifest.rows), manifest_dict(manifest))

    async def shrink(self, command: grammar.Shrink) -> None:
        options: dict[str, Any] = {
            "salt": self.salt(),
            "tenant": command.tenant,
            "allow": command.allow,
            "keep_last": self.settings.snapshot_retention,
            "detector": PiiDetector(self.settings.pii_regions),
        }
        store, policy = self.runtime.snapshots, Path(command.policy)
        with TerminalProgress(quiet=self.as_json) as progress:
            if is_dynamo(command.source):
                manifest = await shrink_dynamo_source(
                    command.source,
                    policy,
                    store,
                    progress=progress,
                    exports=command.exports,
                    **options,
                )
            elif command.exports:
                raise InvalidInput("--exports reads DynamoDB exports: the source is not DynamoDB.")
            else:
                manifest = await shrink(
                    command.source,
                    load_policy(policy),
                    store,
                    self.runtime.programs,
                    jobs=self.settings.restore_jobs,
                    progress=progress,
                    **options,
                )
        self.emit(
            messages.shrunk(manifest.id, manifest.rows, len(manifest.tables)),
            manifest_dict(manifest),
        )

    async def serve(self, socket: bool, port: int) -> None:
        await serve(self.runtime, socket=socket, port=port)

    def tip_once(self, method: object) -> None:
        """Say once per home, when environments are plain copies, how to make them instant."""
        marker = self.settings.home / ".copies-not-clones"
        if method == "copy" and not marker.exists() and not self.as_json:
            print(messages.copies_not_clones(str(self.settings.home)), file=sys.stderr)
            marker.touch()

    def salt(self) -> bytes:
        return self.runtime.service.secrets.local.mask_salt(self.settings.mask_salt)


async def _run(command: grammar.Command, settings: Settings, as_json: bool) -> int:
    # SIGTERM (a closed terminal, `kill`, a container stop) cancels the work like Ctrl-C does,
    # so a refresh under way cleans up after itself before the process exits.
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    if isinstance(command, grammar.PolicyInit | grammar.PolicyCheck):
        return await policy_command(command, as_json, PiiDetector(settings.pii_regions))
    if isinstance(command, grammar.Scan):
        return await scan_command(command, settings, as_json)
    if isinstance(command, grammar.AgentRestore):
        # On an EC2 environment's instance: no state store, only this one restore.
        return await agent_command(command.jobs, settings)
    async with open_runtime(settings) as runtime:
        cli = Cli(runtime, as_json=as_json)
        code = await cli.run(command)
    if cli.exec_argv:  # `devdb connect`: the forward takes over this process
        sys.stdout.flush()
        os.execvp(cli.exec_argv[0], cli.exec_argv)
    return code


AUDIT_LINES = 500  # the newest entries the terminal shows; --since narrows further


def _fail(message: str, as_json: bool, problems: list[str] | None = None) -> None:
    if as_json:
        print(json.dumps({"error": message, **({"problems": problems} if problems else {})}))
    elif problems:
        print("\n".join(f"  {problem}" for problem in problems))
    print(f"devdb: {message}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `devdb` command."""
    words = list(sys.argv[1:] if argv is None else argv)
    as_json = "--json" in words
    words = [word for word in words if word != "--json"]
    try:
        command = grammar.parse(words)
    except grammar.UsageError as exc:
        _fail(in_terminal(exc), as_json)
        print(usage.terminal_usage(exc.usage), file=sys.stderr)
        return 2
    if isinstance(command, grammar.Help):
        print(usage.terminal_help(command.topic))
        return 0
    settings: Settings | None = None
    try:
        settings = Settings.from_env()
        return asyncio.run(_run(command, settings, as_json))
    except PolicyViolation as exc:
        _fail(in_terminal(exc), as_json, exc.problems)
        return 1
    except DevdbError as exc:
        _fail(in_terminal(exc), as_json)
        if isinstance(exc, MigrationFailed) and exc.output and not as_json:
            print(exc.output, file=sys.stderr)  # the terminal's user is the owner
        return 1
    except (OSError, asyncpg.PostgresError) as exc:  # e.g. an unreachable --source
        _fail(f"the database could not be reached: {exc}.", as_json)
        return 1
    except (KeyboardInterrupt, asyncio.CancelledError):
        _fail(messages.interrupted(), as_json)
        return 130
    except Exception:
        log = _log_crash(settings)
        _fail(messages.unexpected(str(log)), as_json)
        return 1


def _log_crash(settings: Settings | None) -> Path:
    home = settings.home if settings else Path.cwd()
    path = home / "devdb-errors.log"
    try:
        home.mkdir(parents=True, exist_ok=True)
        with open(path, "a") as handle:
            handle.write(f"--- {datetime.now(UTC).isoformat()}\n{traceback.format_exc()}\n")
    except OSError:
        traceback.print_exc()
    return path


if __name__ == "__main__":
    sys.exit(main())
