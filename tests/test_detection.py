"""Personal data of every configured region, planted in text, json and array columns under
neutral names: the shrink gate refuses it, `devdb scan` finds it in a database and in a
snapshot, `policy init` marks the columns pii, and lookalikes with bad checksums pass."""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable

import pytest

from provisioning.demo import demo_policy
from provisioning.errors import PolicyViolation
from provisioning.runtime import Runtime
from provisioning.shrink.pipeline import shrink
from provisioning.shrink.policy import parse_policy
from provisioning.snapshots.dump import dump_snapshot
from provisioning.snapshots.manifest import Manifest
from tests.test_cli import devdb
from tests.test_masking import WORLD
from tests.test_realistic import as_policy, draft
from tests.test_shrink import chinook_policy

Copier = Callable[..., Awaitable[str]]
SALT = b"detection-salt"
PLANTED = [(value, kind) for found, _ in WORLD.values() for value, kind in found.items()]
LOOKALIKES = [value for _, lookalikes in WORLD.values() for value in lookalikes]


def sql_text(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def setup_sql() -> str:
    """One row per planted value: in a text column, inside a json document and in an array,
    all under names that say nothing; and the same for the lookalikes, in another table."""
    rows = []
    for index, (value, _) in enumerate(PLANTED):
        rows.append(
            f"({index}, {sql_text('ref ' + value)}, "
            f"jsonb_build_object('meta', jsonb_build_object('v', {sql_text(value)})), "
            f"array['x', {sql_text(value)}])"
        )
    fakes = [
        f"({index}, {sql_text('ref ' + value)}, "
        f"jsonb_build_object('meta', jsonb_build_object('v', {sql_text(value)})), "
        f"array['x', {sql_text(value)}])"
        for index, value in enumerate(LOOKALIKES)
    ]
    return f"""
        create table public.records (id int primary key, label text, attrs jsonb, bits text[]);
        create table public.codes (id int primary key, label text, attrs jsonb, bits text[]);
        insert into public.records values {", ".join(rows)};
        insert into public.codes values {", ".join(fakes)};
    """


POLICY = """
tables:
  public.records: {columns: {id: internal, label: internal, attrs: internal, bits: internal}}
  public.codes: {columns: {id: internal, label: internal, attrs: internal, bits: internal}}
"""


@pytest.fixture
async def planted(scratch_copy: Copier) -> str:
    return await scratch_copy("template1", setup_sql())


def kinds_found(problems: list[str], column: str) -> set[str]:
    return {p.split(": ", 1)[1].split(" ", 2)[1] for p in problems if f".{column}:" in p}


async def test_the_gate_refuses_every_planted_kind_and_passes_lookalikes(
    runtime: Runtime, planted: str
) -> None:
    expected = {kind for _, kind in PLANTED}
    with pytest.raises(PolicyViolation) as caught:
        await shrink(planted, parse_policy(POLICY), runtime.snapshots, runtime.programs, salt=SALT)
    problems = caught.value.problems
    assert all(p.startswith("public.records.") for p in problems), problems
    for column in ("label", "attrs", "bits"):
        assert kinds_found(problems, column) == expected, column
    for value, _ in PLANTED:
        assert value not in "\n".join(problems), "samples are redacted"
    lookalikes_only = parse_policy(
        POLICY.replace("public.records: {", "public.records: {action: drop, ")
    )
    manifest = await shrink(
        planted, lookalikes_only, runtime.snapshots, runtime.programs, salt=SALT
    )
    assert manifest.tables["public.codes"].rows == len(LOOKALIKES)
    await runtime.snapshots.delete(manifest.id)


async def test_policy_init_marks_the_planted_columns_whatever_their_names(planted: str) -> None:
    body = await draft(planted)
    records = body["tables"]["public.records"]["columns"]
    assert records["label"]["class"] in ("pii", "secret")
    assert records["bits"]["class"] in ("pii", "secret")
    assert records["attrs"]["rule"] == "json" and "$.meta.v" in records["attrs"]["paths"]
    codes = body["tables"]["public.codes"]["columns"]
    assert codes == {"id": "internal", "label": "internal", "attrs": "internal", "bits": "internal"}


async def test_devdb_scan_finds_them_in_a_database_and_in_a_snapshot(
    runtime: Runtime, planted: str, cli_env: dict[str, str]
) -> None:
    expected = {kind for _, kind in PLANTED}
    result = devdb(cli_env, "--json", "scan", "--source", planted)
    assert result.returncode == 1, result.stderr
    report = json.loads(result.stdout)
    assert report["tables"] == 2 and report["rows"] == len(PLANTED) + len(LOOKALIKES)
    assert {f["table"] for f in report["findings"]} == {"public.records"}
    for column in ("label", "attrs", "bits"):
        assert {f["kind"] for f in report["findings"] if f["column"] == column} == expected

    manifest = await dump_snapshot(planted, runtime.snapshots, runtime.programs)
    try:
        result = devdb(cli_env, "scan", "--snapshot", manifest.id)
        assert result.returncode == 1, result.stderr
        lines = result.stdout.splitlines()
        assert lines[-1].startswith(f"Scanned snapshot {manifest.id}: 2 table(s)")
        for kind in expected:
            pattern = rf"public\.records\.label: \d+ {re.escape(kind)} value"
            assert any(re.search(pattern, line) for line in lines), kind
        only = devdb(
            cli_env, "--json", "scan", "--snapshot", manifest.id, "--tables", "public.codes"
        )
        assert only.returncode == 0 and json.loads(only.stdout)["findings"] == []
    finally:
        await runtime.snapshots.delete(manifest.id)
    sampled = json.loads(
        devdb(cli_env, "--json", "scan", "--source", planted, "--sample", "2").stdout
    )
    assert sampled["rows"] == 4
    bad = devdb(cli_env, "scan", "--source", planted, "--tables", "public.nope")
    assert bad.returncode == 1 and bad.stderr.strip() == (
        "devdb: there is no table public.nope to scan (name it as schema.table)."
    )
    both = devdb(cli_env, "scan", "--source", planted, "--snapshot", "x")
    assert both.returncode == 2 and "exactly one of --source and --snapshot" in both.stderr


async def test_masked_snapshots_of_real_looking_databases_hold_nothing(
    runtime: Runtime,
    chinook_dsn: str,
    realistic_dsn: str,
    demo_snapshot: Manifest,
    cli_env: dict[str, str],
) -> None:
    made = [
        await shrink(chinook_dsn, chinook_policy(), runtime.snapshots, runtime.programs, salt=SALT),
        await shrink(
            runtime.server_dsn("devdb_demo"),
            demo_policy(),
            runtime.snapshots,
            runtime.programs,
            salt=SALT,
        ),
        await shrink(
            realistic_dsn,
            as_policy(await draft(realistic_dsn)),
            runtime.snapshots,
            runtime.programs,
            salt=SALT,
        ),
    ]
    try:
        for manifest in made:
            result = devdb(cli_env, "--json", "scan", "--snapshot", manifest.id)
            report = json.loads(result.stdout)
            assert result.returncode == 0 and report["findings"] == [], report["findings"][:3]
            assert report["rows"] == manifest.rows
    finally:
        for manifest in made:
            await runtime.snapshots.delete(manifest.id)
    # The unmasked sources do hold personal data, and the scan says where.
    source = devdb(cli_env, "--json", "scan", "--source", realistic_dsn, "--sample", "50")
    found = {(f["table"], f["column"]) for f in json.loads(source.stdout)["findings"]}
    assert source.returncode == 1 and ("app.users", "email") in found
