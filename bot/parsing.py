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

from provisioning.config import whole_number, words
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
    """A devdb command; `slack` says whether `/devdb` has it too (else: terminal only);
    `one_of` names options of which exactly one is given, `at_most_one` those that exclude
    each other."""

    def __init__(
        self,
        *args: Any,
        slack: bool = False,
        one_of: tuple[str, ...] = (),
        at_most_one: tuple[str, ...] = (),
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.slack = slack
        self.one_of = one_of
        self.at_most_one = at_most_one


class Checked(click.ParamType[Any, str]):
    """A value checked by one of devdb's own validators: its InvalidInput is kept as it is,
    its ValueError ("must be …") is said of the option. An option's value is never empty."""

    def __init__(self, name: str, check: Callable[[str], Any]) -> None:
        self.name = name
        self.check = check

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if not isinstance(value, str):
            return value
        flag = param.opts[0] if isinstance(param, click.Option) else self.name
        if isinstance(param, click.Option) and not value.strip():
            raise InvalidInput(f"{flag} needs a value.")
        try:
            return self.check(value)
        except ValueError as exc:
            raise InvalidInput(f"{flag} {exc}.") from None


def whole(low: int, high: int, what: str = "a whole number") -> Checked:
    return Checked("integer", lambda raw: whole_number(raw, low, high, what))


def _slack_user(raw: str) -> str:
    """A user as typed: `U123`, or a Slack mention `<@U123|ann>`."""
    return raw.strip("<@>").split("|")[0]


NAME = Checked("name", validate_name)
SNAPSHOT = Checked("snapshot", validate_snapshot_id)
DURATION = Checked("duration", parse_duration)
PORT = whole(1, 65535, "a port number")
USER = Checked("user", _slack_user)
TABLES = Checked("tables", words)
TEXT = Checked("text", str)


def shown(param: click.Parameter) -> str:
    """How a parameter is written: `NAME`, `--all`, `--snapshot ID`, `--allow REGEX ...`."""
    if isinstance(param, click.Argument):
        return param.metavar or (param.name or "").upper()
    assert isinstance(param, click.Option)
    text = param.opts[0] if param.is_flag else f"{param.opts[0]} {param.metavar}"
    return text + " ..." if param.multiple else text


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
    """An option; with no metavar it is a flag (`--all`), with one it takes a value (never
    an empty one). `field` names the dataclass field it fills, when that is not the option's
    own name."""
    names = [flag, field] if field else [flag]
    if metavar is None:
        return click.Option(names, is_flag=True, help=help)
    return click.Option(names, metavar=metavar, type=type or TEXT, help=help, **kwargs)


def verb(
    name: str,
    summary: str,
    *params: click.Parameter,
    group: click.Group,
    **traits: Any,
) -> Callable[[Built], Built]:
    """Declare a command in `group`: what it parses into is what the decorated callable
    returns (a dataclass, so the front ends match on its fields); `traits` are `Verb`'s."""

    def declare(build: Built) -> Built:
        group.add_command(
            Verb(
                name,
                callback=build,
                params=list(params),
                help=summary,
                add_help_option=False,
                **traits,
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
    _once_each(path, command, words)
    try:
        context = command.make_context(
            path, words, token_normalize_func=str.lower, allow_extra_args=True
        )
        with context:
            if context.args:
                extra = (
                    context.args[0] if len(context.args[0]) <= 20 else context.args[0][:20] + "…"
                )
                raise UsageError(f"{path} does not take {extra!r}.", usage=path)
            # What was not given is left out, so the dataclass's default is the one default.
            given = {key: value for key, value in context.params.items() if value is not None}
            _alternatives(path, command, given)
            return context.invoke(command.callback, **given)
    except click.UsageError as exc:
        raise UsageError(_sentence(exc, path), usage=path) from exc
    except UsageError:
        raise
    except InvalidInput as exc:
        raise UsageError(*exc.parts, usage=path) from exc


def _once_each(path: str, command: Verb, words: list[str]) -> None:
    """An option that takes one value is given once: a second one is a mistake to point out."""
    single = {
        flag
        for param in command.params
        if isinstance(param, click.Option) and not param.multiple
        for flag in param.opts
    }
    seen: set[str] = set()
    for word in words:
        if word == "--":
            break
        flag = word.split("=", 1)[0].lower()
        if flag in single and flag in seen:
            raise UsageError(f"{flag} is given twice.", usage=path)
        seen.add(flag)


def _alternatives(path: str, command: Verb, given: dict[str, Any]) -> None:
    names = {flag: param.name for param in command.params for flag in param.opts}
    for flags, exactly in ((command.one_of, True), (command.at_most_one, False)):
        chosen = [flag for flag in flags if given.get(names[flag]) not in (None, False)]
        if len(chosen) > 1 or (exactly and flags and not chosen):
            choices = ", ".join(flags[:-1]) + f" {'and' if exactly else 'or'} {flags[-1]}"
            wanted = (
                f"{path} needs exactly one of {choices}."
                if exactly
                else f"choose one of {choices}."
            )
            raise UsageError(wanted, usage=path)


def _sentence(exc: click.UsageError, path: str) -> str:
    """One sentence for click's complaint, in devdb's words where they say more."""
    if isinstance(exc, click.NoSuchOption):
        guess = f"; did you mean {' or '.join(exc.possibilities)}?" if exc.possibilities else "."
        return f"{path} has no option {exc.option_name}{guess}"
    if isinstance(exc, click.MissingParameter) and exc.param is not None:
        return f"{path} needs {shown(exc.param)}."
    text = " ".join(exc.format_message().split())
    return text if text.endswith((".", "?")) else text + "."
