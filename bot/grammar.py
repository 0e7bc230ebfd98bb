"""devdb's command grammar, shared by the terminal and Slack: one declaration per command.

Each command is declared once, below: its words (click parameters), the value it parses into
(a frozen dataclass the front ends match on), and whether Slack has it. Everything else is
derived from that declaration (`bot/usage.py`): the usage lines, `help` in both front ends,
the README's command list and the Slack manifest's usage hint. The machinery is in
`bot/parsing.py`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from functools import partial

import click

from bot.parsing import (
    DURATION,
    NAME,
    PORT,
    SNAPSHOT,
    TABLES,
    USER,
    Checked,
    UsageError,
    Verb,
    argument,
    invoke,
    option,
    resolve,
    split,
    subgroup,
    verb,
    whole,
)
from provisioning.errors import InvalidInput

__all__ = ["Command", "UsageError", "parse", "split", "verbs"]

devdb = click.Group(
    "devdb", help="Private, throw-away PostgreSQL environments from dev-safe snapshots."
)
command = partial(verb, group=devdb)


def _command(word: str) -> str:
    """A command's name, for `help COMMAND`."""
    if word.lower() not in devdb.commands:
        raise InvalidInput(f"there is no command {word[:20]!r}.")
    return word.lower()


# --- The commands, in the order help lists them. ---------------------------------------


@command(
    "refresh",
    "make or replace an environment (NAME defaults to your user name)",
    argument("name", required=False, type=NAME),
    option("--snapshot", "which snapshot (default: the latest)", metavar="ID", type=SNAPSHOT),
    option("--ttl", "how long until it expires", metavar="8h", type=DURATION),
    option("--ec2", "on an EC2 spot instance (see docs/aws.md)"),
    option("--dynamodb", "DynamoDB tables dev_NAME_* from the latest DynamoDB snapshot"),
    option("--shared", "a role and a database of its own on the shared server"),
    option("--schema", "with --shared: a role and a schema in the shared database"),
    slack=True,
    at_most_one=("--ec2", "--dynamodb", "--shared"),
)
@dataclass(frozen=True)
class Refresh:
    name: str | None = None
    snapshot: str | None = None
    ttl: timedelta | None = None
    ec2: bool = False
    shared: bool = False
    schema: bool = False
    dynamodb: bool = False

    def __post_init__(self) -> None:
        if self.schema and not self.shared:
            raise InvalidInput("--schema goes with --shared (a schema on the shared server).")

    @property
    def kind(self) -> str:
        """The driver: local, ec2, shared-db (`--shared`), shared (`--shared --schema`) or
        dynamodb."""
        if self.shared:
            return "shared" if self.schema else "shared-db"
        if self.dynamodb:
            return "dynamodb"
        return "ec2" if self.ec2 else "local"


@command(
    "connect",
    "forward localhost:PORT to a cloud environment (SSM or the ssh bastion)",
    argument("name", type=NAME),
    option("--port", "the local port", metavar="15432", type=PORT),
)
@dataclass(frozen=True)
class Connect:
    name: str
    port: int = 15432


@command(
    "use",
    "point service=devdb at NAME (any kind); with --port, localhost:PORT too",
    argument("name", type=NAME),
    option("--port", "also forward this local port", metavar="15432", type=PORT),
)
@dataclass(frozen=True)
class Use:
    name: str
    port: int | None = None


@command(
    "list",
    "your environments, or everyone's",
    option("--all", "every owner's, grouped by team", field="everyone"),
    slack=True,
)
@dataclass(frozen=True)
class ListEnvironments:
    everyone: bool = False


@command(
    "status",
    "state, snapshot, and how to connect (owner and admins only)",
    argument("name", required=False, type=NAME),
    slack=True,
)
@dataclass(frozen=True)
class Status:
    name: str | None = None


@command(
    "reset",
    "back to its snapshot, same connection details",
    argument("name", type=NAME),
    slack=True,
)
@dataclass(frozen=True)
class ResetEnvironment:
    name: str


@command(
    "save",
    "keep it as it is now as your own snapshot (saved-...)",
    argument("name", type=NAME),
    slack=True,
)
@dataclass(frozen=True)
class SaveEnvironment:
    name: str


@command(
    "destroy", "remove an environment and everything in it", argument("name", type=NAME), slack=True
)
@dataclass(frozen=True)
class Destroy:
    name: str


@command(
    "extend",
    "push its expiry out (up to the maximum lifetime)",
    argument("name", type=NAME),
    argument("by", type=DURATION, metavar="DURATION"),
    slack=True,
)
@dataclass(frozen=True)
class Extend:
    name: str
    by: timedelta


@command(
    "protect",
    "a lease: not reaped for idleness or expiry meanwhile",
    argument("name", type=NAME),
    argument("duration", type=DURATION, metavar="DURATION"),
    slack=True,
)
@dataclass(frozen=True)
class Protect:
    name: str
    duration: timedelta


@command(
    "audit",
    "the audit log: yours and your environments', or anyone's for admins",
    argument("name", required=False, type=NAME),
    option("--since", "how far back", metavar="1d", type=DURATION),
    option("--user", "only this user's actions", metavar="U", type=USER),
    slack=True,
)
@dataclass(frozen=True)
class Audit:
    name: str | None = None
    since: timedelta = timedelta(days=1)
    user: str | None = None


@command("snapshots", "published snapshots, newest first", slack=True)
@dataclass(frozen=True)
class Snapshots:
    pass


