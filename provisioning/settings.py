"""devdb's settings, read once at the edge (environment variables and an optional devdb.toml).

The core takes what it needs as arguments; nothing below this module reads `os.environ`.
"""

from __future__ import annotations

import getpass
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from provisioning.aws.settings import AwsSettings
from provisioning.durations import parse_duration
from provisioning.errors import InvalidInput
from provisioning.pg.volume import parse_size
from provisioning.shrink.detect import DEFAULT_REGIONS, parse_regions


def _login_name() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # a container user with no passwd entry and no $USER
        return f"uid-{os.getuid()}"


def _default_home(environ: Mapping[str, str]) -> Path:
    if os.geteuid() == 0:
        # root's home is usually private (0700), so the unprivileged account that runs the
        # PostgreSQL servers could not enter it: keep state where system services keep theirs.
        return Path("/var/lib/devdb")
    data = environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(data) / "devdb"


@dataclass(frozen=True, kw_only=True)
class Settings:
    """Everything configurable about one devdb installation."""

    home: Path
    database_url: str | None = None
    user: str = field(default_factory=_login_name)
    admins: frozenset[str] = frozenset()
    quota: int = 2
    default_ttl: timedelta = timedelta(hours=8)
    max_lifetime: timedelta = timedelta(days=7)
    restore_jobs: int = 2
    migrations_dir: Path | None = None
    migrations_command: str | None = None
    migrations_env: tuple[str, ...] = ()  # what the migrations command may see besides
    pg_bin: Path | None = None
    server_user: str | None = None
    port_range: tuple[int, int] = (54330, 54999)
    mask_salt: str | None = None
    snapshot_retention: int = 7
    pii_regions: tuple[str, ...] = DEFAULT_REGIONS  # whose phone numbers and ids the scan knows
    slack_bot_token: str | None = None
    slack_signing_secret: str | None = None
    slack_app_token: str | None = None
    slack_api_url: str | None = None
    slack_admin_group: str | None = None
    pg_service_file: Path = field(default_factory=lambda: Path.home() / ".pg_service.conf")
    aws: AwsSettings = field(default_factory=AwsSettings)
    # The scheduler (`devdb serve`, `devdb scheduler`).
    idle_ttl: timedelta = timedelta(hours=4)
    reap_warning: timedelta = timedelta(minutes=30)
    max_lease: timedelta = timedelta(days=3)
    save_before_reap: bool = False
    clone_image: int | None = None  # bytes of the opt-in XFS image for clones (root only)
    saved_retention: timedelta = timedelta(days=14)
    pool_size: int = 0
    reap_every: timedelta = timedelta(minutes=5)
    reconcile_every: timedelta = timedelta(minutes=15)
    pool_every: timedelta = timedelta(minutes=1)
    interruption_every: timedelta = timedelta(minutes=1)  # spot warnings come 2 minutes ahead
    nightly_cron: str = "0 3 * * *"
    source_url: str | None = None  # the production database the nightly rebuild shrinks
    policy_file: Path | None = None
    announce_channel: str | None = None  # where new snapshots are announced (a Slack channel)
    # Shared mode: the server schema and database environments live on (else an embedded one).
    shared_url: str | None = None
    shared_port: int = 54320
    shared_connection_limit: int = 10

    @property
    def snapshots_dir(self) -> Path:
        return self.home / "snapshots"

    @property
    def secrets_dir(self) -> Path:
        return self.home / "secrets"

    @property
    def cache_dir(self) -> Path:
        return self.home / "cache"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Build settings from `DEVDB_*` variables, then `devdb.toml`, then defaults."""
        env = dict(os.environ if environ is None else environ)
        home = Path(env.get("DEVDB_HOME") or _default_home(env)).expanduser()
        config_path = Path(env.get("DEVDB_CONFIG") or home / "devdb.toml")
        file_values: dict[str, object] = {}
        if config_path.is_file():
            try:
                file_values = tomllib.loads(config_path.read_text())
            except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
                raise InvalidInput(f"{config_path} is not valid TOML: {exc}.") from exc

        def pick(key: str) -> str | None:
            value = env.get(f"DEVDB_{key.upper()}")
            if value is None and key in file_values:
                value = str(file_values[key])
            return value or None

        kwargs: dict[str, object] = {"home": home}
        if (url := pick("database_url")) is not None:
            kwargs["database_url"] = url
        if (user := pick("user")) is not None:
            kwargs["user"] = user
        if (admins := pick("admins")) is not None:
            kwargs["admins"] = frozenset(a.strip() for a in admins.split(",") if a.strip())
        for key in ("SLACK_BOT_TOKEN", "SLACK_SIGNING_SECRET", "SLACK_APP_TOKEN"):
            if env.get(key):  # secrets: from the environment only, never from devdb.toml
                kwargs[key.lower()] = env[key]
        if (raw := pick("slack_api_url")) is not None:
            kwargs["slack_api_url"] = raw
        if (raw := pick("admin_group")) is not None:
            kwargs["slack_admin_group"] = raw
        if (raw := env.get("DEVDB_MASK_SALT")) is not None:
            kwargs["mask_salt"] = raw  # never from devdb.toml: a salt does not belong in a file
        if (raw := pick("pii_regions")) is not None:
            try:
                kwargs["pii_regions"] = parse_regions(raw)
            except ValueError as exc:
                raise InvalidInput(f"DEVDB_PII_REGIONS: {exc}.") from exc
        if (raw := pick("shared_port")) is not None:
            if not raw.isdigit() or not 1024 <= int(raw) <= 65535:
                raise InvalidInput(f"DEVDB_SHARED_PORT must be a port number, not {raw!r}.")
            kwargs["shared_port"] = int(raw)
        for key in ("quota", "restore_jobs", "snapshot_retention", "shared_connection_limit"):
            if (raw := pick(key)) is not None:
                kwargs[key] = _positive_int(f"DEVDB_{key.upper()}", raw)
        if (raw := pick("pool_size")) is not None:
            kwargs["pool_size"] = 0 if raw == "0" else _positive_int("DEVDB_POOL_SIZE", raw)
        if raw := pick("clone_image"):
            kwargs["clone_image"] = parse_size(raw)
        if (raw := pick("save_before_reap")) is not None:
            kwargs["save_before_reap"] = raw.lower() in ("1", "true", "yes", "on")
        for key in ("nightly_cron", "source_url", "announce_channel", "shared_url"):
            if (raw := pick(key)) is not None:
                kwargs[key] = raw
        if (raw := pick("policy")) is not None:
            kwargs["policy_file"] = Path(raw).expanduser()
        for key in (
            "default_ttl",
            "max_lifetime",
            "idle_ttl",
            "reap_warning",
            "max_lease",
            "saved_retention",
            "reap_every",
            "reconcile_every",
            "pool_every",
            "interruption_every",
        ):
            if (raw := pick(key)) is not None:
                kwargs[key] = parse_duration(raw)
        if (raw := pick("migrations")) is not None:
            kwargs["migrations_dir"] = Path(raw).expanduser()
        if (raw := pick("migrations_command")) is not None:
            kwargs["migrations_command"] = raw
        if (raw := pick("migrations_env")) is not None:
            kwargs["migrations_env"] = tuple(n.strip() for n in raw.split(",") if n.strip())
        if (raw := pick("pg_bin")) is not None:
            kwargs["pg_bin"] = Path(raw).expanduser()
        if (raw := pick("server_user")) is not None:
            kwargs["server_user"] = raw
        if (raw := pick("port_range")) is not None:
            kwargs["port_range"] = _port_range(raw)
        kwargs["aws"] = AwsSettings.from_values(pick)
        service_file = env.get("PGSERVICEFILE")
        if service_file:
            kwargs["pg_service_file"] = Path(service_file).expanduser()
        return cls(**kwargs)  # type: ignore[arg-type]


def _positive_int(name: str, raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise InvalidInput(f"{name} must be a whole number of at least 1, not {raw!r}.")
    return value


def _port_range(raw: str) -> tuple[int, int]:
    low, sep, high = raw.partition("-")
    try:
        start, end = int(low), int(high)
    except ValueError:
        start = end = 0
    if not sep or not 1024 <= start <= end <= 65535:
        raise InvalidInput(f"DEVDB_PORT_RANGE must look like 54330-54999, not {raw!r}.")
    return start, end
