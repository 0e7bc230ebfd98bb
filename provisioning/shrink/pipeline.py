"""`devdb shrink`: policy check → subset → dump → mask → scan → publish.

Everything is read from one exported snapshot of the source, in a read-only transaction:
the subset's keys, pg_dump's output and the manifest's `source_time` agree. pg_dump writes
uncompressed table data; each table's file is then filtered and masked in place
(`rewrite.py`) and the output scanned. Any finding, or any policy problem, stops the
publish and leaves nothing behind.
"""

from __future__ import annotations

import asyncio
import hmac
import multiprocessing
import re
import shutil
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from enum import StrEnum
from pathlib import Path

import asyncpg

from provisioning.errors import InvalidInput, PolicyViolation, ProvisioningFailed
from provisioning.models import ProgressEvent
from provisioning.postgres import PgPrograms
from provisioning.shrink.catalog import Catalog, Table, read_catalog
from provisioning.shrink.policy import Policy, check_policy
from provisioning.shrink.rewrite import TablePlan, collect_pii_values, process, split_spans
from provisioning.shrink.scan import Findings
from provisioning.shrink.subset import Selection, select_subset
from provisioning.snapshots.base import SnapshotStore
from provisioning.snapshots.dump import pg_dump, redact, table_data_files
from provisioning.snapshots.manifest import Manifest, manifest_for_dump

Progress = Callable[[ProgressEvent], None]


class ShrinkStep(StrEnum):
    CHECK = "check"
    SUBSET = "subset"
    DUMP = "dump"
    MASK = "mask"
    PUBLISH = "publish"


async def check_source(source_dsn: str, policy: Policy) -> tuple[Catalog, list[str]]:
    """Read the source's catalog and compare it with the policy."""
    conn = await _connect(source_dsn)
    try:
        catalog = await read_catalog(conn)
    finally:
        await conn.close()
    return catalog, check_policy(policy, catalog)


async def _connect(dsn: str) -> asyncpg.Connection:
    try:
        return await asyncpg.connect(dsn)
    except (OSError, asyncpg.PostgresError) as exc:
        raise ProvisioningFailed(f"the source database could not be reached: {exc}.") from exc


def plan_table(
    table: Table, policy: Policy, path: Path, selection: Selection, salt: bytes
) -> TablePlan:
    entry = policy.tables[table.name]
    masks = {}
    unique = set()
    pattern: list[int] = []
    exact: list[int] = []
    pii: list[int] = []
    for index, column in enumerate(table.columns):
        spec = entry.columns[column.name]
        if spec.masked and spec.rule is not None:
            masks[index] = spec.rule
            if column.unique:
                unique.add(index)
        if spec.classification in ("pii", "secret"):
            pii.append(index)
        generated = spec.rule is not None and spec.rule.generates
        if column.is_text and not generated:
            pattern.append(index)
            if not column.type.startswith("json"):
                exact.append(index)
    keep = selection.keys.get(table.name)
    return TablePlan(
        name=table.name,
        path=path,
        columns=tuple(c.name for c in table.columns),
        keep=keep,
        key_positions=tuple(table.position(c) for c in table.primary_key),
        masks=masks,
        unique_masked=frozenset(unique),
        pattern_positions=tuple(pattern),
        exact_positions=tuple(exact),
        pii_positions=tuple(pii),
    )


_SPLIT_ABOVE = 16 << 20


def _work(plan: TablePlan) -> int:
    start, end = plan.span or (0, plan.path.stat().st_size)
    return end - start


def salt_id(salt: bytes) -> str:
    """Tells two salts apart without revealing either."""
    return hmac.new(salt, b"devdb salt id", "sha256").hexdigest()[:12]


