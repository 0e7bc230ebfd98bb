"""Files devdb writes or reads: pg_service.conf entries, settings, snapshot manifests."""

from __future__ import annotations

import gzip
import os
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bot import pgservice
from provisioning.aws.settings import AwsSettings
from provisioning.config import env_name
from provisioning.durations import format_duration
from provisioning.errors import InvalidInput, SnapshotInvalid
from provisioning.models import Endpoint
from provisioning.settings import Settings
from provisioning.snapshots.manifest import FileEntry, Manifest, describe_files, verify
from tests.conftest import Configured

ROOT = Path(__file__).resolve().parent.parent
ENDPOINT = Endpoint(host="127.0.0.1", port=55001, database="app", user="dev", password="s3cret")


def test_service_file_keeps_other_sections(tmp_path: Path) -> None:
    path = tmp_path / "pg_service.conf"
    path.write_text("# mine\n[prod-readonly]\nhost=db.internal\n\n[devdb-app]\nhost=old\n")
    pgservice.write_entry(path, "app", ENDPOINT)
    text = path.read_text()
    assert "# mine\n[prod-readonly]\nhost=db.internal" in text
    assert "host=old" not in text and "port=55001" in text and "password=s3cret" in text
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    pgservice.write_entry(path, "other", ENDPOINT)
    pgservice.remove_entry(path, "app")
    text = path.read_text()
    assert "[devdb-app]" not in text and "[devdb-other]" in text and "[prod-readonly]" in text


def test_settings_from_environment(tmp_path: Path, configured: Configured) -> None:
    (tmp_path / "devdb.toml").write_text('quota = 5\nadmins = "ann, bob"\n')
    settings = configured(
        {
            "DEVDB_HOME": str(tmp_path),
            "DEVDB_USER": "zoe",
            "DEVDB_DEFAULT_TTL": "2h",
            "DEVDB_PORT_RANGE": "60000-60010",
        }
    )
    assert settings.quota == 5 and settings.admins == {"ann", "bob"}
    assert settings.user == "zoe" and settings.default_ttl == timedelta(hours=2)
    assert settings.port_range == (60000, 60010)
    for key, value, message in [
        ("DEVDB_QUOTA", "-1", "at least 1"),
        ("DEVDB_PORT_RANGE", "9-1", "must look like"),
        ("DEVDB_DEFAULT_TTL", "forever", "DEVDB_DEFAULT_TTL must be a duration"),
    ]:
        with pytest.raises(InvalidInput, match=message):
            configured({"DEVDB_HOME": str(tmp_path), key: value})
    aws = configured(
        {
            "DEVDB_HOME": str(tmp_path),
            "DEVDB_S3_BUCKET": "snaps",
            "DEVDB_EC2_AMI": "ami-1",
            "DEVDB_EC2_SUBNETS": "subnet-a, subnet-b",
            "DEVDB_EC2_INSTANCE_TYPES": "m6i.large",
            "DEVDB_EC2_ALLOW_CIDR": "10.1.2.3/16",
            "DEVDB_MONTHLY_CAP": "250",
            "DEVDB_TEAMS": "data:ann,bob;web:cy",
            "DEVDB_AUTO_REPLACE": "yes",
        }
    ).aws
    assert aws.bucket == "snaps" and aws.ami == "ami-1" and aws.ec2_enabled
    assert aws.subnets == ("subnet-a", "subnet-b") and aws.instance_types == ("m6i.large",)
    assert aws.allow_cidr == "10.1.0.0/16" and aws.monthly_cap == 250.0 and aws.auto_replace
    assert aws.teams == {"data": {"ann", "bob"}, "web": {"cy"}}
    for key, value, message in [
        ("DEVDB_EC2_ALLOW_CIDR", "everyone", "must be a network"),
        ("DEVDB_MONTHLY_CAP", "lots", "amount in dollars"),
        ("DEVDB_TEAMS", "ann,bob", "must look like"),
    ]:
        with pytest.raises(InvalidInput, match=message):
            configured({"DEVDB_HOME": str(tmp_path), key: value})
    (tmp_path / "devdb.toml").write_text("quota = [")
    with pytest.raises(InvalidInput, match="not valid TOML"):
        configured({"DEVDB_HOME": str(tmp_path)})


