"""Time to a ready environment: schema, template clone, and a normal local restore, same run.

    python bench/shared.py                 # demo data at scale 5 (about 110 MB), 3 rounds
    python bench/shared.py --scale 1 --repeats 5

Generates the demo database, publishes a snapshot of it, and makes the per-snapshot golden
copies once (their time is printed apart: it is paid once per snapshot, not per refresh).
Then, in rotating order each round, `Service.refresh` of:
  local      its own cluster (initdb, start, pg_restore --jobs 2),
  shared     a role and a schema on the shared server (pg_restore of the golden schema),
  shared-db  a role and a database copied from the golden database (CREATE DATABASE TEMPLATE),
each timed from the call until the environment is ready, then destroyed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from provisioning.demo import DEMO_DATABASE, generate
from provisioning.pg.programs import stop_servers_under
from provisioning.runtime import open_runtime
from provisioning.settings import Settings
from provisioning.snapshots.dump import dump_snapshot

KINDS = ("local", "shared", "shared-db")


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--scale", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="devdb-bench-shared-", dir="/tmp"))
    os.chmod(work, 0o755)
    settings = Settings(
        home=work,
        user="bench",
        quota=100,
        port_range=(56400, 56450),
        shared_port=56460,
        pg_service_file=work / "pg_service.conf",
        restore_jobs=2,
    )
    try:
        async with open_runtime(settings) as runtime:
            await generate(runtime.server_dsn("postgres"), scale=args.scale, progress=print_none)
            manifest = await dump_snapshot(
                runtime.server_dsn(DEMO_DATABASE), runtime.snapshots, runtime.programs
            )
            print(
                f"snapshot {manifest.id}: {manifest.rows:,} rows, "
                f"{manifest.data_bytes / 1e6:.0f} MB of table data"
            )
            service = runtime.service
            for kind in ("shared", "shared-db"):  # golden copies: once per snapshot
                started = time.perf_counter()
                view = await service.refresh("bench", f"warm-{kind}", kind=kind)
                print(
                    f"first {kind} refresh, golden copy included: "
                    f"{time.perf_counter() - started:.2f} s"
                )
                await service.destroy("bench", view.env.name)
            times: dict[str, list[float]] = {kind: [] for kind in KINDS}
            for round_ in range(args.repeats):
                order = KINDS[round_ % 3 :] + KINDS[: round_ % 3]
                for kind in order:
                    started = time.perf_counter()
                    view = await service.refresh("bench", f"b{round_}-{kind}", kind=kind)
                    times[kind].append(time.perf_counter() - started)
                    await service.destroy("bench", view.env.name)
        medians = {kind: statistics.median(values) for kind, values in times.items()}
        for kind in KINDS:
            runs = ", ".join(f"{t:.2f}" for t in times[kind])
            print(f"{kind:>10}: median {medians[kind]:.2f} s to ready  (runs {runs})")
        print(f"schema / local restore:          {medians['shared'] / medians['local']:.2f}")
        print(f"template clone / local restore:  {medians['shared-db'] / medians['local']:.2f}")
    finally:
        stop_servers_under(work)
        shutil.rmtree(work, ignore_errors=True)


def print_none(_: object) -> None:
    return None


if __name__ == "__main__":
    asyncio.run(main())
