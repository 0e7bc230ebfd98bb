"""`devdb shrink` against a raw `pg_dump -Fd -j 2` of the same database, same run.

    python bench/shrink.py               # demo database at scale 10 (about 1.1 million rows)

The policy is the demo policy with every table kept whole (no subset), so the work is the
same as a full dump plus masking every pii/secret column, scanning everything, checking the
foreign keys and compressing. The demo's events table is partitioned by month. The raw dump
is timed with its default compression (gzip), and also with --compress=0 (what devdb asks
pg_dump for before it masks). Sizes on disk are compared with the raw default dump. Rounds
alternate which side goes first; medians are printed, with the ratios and rows per second.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from provisioning.demo import DEMO_DATABASE, generate
from provisioning.pg.programs import stop_servers_under
from provisioning.runtime import open_runtime
from provisioning.settings import Settings
from provisioning.shrink.pipeline import shrink
from provisioning.shrink.policy import parse_policy

DEMO_POLICY = Path(__file__).resolve().parents[1] / "provisioning" / "shrink" / "demo_policy.yml"
JOBS = 2


def size_of(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def whole_database_policy() -> str:
    text = DEMO_POLICY.read_text().replace("action: subset", "action: keep")
    return re.sub(r"\n    (root|where|follow_children): .*", "", text)


async def bench(scale: int, repeats: int) -> None:
    home = Path(tempfile.mkdtemp(prefix="devdb-bench-", dir="/tmp"))
    settings = Settings(home=home, user="bench", pg_service_file=home / "pg_service.conf")
    try:
        async with open_runtime(settings) as runtime:
            counts = await generate(
                runtime.server_dsn("postgres"), scale=scale, progress=lambda _: None
            )
            rows = sum(counts.values())
            source = runtime.server_dsn(DEMO_DATABASE)
            policy = parse_policy(whole_database_policy())
            print(f"demo database at scale {scale}: {rows:,} rows", flush=True)
            raw_s: list[float] = []
            raw0_s: list[float] = []
            shrink_s: list[float] = []
            raw_size: list[int] = []
            shrink_size: list[int] = []
            for attempt in range(repeats):

                async def raw(attempt: int = attempt) -> None:
                    # pg_dump's default (gzip) and uncompressed, as devdb shrink writes.
                    for times, extra in ((raw_s, []), (raw0_s, ["--compress=0"])):
                        out = home / f"raw-{attempt}"
                        started = time.perf_counter()
                        subprocess.run(
                            [
                                runtime.programs.path("pg_dump"),
                                "--format=directory",
                                f"--jobs={JOBS}",
                                *extra,
                                "--file",
                                str(out),
                                "--dbname",
                                source,
                            ],
                            check=True,
                        )
                        times.append(time.perf_counter() - started)
                        if not extra:
                            raw_size.append(size_of(out))
                        shutil.rmtree(out)

                async def devdb() -> None:
                    started = time.perf_counter()
                    manifest = await shrink(
                        source,
                        policy,
                        runtime.snapshots,
                        runtime.programs,
                        salt=b"bench-salt",
                        jobs=JOBS,
                    )
                    shrink_s.append(time.perf_counter() - started)
                    assert manifest.rows == rows, (manifest.rows, rows)
                    shrink_size.append(manifest.size)
                    await runtime.snapshots.delete(manifest.id)

                for run in (raw, devdb) if attempt % 2 == 0 else (devdb, raw):
                    await run()
                print(
                    f"  run {attempt + 1}: raw pg_dump {raw_s[-1]:.2f}s (-Z0 {raw0_s[-1]:.2f}s), "
                    f"devdb shrink {shrink_s[-1]:.2f}s; sizes {raw_size[-1] / 2**20:.1f} MiB "
                    f"raw, {shrink_size[-1] / 2**20:.1f} MiB devdb",
                    flush=True,
                )
    finally:
        stop_servers_under(home)
        shutil.rmtree(home, ignore_errors=True)
    raw_median = statistics.median(raw_s)
    raw0_median = statistics.median(raw0_s)
    shrink_median = statistics.median(shrink_s)
    print()
    print(
        f"{'rows':>10} {'raw pg_dump -Fd -j2':>20} {'devdb shrink':>13} {'ratio':>6} "
        f"{'shrink rows/s':>14} {'raw -Z0':>8} {'ratio vs -Z0':>13}"
    )
    print(
        f"{rows:>10,} {raw_median:>19.2f}s {shrink_median:>12.2f}s "
        f"{shrink_median / raw_median:>5.2f}x {rows / shrink_median:>14,.0f} "
        f"{raw0_median:>7.2f}s {shrink_median / raw0_median:>12.2f}x"
    )
    raw_mib = statistics.median(raw_size) / 2**20
    shrink_mib = statistics.median(shrink_size) / 2**20
    print()
    print(f"{'size: raw pg_dump -Fd':>22} {'devdb snapshot':>15} {'ratio':>6}")
    print(f"{raw_mib:>18.1f} MiB {shrink_mib:>11.1f} MiB {shrink_mib / raw_mib:>5.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    asyncio.run(bench(args.scale, args.repeats))


if __name__ == "__main__":
    main()