def test_the_config_file(tmp_path: Path, configured: Configured) -> None:
    """devdb.toml holds the same keys as the environment, typed by TOML or as text; the
    environment wins; a key devdb does not know, or a secret, is refused in one sentence."""
    config = tmp_path / "devdb.toml"
    config.write_text(
        "\n".join(
            [
                'idle_ttl = "2h"',
                "restore_jobs = 4",
                'admins = ["ann", "bob"]',
                'policy = "~/policy.yml"',  # a key named unlike its field
                'ec2_instance_types = "m7i.large"',  # an AWS key, read into settings.aws
                "monthly_cap = 90",
                "save_before_reap = true",
                'ec2_ami = "ami-from-file"',
                'migrations = ""',  # empty: unset, as an empty variable is
            ]
        )
    )
    settings = configured(
        {
            "DEVDB_HOME": str(tmp_path),
            "DEVDB_RESTORE_JOBS": "3",  # the environment wins, for a renamed key too
            "DEVDB_EC2_AMI": "ami-from-env",
            "DEVDB_BUCKET": "not-a-setting",  # only DEVDB_S3_BUCKET names the bucket
            "DEVDB_AWS": "x",  # nor is the group of AWS settings one
        }
    )
    assert settings.idle_ttl == timedelta(hours=2) and settings.restore_jobs == 3
    assert settings.admins == {"ann", "bob"} and settings.save_before_reap
    assert settings.policy_file == Path.home() / "policy.yml" and settings.migrations_dir is None
    assert settings.aws.instance_types == ("m7i.large",) and settings.aws.monthly_cap == 90
    assert settings.aws.ami == "ami-from-env" and settings.aws.bucket is None
    # Built with arguments (a test's, a benchmark's), settings read no variable and no file.
    assert Settings(home=tmp_path).quota == 2 and Settings(home=tmp_path).restore_jobs == 2
    for text, message in [
        ("restore_jobs = 0", "DEVDB_RESTORE_JOBS must be a whole number of at least 1, not '0'"),
        ("qouta = 3", "has a setting devdb does not know: 'qouta'"),
        (
            'mask_salt = "pepper"',
            "may not hold 'mask_salt': set DEVDB_MASK_SALT in the environment",
        ),
        ('slack_bot_token = "xoxb"', "set SLACK_BOT_TOKEN in the environment"),
        ('home = "/elsewhere"', "set DEVDB_HOME in the environment"),
        ('idle_ttl = "soon"', "DEVDB_IDLE_TTL must be a duration like 30m"),
        ('save_before_reap = "maybe"', "DEVDB_SAVE_BEFORE_REAP: input should be a valid boolean"),
        ('quota = "²"', "DEVDB_QUOTA must be a whole number of at least 1, not '²'"),
    ]:
        config.write_text(text)
        with pytest.raises(InvalidInput, match=message):
            configured({"DEVDB_HOME": str(tmp_path)})
    other = tmp_path / "elsewhere.toml"
    other.write_text("quota = 9")
    assert configured({"DEVDB_HOME": str(tmp_path), "DEVDB_CONFIG": str(other)}).quota == 9


def test_the_documented_defaults_are_the_declared_ones() -> None:
    """The README's and docs/aws.md's tables name every setting, and where they state a
    default value it is the declared one (the declaration is the one place for it)."""
    docs = (ROOT / "README.md").read_text() + (ROOT / "docs" / "aws.md").read_text()
    declared = {
        env_name(name, field): field
        for cls in (Settings, AwsSettings)
        for name, field in cls.model_fields.items()
        if name != "aws"
    }
    assert [name for name in declared if name not in docs] == []
    checked = 0
    for row in re.findall(r"^\| (`[A-Z_]+`.*?) \| (.*?) \| .* \|$", docs, re.MULTILINE):
        names = re.findall(r"`([A-Z_]+)`", row[0])
        stated = re.split(r" / |, ", row[1]) if len(names) > 1 else [row[1]]
        for name, cell in zip(names, stated, strict=False):
            field = declared.get(name)
            if field is None or field.default_factory is not None or not field.default:
                continue  # prose for a computed default, or for none
            shown = cell.split(" (")[0].strip("`")
            assert shown == _shown(field.default), (name, cell)
            checked += 1
    assert checked >= 16  # every row that states a value


def _shown(value: object) -> str:
    if isinstance(value, timedelta):
        return format_duration(value)
    if isinstance(value, tuple) and all(isinstance(part, int) for part in value):
        return "-".join(str(part) for part in value)
    if isinstance(value, tuple):
        return ",".join(value)
    return "yes" if value is True else str(value)


def test_data_bytes_count_every_gzip_member(tmp_path: Path) -> None:
    payload = b"row\t1\n" * 50_000
    (tmp_path / "1.dat.gz").write_bytes(gzip.compress(payload[:100]) + gzip.compress(payload[100:]))
    (tmp_path / "toc.dat").write_bytes(b"toc")
    described = describe_files(tmp_path)
    assert described["1.dat.gz"][2] == len(payload)
    assert described["toc.dat"][1:] == (3, 3)


def test_verify_rejects_damage_and_unsafe_names(tmp_path: Path) -> None:
    (tmp_path / "toc.dat").write_bytes(b"toc")
    sha, size, _ = describe_files(tmp_path)["toc.dat"]
    good = Manifest(
        id="s1",
        created=datetime.now(UTC),
        source="x",
        pg_version="15",
        files={"toc.dat": FileEntry(sha256=sha, size=size)},
        tables={},
    )
    verify(tmp_path, good)
    assert Manifest.from_json(good.to_json()) == good
    (tmp_path / "toc.dat").write_bytes(b"TOC")
    with pytest.raises(SnapshotInvalid, match="does not match its checksum"):
        verify(tmp_path, good)
    unsafe = Manifest(
        id="s1",
        created=good.created,
        source="x",
        pg_version="15",
        files={**good.files, "../escape": FileEntry(sha256=sha, size=size)},
        tables={},
    )
    with pytest.raises(SnapshotInvalid, match="unsafe file name"):
        verify(tmp_path, unsafe)
    with pytest.raises(SnapshotInvalid, match="unreadable"):
        Manifest.from_json('{"format": 1, "id": "../x"}')


def test_user_without_a_login_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, configured: Configured
) -> None:
    def no_name() -> str:
        raise KeyError("getpwuid(): uid not found")

    monkeypatch.setattr("getpass.getuser", no_name)
    settings = configured({"DEVDB_HOME": str(tmp_path)})
    assert settings.user == f"uid-{os.getuid()}"
