"""Time to a ready environment: schema, template clone, a local clone, and a raw restore,
same run.

    python bench/shared.py                 # demo data at scale 5 (about 110 MB), 3 rounds
    python bench/shared.py --scale 1 --repeats 5

Generates the demo database, publishes a snapshot of it, and makes the per-snapshot golden
copies once (their time is printed apart: it is paid once per snapshot, not per refresh).
Then, in rotating order each round, `Service.refresh` of:
  local      its own cluster (initdb, start, pg_restore --jobs 2),
  shared     a role and a schema on the shared server (pg_restore of the golden schema),
  shared-db  a role and a database copied from the golden database (CREATE DATABASE TEMPLATE),
each timed from the call until the environment is ready, then destroyed; and, as the
baseline, a raw `pg_restore --jobs 2` of the same dump into a new database on the shared
server (what any restore-based tool does), timed from CREATE DATABASE to pg_restore's exit.
"""

from __future__ import annotations

import argparse
import asyncio
import os
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
from provisioning.snapshots.dump import dump_snapshot

KINDS = ("raw", "local", "shared", "shared-db")


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
            server = service.drivers["shared"].server  # type: ignore[attr-defined]
            dump = await runtime.snapshots.fetch(manifest)
            pg_restore = runtime.programs.path("pg_restore")
            times: dict[str, list[float]] = {kind: [] for kind in KINDS}
            for round_ in range(args.repeats):
                order = KINDS[round_ % 4 :] + KINDS[: round_ % 4]
                for kind in order:
                    started = time.perf_counter()
                    if kind == "raw":
                        database = f"raw_{round_}"
                        await server.execute("postgres", f"create database {database}")
                        done = subprocess.run(
                            [
                                pg_restore,
                                "--jobs",
                                "2",
                                "--no-owner",
                                "-d",
                                server.target(database).dsn,
                                str(dump),
                            ],
                            capture_output=True,
                            text=True,
                            check=False,
                        )
                        times[kind].append(time.perf_counter() - started)
                        assert done.returncode == 0, done.stderr
                        await server.execute("postgres", f"drop database {database}")
                        continue
                    view = await service.refresh("bench", f"b{round_}-{kind}", kind=kind)
                    times[kind].append(time.perf_counter() - started)
                    await service.destroy("bench", view.env.name)
        medians = {kind: statistics.median(values) for kind, values in times.items()}
        for kind in KINDS:
            runs = ", ".join(f"{t:.2f}" for t in times[kind])
            print(f"{kind:>10}: median {medians[kind]:.2f} s to ready  (runs {runs})")
        for kind, label in (
            ("shared", "schema"),
            ("shared-db", "template clone"),
            ("local", "local clone"),
        ):
            print(f"{label + ' / raw pg_restore:':<32} {medians[kind] / medians['raw']:.2f}")
    finally:
        stop_servers_under(work)
        shutil.rmtree(work, ignore_errors=True)


def print_none(_: object) -> None:
    return None


if __name__ == "__main__":
    asyncio.run(main())
