"""Block Kit for the Slack front end: the progress message, connection details, lists."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from bot.messages import table_set_lines
from bot.terminal import human_bytes
from provisioning.audit import Page
from provisioning.durations import format_duration
from provisioning.models import STEPS, Connection, EnvironmentView, ProgressEvent, Step, TableSet
from provisioning.snapshots.manifest import Manifest

Blocks = list[dict[str, Any]]
_BAR = 20


def _text(markdown: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": markdown}}


def bar(percent: float) -> str:
    filled = round(_BAR * max(0.0, min(100.0, percent)) / 100)
    return "█" * filled + "░" * (_BAR - filled)


def progress_blocks(
    name: str,
    owner: str,
    event: ProgressEvent | None,
    done: set[Step],
    failed: str | None = None,
    ready: bool = False,
) -> Blocks:
    """The one channel message a refresh edits as it goes. Never holds a secret."""
    current = event.step if event else None
    lines = []
    for step in STEPS:
        if step in done or ready:
            mark = "✅"
        elif failed and step == current:
            mark = "❌"
        elif step == current:
            mark = "⏳"
        else:
            mark = "▫️"
        lines.append(f"{mark} {step.value}")
    title = f"*Refreshing `{name}`* for <@{owner}>"
    if ready:
        title = f"*`{name}` is ready* for <@{owner}>"
    if failed:
        title = f"*Refresh of `{name}` failed*: {failed}"
    blocks: Blocks = [_text(title), _text("  ".join(lines))]
    if event is not None and not ready and not failed:
        detail = f"`{bar(event.percent or 0.0)}` {event.percent or 0.0:.0f}% · {event.message}"
        if event.bytes_total:
            detail += f" · {human_bytes(event.bytes_done or 0)} / {human_bytes(event.bytes_total)}"
        if event.eta_seconds:
            detail += f" · ETA {int(event.eta_seconds)}s"
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": detail}]})
    if ready:
        blocks.append(environment_buttons(name))
    return blocks


def _button(action_id: str, name: str, text: str, **extra: Any) -> dict[str, Any]:
    """A button acting on environment `name` (its value), with optional style or confirm."""
    return {
        "type": "button",
        "action_id": action_id,
        "value": name,
        "text": {"type": "plain_text", "text": text},
        **extra,
    }


def _confirm(title: str, text: str, yes: str) -> dict[str, Any]:
    return {
        "title": {"type": "plain_text", "text": title},
        "text": {"type": "mrkdwn", "text": text},
        "confirm": {"type": "plain_text", "text": yes},
        "deny": {"type": "plain_text", "text": "Cancel"},
    }


def environment_buttons(name: str) -> dict[str, Any]:
    # Slack caps a dialog title at 24 characters.
    destroy = _confirm("Destroy it?", f"*{name}* and everything in it go away.", "Destroy")
    reset = _confirm(
        "Reset it?",
        f"Every change in *{name}* is thrown away and open sessions are ended; "
        "the connection details stay the same.",
        "Reset",
    )
    return {
        "type": "actions",
        "block_id": f"env:{name}",
        "elements": [
            _button("extend", name, "Extend 4h"),
            _button("details", name, "Connection details"),
            _button("reset", name, "Reset", confirm=reset),
            _button("destroy", name, "Destroy", style="danger", confirm=destroy),
        ],
    }


def connection_blocks(name: str, endpoint: Connection, service: str) -> Blocks:
    """For the requester only (ephemeral or DM)."""
    if isinstance(endpoint, TableSet):
        lines = "\n".join(table_set_lines(endpoint))
        return [
            _text(f"*DynamoDB tables for `{name}`* (only you can see this)"),
            _text(f"```{lines}```"),
        ]
    conf = "\n".join(
        [
            f"[{service}]",
            f"host={endpoint.host}",
            f"port={endpoint.port}",
            f"dbname={endpoint.database}",
            f"user={endpoint.user}",
            f"password={endpoint.password}",
        ]
    )
    return [
        _text(f"*Connection details for `{name}`* (only you can see this)"),
        _text(f'```psql "{endpoint.dsn}"```'),
        _text(f"`~/.pg_service.conf`:\n```{conf}```"),
    ]


def list_blocks(
    views: list[EnvironmentView], snapshot_created: dict[str, datetime] | None = None
) -> Blocks:
    if not views:
        return [_text("No environments. Make one with `/devdb refresh`.")]
    now = datetime.now(UTC)
    rows = []
    for view in views:
        env = view.env
        idle = view.idle_for(now)
        made = (snapshot_created or {}).get(env.snapshot_id or "")
        age = f" ({format_duration(now - made)} old)" if made else ""
        kind = f"{env.kind} `{view.where}`" if view.where else env.kind
        rows.append(
            f"• `{env.name}` <@{env.owner}> {kind} · snapshot `{env.snapshot_id}`{age} · "
            f"{env.state.value} · age {format_duration(now - env.created_at)} · idle "
            f"{format_duration(idle) if idle else '-'} · expires in "
            f"{format_duration(env.expires_at - now)} · ${view.cost:.2f}"
        )
    return [_text("\n".join(rows))]


def home_blocks(mine: list[EnvironmentView], latest: Manifest | None) -> Blocks:
    """The App Home tab: the viewer's environments, each with its buttons."""
    blocks: Blocks = [{"type": "header", "text": {"type": "plain_text", "text": "devdb"}}]
    if latest is not None:
        blocks.append(
            _text(
                f"Latest snapshot `{latest.id}` · {latest.rows:,} rows · {human_bytes(latest.size)}"
            )
        )
    if not mine:
        blocks.append(_text("You have no environments. Make one with `/devdb refresh`."))
    for view in mine:
        blocks += list_blocks([view])
        if view.env.state.value == "ready":
            buttons = environment_buttons(view.env.name)
            buttons["elements"].insert(1, _button("extend_custom", view.env.name, "Extend…"))
            blocks.append(buttons)
    return blocks


