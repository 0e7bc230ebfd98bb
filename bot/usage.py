"""What people read about the commands, derived from the grammar's one declaration of each:
usage lines, `help` (terminal and Slack), the README's command list and the manifest's hint.
The declarations do not change while devdb runs, so what is derived is derived once."""

from __future__ import annotations

from collections.abc import Iterator
from functools import cache

import click

from bot.grammar import devdb, verbs
from bot.parsing import Verb, shown

JSON_NOTE = "Put --json before the command for machine-readable output."
SUMMARY_COLUMN = 50  # where the terminal's summaries start


def commands(*, slack: bool = False) -> Iterator[tuple[str, Verb]]:
    """Every command a front end has, as (path, command), in declaration order."""
    for name, command in verbs(slack=slack).items():
        if isinstance(command, click.Group):
            for sub, leaf in command.commands.items():
                assert isinstance(leaf, Verb)
                yield f"{name} {sub}", leaf
        else:
            assert isinstance(command, Verb)
            yield name, command


def _param(param: click.Parameter) -> str:
    return shown(param) if param.required else f"[{shown(param)}]"


def line(path: str, command: Verb, *, options: bool = True) -> str:
    """`refresh [NAME] [--snapshot ID] …`: the command's words, from its parameters, with
    alternatives together: `(--http | --socket)` for exactly one, `[--ec2 | --shared]`."""
    parts = [path]
    for param in command.params:
        if isinstance(param, click.Option) and not options:
            continue
        flag = param.opts[0] if isinstance(param, click.Option) else None
        for group, brackets in ((command.one_of, "()"), (command.at_most_one, "[]")):
            if flag in group:
                if flag == group[0]:
                    alternatives = (shown(p) for f in group for p in command.params if f in p.opts)
                    parts.append(brackets[0] + " | ".join(alternatives) + brackets[1])
                break
        else:
            parts.append(_param(param))
    return " ".join(parts)


@cache
def usage_lines(path: str, *, slack: bool = False) -> tuple[str, ...]:
    """The usage of a command, or of every command under a group (`policy`)."""
    found = [line(p, c) for p, c in commands(slack=slack) if p == path or p.startswith(path + " ")]
    return tuple(found) or ("help",)


def terminal_usage(path: str) -> str:
    """The line shown under a usage error in the terminal."""
    return "usage: " + " | ".join(f"devdb {text}" for text in usage_lines(path))


def slack_usage(path: str) -> str:
    """The line shown under a usage error in Slack."""
    return "Usage: " + " | ".join(f"`/devdb {text}`" for text in usage_lines(path, slack=True))


def command_list() -> str:
    """Every terminal command with its summary, in two columns (help and the README)."""
    rows = []
    for path, command in commands():
        usage = f"devdb {line(path, command)}"
        summary = command.help or ""
        if len(usage) < SUMMARY_COLUMN - 1:
            rows.append(f"{usage:<{SUMMARY_COLUMN}}{summary}")
        else:
            rows.append(f"{usage}\n{'':<{SUMMARY_COLUMN}}{summary}")
    return "\n".join(rows)


@cache
def terminal_help(topic: str | None = None) -> str:
    if topic:
        return _details(topic, slack=False) or f"devdb has no command {topic[:20]!r}."
    more = "devdb help COMMAND shows its options."
    return f"devdb: {devdb.help}\n\n{command_list()}\n\n{JSON_NOTE} {more}"


@cache
def slack_help(topic: str | None = None) -> str:
    if topic:
        terminal = f"`{topic}` is run in a terminal: `devdb help {topic}`."
        return _details(topic, slack=True) or terminal
    rows = (f"• `/devdb {line(p, c)}`: {c.help}" for p, c in commands(slack=True))
    return f"*devdb*: {devdb.help}\n" + "\n".join(rows)


def _details(topic: str, *, slack: bool) -> str | None:
    """One command (or group): its usage, what it does and what each option means."""
    prefix = "/devdb" if slack else "devdb"
    found = [
        (p, c)
        for p, c in commands(slack=slack)
        if p == topic.lower() or p.startswith(topic.lower() + " ")
    ]
    if not found:
        return None
    out = []
    for path, command in found:
        out.append(f"{prefix} {line(path, command)}\n  {command.help}")
        for param in command.params:
            if isinstance(param, click.Option) and param.help:
                out.append(f"    {shown(param):<22} {param.help}")
    text = "\n".join(out)
    return f"```{text}```" if slack else text


def manifest_hint() -> str:
    """The manifest's usage hint: each Slack command with its arguments (options: help)."""
    return " | ".join(line(p, c, options=False) for p, c in commands(slack=True))
