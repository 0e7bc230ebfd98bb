"""`devdb scan`: which databases and snapshots hold personal data, from the terminal.

Exit 0 when nothing is found, 1 when anything is, so a CI job can run it as a check.
"""

from __future__ import annotations

import json
from dataclasses import asdict

from bot import grammar, messages
from bot.terminal import TerminalProgress
from provisioning.pg.dsn import redact
from provisioning.runtime import open_runtime
from provisioning.settings import Settings
from provisioning.shrink.detect import PiiDetector
from provisioning.shrink.survey import ScanReport, scan_database, scan_dump


async def scan_command(command: grammar.Scan, settings: Settings, as_json: bool) -> int:
    detector = PiiDetector(settings.pii_regions)
    with TerminalProgress(quiet=as_json) as progress:
        if command.source is not None:
            where = redact(command.source)
            report = await scan_database(
                command.source,
                detector,
                tables=command.tables,
                sample=command.sample,
                progress=progress,
            )
        else:
            assert command.snapshot is not None
            where = f"snapshot {command.snapshot}"
            async with open_runtime(settings) as runtime:
                manifest = await runtime.snapshots.get(command.snapshot)
                dump = await runtime.snapshots.fetch(manifest)
                report = await scan_dump(
                    dump,
                    runtime.programs,
                    detector,
                    tables=command.tables,
                    sample=command.sample,
                    progress=progress,
                )
    render(report, where, as_json)
    return 1 if report.findings else 0


def render(report: ScanReport, where: str, as_json: bool) -> None:
    if as_json:
        body = {
            "scanned": where,
            "tables": report.tables,
            "rows": report.rows,
            "findings": [asdict(finding) for finding in report.findings],
        }
        print(json.dumps(body, indent=2))
        return
    for finding in report.findings:
        print(f"  {finding.line()}")
    print(messages.scanned(where, report.tables, report.rows, len(report.findings)))
