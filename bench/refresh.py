"""Snapshot → connectable environment: devdb against a raw `pg_restore --jobs 2`, same run.

    python bench/refresh.py                 # a small (scale 1) and a ~1 GB (scale 45) database
    python bench/refresh.py --scales 1 4    # other sizes

For each size it generates the demo database, publishes a snapshot, then alternates:
  raw    a fresh cluster (initdb + start, same settings devdb uses), then
         `pg_restore --jobs 2` of the same dump into it;
  devdb  `Service.refresh` in a child process, from opening the state store until the
         environment is ready, then one connection to it.
Which goes first alternates between rounds. It prints the medians, the ratios, and the
devdb process's own peak RSS (pg_restore, a child in both paths, is not counted).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import asyncpg

from provisioning.demo import DEMO_DATABASE, generate
from provisioning.pg.cluster import LocalCluster
from provisioning.pg.programs import PgPrograms, ServerAccount, stop_servers_under
from provisioning.runtime import open_runtime
from provisioning.settings import Settings
from provisioning.snapshots.dump import dump_snapshot

JOBS = 2


def settings_for(home: Path) -> Settings:
    return Settings(
        home=home,
        user="bench",
        quota=100,
        port_range=(56100, 56199),
        pg_service_file=home / "pg_service.conf",
        restore_jobs=JOBS,
    )


async def child_refresh(home: Path, name: str, snapshot: str) -> None:
    """Run one refresh and report its time and this process's peak RSS as JSON."""
    started = time.perf_counter()
    async with open_runtime(settings_for(home)) as runtime:
        view = await runtime.service.refresh("bench", name, snapshot=snapshot)
        assert view.endpoint is not None
        conn = await asyncpg.connect(view.endpoint.dsn)
        await conn.close()
        seconds = time.perf_counter() - started
        await runtime.service.destroy("bench", name)
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"seconds": seconds, "peak_rss_kb": peak_kb}))


async def raw_restore(
    programs: PgPrograms, dump: Path, root: Path, port: int
) -> tuple[float, float]:
    """(cluster creation seconds, pg_restore seconds) for one raw restore."""
    cluster = LocalCluster(
        root,
        port,
        programs=programs,
        account=ServerAccount.for_current_process(None),
        durable=False,
    )
    started = time.perf_counter()
    await cluster.create()
    await cluster.start()
    conn = await cluster.connect()
    await conn.execute("create database raw")
    await conn.close()
    created = time.perf_counter() - started
    started = time.perf_counter()
    result = subprocess.run(
        [
            programs.path("pg_restore"),
            "--format=directory",
            f"--jobs={JOBS}",
            "--no-owner",
            "--no-privileges",
            "--exit-on-error",
            "--host",
            str(cluster.socket_dir),
            "--port",
            str(port),
            "--username",
            "devdb",
            "--dbname",
            "raw",
            str(dump),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    restored = time.perf_counter() - started
    await cluster.remove()
    if result.returncode != 0:
        raise SystemExit(f"raw pg_restore failed: {result.stderr.strip()}")
    return created, restored


async def bench_scale(home: Path, scale: int, repeats: int) -> dict[str, float]:
    async with open_runtime(settings_for(home)) as runtime:
        started = time.perf_counter()
        await generate(runtime.server_dsn("postgres"), scale=scale, progress=lambda _: None)
        conn = await asyncpg.connect(runtime.server_dsn(DEMO_DATABASE))
        db_bytes = await conn.fetchval("select pg_database_size(current_database())")
        await conn.close()
        manifest = await dump_snapshot(
            runtime.server_dsn(DEMO_DATABASE), runtime.snapshots, runtime.programs, jobs=JOBS
        )
        print(
            f"scale {scale}: generated and dumped in {time.perf_counter() - started:.0f}s; "
            f"database {db_bytes / 1e6:,.0f} MB on disk, "
            f"{manifest.data_bytes / 1e6:,.0f} MB of COPY data, dump {manifest.size / 1e6:,.0f} MB,"
            f" {manifest.rows:,} rows",
            flush=True,
        )
        dump = runtime.settings.snapshots_dir / manifest.id / "dump"
        programs = runtime.programs
    raw_create: list[float] = []
    raw_restore_s: list[float] = []
    devdb_s: list[float] = []
    peaks: list[int] = []
    for attempt in range(repeats):

        async def raw(attempt: int = attempt) -> None:
            created, restored = await raw_restore(programs, dump, home / f"raw-{attempt}", 56250)
            raw_create.append(created)
            raw_restore_s.append(restored)

        async def devdb(attempt: int = attempt) -> None:
            out = subprocess.run(
                [sys.executable, __file__, "--child", str(home), f"bench-{attempt}", manifest.id],
                capture_output=True,
                text=True,
                check=True,
            )
            child = json.loads(out.stdout.strip().splitlines()[-1])
            devdb_s.append(child["seconds"])
            peaks.append(child["peak_rss_kb"])

        # Alternate which goes first, so neither always meets a warmer or busier machine.
        for run in (raw, devdb) if attempt % 2 == 0 else (devdb, raw):
            await run()
        print(
            f"  run {attempt + 1}: raw {raw_create[-1]:.2f}s + {raw_restore_s[-1]:.2f}s, "
            f"devdb {devdb_s[-1]:.2f}s",
            flush=True,
        )
    raw_total = statistics.median(c + r for c, r in zip(raw_create, raw_restore_s, strict=True))
    return {
        "scale": scale,
        "data_mb": manifest.data_bytes / 1e6,
        "raw_pg_restore_s": statistics.median(raw_restore_s),
        "raw_cluster_and_restore_s": raw_total,
        "devdb_s": statistics.median(devdb_s),
        "ratio_vs_cluster_and_restore": statistics.median(devdb_s) / raw_total,
        "ratio_vs_pg_restore_only": statistics.median(devdb_s) / statistics.median(raw_restore_s),
        "devdb_peak_rss_mb": max(peaks) / 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scales", type=int, nargs="+", default=[1, 45])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--child", nargs=3, metavar=("HOME", "NAME", "SNAPSHOT"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.child:
        asyncio.run(child_refresh(Path(args.child[0]), args.child[1], args.child[2]))
        return
    home = Path(tempfile.mkdtemp(prefix="devdb-bench-", dir="/tmp"))
    results = []
    try:
        for scale in args.scales:
            results.append(asyncio.run(bench_scale(home, scale, args.repeats)))
    finally:
        stop_servers_under(home)
        shutil.rmtree(home, ignore_errors=True)
    print()
    print(
        f"{'scale':>5} {'data MB':>8} {'raw pg_restore':>15} {'raw initdb+restore':>19} "
        f"{'devdb':>8} {'ratio':>7} {'ratio (restore only)':>21} {'devdb peak RSS':>15}"
    )
    for r in results:
        print(
            f"{r['scale']:>5} {r['data_mb']:>8.0f} {r['raw_pg_restore_s']:>14.2f}s "
            f"{r['raw_cluster_and_restore_s']:>18.2f}s {r['devdb_s']:>7.2f}s "
            f"{r['ratio_vs_cluster_and_restore']:>6.2f}x {r['ratio_vs_pg_restore_only']:>20.2f}x "
            f"{r['devdb_peak_rss_mb']:>12.0f} MB"
        )


if __name__ == "__main__":
    main()