def extend_modal(name: str) -> dict[str, Any]:
    """A modal asking how long to extend `name` by; submitted as a view_submission."""
    return {
        "type": "modal",
        "callback_id": "extend_modal",
        "private_metadata": name,
        "title": {"type": "plain_text", "text": "Extend environment"},
        "submit": {"type": "plain_text", "text": "Extend"},
        "close": {"type": "plain_text", "text": "Cancel"},
        "blocks": [
            {
                "type": "input",
                "block_id": "duration",
                "label": {"type": "plain_text", "text": f"Extend {name} by"},
                "element": {
                    "type": "plain_text_input",
                    "action_id": "value",
                    "initial_value": "4h",
                },
                "hint": {"type": "plain_text", "text": "For example 30m, 4h or 2d."},
            }
        ],
    }


def reap_warning_blocks(name: str, reason: str, within: str) -> Blocks:
    return [
        _text(f"`{name}` will be destroyed in about {within}: {reason}."),
        {
            "type": "actions",
            "block_id": f"reap:{name}",
            "elements": [
                _button("keep", name, "Keep it", style="primary"),
                _button("destroy", name, "Destroy now", style="danger"),
            ],
        },
    ]


def audit_blocks(page: Page, query: dict[str, Any]) -> Blocks:
    """One page of the audit log, newest first, with a button to the next, older page."""
    if not page.entries:
        return [_text("No audit entries match.")]
    lines = [
        f"`{e.at.astimezone(UTC):%m-%d %H:%M}` {e.actor} *{e.action}* {e.target or ''} → {e.result}"
        for e in page.entries
    ]
    blocks: Blocks = [_text("\n".join(lines))]
    if page.older is not None:
        value = json.dumps({**query, "before": page.older}, separators=(",", ":"))
        blocks.append(
            {
                "type": "actions",
                "block_id": "audit",
                "elements": [_button("audit_older", value, "Older entries")],
            }
        )
    return blocks


def team_list_blocks(
    views: list[EnvironmentView],
    snapshot_created: dict[str, datetime],
    spend: dict[str, float],
    *,
    team_of: Callable[[str], str],
    cap: float | None,
) -> Blocks:
    """`/devdb list --all`: every environment, grouped by team and owner, each team with its
    spend this month against the monthly cap."""
    teams: dict[str, list[EnvironmentView]] = {}
    for view in views:
        teams.setdefault(team_of(view.env.owner), []).append(view)
    for team in spend:
        teams.setdefault(team, [])  # spent this month, with nothing live now
    if not teams:
        return [_text("No environments. Make one with `/devdb refresh`.")]
    blocks: Blocks = []
    for team in sorted(teams):
        spent = spend.get(team, 0.0)
        of_cap = f" of ${cap:.2f}" if cap is not None else ""
        warning = " ⚠ over the cap" if cap is not None and spent >= cap else ""
        blocks.append(_text(f"*{team}* · ${spent:.2f}{of_cap} this month{warning}"))
        members = sorted(teams[team], key=lambda v: (v.env.owner, v.env.name))
        if members:
            blocks += list_blocks(members, snapshot_created)
    return blocks
