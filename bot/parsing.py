"""The machinery under devdb's grammar: click parameters for devdb's own values, the decorator
that declares a command, and parsing that never prints or exits.

click parses. Words that do not fit raise `UsageError`: one sentence naming the problem, and
the command whose usage to show with it. The commands themselves are in `bot/grammar.py`.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable
from typing import Any, TypeVar

import click

from provisioning.durations import parse_duration
from provisioning.errors import InvalidInput, Part
from provisioning.models import validate_name
from provisioning.snapshots.manifest import validate_snapshot_id

Built = TypeVar("Built", bound=Callable[..., Any])  # what a command's words are parsed into


class UsageError(InvalidInput):
    """Input that does not fit the grammar; `usage` is the command whose usage to show."""

    def __init__(self, *parts: Part, usage: str) -> None:
        super().__init__(*parts)
        self.usage = usage


class Verb(click.Command):
    """A devdb command; `slack` says whether `/devdb` has it too (else: terminal only)."""

    def __init__(self, *args: Any, slack: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.slack = slack


class Checked(click.ParamType[Any, str]):
    """A value checked by one of devdb's own validators, whose sentence is kept as it is."""

    def __init__(self, name: str, check: Callable[[str], Any]) -> None:
        self.name = name
        self.check = check

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        return self.check(value) if isinstance(value, str) else value


def whole(option: str, low: int, high: int, what: str = "a whole number") -> Checked:
    def check(raw: str) -> int:
        if not raw.isdigit() or not low <= int(raw) <= high:
            raise InvalidInput(f"{option} must be {what} from {low} to {high}, not {raw[:20]!r}.")
        return int(raw)

    return Checked("integer", check)


def _slack_user(raw: str) -> str:
    """A user as typed: `U123`, or a Slack mention `<@U123|ann>`."""
    return raw.strip("<@>").split("|")[0]


def _tables(raw: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in raw.split(",") if part.strip())


NAME = Checked("name", validate_name)
SNAPSHOT = Checked("snapshot", validate_snapshot_id)
DURATION = Checked("duration", parse_duration)
PORT = whole("--port", 1, 65535, "a port number")
USER = Checked("user", _slack_user)
TABLES = Checked("tables", _tables)


def argument(
    name: str, *, required: bool = True, type: Any = None, metavar: str | None = None
) -> click.Argument:
    return click.Argument([name], required=required, type=type, metavar=metavar)


def option(
    flag: str,
    help: str,
    *,
    metavar: str | None = None,
    type: Any = None,
    field: str | None = None,
    **kwargs: Any,
) -> click.Option:
    """An option; with no metavar it is a flag (`--all`), with one it takes a value. `field`
    names the dataclass field it fills, when that is not the option's own name."""
    names = [flag, field] if field else [flag]
    if metavar is None:
        return click.Option(names, is_flag=True, help=help)
    return click.Option(names, metavar=metavar, type=type, help=help, **kwargs)


def verb(
    name: str,
    summary: str,
    *params: click.Parameter,
    slack: bool = False,
    group: click.Group,
) -> Callable[[Built], Built]:
    """Declare a command in `group`: what it parses into is what the decorated callable
    returns (a dataclass, so the front ends match on its fields)."""

    def declare(build: Built) -> Built:
        group.add_command(
            Verb(
                name,
                callback=build,
                params=list(params),
                help=summary,
                add_help_option=False,
                slack=slack,
            )
        )
        return build

    return declare


def subgroup(parent: click.Group, name: str) -> click.Group:
    """Commands of two words (`policy check`)."""
    group = click.Group(name, add_help_option=False)
    parent.add_command(group)
    return group


def split(text: str) -> list[str]:
    """Split a typed line into words, as a shell would."""
    try:
        return shlex.split(text)
    except ValueError as exc:
        raise UsageError(f"could not read that command ({exc}).", usage="help") from exc


def resolve(known: dict[str, click.Command], words: list[str]) -> tuple[str, Verb, list[str]]:
    """Find the command the words name among `known`: its path (`policy check`), it, and the
    words left for it."""
    word, rest = words[0].lower(), words[1:]
    if word in ("-h", "--help"):
        word = "help"
    found = known.get(word)
    if found is None:
        shown = word if len(word) <= 20 else word[:20] + "…"
        raise UsageError(
            f"unknown command {shown!r}: use one of {', '.join(sorted(known))}.", usage="help"
        )
    path = word
    while isinstance(found, click.Group):
        subs = " or ".join(sorted(found.commands))
        if not rest:
            raise UsageError(f"{path} takes {subs}.", usage=path)
        sub = found.commands.get(rest[0].lower())
        if sub is None:
            raise UsageError(f"{path} takes {subs}, not {rest[0][:20]!r}.", usage=path)
        path, found, rest = f"{path} {rest[0].lower()}", sub, rest[1:]
    assert isinstance(found, Verb)
    return path, found, rest


def invoke(path: str, command: Verb, words: list[str]) -> object:
    """What `command` builds from `words`; `UsageError` names the exact problem."""
    assert command.callback is not None
    try:
        context = command.make_context(path, words, token_normalize_func=str.lower)
        with context:
            # What was not given is left out, so the dataclass's default is the one default.
            given = {key: value for key, value in context.params.items() if value is not None}
            return context.invoke(command.callback, **given)
    except click.UsageError as exc:
        raise UsageError(_sentence(exc, path), usage=path) from exc
    except UsageError:
        raise
    except InvalidInput as exc:
        raise UsageError(*exc.parts, usage=path) from exc


def _sentence(exc: click.UsageError, path: str) -> str:
    """One sentence for click's complaint, in devdb's words where they say more."""
    if isinstance(exc, click.NoSuchOption):
        guess = f"; did you mean {' or '.join(exc.possibilities)}?" if exc.possibilities else "."
        return f"{path} has no option {exc.option_name}{guess}"
    if isinstance(exc, click.MissingParameter) and exc.param is not None:
        return f"{path} needs {_wanted(exc.param)}."
    text = " ".join(exc.format_message().split())
    return text if text.endswith((".", "?")) else text + "."


def _wanted(param: click.Parameter) -> str:
    if isinstance(param, click.Option):
        return f"{param.opts[0]} {param.metavar}"
    return param.metavar or (param.name or "").upper()
