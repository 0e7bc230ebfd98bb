"""Bad input to `devdb shrink` and `devdb policy`: one sentence, exit 1, nothing published,
nothing left behind; and secrets in connection strings never reach a command line."""

from __future__ import annotations

import asyncio
import json
import stat
from collections.abc import Awaitable, Callable
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
import pytest
import yaml

from provisioning.errors import PolicyViolation, ProvisioningFailed
from provisioning.pg.dsn import redact, split_secrets
from provisioning.pg.programs import PgPrograms, first_error
from provisioning.runtime import Runtime
from provisioning.shrink.catalog import read_catalog
from provisioning.shrink.contents import account
from provisioning.shrink.pipeline import shrink
from provisioning.shrink.policy import PolicyError, parse_policy
from provisioning.snapshots.dump import list_dump, pg_dump
from tests.test_cli import devdb
from tests.test_realistic import SALT, as_policy, draft

Copier = Callable[..., Awaitable[str]]


def leftovers(runtime: Runtime) -> set[Path]:
    return set(runtime.settings.snapshots_dir.glob(".staging-*"))


async def test_naming_a_partition_instead_of_its_table_is_refused(
    runtime: Runtime, realistic_dsn: str, cli_env: dict[str, str], tmp_path: Path
) -> None:
    body = await draft(realistic_dsn)
    body["tables"]["app.events_2026_11"] = body["tables"]["app.events"]
    path = tmp_path / "policy.yml"
    path.write_text(yaml.safe_dump(body))
    checked = devdb(cli_env, "policy", "check", "--source", realistic_dsn, "--policy", str(path))
    assert checked.returncode == 1
    assert (
        "policy names app.events_2026_11, which belongs to app.events (a partition or "
        "inheritance child): name app.events instead" in checked.stdout + checked.stderr
    )
    before = leftovers(runtime), [m.id for m in await runtime.snapshots.list()]
    shrunk = devdb(cli_env, "shrink", "--source", realistic_dsn, "--policy", str(path))
    assert shrunk.returncode == 1
    errors = [line for line in shrunk.stderr.splitlines() if line.startswith("devdb:")]
    assert len(errors) == 1 and errors[0].startswith("devdb: the policy does not match the source")
    assert "app.events_2026_11, which belongs to app.events" in errors[0]
    assert "Traceback" not in shrunk.stderr
    assert (leftovers(runtime), [m.id for m in await runtime.snapshots.list()]) == before


@pytest.mark.parametrize(
    ("path", "complaint"),
    [
        ("contact.email", "starts with $"),
        ("$.contact..", "is malformed at '..'"),
        ("$[x]", "is malformed at '[x]'"),
        ("$", "names the whole document"),
    ],
)
def test_malformed_json_paths_name_the_problem(path: str, complaint: str) -> None:
    text = yaml.safe_dump(
        {
            "tables": {
                "app.users": {
                    "columns": {
                        "profile": {
                            "class": "pii",
                            "rule": "json",
                            "paths": {path: {"rule": "hash"}},
                        }
                    }
                }
            }
        }
    )
    with pytest.raises(
        PolicyError,
        match=r"policy app\.users\.profile: rule json: .*"
        + complaint.replace("$", r"\$").replace("[", r"\[").replace(".", r"\."),
    ):
        parse_policy(text)


async def test_a_malformed_json_path_through_the_command(
    realistic_dsn: str, cli_env: dict[str, str], tmp_path: Path
) -> None:
    body = await draft(realistic_dsn)
    body["tables"]["app.users"]["columns"]["profile"]["paths"] = {"$.contact[": {"rule": "hash"}}
    path = tmp_path / "policy.yml"
    path.write_text(yaml.safe_dump(body))
    result = devdb(cli_env, "shrink", "--source", realistic_dsn, "--policy", str(path))
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1, result.stderr
    assert "json path '$.contact[' is malformed" in result.stderr


async def test_a_dump_entry_nobody_can_place_stops_the_publish(
    runtime: Runtime, realistic_dsn: str, tmp_path: Path
) -> None:
    policy = as_policy(await draft(realistic_dsn))
    conn = await asyncpg.connect(realistic_dsn)
    try:
        catalog = await read_catalog(conn)
    finally:
        await conn.close()
    dump = tmp_path / "dump"
    await pg_dump(runtime.programs, realistic_dsn, dump, jobs=2, options=["--no-blobs"])
    listing = await list_dump(runtime.programs, dump)
    contents = account(listing, dump, catalog, policy)
    assert len(contents.data) == sum(len(t.members) for t in catalog.tables.values())

    # A relation the catalog does not know (say, made after it was read): its data is refused.
    settings = catalog.tables["app.settings"]
    members = {oid: v for oid, v in catalog.members.items() if oid != settings.members[0].oid}
    blind = type(catalog)(tables=catalog.tables, members=members)
    with pytest.raises(PolicyViolation, match=r"cannot account for.*TABLE DATA app settings"):
        account(listing, dump, blind, policy)
    # A stray file, and large objects the policy does not keep.
    (dump / "9999.dat").write_text("x\n")
    (dump / "blobs.toc").write_text("")
    with pytest.raises(PolicyViolation) as caught:
        account(listing, dump, catalog, policy)
    assert caught.value.problems == [
        "9999.dat: a file with no table-of-contents entry",
        "blobs.toc: large objects, which the policy does not keep",
    ]