@command(
    "restore",
    "a dev-safe snapshot into a server of your choice (an empty database)",
    option("--snapshot", "which snapshot (default: the latest)", metavar="ID", type=SNAPSHOT),
    option("--into", "the target database", metavar="URL", required=True),
    option("--clean", "replace what the target database holds"),
)
@dataclass(frozen=True)
class RestoreInto:
    into: str
    snapshot: str | None = None
    clean: bool = False


@command("doctor", "check what each kind of environment needs")
@dataclass(frozen=True)
class Doctor:
    pass


@command(
    "reap",
    "one reaper sweep now (admins), or what it would do",
    option("--dry-run", "only say what it would do"),
)
@dataclass(frozen=True)
class Reap:
    dry_run: bool = False


@command("scheduler", "run the scheduler alone (devdb serve runs it too)")
@dataclass(frozen=True)
class RunScheduler:
    pass


@command(
    "serve",
    "answer Slack (over HTTP, or Socket Mode) and run the scheduler",
    option("--http", "receive Slack's requests over HTTP"),
    option("--socket", "connect to Slack in Socket Mode"),
    option("--port", "the HTTP port (and /metrics)", metavar="3000", type=PORT),
    one_of=("--http", "--socket"),
)
@dataclass(frozen=True)
class Serve:
    http: bool = False
    socket: bool = False
    port: int = 3000


@command(
    "demo",
    "generate demo data (~22 MB per scale unit), publish a dev-safe snapshot of it",
    option("--scale", "how much", metavar="N", type=whole(1, 1000)),
    option("--dynamodb", "a DynamoDB production in the embedded endpoint instead"),
)
@dataclass(frozen=True)
class Demo:
    scale: int = 1
    dynamodb: bool = False


policy_group = subgroup(devdb, "policy")


@command(
    "init",
    "draft a masking policy for a database",
    option("--source", "the database", metavar="DSN", required=True),
    option("--out", "the policy file to write", metavar="FILE", required=True),
    group=policy_group,
)
@dataclass(frozen=True)
class PolicyInit:
    source: str
    out: str


@command(
    "check",
    "exit 1 and list every column or table the policy misses (run it in CI)",
    option("--source", "the database", metavar="DSN", required=True),
    option("--policy", "the policy file", metavar="FILE", required=True),
    group=policy_group,
)
@dataclass(frozen=True)
class PolicyCheck:
    source: str
    policy: str


@command(
    "shrink",
    "subset, mask, scan and publish a dev-safe snapshot",
    option("--source", "the database", metavar="DSN", required=True),
    option("--policy", "the policy file", metavar="FILE", required=True),
    option("--tenant", "one tenant's rows only", metavar="ID"),
    option("--allow", "a value the scan may let through", metavar="REGEX", multiple=True),
    option("--exports", "DynamoDB: read each table's newest export in S3, not the table"),
)
@dataclass(frozen=True)
class Shrink:
    source: str
    policy: str
    tenant: str | None = None
    allow: tuple[str, ...] = ()
    exports: bool = False


@command(
    "scan",
    "which columns hold personal data; exit 1 if any do",
    option("--source", "a database", metavar="DSN"),
    option("--snapshot", "or a snapshot", metavar="ID", type=SNAPSHOT),
    option("--tables", "only these tables", metavar="S.T,...", type=TABLES),
    option("--sample", "rows read per table", metavar="N", type=whole(1, 10**9)),
    one_of=("--source", "--snapshot"),
)
@dataclass(frozen=True)
class Scan:
    source: str | None = None
    snapshot: str | None = None
    tables: tuple[str, ...] = ()
    sample: int | None = None


image_group = subgroup(devdb, "image")


@command("upload", "store this checkout's wheel for the EC2 image recipe", group=image_group)
@dataclass(frozen=True)
class ImageUpload:
    pass


agent_group = subgroup(devdb, "agent")


@command(
    "restore",
    "on an EC2 environment's instance: restore its snapshot",
    option("--jobs", "pg_restore --jobs", metavar="N", type=whole(1, 256)),
    group=agent_group,
)
@dataclass(frozen=True)
class AgentRestore:
    jobs: int | None = None


@command(
    "help",
    "this list, or one command's options",
    argument("topic", required=False, metavar="COMMAND", type=Checked("command", _command)),
    slack=True,
)
@dataclass(frozen=True)
class Help:
    topic: str | None = None


Command = (
    Refresh
    | Connect
    | Use
    | ListEnvironments
    | Status
    | ResetEnvironment
    | SaveEnvironment
    | Destroy
    | Extend
    | Protect
    | Audit
    | Snapshots
    | RestoreInto
    | Doctor
    | Reap
    | RunScheduler
    | Serve
    | Demo
    | PolicyInit
    | PolicyCheck
    | Shrink
    | Scan
    | ImageUpload
    | AgentRestore
    | Help
)


def verbs(*, slack: bool = False) -> dict[str, click.Command]:
    """The top-level commands a front end has: all of them, or Slack's."""
    return {
        name: declared
        for name, declared in devdb.commands.items()
        if not slack or (isinstance(declared, Verb) and declared.slack)
    }


def parse(words: list[str], *, slack: bool = False) -> Command:
    """Turn words into a command; `UsageError` names the exact problem and the usage."""
    if not words:
        return Help()
    built = invoke(*resolve(verbs(slack=slack), words))
    assert isinstance(built, Command)
    return built
