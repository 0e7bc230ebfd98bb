import re
from datetime import timedelta
from pathlib import Path

import pytest
import yaml

from bot import grammar, usage, words
from bot.grammar import UsageError, parse
from provisioning.durations import format_duration, parse_duration
from provisioning.errors import InvalidInput, Next
from provisioning.models import default_name, validate_name

ROOT = Path(__file__).resolve().parent.parent


def test_refresh_with_everything() -> None:
    command = parse(["refresh", "feature-x", "--snapshot", "20261123-150000-abcd", "--ttl=4h"])
    assert command == grammar.Refresh(
        name="feature-x", snapshot="20261123-150000-abcd", ttl=timedelta(hours=4)
    )


def kind(words: list[str]) -> str:
    command = parse(words)
    assert isinstance(command, grammar.Refresh)
    return command.kind


def test_bare_words() -> None:
    assert parse([]) == grammar.Help()
    assert parse(["refresh"]) == grammar.Refresh()
    assert parse(["LIST", "--all"]) == grammar.ListEnvironments(everyone=True)
    assert parse(["list"]) == grammar.ListEnvironments(everyone=False)
    assert parse(["extend", "x1", "1d12h"]) == grammar.Extend(name="x1", by=timedelta(hours=36))
    assert parse(["demo", "--scale", "3"]) == grammar.Demo(scale=3)
    assert kind(["refresh", "big", "--ec2"]) == "ec2"
    assert kind(["refresh", "big"]) == "local"
    # A database of its own is the shared default; a schema is asked for.
    assert kind(["refresh", "--shared"]) == "shared-db"
    assert kind(["refresh", "--shared", "--schema"]) == "shared"
    assert parse(["image", "upload"]) == grammar.ImageUpload()
    assert parse(["use", "big"]) == grammar.Use(name="big", port=None)
    assert parse(["use", "big", "--port", "15432"]) == grammar.Use(name="big", port=15432)
    assert parse(["audit", "--since", "2h"]) == grammar.Audit(since=timedelta(hours=2))
    assert parse(["connect", "big"]) == grammar.Connect(name="big", port=15432)
    assert parse(["connect", "big", "--port=6000"]) == grammar.Connect(name="big", port=6000)
    assert parse(["agent", "restore", "--jobs", "8"]) == grammar.AgentRestore(jobs=8)
    assert parse(["Policy", "CHECK", "--source", "s", "--policy", "p"]) == grammar.PolicyCheck(
        source="s", policy="p"
    )
    assert parse(["shrink", "--source", "s", "--policy", "p", "--allow", "a", "--allow", "b"]) == (
        grammar.Shrink(source="s", policy="p", allow=("a", "b"))
    )
    assert parse(["audit", "--user", "<@U1|ann>"]) == grammar.Audit(user="U1")
    assert parse(["help", "refresh"]) == grammar.Help(topic="refresh")


@pytest.mark.parametrize(
    ("words", "fragment"),
    [
        (["bogus"], "unknown command 'bogus'"),
        (["refresh", "../x"], "not a valid environment name"),
        (["refresh", "a;drop table"], "not a valid environment name"),
        (["refresh", "x" * 200], "not a valid environment name"),
        (["refresh", ""], "not a valid environment name"),
        (["refresh", "--color"], "refresh has no option --color."),
        (["refresh", "--snap", "x"], "refresh has no option --snap; did you mean --snapshot?"),
        (["refresh", "--snapshot"], "'--snapshot' requires an argument"),
        (["refresh", "--snapshot", "../../etc"], "not a snapshot id"),
        (["refresh", "--ttl", "soon"], "'soon' is not a duration"),
        (["destroy"], "destroy needs NAME."),
        (["extend", "x"], "extend needs DURATION."),
        (["extend", "x", "4 hours"], "is not a duration"),
        (["list", "--all=yes"], "'--all' does not take a value"),
        (["snapshots", "extra"], "snapshots does not take 'extra'."),
        (["refresh", "a", "b"], "refresh does not take 'b'."),
        (["list", "--all", "--all"], "--all is given twice."),
        (["refresh", "--ttl", "1h", "--ttl=2h"], "--ttl is given twice."),
        (["restore", "--into", ""], "--into needs a value."),
        (["audit", "--user", " "], "--user needs a value."),
        (["demo", "--scale", "²"], "--scale must be a whole number from 1 to 1000, not '²'."),
        (["help", "bogus"], "there is no command 'bogus'."),
        (["demo", "--scale", "0"], "--scale must be"),
        (["connect"], "connect needs NAME."),
        (["restore"], "restore needs --into URL."),
        (["policy"], "policy takes check or init."),
        (["policy", "drop"], "policy takes check or init, not 'drop'."),
        (["serve", "--http", "--socket"], "serve needs exactly one of --http and --socket."),
        (["serve"], "serve needs exactly one of --http and --socket."),
        (["scan"], "scan needs exactly one of --source and --snapshot."),
        (["refresh", "--schema"], "--schema goes with --shared"),
        (["refresh", "--ec2", "--shared"], "choose one of --ec2, --dynamodb or --shared."),
        (["connect", "x", "--port", "0"], "--port must be a port number from 1 to 65535"),
        (["agent", "start"], "agent takes restore"),
        (["agent", "restore", "--jobs", "many"], "--jobs must be"),
        (["refresh", "--ec2=yes"], "'--ec2' does not take a value"),
    ],
)
def test_bad_input_names_the_problem(words: list[str], fragment: str) -> None:
    with pytest.raises(UsageError) as caught:
        parse(words)
    assert fragment in str(caught.value)
    assert "\n" not in str(caught.value)


