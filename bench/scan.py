"""The scan gate's detectors (phonenumbers + python-stdnum, every configured region) against
the regular-expression detectors they replaced, over the same rows in the same run.

    python bench/scan.py               # demo database at scale 2

Two workloads, each timed for both detectors, rounds alternating which goes first:
- *columns*: every text column of the unmasked demo database, handed to the detectors 4,000
  values at a time (what the gate does row by row, and what `devdb scan --source` does);
- *blocks*: the masked snapshot's data files in 8 MiB blocks (what the gate does with a
  table it keeps whole and does not mask).
Prints rows per second for each detector, the ratio (new / old; the goal is at least 0.7),
and how many values each reported.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parent))

from regex_detectors import find_pii as old_find
from shrink import whole_database_policy

from provisioning.demo import DEMO_DATABASE, generate
from provisioning.pg.programs import stop_servers_under
from provisioning.pg.sql import quote_ident, quote_table
from provisioning.runtime import open_runtime
from provisioning.settings import Settings
from provisioning.shrink import phones
from provisioning.shrink.catalog import read_catalog
from provisioning.shrink.detect import DEFAULT_REGIONS, PiiDetector
from provisioning.shrink.pipeline import shrink
from provisioning.shrink.policy import parse_policy

Find = Callable[[str], Iterable[tuple[str, str]]]
_BLOCK_VALUES = 4000
_BLOCK_BYTES = 8 << 20


async def column_blocks(dsn: str) -> tuple[list[str], int]:
    """Every text column's values, 4,000 to a block, and the number of rows read."""
    conn = await asyncpg.connect(dsn)
    blocks: list[str] = []
    rows = 0
    try:
        catalog = await read_catalog(conn)
        for table in catalog.tables.values():
            columns = [c.name for c in table.columns if c.is_text]
            if not columns:
                continue
            select = ", ".join(f"{quote_ident(c)}::text" for c in columns)
            records = await conn.fetch(f"select {select} from {quote_table(table.name)}")
            rows += len(records)
            for index in range(len(columns)):
                values = [r[index] for r in records if r[index] is not None]
                for start in range(0, len(values), _BLOCK_VALUES):
                    blocks.append("\n".join(values[start : start + _BLOCK_VALUES]))
    finally:
        await conn.close()
    return blocks, rows


def file_blocks(dump: Path) -> list[str]:
    blocks = []
    for path in sorted(dump.glob("*.dat.gz")):
        text = gzip.decompress(path.read_bytes()).decode()
        for start in range(0, len(text), _BLOCK_BYTES):
            blocks.append(text[start : start + _BLOCK_BYTES])
    return blocks


def timed(find: Find, blocks: list[str]) -> tuple[float, int]:
    # Every round starts cold: no phone number validated in an earlier round is remembered.
    phones.region_of.cache_clear()
    started = time.perf_counter()
    found = sum(1 for block in blocks for _ in find(block))
    return time.perf_counter() - started, found


async def bench(scale: int, repeats: int) -> None:
    home = Path(tempfile.mkdtemp(prefix="devdb-bench-", dir="/tmp"))
    settings = Settings(home=home, user="bench", pg_service_file=home / "pg_service.conf")
    new_find = PiiDetector(DEFAULT_REGIONS).find
    try:
        async with open_runtime(settings) as runtime:
            counts = await generate(
                runtime.server_dsn("postgres"), scale=scale, progress=lambda _: None
            )
            source = runtime.server_dsn(DEMO_DATABASE)
            columns, column_rows = await column_blocks(source)
            manifest = await shrink(
                source,
                parse_policy(whole_database_policy()),
                runtime.snapshots,
                runtime.programs,
                salt=b"bench-salt",
            )
            dump = await runtime.snapshots.fetch(manifest)
            blocks = file_blocks(dump)
            block_rows = manifest.rows
            print(
                f"demo database at scale {scale}: {sum(counts.values()):,} rows; "
                f"regions {','.join(DEFAULT_REGIONS)}",
                flush=True,
            )
            results: dict[tuple[str, str], list[float]] = {}
            found: dict[tuple[str, str], int] = {}
            for attempt in range(repeats):
                order = [("old", old_find), ("new", new_find)]
                for name, find in order if attempt % 2 == 0 else order[::-1]:
                    for workload, data in (("columns", columns), ("blocks", blocks)):
                        seconds, hits = timed(find, data)
                        results.setdefault((workload, name), []).append(seconds)
                        found[(workload, name)] = hits
    finally:
        stop_servers_under(home)
        shutil.rmtree(home, ignore_errors=True)
    print()
    print(
        f"{'workload':<9} {'rows':>10} {'regex rows/s':>13} {'new rows/s':>11} "
        f"{'ratio':>6} {'regex hits':>11} {'new hits':>9}"
    )
    for workload, rows in (("columns", column_rows), ("blocks", block_rows)):
        old = statistics.median(results[(workload, "old")])
        new = statistics.median(results[(workload, "new")])
        print(
            f"{workload:<9} {rows:>10,} {rows / old:>13,.0f} {rows / new:>11,.0f} "
            f"{old / new:>5.2f}x {found[(workload, 'old')]:>11,} {found[(workload, 'new')]:>9,}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    asyncio.run(bench(args.scale, args.repeats))


if __name__ == "__main__":
    main()
