"""Rendering for the terminal: a progress bar for long work, tables for lists."""

from __future__ import annotations

import sys
import time
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn
from rich.table import Table

from provisioning.audit import Entry
from provisioning.durations import format_duration
from provisioning.models import EnvironmentView, ProgressEvent
from provisioning.reaper import Verdict
from provisioning.snapshots.manifest import Manifest


def human_bytes(count: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if count < 1000 or unit == "GB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1000
    return f"{count:.1f} TB"


def describe(event: ProgressEvent) -> str:
    parts = [f"{event.step.value}: {event.message}"]
    if event.bytes_total:
        parts.append(f"{human_bytes(event.bytes_done or 0)} / {human_bytes(event.bytes_total)}")
    if event.eta_seconds is not None and event.eta_seconds > 0:
        parts.append(f"ETA {format_duration_seconds(event.eta_seconds)}")
    return " · ".join(parts)


def format_duration_seconds(seconds: float) -> str:
    return format_duration(timedelta(seconds=max(1, int(seconds))))


class TerminalProgress:
    """Shows progress events: a live bar on a terminal, a few plain lines otherwise."""

    def __init__(self, *, quiet: bool = False) -> None:
        self.quiet = quiet
        self.console = Console(stderr=True)
        self.live = self.console.is_terminal and not quiet
        self.bar: Progress | None = None
        self.task: TaskID | None = None
        self._last_plain = ("", "", 0.0)

    def __enter__(self) -> TerminalProgress:
        if self.live:
            self.bar = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                TextColumn("{task.percentage:>3.0f}%"),
                console=self.console,
                transient=True,
            )
            self.bar.start()
            self.task = self.bar.add_task("starting", total=100)
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self.bar is not None:
            self.bar.stop()

    def __call__(self, event: ProgressEvent) -> None:
        if self.quiet:
            return
        if self.bar is not None and self.task is not None:
            self.bar.update(self.task, description=describe(event), completed=event.percent or 0.0)
            return
        # Plain output (pipes, CI logs): a line when the step or message changes, at most one
        # a second, and otherwise one every 5 s.
        step, message, at = self._last_plain
        now = time.monotonic()
        changed = event.step.value != step or (event.message != message and now - at >= 1)
        if changed or now - at >= 5 or event.percent == 100.0:
            percent = f"{event.percent:5.1f}% " if event.percent is not None else ""
            print(f"  {percent}{describe(event)}", file=sys.stderr, flush=True)
            self._last_plain = (event.step.value, event.message, now)


def environments_table(views: list[EnvironmentView]) -> Table:
    now = datetime.now(UTC)
    table = Table(box=None, header_style="bold")
    for column in (
        "NAME",
        "OWNER",
        "KIND",
        "SNAPSHOT",
        "AGE",
        "STATE",
        "MADE",
        "IDLE",
        "EXPIRES IN",
        "COST",
    ):
        # Names are what people type next: never cut short, whatever the width.
        longest = max((len(v.env.name) for v in views), default=4)
        table.add_column(column, min_width=longest if column == "NAME" else None)
    for view in views:
        env = view.env
        idle = view.idle_for(now)
        state = env.state.value
        if view.running is False:
            state += " (stopped)"
        table.add_row(
            env.name,
            env.owner,
            env.kind,
            env.snapshot_id or "-",
            format_duration(now - env.created_at),
            state,
            view.made or "-",
            format_duration(idle) if idle is not None else "-",
            format_duration(env.expires_at - now),
            f"${view.cost:.2f}",
        )
    return table


def snapshots_table(manifests: list[Manifest]) -> Table:
    now = datetime.now(UTC)
    table = Table(box=None, header_style="bold")
    for column in ("ID", "AGE", "SOURCE", "TABLES", "ROWS", "SIZE"):
        table.add_column(column)
    for manifest in manifests:
        table.add_row(
            manifest.id,
            format_duration(now - manifest.created),
            manifest.source,
            str(len(manifest.tables)),
            f"{manifest.rows:,}",
            human_bytes(manifest.size),
        )
    return table


def reap_table(verdicts: list[Verdict], now: datetime, dry_run: bool) -> Table:
    """What the reaper decided (or, with --dry-run, would decide) for each environment."""
    table = Table(
        box=None, header_style="bold", title="dry run: nothing changed" if dry_run else None
    )
    for column in ("NAME", "OWNER", "IDLE", "DUE IN", "ACTION", "REASON"):
        table.add_column(column)
    for verdict in verdicts:
        env = verdict.env
        idle_since = env.last_active_at or env.ready_at or env.created_at
        due_in = verdict.due_at - now
        table.add_row(
            env.name,
            env.owner,
            format_duration(now - idle_since),
            format_duration(due_in) if due_in.total_seconds() > 0 else "now",
            verdict.action.value,
            verdict.reason,
        )
    return table


def manifest_dict(manifest: Manifest) -> dict[str, Any]:
    """A snapshot as `--json` prints it."""
    return {
        "id": manifest.id,
        "created": manifest.created.isoformat(),
        "source": manifest.source,
        "size": manifest.size,
        "rows": manifest.rows,
        "tables": {name: entry.rows for name, entry in manifest.tables.items()},
    }


def audit_table(entries: list[Entry]) -> Table:
    """Audit entries, newest first."""
    table = Table(box=None, header_style="bold")
    for column in ("AT (UTC)", "ACTOR", "ACTION", "TARGET", "RESULT"):
        table.add_column(column)
    for entry in entries:
        table.add_row(
            f"{entry.at.astimezone(UTC):%Y-%m-%d %H:%M:%S}",
            entry.actor,
            entry.action,
            entry.target or "",
            entry.result,
        )
    return table
