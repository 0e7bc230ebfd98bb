"""`devdb scan`: which databases and published snapshots hold personal data.

The same detectors as the shrink gate, run over a live database (every column that can
carry text, read inside one read-only transaction) or over a snapshot (its data as
pg_restore writes it, and its schema text). Nothing is changed; the report names table,
column, kind, count and a redacted sample.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

import asyncpg

from provisioning.errors import InvalidInput, ProvisioningFailed
from provisioning.models import ProgressEvent
from provisioning.pg.programs import PgPrograms, first_error
from provisioning.pg.sql import quote_ident, quote_table
from provisioning.shrink.catalog import BYTES, TEXT, Table, read_catalog
from provisioning.shrink.copytext import END, encode
from provisioning.shrink.detect import PiiDetector
from provisioning.shrink.dumpscan import scan_schema
from provisioning.shrink.fields import reader
from provisioning.shrink.scan import Finding, Findings
from provisioning.snapshots.dump import schema_text

Progress = Callable[[ProgressEvent], None]
_BLOCK = 4000  # values per column handed to the detectors at once
_REPORT_EVERY = 50_000  # rows between progress events
_COPY = re.compile(r"^COPY (.+?) \((.*)\) FROM stdin;$")
_IDENT = re.compile(r'"((?:[^"]|"")*)"|([^",.\s]+)')


class ScanStep(StrEnum):
    SCAN = "scan"


@dataclass
class ScanReport:
    findings: list[Finding] = field(default_factory=list)
    tables: int = 0
    rows: int = 0


class _Columns:
    """Values of one table, column by column, handed to the detectors in blocks."""

    def __init__(self, table: str, findings: Findings, detector: PiiDetector) -> None:
        self.table = table
        self.findings = findings
        self.detector = detector
        self.blocks: dict[str, list[str]] = {}

    def add(self, column: str, text: str) -> None:
        block = self.blocks.setdefault(column, [])
        block.append(text)
        if len(block) >= _BLOCK:
            self.flush(column)

    def flush(self, column: str | None = None) -> None:
        for name in [column] if column else list(self.blocks):
            block = self.blocks.get(name, [])
            for kind, value in self.detector.find("\n".join(block)):
                self.findings.add(self.table, name, kind, value)
            block.clear()


def _chosen(names: Sequence[str], wanted: Sequence[str]) -> list[str]:
    if not wanted:
        return list(names)
    unknown = [t for t in wanted if t not in names]
    if unknown:
        raise InvalidInput(f"there is no table {unknown[0]} to scan (name it as schema.table).")
    return [t for t in names if t in wanted]


async def scan_database(
    dsn: str,
    detector: PiiDetector,
    *,
    tables: Sequence[str] = (),
    sample: int | None = None,
    progress: Progress | None = None,
) -> ScanReport:
    """Scan every textual column of a live database (or `tables`, or `sample` rows each)."""
    emit = progress or (lambda _: None)
    try:
        conn = await asyncpg.connect(dsn)
    except (OSError, asyncpg.PostgresError) as exc:
        raise ProvisioningFailed(f"the database could not be reached: {exc}.") from exc
    findings = Findings([])
    report = ScanReport()
    try:
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            catalog = await read_catalog(conn)
            names = _chosen(list(catalog.tables), tables)
            for index, name in enumerate(names):
                emit(
                    ProgressEvent(
                        step=ScanStep.SCAN,
                        message=f"scanning {name}",
                        percent=100.0 * index / max(1, len(names)),
                    )
                )
                report.rows += await _scan_table(
                    conn, catalog.tables[name], findings, detector, sample, emit
                )
                report.tables += 1
    finally:
        await conn.close()
    report.findings = findings.report()
    return report


async def _scan_table(
    conn: asyncpg.Connection,
    table: Table,
    findings: Findings,
    detector: PiiDetector,
    sample: int | None,
    emit: Progress,
) -> int:
    columns = [
        c for c in table.columns if (c.is_text or c.kind == BYTES) and c.name in table.root_columns
    ]
    if not columns:
        return 0
    select = ", ".join(f"{quote_ident(c.name)}::text" for c in columns)
    limit = f" limit {int(sample)}" if sample else ""
    readers = [reader(c.kind) for c in columns]
    seen = _Columns(table.name, findings, detector)
    rows = 0
    async for row in conn.cursor(f"select {select} from {quote_table(table.name)}{limit}"):
        for column, read, value in zip(columns, readers, row, strict=True):
            if value is not None:
                text, _ = read(encode(value))
                if text:
                    seen.add(column.name, text)
        rows += 1
        if rows % _REPORT_EVERY == 0:
            emit(ProgressEvent(step=ScanStep.SCAN, message=f"scanning {table.name}: {rows:,} rows"))
    seen.flush()
    return rows


def _names(text: str) -> list[str]:
    """Identifiers as pg_dump writes them (`app."CustomerNotes"`, `id, "userId"`)."""
    return [
        m.group(1).replace('""', '"') if m.group(1) is not None else m.group(2)
        for m in _IDENT.finditer(text)
    ]


def _table_and_columns(header: re.Match[str]) -> tuple[str, list[str]]:
    return ".".join(_names(header.group(1))), _names(header.group(2))


async def _restored_lines(programs: PgPrograms, dump: Path, *args: str) -> AsyncIterator[str]:
    proc = await asyncio.create_subprocess_exec(
        programs.path("pg_restore"),
        *args,
        "--file=-",
        str(dump),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        limit=1 << 24,
    )
    assert proc.stdout is not None and proc.stderr is not None
    try:
        async for raw in proc.stdout:
            yield raw.decode(errors="replace").rstrip("\n")
        error = (await proc.stderr.read()).decode(errors="replace")
        if await proc.wait() != 0:
            reason = first_error(error, proc.returncode or 1)
            raise ProvisioningFailed(f"pg_restore could not read the snapshot: {reason}")
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def scan_dump(
    dump: Path,
    programs: PgPrograms,
    detector: PiiDetector,
    *,
    tables: Sequence[str] = (),
    sample: int | None = None,
    progress: Progress | None = None,
) -> ScanReport:
    """Scan a snapshot's dump: its schema text, then its table data as pg_restore writes it."""
    emit = progress or (lambda _: None)
    findings = Findings([])
    report = ScanReport()
    emit(ProgressEvent(step=ScanStep.SCAN, message="scanning the schema"))
    if not tables:
        scan_schema(await schema_text(programs, dump), set(), findings, detector)
    seen: _Columns | None = None
    columns: list[str] = []
    appeared: set[str] = set()
    taken = 0
    async for line in _restored_lines(programs, dump, "--data-only"):
        if seen is None:
            header = _COPY.match(line)
            if header:
                name, columns = _table_and_columns(header)
                appeared.add(name)
                if not tables or name in tables:
                    seen, taken = _Columns(name, findings, detector), 0
                    report.tables += 1
                    emit(ProgressEvent(step=ScanStep.SCAN, message=f"scanning {name}"))
            continue
        if line == END:
            seen.flush()
            seen = None
            continue
        if sample and taken >= sample:
            continue
        for column, value in zip(columns, line.split("\t"), strict=False):
            if value != "\\N":
                text, _ = reader("json" if value[:1] in "{[" else TEXT)(value)
                seen.add(column, text)
        taken += 1
        report.rows += 1
    _chosen(sorted(appeared), tables)  # a table asked for that the snapshot lacks is an error
    report.findings = findings.report()
    return report
