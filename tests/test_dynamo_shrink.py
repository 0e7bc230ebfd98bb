"""Dev-safe snapshots of a DynamoDB source, against moto's server.

The "production" here looks like real DynamoDB data: tables under a prefix with mixed-case
names, a composite key, a global and a local secondary index, a TTL attribute, personal
data nested in maps and lists, string and number sets, binary values, ISO and epoch times.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from provisioning.dynamo.items import ITEM_LIMIT
from provisioning.dynamo.policy import parse_dynamo_policy
from provisioning.dynamo.shrink import shrink_dynamo
from provisioning.dynamo.source import parse_source
from provisioning.errors import InvalidInput, NotFound, PolicyViolation
from provisioning.runtime import Runtime
from provisioning.snapshots.local import LocalSnapshotStore
from provisioning.snapshots.manifest import Manifest
from tests.cloud import REGION, Moto
from tests.conftest import unique
from tests.test_cli import devdb

NOW = datetime.now(UTC)
POLICY: dict[str, Any] = {
    "version": 1,
    "engine": "dynamodb",
    "tenant": {"table": "Accounts", "attribute": "tenantId"},
    "tables": {
        "Accounts": {
            "action": "subset",
            "where": {"sandbox": True},
            "attributes": {
                "tenantId": "internal",
                "accountId": "internal",
                "sandbox": "internal",
                "username": {"class": "pii", "rule": "fake", "kind": "user_name"},
                "email": {"class": "pii", "rule": "fake", "kind": "email"},
                "picture": {"class": "pii", "rule": "null"},
                "aliases": {"class": "pii", "rule": "fake", "kind": "name"},
                "scores": "internal",
                "notes": "internal",
                "profile": {
                    "class": "pii",
                    "rule": "json",
                    "paths": {
                        "$.name": {"rule": "fake", "kind": "name"},
                        "$.contacts[*].phone": {"rule": "fake", "kind": "phone"},
                        "$.contacts[*].email": {"rule": "fake", "kind": "email"},
                        "$..ssn": {"rule": "fake", "kind": "ssn"},
                    },
                },
                "expiresAt": "internal",
            },
        },
        "Events": {
            "action": "subset",
            "follow": {"attribute": "accountId", "table": "Accounts", "key": "accountId"},
            "window": {"attribute": "occurredAt", "last": "30d"},
            "attributes": {
                "accountId": "internal",
                "occurredAt": "internal",
                "kind": "public",
                "payload": {
                    "class": "pii",
                    "rule": "json",
                    "paths": {"$.ip": {"rule": "fake", "kind": "ipv4"}},
                },
            },
        },
        "AuditTrail": {"action": "drop"},
    },
}


def production(moto: Moto, prefix: str) -> Any:
    """Tables under `prefix`, with items that look like a real service's."""
    client = moto.client("dynamodb")
    client.create_table(
        TableName=f"{prefix}Accounts",
        KeySchema=[
            {"AttributeName": "tenantId", "KeyType": "HASH"},
            {"AttributeName": "accountId", "KeyType": "RANGE"},
        ],
        AttributeDefinitions=[
            {"AttributeName": "tenantId", "AttributeType": "S"},
            {"AttributeName": "accountId", "AttributeType": "S"},
            {"AttributeName": "email", "AttributeType": "S"},
            {"AttributeName": "username", "AttributeType": "S"},
        ],
        GlobalSecondaryIndexes=[
            {
                "IndexName": "byEmail",
                "KeySchema": [{"AttributeName": "email", "KeyType": "HASH"}],
                "Projection": {"ProjectionType": "ALL"},
            }
        ],
        LocalSecondaryIndexes=[
            {
                "IndexName": "byUsername",
                "KeySchema": [
                    {"AttributeName": "tenantId", "KeyType": "HASH"},
                    {"AttributeName": "username", "KeyType": "RANGE"},
                ],
                "Projection": {"ProjectionType": "KEYS_ONLY"},
            }
        ],
        BillingMode="PAY_PER_REQUEST",
    )
    client.update_time_to_live(
        TableName=f"{prefix}Accounts",
        TimeToLiveSpecification={"Enabled": True, "AttributeName": "expiresAt"},
    )
    client.create_table(
        TableName=f"{prefix}Events",
        KeySchema=[
            {"AttributeName": "accountId", "KeyType": "HASH"},
            {"AttributeName": "occurredAt", "KeyType": "RANGE"},
        ],
        AttributeDefinitions=[
            {"AttributeName": "accountId", "AttributeType": "S"},
            {"AttributeName": "occurredAt", "AttributeType": "S"},
        ],
        BillingMode="PAY_PER_REQUEST",
    )
    client.create_table(
        TableName=f"{prefix}AuditTrail",
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    for n in range(40):
        tenant = f"t{n % 4}"
        sandbox = n % 4 == 0
        account = {
            "tenantId": {"S": tenant},
            "accountId": {"S": f"acct-{n:03d}"},
            "sandbox": {"BOOL": sandbox},
            "username": {"S": f"real.user{n}"},
            "email": {"S": f"real.person{n}@corp-mail.com"},
            "picture": {"B": b"\x89PNG" + bytes([n])},
            "aliases": {"SS": [f"Ann Real{n}", f"A. Real{n}"]},
            "scores": {"NS": ["1", "2.5"]},
            "notes": {"S": "prefers email contact"},
            "profile": {
                "M": {
                    "name": {"S": f"Ann Real{n}"},
                    "contacts": {
                        "L": [
                            {
                                "M": {
                                    "phone": {"S": "+1 415 555 2671"},
                                    "email": {"S": f"home{n}@corp-mail.com"},
                                }
                            }
                        ]
                    },
                    "identity": {"M": {"ssn": {"S": "536-22-8465"}}},
                    "plan": {"S": "gold"},
                }
            },
            "expiresAt": {"N": str(int((NOW + timedelta(days=90)).timestamp()))},
        }
        client.put_item(TableName=f"{prefix}Accounts", Item=account)
        for age in (1, 45):  # one recent event, one outside the window
            client.put_item(
                TableName=f"{prefix}Events",
                Item={
                    "accountId": {"S": f"acct-{n:03d}"},
                    "occurredAt": {"S": (NOW - timedelta(days=age)).isoformat()},
                    "kind": {"S": "login"},
                    "payload": {"M": {"ip": {"S": f"203.0.113.{n}"}, "ok": {"BOOL": True}}},
                },
            )
    client.put_item(TableName=f"{prefix}AuditTrail", Item={"id": {"S": "x"}})
    return client


def items(store_root: Path, snapshot_id: str, table: str) -> list[dict[str, Any]]:
    path = store_root / snapshot_id / "dump" / f"{table}.json.gz"
    with gzip.open(path, "rt") as lines:
        return [json.loads(line)["Item"] for line in lines]


async def test_a_dynamodb_source_is_subset_masked_and_published(moto: Moto, tmp_path: Path) -> None:
    prefix = unique("prod").replace("-", "_") + "_"
    client = production(moto, prefix)
    store = LocalSnapshotStore(tmp_path / "snapshots")
    source = parse_source(f"dynamodb://{REGION}/{prefix}")
    policy = parse_dynamo_policy(POLICY)
    first = await shrink_dynamo(client, source, policy, store, salt=b"salt-one")
    again = await shrink_dynamo(client, source, policy, store, salt=b"salt-one")
    other = await shrink_dynamo(client, source, policy, store, salt=b"salt-two")

    assert set(first.tables) == {"Accounts", "Events"}  # AuditTrail dropped
    assert first.tables["Accounts"].rows == 10  # the sandbox tenant's accounts
    assert first.tables["Events"].rows == 10  # their events inside the 30-day window
    shape = first.extra["tables"]["Accounts"]
    assert [k["AttributeName"] for k in shape["KeySchema"]] == ["tenantId", "accountId"]
    assert shape["GlobalSecondaryIndexes"][0]["IndexName"] == "byEmail"
    assert shape["LocalSecondaryIndexes"][0]["IndexName"] == "byUsername"
    assert shape["TimeToLiveAttribute"] == "expiresAt"
    assert first.extra["engine"] == "dynamodb"

    accounts = items(store.root, first.id, "Accounts")
    text = json.dumps(accounts) + json.dumps(items(store.root, first.id, "Events"))
    for real in (
        "real.person",
        "real.user",
        "Ann Real",
        "corp-mail.com",
        "536-22-8465",
        "555 2671",
    ):
        assert real not in text, real
    assert "203.0.113." not in text
    assert all("picture" not in item for item in accounts)  # rule null: no attribute
    sample = next(item for item in accounts if item["accountId"]["S"] == "acct-000")
    assert sample["tenantId"] == {"S": "t0"} and sample["scores"] == {"NS": ["1", "2.5"]}
    assert len(sample["aliases"]["SS"]) == 2
    nested = sample["profile"]["M"]
    assert nested["plan"] == {"S": "gold"}  # what no path names is kept
    assert nested["identity"]["M"]["ssn"]["S"] != "536-22-8465"
    # Deterministic: the same salt gives the same items, another salt other ones.
    assert items(store.root, again.id, "Accounts") == accounts
    assert items(store.root, other.id, "Accounts") != accounts
    # Events still point at the accounts kept.
    kept = {item["accountId"]["S"] for item in accounts}
    assert {e["accountId"]["S"] for e in items(store.root, first.id, "Events")} <= kept


async def test_the_scan_gate_blocks_a_planted_ssn(moto: Moto, tmp_path: Path) -> None:
    prefix = unique("leak").replace("-", "_") + "_"
    client = production(moto, prefix)
    client.put_item(
        TableName=f"{prefix}Accounts",
        Item={
            "tenantId": {"S": "t0"},
            "accountId": {"S": "acct-planted"},
            "sandbox": {"BOOL": True},
            "notes": {"S": "customer gave SSN 536-22-8465 on the phone"},
        },
    )
    store = LocalSnapshotStore(tmp_path / "snapshots")
    with pytest.raises(PolicyViolation, match=r"Accounts\.notes: 1 national_id:US\.ssn") as caught:
        await shrink_dynamo(
            client,
            parse_source(f"dynamodb://{REGION}/{prefix}"),
            parse_dynamo_policy(POLICY),
            store,
            salt=b"s",
        )
    assert "Nothing was published" in str(caught.value) and "536-22-8465" not in str(caught.value)
    assert await store.list() == []
    assert [p for p in (tmp_path / "snapshots").iterdir() if not p.name.startswith(".")] == []


async def test_bad_sources_and_policies_get_one_sentence(moto: Moto, tmp_path: Path) -> None:
    store = LocalSnapshotStore(tmp_path / "snapshots")
    client = moto.client("dynamodb")
    policy = parse_dynamo_policy(POLICY)
    with pytest.raises(NotFound, match=f"no DynamoDB table in {REGION} starts with 'nothing_'"):
        await shrink_dynamo(
            client, parse_source(f"dynamodb://{REGION}/nothing_"), policy, store, salt=b"s"
        )
    with pytest.raises(InvalidInput, match="is not a DynamoDB source"):
        parse_source("dynamodb://nowhere")
    with pytest.raises(InvalidInput, match="Events follows 'Users'"):
        parse_dynamo_policy(
            {
                **POLICY,
                "tables": {
                    "Events": {"action": "subset", "follow": {"attribute": "a", "table": "Users"}}
                },
            }
        )
    prefix = unique("wide").replace("-", "_") + "_"
    client = production(moto, prefix)
    client.put_item(
        TableName=f"{prefix}Accounts",
        Item={
            "tenantId": {"S": "t0"},
            "accountId": {"S": "acct-new"},
            "sandbox": {"BOOL": True},
            "nickname": {"S": "Annie"},  # an attribute nobody classified
        },
    )
    source = parse_source(f"dynamodb://{REGION}/{prefix}")
    with pytest.raises(PolicyViolation, match=r"Accounts\.nickname"):
        await shrink_dynamo(client, source, policy, store, salt=b"s")
    client.delete_item(
        TableName=f"{prefix}Accounts",
        Key={"tenantId": {"S": "t0"}, "accountId": {"S": "acct-new"}},
    )
    # A masked item over DynamoDB's 400 KB limit is refused, not published.
    client.put_item(
        TableName=f"{prefix}Accounts",
        Item={
            "tenantId": {"S": "t0"},
            "accountId": {"S": "acct-big"},
            "sandbox": {"BOOL": True},
            "notes": {"S": "x" * (ITEM_LIMIT // 2)},
        },
    )
    grown = json.loads(json.dumps(POLICY))
    grown["tables"]["Accounts"]["attributes"]["notes"] = {
        "class": "internal",
        "rule": "regex",
        "pattern": "x",
        "replace": "xxx",
    }
    with pytest.raises(InvalidInput, match="KB after masking, over DynamoDB's 400 KB"):
        await shrink_dynamo(client, source, parse_dynamo_policy(grown), store, salt=b"s")
    assert await store.list() == []


async def test_the_terminal_drafts_checks_and_shrinks_a_dynamodb_source(
    moto: Moto, tmp_path: Path, cli_env: dict[str, str], runtime: Runtime, demo_snapshot: Manifest
) -> None:
    """policy init, policy check and shrink take a dynamodb:// source; the snapshot made is
    listed, never taken as a PostgreSQL one, and refused by a PostgreSQL refresh."""
    prefix = unique("cli").replace("-", "_") + "_"
    production(moto, prefix)
    env = {**cli_env, **moto.env, "AWS_DEFAULT_REGION": REGION, "DEVDB_MASK_SALT": "cli-salt"}
    url = f"dynamodb://{REGION}/{prefix}"
    draft = tmp_path / "draft.yml"
    drafted = devdb(env, "policy", "init", "--source", url, "--out", str(draft))
    assert drafted.returncode == 0, drafted.stderr
    body = yaml.safe_load(draft.read_text())
    assert body["engine"] == "dynamodb" and set(body["tables"]) == {
        "Accounts",
        "Events",
        "AuditTrail",
    }
    assert body["tables"]["Accounts"]["attributes"]["email"]["class"] == "pii"
    policy = tmp_path / "policy.yml"
    short = json.loads(json.dumps(POLICY))
    del short["tables"]["Accounts"]["attributes"]["notes"]
    policy.write_text(yaml.safe_dump(short))
    checked = devdb(env, "policy", "check", "--source", url, "--policy", str(policy))
    assert checked.returncode == 1 and "Accounts.notes is not classified" in checked.stdout
    policy.write_text(yaml.safe_dump(POLICY))
    assert devdb(env, "policy", "check", "--source", url, "--policy", str(policy)).returncode == 0
    shrunk = devdb(env, "--json", "shrink", "--source", url, "--policy", str(policy))
    assert shrunk.returncode == 0, shrunk.stderr
    made = json.loads(shrunk.stdout)["id"]
    try:
        assert made in devdb(env, "snapshots").stdout
        assert (await runtime.snapshots.latest()).id != made
        refused = devdb(env, "refresh", unique("dyn"), "--snapshot", made)
        assert refused.returncode == 1
        assert f"snapshot {made} holds DynamoDB tables, not PostgreSQL ones" in refused.stderr
    finally:
        await runtime.snapshots.delete(made)
    bad = devdb(env, "shrink", "--source", f"dynamodb://{REGION}/none_", "--policy", str(policy))
    assert bad.returncode == 1 and "Traceback" not in bad.stderr
    last = bad.stderr.splitlines()[-1]
    assert last.startswith(f"devdb: no DynamoDB table in {REGION} starts with 'none_'")


def small_source(moto: Moto, items: dict[str, list[dict[str, Any]]]) -> tuple[Any, str]:
    """Tables keyed by `id` (S), with these items, under a prefix of their own."""
    client = moto.client("dynamodb")
    prefix = unique("edge").replace("-", "_") + "_"
    for table, rows in items.items():
        client.create_table(
            TableName=prefix + table,
            KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )
        for row in rows:
            client.put_item(TableName=prefix + table, Item=row)
    return client, prefix


async def shrink_small(
    client: Any, prefix: str, tables: dict[str, Any], tmp_path: Path, **options: Any
) -> tuple[Manifest, LocalSnapshotStore]:
    store = LocalSnapshotStore(tmp_path / unique("store"))
    policy = parse_dynamo_policy({"version": 1, "engine": "dynamodb", **tables})
    manifest = await shrink_dynamo(
        client, parse_source(f"dynamodb://{REGION}/{prefix}"), policy, store, salt=b"s", **options
    )
    return manifest, store


async def test_personal_data_hidden_in_odd_places_does_not_slip_through(
    moto: Moto, tmp_path: Path
) -> None:
    """Map keys, numbers, binary, copies of masked values, JSON kept as text, sets in maps."""
    email = "grace.hopper@navy-mail.com"
    client, prefix = small_source(
        moto,
        {
            "Users": [
                {
                    "id": {"S": "u1"},
                    "username": {"S": "grace.hopper"},
                    "contacts": {"M": {email: {"S": "work"}}},
                    "settings": {"S": json.dumps({"name": "Grace Hopper", "theme": "dark"})},
                    "prefs": {"M": {"tags": {"SS": ["Grace Hopper", "Amazing Grace"]}}},
                    "lucky": {"NS": ["7", "13"]},
                }
            ],
            "Posts": [{"id": {"S": "p1"}, "author": {"S": "grace.hopper"}}],
        },
    )
    users = {
        "action": "keep",
        "attributes": {
            "id": "internal",
            "username": {"class": "pii", "rule": "fake", "kind": "user_name"},
            "contacts": {"class": "pii", "rule": "hash"},
            "settings": {"class": "pii", "rule": "json", "paths": {"$.name": "hash"}},
            "prefs": {"class": "pii", "rule": "json", "paths": {"$.tags[*]": "hash"}},
            "lucky": {"class": "internal", "rule": "hash"},
        },
    }
    posts = {"action": "keep", "attributes": {"id": "internal", "author": "internal"}}
    # A follow attribute left unmasked while the key it names is masked: the real user name
    # would be published beside its fake, so the copy is found and nothing is published.
    with pytest.raises(PolicyViolation, match=r"Posts\.author: 1 copy of a masked value"):
        await shrink_small(client, prefix, {"tables": {"Users": users, "Posts": posts}}, tmp_path)
    posts["attributes"]["author"] = {"class": "pii", "rule": "fake", "kind": "user_name"}
    made, store = await shrink_small(
        client, prefix, {"tables": {"Users": users, "Posts": posts}}, tmp_path
    )
    (user,) = items(store.root, made.id, "Users")
    (post,) = items(store.root, made.id, "Posts")
    text = json.dumps(user)
    assert email not in text and "Grace" not in text and "grace" not in text
    assert post["author"] == user["username"]  # masked alike, so the link still holds
    assert json.loads(user["settings"]["S"])["theme"] == "dark"
    assert len(user["lucky"]["SS"]) == 2  # hashed numbers are text now, not a crash
    # An internal map keyed by an email, a card number kept as a number and an email in a
    # blob are all found by the scan.
    client, prefix = small_source(
        moto,
        {
            "Users": [
                {
                    "id": {"S": "u1"},
                    "seen": {"M": {email: {"BOOL": True}}},
                    "card": {"N": "4111111111111111"},
                    "avatar": {"B": b"\x00\x01from " + email.encode() + b"\x00"},
                }
            ]
        },
    )
    internal = {
        "action": "keep",
        "attributes": {a: "internal" for a in ("id", "seen", "card", "avatar")},
    }
    with pytest.raises(PolicyViolation) as caught:
        await shrink_small(client, prefix, {"tables": {"Users": internal}}, tmp_path)
    found = "\n".join(caught.value.problems)
    assert "Users.seen: 1 email" in found and "Users.card: 1 card" in found
    assert "Users.avatar: 1 email" in found and email not in found


async def test_keys_tenants_and_bad_rules_get_one_sentence(moto: Moto, tmp_path: Path) -> None:
    client, prefix = small_source(
        moto,
        {
            "Orgs": [{"id": {"S": f"o{n}"}, "tenant": {"S": f"t{n}"}} for n in range(3)],
            "Orders": [
                {"id": {"S": f"x{n}"}, "org": {"S": f"o{n % 3}"}, "note": {"S": "n/a"}}
                for n in range(9)
            ],
        },
    )
    orgs = {
        "action": "subset",
        "where": {"tenant": "t0"},
        "attributes": {"id": "internal", "tenant": "internal"},
    }
    orders = {
        "action": "subset",
        "follow": {"attribute": "org", "table": "Orgs", "key": "id"},
        "attributes": {"id": "internal", "org": "internal", "note": "internal"},
    }
    tables = {
        "tenant": {"table": "Orgs", "attribute": "tenant"},
        "tables": {"Orgs": orgs, "Orders": orders},
    }
    made, store = await shrink_small(client, prefix, tables, tmp_path, tenant="t2")
    assert [i["id"]["S"] for i in items(store.root, made.id, "Orgs")] == ["o2"]
    assert {i["org"]["S"] for i in items(store.root, made.id, "Orders")} == {"o2"}
    with pytest.raises(InvalidInput, match="there is no tenant 't9' in Orgs"):
        await shrink_small(client, prefix, tables, tmp_path, tenant="t9")
    orgs["attributes"]["id"] = {"class": "internal", "rule": "partial", "keep": 1}
    with pytest.raises(InvalidInput, match=r"Orgs\.id is a key or index key"):
        await shrink_small(client, prefix, tables, tmp_path)
    orgs["attributes"]["id"] = "internal"
    orders["attributes"]["note"] = {"class": "internal", "rule": "noise"}
    with pytest.raises(InvalidInput, match=r"Orders\.note could not be masked"):
        await shrink_small(client, prefix, tables, tmp_path)
    with pytest.raises(InvalidInput, match="'folow' is not part of the policy format"):
        parse_dynamo_policy(
            {
                "engine": "dynamodb",
                "tables": {"A": {"action": "subset", "folow": {}, "where": {"a": 1}}},
            }
        )
    with pytest.raises(InvalidInput, match="follows 'A', which the policy drops"):
        parse_dynamo_policy(
            {
                "engine": "dynamodb",
                "tables": {
                    "A": {"action": "drop"},
                    "B": {"action": "subset", "follow": {"attribute": "a", "table": "A"}},
                },
            }
        )


class SlowTable:
    """A stand-in for DynamoDB's client with one endless, slow table: scans are counted."""

    class exceptions:
        class ResourceNotFoundException(Exception):
            pass

    def __init__(self) -> None:
        self.scans = 0

    def get_paginator(self, _: str) -> Any:
        class Pages:
            def paginate(self) -> list[dict[str, Any]]:
                return [{"TableNames": ["slow_T"]}]

        return Pages()

    def describe_table(self, TableName: str) -> dict[str, Any]:
        key = [{"AttributeName": "id", "KeyType": "HASH"}]
        return {"Table": {"KeySchema": key, "AttributeDefinitions": []}}

    def describe_time_to_live(self, TableName: str) -> dict[str, Any]:
        return {"TimeToLiveDescription": {"TimeToLiveStatus": "DISABLED"}}

    def scan(self, **request: Any) -> dict[str, Any]:
        self.scans += 1
        time.sleep(0.01)
        page = [{"id": {"S": f"{request['Segment']}-{self.scans}-{n}"}} for n in range(50)]
        return {"Items": page, "LastEvaluatedKey": {"id": {"S": "more"}}}


async def test_a_cancelled_shrink_stops_reading(tmp_path: Path) -> None:
    """Ctrl-C (or SIGTERM) stops the scans too, and leaves nothing staged."""
    client = SlowTable()
    policy = parse_dynamo_policy(
        {"engine": "dynamodb", "tables": {"T": {"attributes": {"id": "internal"}}}}
    )
    store = LocalSnapshotStore(tmp_path / "snapshots")
    task = asyncio.ensure_future(
        shrink_dynamo(client, parse_source(f"dynamodb://{REGION}/slow_"), policy, store, salt=b"s")
    )
    await asyncio.sleep(0.3)
    task.cancel()
    started = time.monotonic()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert time.monotonic() - started < 2
    scans = client.scans
    await asyncio.sleep(0.3)
    assert client.scans - scans <= 4  # at most one page in flight per segment
    assert [p for p in (tmp_path / "snapshots").rglob("*") if p.is_file()] == []
