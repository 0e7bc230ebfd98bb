"""devdb's command grammar, shared by the terminal and Slack: one parser, the same words.

refresh [NAME] [--snapshot ID] [--ttl 8h] [--ec2 | --shared [--schema]]
list [--all]
status [NAME]
destroy NAME
reset NAME
save NAME
extend NAME DURATION
audit [NAME] [--since 1d] [--user U]
snapshots
demo [--scale N]            (terminal only)
scan --source DSN | --snapshot ID [--tables S.T,...] [--sample N]   (terminal only)
protect NAME DURATION
reap [--dry-run]            (terminal only)
scheduler                   (terminal only)
connect NAME [--port 15432] (terminal only)
use NAME [--port 15432]     (terminal only)
agent restore [--jobs N]    (on an EC2 environment's instance)
doctor                      (terminal only)
image upload                (terminal only)
restore [--snapshot ID] --into URL [--clean]   (terminal only)
help
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from datetime import timedelta

from provisioning.durations import parse_duration
from provisioning.errors import InvalidInput, Part
from provisioning.models import validate_name
from provisioning.snapshots.manifest import validate_snapshot_id

USAGE = {
    "refresh": "refresh [NAME] [--snapshot ID] [--ttl 8h] [--ec2 | --shared [--schema]]",
    "list": "list [--all]",
    "status": "status [NAME]",
    "destroy": "destroy NAME",
    "reset": "reset NAME",
    "save": "save NAME",
    "extend": "extend NAME DURATION",
    "audit": "audit [NAME] [--since 1d] [--user U]",
    "snapshots": "snapshots",
    "demo": "demo [--scale N]",
    "policy": "policy init --source DSN --out FILE | policy check --source DSN --policy FILE",
    "shrink": "shrink --source DSN --policy FILE [--tenant ID] [--allow REGEX ...]",
    "scan": "scan --source DSN | --snapshot ID [--tables S.T,...] [--sample N]",
    "serve": "serve --http [--port 3000] | serve --socket",
    "connect": "connect NAME [--port 15432]",
    "use": "use NAME [--port 15432]",
    "protect": "protect NAME DURATION",
    "reap": "reap [--dry-run]",
    "scheduler": "scheduler",
    "agent": "agent restore [--jobs N]",
    "doctor": "doctor",
    "image": "image upload",
    "restore": "restore [--snapshot ID] --into URL [--clean]",
    "help": "help",
}
SHARED_COMMANDS = frozenset(
    {
        "refresh",
        "list",
        "status",
        "destroy",
        "reset",
        "save",
        "extend",
        "audit",
        "protect",
        "snapshots",
        "help",
    }
)
TERMINAL_COMMANDS = SHARED_COMMANDS | {
    "demo",
    "policy",
    "shrink",
    "scan",
    "serve",
    "connect",
    "use",
    "agent",
    "reap",
    "scheduler",
    "doctor",
    "image",
    "restore",
}


class UsageError(InvalidInput):
    """Input that does not fit the grammar; `usage` is the line to show with it."""

    def __init__(self, *parts: Part, usage: str) -> None:
        super().__init__(*parts)
        self.usage = usage


@dataclass(frozen=True)
class Refresh:
    name: str | None = None
    snapshot: str | None = None
    ttl: timedelta | None = None
    kind: str = "local"


@dataclass(frozen=True)
class Connect:
    name: str
    port: int = 15432


@dataclass(frozen=True)
class Use:
    name: str
    port: int | None = None


@dataclass(frozen=True)
class Protect:
    name: str
    duration: timedelta


@dataclass(frozen=True)
class Reap:
    dry_run: bool = False


@dataclass(frozen=True)
class RunScheduler:
    pass


@dataclass(frozen=True)
class Audit:
    name: str | None = None
    since: timedelta = timedelta(days=1)
    user: str | None = None


@dataclass(frozen=True)
class RestoreInto:
    into: str
    snapshot: str | None = None
    clean: bool = False


@dataclass(frozen=True)
class ImageUpload:
    pass


@dataclass(frozen=True)
class AgentRestore:
    jobs: int | None = None


@dataclass(frozen=True)
class ListEnvironments:
    everyone: bool = False


@dataclass(frozen=True)
class Status:
    name: str | None = None


@dataclass(frozen=True)
class Destroy:
    name: str


@dataclass(frozen=True)
class ResetEnvironment:
    name: str


@dataclass(frozen=True)
class SaveEnvironment:
    name: str


@dataclass(frozen=True)
class Extend:
    name: str
    by: timedelta


@dataclass(frozen=True)
class Snapshots:
    pass


@dataclass(frozen=True)
class Doctor:
    pass


@dataclass(frozen=True)
class Demo:
    scale: int = 1


@dataclass(frozen=True)
class PolicyInit:
    source: str
    out: str


@dataclass(frozen=True)
class PolicyCheck:
    source: str
    policy: str


@dataclass(frozen=True)
class Shrink:
    source: str
    policy: str
    tenant: str | None = None
    allow: tuple[str, ...] = ()


@dataclass(frozen=True)
class Scan:
    source: str | None = None
    snapshot: str | None = None
    tables: tuple[str, ...] = ()
    sample: int | None = None


@dataclass(frozen=True)
class Serve:
    socket: bool = False
    port: int = 3000


@dataclass(frozen=True)
class Help:
    pass


Command = (
    Refresh
    | ListEnvironments
    | Status
    | Destroy
    | ResetEnvironment
    | SaveEnvironment
    | Extend
    | Snapshots
    | Doctor
    | Demo
    | PolicyInit
    | PolicyCheck
    | Shrink
    | Scan
    | Serve
    | Connect
    | Use
    | AgentRestore
    | ImageUpload
    | RestoreInto
    | Audit
    | Protect
    | Reap
    | RunScheduler
    | Help
)

# Which options each command takes, and whether the option takes a value.
_OPTIONS: dict[str, dict[str, bool]] = {
    "refresh": {
        "--snapshot": True,
        "--ttl": True,
        "--ec2": False,
        "--shared": False,
        "--schema": False,
    },
    "list": {"--all": False},
    "demo": {"--scale": True},
    "policy": {"--source": True, "--out": True, "--policy": True},
    "shrink": {"--source": True, "--policy": True, "--tenant": True, "--allow": True},
}
_OPTIONS["scan"] = {"--source": True, "--snapshot": True, "--tables": True, "--sample": True}
_REPEATABLE = {"--allow"}
_OPTIONS["serve"] = {"--http": False, "--socket": False, "--port": True}
_OPTIONS["connect"] = {"--port": True}
_OPTIONS["use"] = {"--port": True}
_OPTIONS["agent"] = {"--jobs": True}
_OPTIONS["reap"] = {"--dry-run": False}
_OPTIONS["audit"] = {"--since": True, "--user": True}
_OPTIONS["restore"] = {"--snapshot": True, "--into": True, "--clean": False}
_POSITIONALS = {
    "refresh": (0, 1),
    "list": (0, 0),
    "status": (0, 1),
    "destroy": (1, 1),
    "reset": (1, 1),
    "save": (1, 1),
    "extend": (2, 2),
    "snapshots": (0, 0),
    "doctor": (0, 0),
    "demo": (0, 0),
    "help": (0, 1),
    "policy": (1, 1),
    "shrink": (0, 0),
    "scan": (0, 0),
    "serve": (0, 0),
    "connect": (1, 1),
    "use": (1, 1),
    "agent": (1, 1),
    "image": (1, 1),
    "audit": (0, 1),
    "restore": (0, 0),
    "protect": (2, 2),
    "reap": (0, 0),
    "scheduler": (0, 0),
}


def split(text: str) -> list[str]:
    """Split a typed line into words, as a shell would."""
    try:
        return shlex.split(text)
    except ValueError as exc:
        raise UsageError(f"could not read that command ({exc}).", usage="help") from exc


def parse(words: list[str], *, allowed: frozenset[str] = TERMINAL_COMMANDS) -> Command:
    """Turn words into a command; `UsageError` names the exact problem and the usage line."""
    if not words:
        return Help()
    verb, rest = words[0].lower(), words[1:]
    if verb in ("-h", "--help"):
        verb = "help"
    if verb not in allowed:
        known = ", ".join(sorted(allowed))
        shown = verb if len(verb) <= 20 else verb[:20] + "…"
        raise UsageError(f"unknown command {shown!r}: use one of {known}.", usage="help")
    usage = USAGE[verb]
    options: dict[str, str | None] = {}
    repeated: list[str] = []
    positionals: list[str] = []
    takes = _OPTIONS.get(verb, {})
    index = 0
    while index < len(rest):
        word = rest[index]
        index += 1
        if word.startswith("--"):
            key, eq, value = word.partition("=")
            if key not in takes:
                raise UsageError(f"{verb} has no option {key}.", usage=usage)
            if key in options and key not in _REPEATABLE:
                raise UsageError(f"{key} is given twice.", usage=usage)
            if takes[key] and not eq:
                if index >= len(rest):
                    raise UsageError(f"{key} needs a value.", usage=usage)
                value = rest[index]
                index += 1
            elif not takes[key] and eq:
                raise UsageError(f"{key} takes no value.", usage=usage)
            options[key] = value if takes[key] else None
            if key in _REPEATABLE:
                repeated.append(value)
        else:
            positionals.append(word)
    low, high = _POSITIONALS[verb]
    if not low <= len(positionals) <= high:
        expected = "no arguments" if high == 0 else usage
        raise UsageError(
            f"{verb} takes {expected}; got {len(positionals)} argument(s).", usage=usage
        )
    try:
        return _build(verb, positionals, options, tuple(repeated))
    except UsageError:
        raise
    except InvalidInput as exc:
        raise UsageError(*exc.parts, usage=usage) from exc


def _required(options: dict[str, str | None], *keys: str) -> list[str]:
    missing = [key for key in keys if not options.get(key)]
    if missing:
        raise InvalidInput(
            f"{' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} required."
        )
    return [str(options[key]) for key in keys]


def _build(
    verb: str, args: list[str], options: dict[str, str | None], repeated: tuple[str, ...]
) -> Command:
    if verb == "policy":
        if args[0] == "init":
            source, out = _required(options, "--source", "--out")
            return PolicyInit(source=source, out=out)
        if args[0] == "check":
            source, policy = _required(options, "--source", "--policy")
            return PolicyCheck(source=source, policy=policy)
        raise InvalidInput(f"policy takes init or check, not {args[0][:20]!r}.")
    if verb == "serve":
        if ("--http" in options) == ("--socket" in options):
            raise InvalidInput("serve needs exactly one of --http or --socket.")
        return Serve(socket="--socket" in options, port=_port(options.get("--port") or "3000"))
    if verb == "restore":
        (into,) = _required(options, "--into")
        snapshot = options.get("--snapshot")
        return RestoreInto(
            into=into,
            snapshot=validate_snapshot_id(snapshot) if snapshot is not None else None,
            clean="--clean" in options,
        )
    if verb == "image":
        if args[0] != "upload":
            raise InvalidInput(f"image takes upload, not {args[0][:20]!r}.")
        return ImageUpload()
    if verb == "agent":
        if args[0] != "restore":
            raise InvalidInput(f"agent takes restore, not {args[0][:20]!r}.")
        raw = options.get("--jobs")
        if raw is not None and not (raw.isdigit() and 1 <= int(raw) <= 256):
            raise InvalidInput(f"--jobs must be a whole number from 1 to 256, not {raw!r}.")
        return AgentRestore(jobs=int(raw) if raw else None)
    if verb == "shrink":
        source, policy = _required(options, "--source", "--policy")
        return Shrink(source=source, policy=policy, tenant=options.get("--tenant"), allow=repeated)
    if verb == "scan":
        return _scan(options)
    name = validate_name(args[0]) if args and verb != "help" else None
    if verb == "refresh":
        snapshot = options.get("--snapshot")
        ttl = options.get("--ttl")
        return Refresh(
            name=name,
            snapshot=validate_snapshot_id(snapshot) if snapshot is not None else None,
            ttl=parse_duration(ttl) if ttl is not None else None,
            kind=_kind(options),
        )
    if verb == "connect":
        assert name is not None
        return Connect(name=name, port=_port(options.get("--port") or "15432"))
    if verb == "use":
        assert name is not None
        raw = options.get("--port")
        return Use(name=name, port=_port(raw) if raw is not None else None)
    if verb == "list":
        return ListEnvironments(everyone="--all" in options)
    if verb == "status":
        return Status(name=name)
    if verb == "audit":
        since, user = options.get("--since"), options.get("--user")
        return Audit(
            name=name,
            since=parse_duration(since) if since is not None else timedelta(days=1),
            user=user.strip("<@>").split("|")[0] if user else None,
        )
    if verb == "destroy":
        assert name is not None
        return Destroy(name=name)
    if verb == "reset":
        assert name is not None
        return ResetEnvironment(name=name)
    if verb == "save":
        assert name is not None
        return SaveEnvironment(name=name)
    if verb == "extend":
        assert name is not None
        return Extend(name=name, by=parse_duration(args[1]))
    if verb == "protect":
        assert name is not None
        return Protect(name=name, duration=parse_duration(args[1]))
    if verb == "reap":
        return Reap(dry_run="--dry-run" in options)
    if verb == "scheduler":
        return RunScheduler()
    if verb == "snapshots":
        return Snapshots()
    if verb == "doctor":
        return Doctor()
    if verb == "demo":
        raw = options.get("--scale") or "1"
        if not raw.isdigit() or not 1 <= int(raw) <= 1000:
            raise InvalidInput(f"--scale must be a whole number from 1 to 1000, not {raw!r}.")
        return Demo(scale=int(raw))
    return Help()


def _scan(options: dict[str, str | None]) -> Scan:
    source, snapshot = options.get("--source"), options.get("--snapshot")
    if (source is None) == (snapshot is None):
        raise InvalidInput("scan needs exactly one of --source and --snapshot.")
    raw = options.get("--sample")
    if raw is not None and not (raw.isdigit() and int(raw) >= 1):
        raise InvalidInput(f"--sample must be a whole number of rows, at least 1, not {raw!r}.")
    tables = tuple(t.strip() for t in (options.get("--tables") or "").split(",") if t.strip())
    return Scan(
        source=source,
        snapshot=validate_snapshot_id(snapshot) if snapshot is not None else None,
        tables=tables,
        sample=int(raw) if raw else None,
    )


def _port(raw: str) -> int:
    if not raw.isdigit() or not 1 <= int(raw) <= 65535:
        raise InvalidInput(f"--port must be a port number, not {raw!r}.")
    return int(raw)


def _kind(options: dict[str, str | None]) -> str:
    """Where a refresh puts the environment: local, ec2, shared-db (`--shared`: a database
    on the shared server) or shared (`--shared --schema`: a schema in its shared database)."""
    if "--schema" in options and "--shared" not in options:
        raise InvalidInput("--schema goes with --shared (a schema on the shared server).")
    if "--ec2" in options and "--shared" in options:
        raise InvalidInput("choose one of --ec2 and --shared.")
    if "--shared" in options:
        return "shared" if "--schema" in options else "shared-db"
    return "ec2" if "--ec2" in options else "local"
