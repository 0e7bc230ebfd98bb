"""The `devdb` command as a person (or a script) runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from provisioning.pg.programs import PgPrograms
from provisioning.snapshots.manifest import Manifest
from tests.conftest import unique


def devdb(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bot.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def psql(env: dict[str, str], service: str, sql: str) -> str:
    result = subprocess.run(
        [PgPrograms().path("psql"), f"service={service}", "-Atc", sql],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, f"psql service={service}: {result.stderr.strip()}"
    return result.stdout.strip()


async def test_refresh_status_list_extend_destroy(
    cli_env: dict[str, str], demo_snapshot: Manifest
) -> None:
    name = unique("cli")
    made = devdb(cli_env, "--json", "refresh", name, "--snapshot", demo_snapshot.id)
    assert made.returncode == 0, made.stderr
    created = json.loads(made.stdout)
    assert created["state"] == "ready" and created["owner"] == "carol"

    assert psql(cli_env, f"devdb-{name}", "select count(*) from contacts") == "2000"
    service_file = Path(cli_env["PGSERVICEFILE"])
    assert oct(service_file.stat().st_mode & 0o777) == "0o600"

    status = json.loads(devdb(cli_env, "--json", "status", name).stdout)
    for key in ("name", "state", "owner", "dsn", "snapshot"):
        assert status[key], key
    assert status["snapshot"] == demo_snapshot.id
    assert status["dsn"].startswith("postgresql://dev:")

    listed = devdb(cli_env, "list")
    assert listed.returncode == 0 and name in listed.stdout and "ready" in listed.stdout
    # The session's home is on ext4 here, or on a reflink filesystem elsewhere.
    assert "New local environments here are" in listed.stdout
    everyone = json.loads(devdb(cli_env, "--json", "list", "--all").stdout)
    assert name in {entry["name"] for entry in everyone}
    assert all(entry["dsn"] is None for entry in everyone), "list never carries passwords"

    extended = devdb(cli_env, "extend", name, "4h")
    assert extended.returncode == 0 and "now expires at" in extended.stdout

    other = {**cli_env, "DEVDB_USER": "mallory"}
    refused = devdb(other, "destroy", name)
    assert refused.returncode == 1
    assert refused.stderr.strip() == (
        f"devdb: '{name}' belongs to carol; only its owner or an admin may destroy it."
    )

    gone = devdb(cli_env, "destroy", name)
    assert gone.returncode == 0, gone.stderr
    assert f"[devdb-{name}]" not in service_file.read_text()
    missing = devdb(cli_env, "status", name)
    assert missing.returncode == 1 and "no environment named" in missing.stderr

    # The audit log: the owner sees what was done to it, newest first; mallory's refused
    # attempt is hers, so she sees it, and she may not read carol's entries by name.
    audit = json.loads(devdb(cli_env, "--json", "audit", name, "--since", "1h").stdout)
    actions = [(entry["actor"], entry["action"], entry["result"]) for entry in audit]
    assert ("carol", "destroy", "destroyed") in actions and actions[-1][1] == "refresh"
    assert audit == sorted(audit, key=lambda e: e["id"], reverse=True)
    theirs = json.loads(devdb(other, "--json", "audit", name).stdout)
    assert {entry["actor"] for entry in theirs} == {"mallory"}
    nosy = devdb(other, "audit", "--user", "carol")
    assert nosy.returncode == 1 and "only an admin" in nosy.stderr
    admin = devdb({**cli_env, "DEVDB_USER": "boss"}, "audit", "--user", "carol")
    assert admin.returncode == 0 and name in admin.stdout
    bad = devdb(cli_env, "audit", "--since", "soon")
    assert bad.returncode == 2 and "is not a duration" in bad.stderr


async def test_snapshots_and_help(cli_env: dict[str, str], demo_snapshot: Manifest) -> None:
    shown = devdb(cli_env, "snapshots")
    assert shown.returncode == 0 and demo_snapshot.id in shown.stdout
    listed = json.loads(devdb(cli_env, "--json", "snapshots").stdout)
    assert demo_snapshot.id in {entry["id"] for entry in listed}
    helped = devdb(cli_env, "help")
    assert helped.returncode == 0 and "refresh [NAME]" in helped.stdout
    one = devdb(cli_env, "help", "restore")
    assert one.returncode == 0 and "--clean" in one.stdout and "replace what" in one.stdout
    usage = devdb(cli_env, "restore", "--clean")
    assert usage.returncode == 2
    assert usage.stderr.splitlines() == [
        "devdb: restore needs --into URL.",
        "usage: devdb restore [--snapshot ID] --into URL [--clean]",
    ]


@pytest.mark.parametrize(
    ("args", "code", "sentence"),
    [
        (["bogus"], 2, "unknown command 'bogus'"),
        (["refresh", "../x"], 2, "not a valid environment name"),
        (["refresh", "a;drop table"], 2, "not a valid environment name"),
        (["refresh", "y" * 200], 2, "not a valid environment name"),
        (["refresh", ""], 2, "not a valid environment name"),
        (["extend", "x", "soon"], 2, "'soon' is not a duration"),
        (["refresh", "--snapshot", "no-such-snapshot"], 1, "there is no snapshot"),
        (["destroy", "nobody-has-this"], 1, "no environment named"),
    ],
)
async def test_bad_input_gets_one_sentence(
    cli_env: dict[str, str], args: list[str], code: int, sentence: str, demo_snapshot: Manifest
) -> None:
    result = devdb(cli_env, *args)
    assert result.returncode == code
    assert "Traceback" not in result.stderr + result.stdout
    first = result.stderr.splitlines()[0]
    assert first.startswith("devdb: ") and sentence in first


async def test_json_errors_are_json(cli_env: dict[str, str]) -> None:
    result = devdb(cli_env, "--json", "status", "nobody-has-this")
    assert result.returncode == 1
    assert "no environment named" in json.loads(result.stdout)["error"]


async def test_missing_pg_restore(
    cli_env: dict[str, str], demo_snapshot: Manifest, tmp_path: Path
) -> None:
    for program in ("initdb", "pg_ctl", "postgres"):
        os.symlink(PgPrograms().path(program), tmp_path / program)
    env = {**cli_env, "DEVDB_PG_BIN": str(tmp_path)}
    result = devdb(env, "refresh", unique("nobin"), "--snapshot", demo_snapshot.id)
    assert result.returncode == 1
    assert result.stderr.startswith("devdb: pg_restore was not found in DEVDB_PG_BIN")
    assert "Traceback" not in result.stderr


async def test_unreachable_home_for_the_server_account(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("only root hands the server to another account")
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    inner = private / "inner"
    inner.mkdir()
    os.chmod(private, 0o700)
    env = {**os.environ, "DEVDB_HOME": str(inner / "home")}
    result = devdb(env, "list")
    assert result.returncode == 1
    assert "cannot enter" in result.stderr and "set DEVDB_HOME" in result.stderr


POLICY = Path(__file__).parent / "data" / "chinook_policy.yml"


async def test_policy_init_and_check(
    cli_env: dict[str, str], chinook_dsn: str, tmp_path: Path
) -> None:
    out = tmp_path / "policy.yml"
    drafted = devdb(cli_env, "policy", "init", "--source", chinook_dsn, "--out", str(out))
    assert drafted.returncode == 0, drafted.stderr
    assert "11 tables" in drafted.stdout
    text = out.read_text()
    assert "email: {class: pii, rule: fake, kind: email}" in text
    assert "birth_date: {class: pii, rule: date_shift, days: 180}" in text
    assert "genre_id: internal, name: internal" in text  # a genre's name is not a person's
    again = devdb(cli_env, "policy", "init", "--source", chinook_dsn, "--out", str(out))
    assert again.returncode == 1 and "already exists" in again.stderr

    ok = devdb(cli_env, "policy", "check", "--source", chinook_dsn, "--policy", str(out))
    assert ok.returncode == 0 and "covers all 11 tables" in ok.stdout
    partial = tmp_path / "partial.yml"
    partial.write_text(text.replace("      email: {class: pii, rule: fake, kind: email}\n", "", 1))
    bad = devdb(cli_env, "policy", "check", "--source", chinook_dsn, "--policy", str(partial))
    assert bad.returncode == 1
    assert "column public.customer.email is not classified" in bad.stdout
    assert bad.stderr.strip() == "devdb: the policy does not match the database: 1 problem(s)."
    as_json = json.loads(
        devdb(
            cli_env, "--json", "policy", "check", "--source", chinook_dsn, "--policy", str(partial)
        ).stdout
    )
    assert as_json["problems"] == ["column public.customer.email is not classified"]


async def test_shrink_from_the_terminal(cli_env: dict[str, str], chinook_dsn: str) -> None:
    made = devdb(cli_env, "--json", "shrink", "--source", chinook_dsn, "--policy", str(POLICY))
    assert made.returncode == 0, made.stderr
    snapshot = json.loads(made.stdout)
    assert snapshot["tables"]["public.customer"] == 5
    name = unique("masked")
    refreshed = devdb(cli_env, "refresh", name, "--snapshot", snapshot["id"])
    assert refreshed.returncode == 0, refreshed.stderr
    assert psql(cli_env, f"devdb-{name}", "select count(*) from invoice") == "35"
    assert devdb(cli_env, "destroy", name).returncode == 0


@pytest.mark.parametrize(
    ("args", "sentence"),
    [
        (["shrink", "--source", "x", "--policy", "/nonexistent.yml"], "cannot be read"),
        (["shrink", "--policy", "p.yml"], "shrink needs --source DSN."),
        (
            [
                "policy",
                "check",
                "--source",
                "postgresql://nobody@127.0.0.1:1/none",
                "--policy",
                str(POLICY),
            ],
            "could not be reached",
        ),
        (["policy", "bless"], "policy takes check or init, not 'bless'."),
    ],
)
async def test_shrink_and_policy_bad_input(
    cli_env: dict[str, str], args: list[str], sentence: str
) -> None:
    result = devdb(cli_env, *args)
    assert result.returncode in (1, 2)
    assert "Traceback" not in result.stderr + result.stdout
    assert sentence in result.stderr.splitlines()[0]