def test_slack_does_not_get_terminal_only_commands() -> None:
    with pytest.raises(UsageError, match="unknown command 'demo'"):
        parse(["demo"], slack=True)
    with pytest.raises(UsageError, match="unknown command 'connect'"):
        parse(["connect", "x"], slack=True)
    assert parse(["extend", "x", "4h"], slack=True) == grammar.Extend(
        name="x", by=timedelta(hours=4)
    )


def test_split_reports_unbalanced_quotes() -> None:
    assert grammar.split("refresh 'a b'") == ["refresh", "a b"]
    with pytest.raises(UsageError):
        grammar.split("refresh 'oops")


def test_durations_round_trip() -> None:
    assert parse_duration("90s") == timedelta(seconds=90)
    assert parse_duration(" 2D ") == timedelta(days=2)
    assert format_duration(timedelta(hours=3, minutes=12)) == "3h12m"
    assert format_duration(timedelta(days=2, hours=4)) == "2d4h"
    for bad in ["", "4", "h", "0h", "4h-", "-4h", "4 h"]:
        with pytest.raises(InvalidInput):
            parse_duration(bad)


def test_names() -> None:
    assert validate_name("dev_1-a") == "dev_1-a"
    assert default_name("Jane.Doe") == "jane-doe"
    assert default_name("42") == "env-42"
    assert validate_name(default_name("ÜBER user!" * 10))


def test_what_people_read_is_derived_from_the_declarations() -> None:
    """Usage lines, help, the README's command list and the manifest's hint come from the one
    declaration of each command, so a new option shows up everywhere at once."""
    readme = (ROOT / "README.md").read_text()
    listed = readme.split("## Commands\n\n```\n", 1)[1].split("```", 1)[0]
    assert listed.rstrip("\n") == usage.command_list()
    manifest = yaml.safe_load((ROOT / "manifest.yml").read_text())
    (slash,) = manifest["features"]["slash_commands"]
    assert slash["usage_hint"] == usage.manifest_hint()
    assert usage.terminal_usage("extend") == "usage: devdb extend NAME DURATION"
    assert usage.terminal_usage("policy") == (
        "usage: devdb policy init --source DSN --out FILE | "
        "devdb policy check --source DSN --policy FILE"
    )
    assert usage.slack_usage("list") == "Usage: `/devdb list [--all]`"
    helped = usage.terminal_help()
    assert "devdb shrink --source DSN --policy FILE [--tenant ID] [--allow REGEX ...]" in helped
    assert "devdb agent restore [--jobs N]" in helped
    slack_help = usage.slack_help()
    assert "`/devdb extend NAME DURATION`" in slack_help and "demo" not in slack_help
    detail = usage.terminal_help("refresh")
    assert "--schema" in detail and "with --shared: a role and a schema" in detail
    assert "`demo` is run in a terminal: `devdb help demo`" in usage.slack_help("demo")
    assert "devdb serve (--http | --socket) [--port 3000]" in helped
    assert (
        "devdb refresh [NAME] [--snapshot ID] [--ttl 8h] [--ec2 | --dynamodb | --shared] [--schema]"
        in helped
    )


def test_every_usage_line_parses() -> None:
    """Each derived usage line, with its placeholders filled in, is accepted by the parser."""
    fill = {
        "NAME": "app",
        "DURATION": "4h",
        "COMMAND": "refresh",
        "N": "2",
        "ID": "20261201-000000-abcd",
    }
    for path, command in usage.commands():
        text = usage.line(path, command).replace(" ...", "")
        text = re.sub(r"[(\[][^)\]]* \| ([^|)\]]*)[)\]]", r"\1", text)  # the last alternative
        words = []
        for part in text.split():
            bare = part.strip("[]")
            words.append(fill.get(bare, "x" if bare.isupper() else bare))
        parse(words)


def test_slack_words_commands_it_has_and_sends_the_rest_to_a_terminal() -> None:
    assert words.slack(Next("status", "app")) == "`/devdb status app`"
    assert words.slack(Next("demo")) == "`devdb demo` in a terminal"
    assert words.slack(Next("policy check")) == "`devdb policy check` in a terminal"
    assert words.terminal(Next("status", "app")) == "`devdb status app`"