async def shrink(
    source_dsn: str,
    policy: Policy,
    store: SnapshotStore,
    programs: PgPrograms,
    *,
    salt: bytes,
    tenant: str | None = None,
    allow: Sequence[str] = (),
    jobs: int = 2,
    keep_last: int | None = None,
    progress: Progress | None = None,
) -> Manifest:
    """Build a dev-safe snapshot of `source_dsn` and publish it; return its manifest."""
    emit = progress or (lambda _: None)
    try:
        allowed = [re.compile(pattern) for pattern in allow]
    except re.error as exc:
        raise InvalidInput(f"an --allow pattern is not a valid regular expression: {exc}.") from exc
    emit(ProgressEvent(step=ShrinkStep.CHECK, message="checking the policy against the source"))
    conn = await _connect(source_dsn)
    staged: Path | None = None
    try:
        catalog = await read_catalog(conn)
        problems = check_policy(policy, catalog)
        if problems:
            raise PolicyViolation(
                f"the policy does not match the source ({len(problems)} problem(s)); "
                "run `devdb policy check` for the list.",
                problems,
            )
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            exported = await conn.fetchval("select pg_export_snapshot()")
            source_time = await conn.fetchval("select now()")
            emit(ProgressEvent(step=ShrinkStep.SUBSET, message="choosing rows"))
            selection = await select_subset(conn, policy, catalog, tenant)
            emit(ProgressEvent(step=ShrinkStep.DUMP, message="dumping the source"))
            staged = await store.staging()
            await pg_dump(
                programs,
                source_dsn,
                staged / "dump",
                jobs=jobs,
                snapshot=exported,
                options=[
                    "--compress=0",
                    *(f"--exclude-table-data={name}" for name in sorted(selection.dropped)),
                ],
            )
        dump = staged / "dump"
        files = await table_data_files(programs, dump)
        plans = [
            plan_table(catalog.tables[name], policy, dump / files[name], selection, salt)
            for name in sorted(files)
            if name in catalog.tables
        ]
        emit(ProgressEvent(step=ShrinkStep.MASK, message="collecting the values to look for"))
        loop = asyncio.get_running_loop()
        # Masking and scanning are CPU work in Python: one worker process per core, a table
        # at a time each, so the GIL does not make them take turns.
        with ProcessPoolExecutor(
            max_workers=max(1, jobs), mp_context=multiprocessing.get_context("fork")
        ) as pool:
            collected = await asyncio.gather(
                *(
                    loop.run_in_executor(pool, collect_pii_values, plan)
                    for plan in plans
                    if plan.pii_positions
                )
            )
            pii_values: set[str] = set().union(*collected)
            emit(
                ProgressEvent(
                    step=ShrinkStep.MASK, message=f"masking and scanning {len(plans)} tables"
                )
            )
            # Large files that are only scanned are cut into pieces the workers share; the
            # largest work goes first, so the long one does not start last.
            pieces = [
                replace(plan, span=span)
                for plan in plans
                for span in (
                    split_spans(plan.path, 2 * jobs)
                    if not plan.rewrites and plan.path.stat().st_size > _SPLIT_ABOVE
                    else [None]
                )
            ]
            ordered = sorted(pieces, key=_work, reverse=True)
            results = await asyncio.gather(
                *(
                    loop.run_in_executor(pool, process, plan, salt, pii_values, allowed)
                    for plan in ordered
                )
            )
        findings = Findings(allowed)
        rows: dict[str, int] = {}
        for plan, (kept, found) in zip(ordered, results, strict=True):
            rows[plan.name] = rows.get(plan.name, 0) + kept
            findings.merge(found)
        if findings.hits:
            report = [finding.line() for finding in findings.report()]
            raise PolicyViolation(
                f"the scan found personal data in {len(report)} place(s), so nothing was "
                f"published: {report[0]}",
                report,
            )
        emit(ProgressEvent(step=ShrinkStep.PUBLISH, message="publishing"))
        manifest = await asyncio.to_thread(
            manifest_for_dump,
            dump,
            source=redact(source_dsn),
            pg_version=str(await conn.fetchval("show server_version")),
            rows={name: rows.get(name, 0) for name in catalog.tables},
            data_files=files,
            extra={
                "kind": "shrink",
                "policy_sha256": policy.digest,
                "source_time": source_time.isoformat(),
                "tenant": tenant,
                "salt_id": salt_id(salt),
            },
        )
        published = await store.publish(staged, manifest)
        staged = None
        if keep_last:
            await apply_retention(store, keep_last)
        emit(
            ProgressEvent(
                step=ShrinkStep.PUBLISH, message=f"published {published.id}", percent=100.0
            )
        )
        return published
    finally:
        if staged is not None:
            shutil.rmtree(staged, ignore_errors=True)
        await conn.close()


async def apply_retention(store: SnapshotStore, keep_last: int) -> list[str]:
    """Delete the oldest shrink-made snapshots beyond the newest `keep_last`."""
    made = [m for m in await store.list() if m.extra.get("kind") == "shrink"]
    doomed = [m.id for m in made[keep_last:]]
    for snapshot_id in doomed:
        await store.delete(snapshot_id)
    return doomed
