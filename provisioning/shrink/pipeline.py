"""`devdb shrink`: policy check → subset → dump → account → mask → scan → check → publish.

Everything is read from one exported snapshot of the source, in a read-only transaction:
the catalog, the subset's keys, pg_dump's output and the manifest's `source_time` agree.
pg_dump writes uncompressed table data and no large objects unless the policy keeps them.
Every file of the dump is then matched to the policy by OID (`contents.py`); each data
file is filtered, masked, scanned and compressed (`rewrite.py`); the schema text and any
large objects are scanned (`dumpscan.py`); and every foreign key the subset or a mask could
break is checked on the output (`plan.py`). Any finding, or any policy problem, stops the
publish and leaves nothing behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import multiprocessing
import re
import shutil
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from enum import StrEnum
from pathlib import Path
from typing import Any

import asyncpg

from provisioning.errors import PolicyViolation, ProvisioningFailed
from provisioning.models import ProgressEvent
from provisioning.pg.dsn import redact
from provisioning.pg.programs import PgPrograms
from provisioning.pg.sql import quote_table
from provisioning.shrink.catalog import Catalog, read_catalog
from provisioning.shrink.contents import Contents, account
from provisioning.shrink.detect import PiiDetector
from provisioning.shrink.dumpscan import scan_large_objects, scan_schema
from provisioning.shrink.plan import Closure, closure_checks, plan_file, requests_for
from provisioning.shrink.policy import Policy, check_policy, mismatch
from provisioning.shrink.rewrite import (
    Refs,
    TablePlan,
    collect_pii_values,
    process,
    split_spans,
)
from provisioning.shrink.scan import Findings, allow_patterns
from provisioning.shrink.subset import Selection, select_subset
from provisioning.snapshots.base import SnapshotStore
from provisioning.snapshots.dump import list_dump, pg_dump, schema_text
from provisioning.snapshots.manifest import Manifest, manifest_for_dump

Progress = Callable[[ProgressEvent], None]
LEVEL = 1  # gzip level of the published data: close to pg_dump's size, several times faster
_SPLIT_ABOVE = 16 << 20
# What asyncpg raises on a connection the server has closed.
_LOST = (asyncpg.InterfaceError, asyncpg.InternalClientError, asyncpg.PostgresError, OSError)


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


def salt_id(salt: bytes) -> str:
    """Tells two salts apart without revealing either."""
    return hmac.new(salt, b"devdb salt id", "sha256").hexdigest()[:12]


def _work(plan: TablePlan) -> int:
    """About how long a piece takes: its size, and rows read one by one cost several times
    more than blocks that are only scanned."""
    start, end = plan.span or (0, plan.path.stat().st_size)
    return (end - start) * (1 if plan.only_scanned else 5)


def _pieces(plan: TablePlan, jobs: int) -> list[TablePlan]:
    """A large file is cut into pieces the workers share, each written apart; a column kept
    unique must be seen whole, so its file stays in one piece."""
    if plan.unique_masked or plan.path.stat().st_size <= _SPLIT_ABOVE:
        return [plan]
    spans = split_spans(plan.path, 2 * jobs)
    return [
        replace(plan, span=span, output=plan.target.with_name(f"{plan.target.name}.{i}"))
        for i, span in enumerate(spans)
    ]


def _join(plan: TablePlan, pieces: list[TablePlan]) -> None:
    """Concatenate the pieces' gzip members into the table's file (gzip allows that)."""
    if len(pieces) == 1 and pieces[0].span is None:
        return
    with open(plan.target, "wb") as out:
        for piece in pieces:
            with open(piece.target, "rb") as part:
                shutil.copyfileobj(part, out, 1 << 20)
            piece.target.unlink()
    plan.path.unlink()


# Masking and scanning are CPU work in Python: one worker process per core, a piece of a
# file at a time each, so the GIL does not make them take turns. The plans (with their sets
# of keys to keep) and the pii values are large: the workers inherit them when they are
# forked, and each task names only its index.
_INHERITED: dict[str, Any] = {}


def _inherit(work: dict[str, Any]) -> None:
    _INHERITED.update(work)


def _workers(jobs: int, **work: Any) -> ProcessPoolExecutor:
    return ProcessPoolExecutor(
        max_workers=max(1, jobs),
        mp_context=multiprocessing.get_context("fork"),
        initializer=_inherit,
        initargs=(work,),
    )


def _collect_task(index: int) -> set[str]:
    return collect_pii_values(_INHERITED["plans"][index])


def _process_task(index: int) -> tuple[int, Findings, Refs]:
    work = _INHERITED
    return process(work["plans"][index], work["salt"], work["pii"], work["allow"], work["detector"])


@dataclass
class _Output:
    rows: dict[str, int]  # relation -> rows kept
    files: dict[str, str]  # relation -> data file


async def _mask_and_scan(
    *,
    dump: Path,
    contents: Contents,
    catalog: Catalog,
    policy: Policy,
    selection: Selection,
    schema_sql: str,
    salt: bytes,
    allowed: list[re.Pattern[str]],
    detector: PiiDetector,
    jobs: int,
    emit: Progress,
) -> _Output:
    checks = closure_checks(policy, catalog)
    requests = {f.name: requests_for(checks, f) for f in contents.data}
    plans = {
        f.name: plan_file(
            f, catalog.tables[f.table], policy, dump, selection, requests[f.name], LEVEL
        )
        for f in contents.data
    }
    loop = asyncio.get_running_loop()
    emit(ProgressEvent(step=ShrinkStep.MASK, message="collecting the values to look for"))
    sources = [plan for plan in plans.values() if plan.pii_positions]
    with _workers(jobs, plans=sources) as pool:
        collected = await asyncio.gather(
            *(loop.run_in_executor(pool, _collect_task, i) for i in range(len(sources)))
        )
    pii_values: set[str] = set().union(*collected)
    emit(ProgressEvent(step=ShrinkStep.MASK, message=f"masking and scanning {len(plans)} files"))
    pieces = {name: _pieces(plan, jobs) for name, plan in plans.items()}
    ordered = sorted((p for ps in pieces.values() for p in ps), key=_work, reverse=True)
    work = {"salt": salt, "pii": pii_values, "allow": allowed, "detector": detector}
    with _workers(jobs, plans=ordered, **work) as pool:
        results = await asyncio.gather(
            *(loop.run_in_executor(pool, _process_task, i) for i in range(len(ordered)))
        )
    findings = Findings(allowed)
    closure = Closure(checks)
    rows: dict[str, int] = {}
    for piece, (kept, found, refs) in zip(ordered, results, strict=True):
        rows[piece.relation] = rows.get(piece.relation, 0) + kept
        findings.merge(found)
        closure.add(requests[piece.path.name], refs)
    for name, plan in plans.items():
        await asyncio.to_thread(_join, plan, pieces[name])
    scan_schema(schema_sql, pii_values, findings, detector)
    await asyncio.to_thread(scan_large_objects, dump, contents.large_objects, findings, detector)
    if findings.hits:
        report = [finding.line() for finding in findings.report()]
        raise PolicyViolation(
            f"the scan found personal data in {len(report)} place(s), so nothing was "
            f"published: {report[0]}",
            problems=report,
        )
    broken = closure.problems()
    if broken:
        raise PolicyViolation(
            "the snapshot would not restore, so nothing was published: "
            f"{broken[0]}; add the missing link under `references` or change the subset.",
            problems=broken,
        )
    return _Output(rows=rows, files={p.relation: p.target.name for p in plans.values()})


def _exact(name: str) -> str:
    """A pg_dump pattern that matches this one relation: inside double quotes, every
    character is literal, whatever its case."""
    return quote_table(name)


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
    detector: PiiDetector | None = None,
) -> Manifest:
    """Build a dev-safe snapshot of `source_dsn` and publish it; return its manifest.
    `detector` finds personal data (by default in the default regions)."""
    emit = progress or (lambda _: None)
    allowed = allow_patterns(allow)
    emit(ProgressEvent(step=ShrinkStep.CHECK, message="checking the policy against the source"))
    conn = await _connect(source_dsn)
    staged: Path | None = None
    try:
        # Read-only: nothing to commit, and a rollback that fails because the source went
        # away must not hide why the work stopped.
        transaction = conn.transaction(isolation="repeatable_read", readonly=True)
        await transaction.start()
        try:
            exported = await conn.fetchval("select pg_export_snapshot()")
            source_time = await conn.fetchval("select now()")
            version = str(await conn.fetchval("show server_version"))
            catalog = await read_catalog(conn)
            problems = check_policy(policy, catalog)
            if problems:
                raise mismatch(problems)
            emit(ProgressEvent(step=ShrinkStep.SUBSET, message="choosing rows"))
            selection = await select_subset(conn, policy, catalog, tenant)
            emit(ProgressEvent(step=ShrinkStep.DUMP, message="dumping the source"))
            staged = await store.staging()
            dropped = [
                member.name
                for name in sorted(selection.dropped)
                for member in catalog.tables[name].members
            ]
            await pg_dump(
                programs,
                source_dsn,
                staged / "dump",
                jobs=jobs,
                snapshot=exported,
                options=[
                    "--compress=0",
                    *(["--no-blobs"] if policy.large_objects != "keep" else []),
                    *(f"--exclude-table-data={_exact(name)}" for name in dropped),
                ],
            )
        finally:
            with contextlib.suppress(*_LOST):
                await transaction.rollback()
        dump = staged / "dump"
        contents = account(await list_dump(programs, dump), dump, catalog, policy)
        output = await _mask_and_scan(
            dump=dump,
            contents=contents,
            catalog=catalog,
            policy=policy,
            selection=selection,
            schema_sql=await schema_text(programs, dump),
            salt=salt,
            allowed=allowed,
            detector=detector or PiiDetector(),
            jobs=jobs,
            emit=emit,
        )
        emit(ProgressEvent(step=ShrinkStep.PUBLISH, message="publishing"))
        manifest = await asyncio.to_thread(
            manifest_for_dump,
            dump,
            source=redact(source_dsn),
            pg_version=version,
            rows={
                member.name: output.rows.get(member.name, 0)
                for table in catalog.tables.values()
                for member in table.members
            },
            data_files=output.files,
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
    except (asyncpg.InterfaceError, asyncpg.PostgresConnectionError, ConnectionError) as exc:
        raise ProvisioningFailed(f"the connection to the source database was lost: {exc}.") from exc
    finally:
        if staged is not None:
            shutil.rmtree(staged, ignore_errors=True)
        with contextlib.suppress(*_LOST):
            await conn.close()


async def apply_retention(
    store: SnapshotStore, keep_last: int, *, engine: str = "postgresql"
) -> list[str]:
    """Delete the oldest shrink-made snapshots of one engine beyond the newest `keep_last`."""
    made = [
        m
        for m in await store.list()
        if m.extra.get("kind") == "shrink" and m.extra.get("engine", "postgresql") == engine
    ]
    doomed = [m.id for m in made[keep_last:]]
    for snapshot_id in doomed:
        await store.delete(snapshot_id)
    return doomed
