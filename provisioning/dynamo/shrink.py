"""A dev-safe snapshot of a DynamoDB source: check → subset → mask → scan → publish.

Tables are read by parallel segmented scans, one table at a time, roots before the tables
that follow them. Every item kept is masked by the policy's rules (inside maps and lists
too), checked against DynamoDB's item size limit, scanned for personal data, and written as
one line of DynamoDB JSON (`{"Item": {...}}`, the shape of DynamoDB's own S3 exports) in a
gzip file per table. The manifest holds each table's keys, indexes and TTL attribute, item
counts and checksums. Nothing is published unless every item passed.
"""

from __future__ import annotations

import asyncio
import shutil
import threading
from collections.abc import Generator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3

from provisioning.dynamo.exports import export_items, newest_export
from provisioning.dynamo.items import Outcome, TableWriter, data_file, find_copies, follow_key
from provisioning.dynamo.policy import DynamoPolicy, load_dynamo_policy
from provisioning.dynamo.source import (
    DynamoSource,
    TableShape,
    describe,
    dynamo_client,
    list_tables,
    parse_source,
    scan,
)
from provisioning.dynamo.survey import rule_problems
from provisioning.errors import InvalidInput, Next, PolicyViolation
from provisioning.models import ProgressEvent
from provisioning.shrink.detect import PiiDetector
from provisioning.shrink.pipeline import Progress, ShrinkStep, apply_retention, salt_id
from provisioning.shrink.policy import mismatch
from provisioning.shrink.scan import Findings, allow_patterns
from provisioning.snapshots.base import SnapshotStore
from provisioning.snapshots.manifest import Manifest, manifest_for_dump

ENGINE = "dynamodb"


