from datetime import timedelta

import pytest

from bot import grammar
from bot.grammar import UsageError, parse
from provisioning.durations import format_duration, parse_duration
from provisioning.errors import InvalidInput
from provisioning.models import default_name, validate_name


def test_refresh_with_everything() -> None:
    command = parse(["refresh", "feature-x", "--snapshot", "20261123-150000-abcd", "--ttl=4h"])
    assert command == grammar.Refresh(
        name="feature-x", snapshot="20261123-150000-abcd", ttl=timedelta(hours=4)
    )


def test_bare_words() -> None:
    assert parse([]) == grammar.Help()
    assert parse(["refresh"]) == grammar.Refresh()
    assert parse(["LIST", "--all"]) == grammar.ListEnvironments(everyone=True)
    assert parse(["list"]) == grammar.ListEnvironments(everyone=False)
    assert parse(["extend", "x1", "1d12h"]) == grammar.Extend(name="x1", by=timedelta(hours=36))
    assert parse(["demo", "--scale", "3"]) == grammar.Demo(scale=3)
    assert parse(["refresh", "big", "--ec2"]) == grammar.Refresh(name="big", kind="ec2")
    # A database of its own is the shared default; a schema is asked for.
    assert parse(["refresh", "--shared"]) == grammar.Refresh(kind="shared-db")
    assert parse(["refresh", "--shared", "--schema"]) == grammar.Refresh(kind="shared")
    assert parse(["image", "upload"]) == grammar.ImageUpload()
    assert parse(["use", "big"]) == grammar.Use(name="big", port=None)
    assert parse(["use", "big", "--port", "15432"]) == grammar.Use(name="big", port=15432)
    assert parse(["audit", "--since", "2h"]) == grammar.Audit(since=timedelta(hours=2))
    assert parse(["connect", "big"]) == grammar.Connect(name="big", port=15432)
    assert parse(["connect", "big", "--port=6000"]) == grammar.Connect(name="big", port=6000)
    assert parse(["agent", "restore", "--jobs", "8"]) == grammar.AgentRestore(jobs=8)


@pytest.mark.parametrize(
    ("words", "fragment"),
    [
        (["bogus"], "unknown command 'bogus'"),
        (["refresh", "../x"], "not a valid environment name"),
        (["refresh", "a;drop table"], "not a valid environment name"),
        (["refresh", "x" * 200], "not a valid environment name"),
        (["refresh", ""], "not a valid environment name"),
        (["refresh", "--color"], "refresh has no option --color"),
        (["refresh", "--snapshot"], "--snapshot needs a value"),
        (["refresh", "--snapshot", "../../etc"], "not a snapshot id"),
        (["refresh", "--ttl", "soon"], "'soon' is not a duration"),
        (["destroy"], "destroy takes"),
        (["extend", "x"], "extend takes"),
        (["extend", "x", "4 hours"], "is not a duration"),
        (["list", "--all=yes"], "--all takes no value"),
        (["list", "--all", "--all"], "given twice"),
        (["snapshots", "extra"], "snapshots takes no arguments"),
        (["demo", "--scale", "0"], "--scale must be"),
        (["connect"], "connect takes"),
        (["connect", "x", "--port", "0"], "--port must be a port number"),
        (["agent", "start"], "agent takes restore"),
        (["agent", "restore", "--jobs", "many"], "--jobs must be"),
        (["refresh", "--ec2=yes"], "--ec2 takes no value"),
    ],
)
def test_bad_input_names_the_problem(words: list[str], fragment: str) -> None:
    with pytest.raises(UsageError) as caught:
        parse(words)
    assert fragment in str(caught.value)
    assert "\n" not in str(caught.value)


def test_slack_does_not_get_terminal_only_commands() -> None:
    with pytest.raises(UsageError, match="unknown command 'demo'"):
        parse(["demo"], allowed=grammar.SHARED_COMMANDS)
    with pytest.raises(UsageError, match="unknown command 'connect'"):
        parse(["connect", "x"], allowed=grammar.SHARED_COMMANDS)


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