async def test_a_source_that_goes_away_mid_dump(runtime: Runtime, scratch_copy: Copier) -> None:
    source = await scratch_copy(
        "template1",
        "create table big (id int primary key, body text);"
        "insert into big select g, repeat(md5(g::text), 8) from generate_series(1, 400000) g",
    )
    policy = parse_policy("tables: {public.big: {columns: {id: internal, body: internal}}}")
    database = urlsplit(source).path.lstrip("/")
    before = leftovers(runtime), [m.id for m in await runtime.snapshots.list()]

    async def pull_the_plug() -> None:
        admin = await asyncpg.connect(runtime.server_dsn("postgres"))
        try:
            for _ in range(400):
                gone = await admin.fetchval(
                    "select count(pg_terminate_backend(pid)) from pg_stat_activity "
                    "where datname = $1 and application_name = 'pg_dump'",
                    database,
                )
                if gone:
                    await admin.execute(
                        "select pg_terminate_backend(pid) from pg_stat_activity "
                        "where datname = $1 and pid <> pg_backend_pid()",
                        database,
                    )
                    return
                await asyncio.sleep(0.01)
        finally:
            await admin.close()

    plug = asyncio.create_task(pull_the_plug())
    await asyncio.sleep(0)
    with pytest.raises(ProvisioningFailed, match=r"^pg_dump failed: ") as caught:
        await shrink(source, policy, runtime.snapshots, runtime.programs, salt=SALT)
    await plug
    assert "\n" not in str(caught.value)
    assert (leftovers(runtime), [m.id for m in await runtime.snapshots.list()]) == before


def test_secrets_leave_connection_strings() -> None:
    cases = {
        "postgresql://app:s3cr%40t@db.internal:5432/prod?sslmode=require": (
            "postgresql://app@db.internal:5432/prod?sslmode=require",
            {"PGPASSWORD": "s3cr@t"},
        ),
        "postgresql://app@db/prod?password=hunter2&application_name=x": (
            "postgresql://app@db/prod?application_name=x",
            {"PGPASSWORD": "hunter2"},
        ),
        "postgres:///prod?passfile=/run/pgpass&service=main": (
            "postgres:///prod",
            {"PGPASSFILE": "/run/pgpass", "PGSERVICE": "main"},
        ),
        "host=db dbname=prod password='it\\'s a secret' user=app": (
            "host=db dbname=prod user=app",
            {"PGPASSWORD": "it's a secret"},
        ),
        "host=db password=plain passfile=/x/y": (
            "host=db",
            {"PGPASSWORD": "plain", "PGPASSFILE": "/x/y"},
        ),
    }
    for dsn, (bare, env) in cases.items():
        assert split_secrets(dsn) == (bare, env), dsn
        assert redact(dsn) == bare


async def test_the_source_password_never_reaches_argv_or_the_manifest(
    runtime: Runtime, scratch_copy: Copier, tmp_path: Path
) -> None:
    source = await scratch_copy(
        "template1",
        "create table t (id int primary key, note text); insert into t values (1, 'a')",
    )
    # pg_dump is wrapped to record what it was given; the server trusts local logins, so the
    # password is carried but not needed.
    real = Path(runtime.programs.path("pg_dump"))
    tools = tmp_path / "bin"
    tools.mkdir()
    for name in ("pg_restore", "psql"):
        (tools / name).symlink_to(Path(runtime.programs.path(name)))
    record = tmp_path / "record.json"
    wrapper = tools / "pg_dump"
    wrapper.write_text(
        "#!/usr/bin/env python3\n"
        "import json, os, sys\n"
        "seen = {'argv': sys.argv, 'password': os.environ.get('PGPASSWORD')}\n"
        f"json.dump(seen, open({str(record)!r}, 'w'))\n"
        f"os.execv({str(real)!r}, [{str(real)!r}, *sys.argv[1:]])\n"
    )
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR)
    programs = PgPrograms(tools)
    with_password = source.replace("?", "?password=Sup3r-Secret&", 1)
    policy = parse_policy("tables: {public.t: {columns: {id: internal, note: internal}}}")
    manifest = await shrink(with_password, policy, runtime.snapshots, programs, salt=SALT)
    seen = json.loads(record.read_text())
    assert seen["password"] == "Sup3r-Secret"
    assert not any("Sup3r-Secret" in arg for arg in seen["argv"])
    assert "Sup3r-Secret" not in manifest.to_json() and "password" not in manifest.source
    await runtime.snapshots.delete(manifest.id)


def test_the_first_error_and_its_detail_are_what_the_user_sees() -> None:
    log = (
        "pg_restore: creating TABLE public.child\n"
        "pg_restore: error: could not execute query: ERROR:  insert or update on table "
        '"child" violates foreign key constraint "child_parent_id_fkey"\n'
        'DETAIL:  Key (parent_id)=(7) is not present in table "parent".\n'
        "Command was: ALTER TABLE ONLY public.child ADD CONSTRAINT ...\n"
        "pg_restore: error: a worker process died unexpectedly\n"
    )
    assert first_error(log, 1) == (
        'insert or update on table "child" violates foreign key constraint '
        '"child_parent_id_fkey" (Key (parent_id)=(7) is not present in table "parent".)'
    )
    assert first_error("pg_dump: error: connection lost\n", 1) == "connection lost"
    assert first_error("", 3) == "exit status 3"