async def shrink_dynamo(
    client: Any,
    source: DynamoSource,
    policy: DynamoPolicy,
    store: SnapshotStore,
    *,
    salt: bytes,
    tenant: str | None = None,
    allow: Sequence[str] = (),
    keep_last: int | None = None,
    progress: Progress | None = None,
    detector: PiiDetector | None = None,
    segments: int = 4,
    exports: Any | None = None,
) -> Manifest:
    """Build a dev-safe snapshot of the tables under `source` and publish it; with
    `exports` (an S3 client), from each table's newest export instead of a scan."""
    emit = progress or (lambda _: None)
    allowed = allow_patterns(allow)
    if tenant is not None and policy.tenant is None:
        raise InvalidInput("the policy names no tenant attribute, so --tenant cannot be used.")
    emit(ProgressEvent(step=ShrinkStep.CHECK, message="checking the policy against the source"))
    names = await asyncio.to_thread(list_tables, client, source)
    problems = [f"table {n} is not in the policy" for n in names if n not in policy.tables]
    problems += [f"table {n} is not in the source" for n in policy.tables if n not in names]
    problems += rule_problems(policy)
    if problems:
        raise mismatch(problems)
    kept = [n for n in _in_order(policy) if policy.tables[n].action != "drop"]
    shapes = {n: await asyncio.to_thread(describe, client, source, n) for n in kept}
    started = datetime.now(UTC)
    detector = detector or PiiDetector()
    staged = await store.staging()
    published: Manifest | None = None
    try:
        data = staged / "dump"
        data.mkdir()
        findings = Findings(allowed)
        unclassified: set[str] = set()
        outcomes: dict[str, Outcome] = {}
        writers: dict[str, TableWriter] = {}
        stop, originals = threading.Event(), set[str]()
        for number, name in enumerate(kept):
            emit(
                ProgressEvent(
                    step=ShrinkStep.MASK,
                    message=f"reading, masking and scanning {name}",
                    percent=100.0 * number / max(1, len(kept)),
                )
            )
            writer = TableWriter(
                shape=shapes[name],
                spec=policy.tables[name],
                policy=policy,
                salt=salt,
                tenant=tenant,
                detector=detector,
                findings=findings,
                unclassified=unclassified,
                outcomes=outcomes,
                followed_by=_followed(policy, shapes, name),
                follows=follow_key(follow, shapes)
                if (follow := policy.tables[name].follow)
                else None,
                since=started,
                stop=stop,
                originals=originals,
            )
            writers[name] = writer
            items = (
                await _exported(client, exports, source.prefix + name)
                if exports is not None
                else scan(client, source.prefix + name, segments=segments)
            )
            work = asyncio.get_running_loop().run_in_executor(None, writer.run, items, data)
            try:
                outcomes[name] = await asyncio.shield(work)
            except asyncio.CancelledError:
                stop.set()  # the reading stops too, before the staged files go
                await asyncio.wait([work])
                raise
        await asyncio.to_thread(find_copies, data, writers, originals)
        if unclassified:
            listed = sorted(unclassified)
            raise PolicyViolation(
                f"{len(listed)} attribute(s) of the source are not in the policy, such as "
                f"{listed[0]}; run ",
                Next("policy check"),
                " for the list.",
                problems=[f"{place} is not classified" for place in listed],
            )
        if findings.hits:
            report = findings.report()
            raise PolicyViolation(
                f"the scan found personal data the policy lets through, in {len(report)} "
                f"place(s): {report[0].line()}. Nothing was published.",
                problems=[finding.line() for finding in report],
            )
        emit(ProgressEvent(step=ShrinkStep.PUBLISH, message="publishing"))
        manifest = await asyncio.to_thread(
            manifest_for_dump,
            data,
            source=source.url,
            pg_version="",
            rows={name: outcome.items for name, outcome in outcomes.items()},
            data_files={name: data_file(name) for name in outcomes},
            extra={
                "kind": "shrink",
                "engine": ENGINE,
                "policy_sha256": policy.digest,
                "source_time": started.isoformat(),
                "tenant": tenant,
                "salt_id": salt_id(salt),
                "tables": {name: shape.to_json() for name, shape in shapes.items()},
            },
        )
        published = await store.publish(staged, manifest)
        if keep_last:
            await apply_retention(store, keep_last, engine=ENGINE)
        emit(
            ProgressEvent(
                step=ShrinkStep.PUBLISH, message=f"published {published.id}", percent=100.0
            )
        )
        return published
    finally:
        if published is None:  # whatever went wrong, nothing half-made stays
            shutil.rmtree(staged, ignore_errors=True)


async def shrink_dynamo_source(
    url: str, policy_file: Path, store: SnapshotStore, **options: Any
) -> Manifest:
    """`devdb shrink --source dynamodb://REGION/PREFIX --policy FILE [--exports]`."""
    source = parse_source(url)
    policy = load_dynamo_policy(policy_file)
    if options.pop("exports", False):
        options["exports"] = boto3.client("s3", region_name=source.region)
    return await shrink_dynamo(dynamo_client(source), source, policy, store, **options)


async def _exported(client: Any, s3: Any, table: str) -> Generator[dict[str, Any]]:
    def find() -> dict[str, Any]:
        arn = client.describe_table(TableName=table)["Table"]["TableArn"]
        return newest_export(client, arn, table)

    return export_items(s3, await asyncio.to_thread(find), table)


def _followed(policy: DynamoPolicy, shapes: dict[str, TableShape], name: str) -> set[str]:
    """The attributes of `name` that tables following it compare with."""
    return {
        follow_key(spec.follow, shapes)
        for spec in policy.tables.values()
        if spec.follow is not None and spec.follow.table == name
    }


def _in_order(policy: DynamoPolicy) -> list[str]:
    """Tables that follow others after those they follow."""
    ordered: list[str] = []

    def place(name: str, seen: tuple[str, ...] = ()) -> None:
        if name in ordered:
            return
        if name in seen:
            raise InvalidInput(f"the policy's follow entries go round in a circle through {name}.")
        follow = policy.tables[name].follow
        if follow is not None:
            place(follow.table, (*seen, name))
        ordered.append(name)

    for name in sorted(policy.tables):
        place(name)
    return ordered
