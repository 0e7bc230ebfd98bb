"""devdb's settings, read once at the edge: each declared once, below, with its default.

`Settings.from_env()` reads `DEVDB_<KEY>` variables, then `<key>` in devdb.toml
(`provisioning/config.py` says how). The core takes what it needs as arguments; nothing
below this module reads `os.environ`.
"""

from __future__ import annotations

import getpass
import os
from datetime import timedelta
from pathlib import Path
from typing import Annotated

from pydantic import Field
from pydantic_settings import NoDecode

from provisioning.aws.settings import AwsSettings
from provisioning.config import (
    Count,
    DevdbSettings,
    Duration,
    Names,
    Place,
    PortRange,
    Words,
    default_home,
    load,
    parsed,
    setting,
    whole,
)
from provisioning.pg.volume import parse_size
from provisioning.shrink.detect import DEFAULT_REGIONS, parse_regions


def _login_name() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # a container user with no passwd entry and no $USER
        return f"uid-{os.getuid()}"


class Settings(DevdbSettings):
    """Everything configurable about one devdb installation."""

    home: Place = setting(env_only=True, default_factory=default_home)
    database_url: str | None = None
    user: str = Field(default_factory=_login_name)
    admins: Names = frozenset()
    quota: Count = 2
    default_ttl: Duration = timedelta(hours=8)
    max_lifetime: Duration = timedelta(days=7)
    restore_jobs: Count = 2
    migrations_dir: Place | None = setting(None, key="migrations")
    migrations_command: str | None = None
    migrations_env: Words = ()  # what the migrations command may see besides
    pg_bin: Place | None = None
    server_user: str | None = None
    port_range: PortRange = (54330, 54999)
    mask_salt: str | None = setting(env_only=True)  # a salt does not belong in a file
    snapshot_retention: Count = 7
    # whose phone numbers and ids the scan knows
    pii_regions: Annotated[tuple[str, ...], NoDecode, parsed(parse_regions)] = DEFAULT_REGIONS
    slack_bot_token: str | None = setting(env="SLACK_BOT_TOKEN", env_only=True)
    slack_signing_secret: str | None = setting(env="SLACK_SIGNING_SECRET", env_only=True)
    slack_app_token: str | None = setting(env="SLACK_APP_TOKEN", env_only=True)
    slack_api_url: str | None = None
    slack_admin_group: str | None = setting(None, key="admin_group")
    pg_service_file: Place = setting(
        env="PGSERVICEFILE", env_only=True, default_factory=lambda: Path.home() / ".pg_service.conf"
    )
    aws: AwsSettings = Field(default_factory=AwsSettings)
    # The scheduler (`devdb serve`, `devdb scheduler`).
    idle_ttl: Duration = timedelta(hours=4)
    reap_warning: Duration = timedelta(minutes=30)
    max_lease: Duration = timedelta(days=3)
    save_before_reap: bool = False
    # bytes of the opt-in XFS image for clones (root only)
    clone_image: Annotated[int | None, parsed(parse_size)] = None
    saved_retention: Duration = timedelta(days=14)
    pool_size: Annotated[int, whole(0)] = 0
    reap_every: Duration = timedelta(minutes=5)
    reconcile_every: Duration = timedelta(minutes=15)
    pool_every: Duration = timedelta(minutes=1)
    interruption_every: Duration = timedelta(minutes=1)  # spot warnings come 2 minutes ahead
    nightly_cron: str = "0 3 * * *"
    source_url: str | None = None  # the production database the nightly rebuild shrinks
    policy_file: Place | None = setting(None, key="policy")
    announce_channel: str | None = None  # where new snapshots are announced (a Slack channel)
    # Shared mode: the server schema and database environments live on (else an embedded one).
    shared_url: str | None = None
    shared_port: Annotated[int, whole(1024, 65535)] = 54320
    shared_connection_limit: Count = 10
    # DynamoDB environments: on AWS in this region, else in the embedded endpoint on this port.
    dynamodb_region: str | None = None
    dynamodb_role_arn: str | None = None  # a role in the account the tables go in
    dynamodb_capacity: Annotated[int, whole(0)] = 0  # read and write units; 0 is on demand
    dynamodb_port: Annotated[int, whole(1024, 65535)] = 54319
    # snapshots in S3 from this many MB of items on are loaded by ImportTable (on AWS)
    dynamodb_import_above_mb: Annotated[int, whole(0)] = 1024

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
    def from_env(cls) -> Settings:
        """The settings of this process; a bad value is one sentence naming its variable."""
        return load(cls)
