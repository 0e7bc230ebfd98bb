"""Thin clones: snapshot → ready through `devdb refresh` with a golden copy in place, against
a raw `pg_restore --jobs 2` of the same dump into a fresh cluster, same run; and `reset`.

    python bench/clone.py                   # scales 1, 12, 70: ~30 MB, ~300 MB, ~1.1 GB
    python bench/clone.py --xfs             # the same with DEVDB_HOME on a loop-mounted
                                            # XFS (reflink=1); needs root and xfsprogs

Each database is the demo kept whole (a plain dump, not a subset). The golden copy is built
first; then rounds alternate: raw (initdb, start, pg_restore) and devdb (`devdb refresh` in a
child process, from start until the environment accepts a connection, then `devdb reset`
of it), each after a sync so that none pays for the writeback of the one before. Prints
medians, the ratio devdb / raw, how flat devdb stays across sizes, the clone method, and
the devdb process's peak RSS.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from refresh import JOBS, raw_restore, settings_for

from provisioning.demo import DEMO_DATABASE, generate
from provisioning.drivers.local import LocalDriver
from provisioning.pg.programs import stop_servers_under
from provisioning.runtime import open_runtime
from provisioning.snapshots.dump import dump_snapshot


def child(home: Path, action: str, name: str, snapshot: str) -> dict[str, Any]:
    code = f"""
import asyncio, json, resource, sys, time
sys.path.insert(0, {str(Path(__file__).resolve().parent)!r})
from refresh import settings_for
from provisioning.runtime import open_runtime
import asyncpg
from pathlib import Path

async def main():
    started = time.perf_counter()
    async with open_runtime(settings_for(Path({str(home)!r}))) as runtime:
        marks = []
        def note(event):
            marks.append((time.perf_counter() - started, event.message))
        if {action!r} == "refresh":
            view = await runtime.service.refresh(
                "bench", {name!r}, snapshot={snapshot!r}, progress=note
            )
        else:
            view, _ = await runtime.service.reset("bench", {name!r}, progress=note)
        conn = await asyncpg.connect(view.endpoint.dsn)
        await conn.close()
        seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    method = view.env.handle.get("method")
    print(json.dumps({{"seconds": seconds, "peak_rss_kb": peak, "method": method, "marks": marks}}))

asyncio.run(main())
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


async def bench_scale(home: Path, scale: int, repeats: int) -> dict[str, object]:
    async with open_runtime(settings_for(home)) as runtime:
        await generate(runtime.server_dsn("postgres"), scale=scale, progress=lambda _: None)
        manifest = await dump_snapshot(
            runtime.server_dsn(DEMO_DATABASE), runtime.snapshots, runtime.programs, jobs=JOBS
        )
        dump = await runtime.snapshots.fetch(manifest)
        driver = runtime.service.drivers["local"]
        assert isinstance(driver, LocalDriver) and driver.golden is not None
        started = time.perf_counter()
        await driver.golden.ensure(manifest, dump, lambda _: None)
        golden_s = time.perf_counter() - started
        programs = runtime.programs
    print(
        f"scale {scale}: {manifest.data_bytes / 1e6:,.0f} MB of table data, "
        f"golden copy built in {golden_s:.1f}s",
        flush=True,
    )
    raw_s: list[float] = []
    devdb_s: list[float] = []
    reset_s: list[float] = []
    peak = 0.0
    method = None
    marks: list[tuple[float, str]] = []
    reset_marks: list[tuple[float, str]] = []
    for attempt in range(repeats):
        name = f"b{scale}-{attempt}"

        async def raw(attempt: int = attempt) -> None:
            os.sync()  # each timed run starts with nothing left to write back
            created, restored = await raw_restore(programs, dump, home / f"raw-{attempt}", 56250)
            raw_s.append(created + restored)

        async def devdb(name: str = name) -> None:
            nonlocal peak, method
            os.sync()
            made = child(home, "refresh", name, manifest.id)
            devdb_s.append(made["seconds"])
            os.sync()
            again = child(home, "reset", name, manifest.id)
            reset_s.append(again["seconds"])
            peak = max(peak, made["peak_rss_kb"], again["peak_rss_kb"])
            method = made["method"]
            marks[:] = made["marks"]
            reset_marks[:] = again["marks"]

        for run in (raw, devdb) if attempt % 2 == 0 else (devdb, raw):
            await run()
        print(
            f"  run {attempt + 1}: raw {raw_s[-1]:.2f}s, devdb refresh {devdb_s[-1]:.2f}s, "
            f"reset {reset_s[-1]:.2f}s",
            flush=True,
        )
    # Where the last refresh spent its time: seconds since start at each progress event.
    print("  last refresh: " + "; ".join(f"{at:.2f}s {message}" for at, message in marks))
    print("  last reset: " + "; ".join(f"{at:.2f}s {message}" for at, message in reset_marks))
    return {
        "scale": scale,
        "data_mb": manifest.data_bytes / 1e6,
        "raw_s": statistics.median(raw_s),
        "devdb_s": statistics.median(devdb_s),
        "reset_s": statistics.median(reset_s),
        "peak_rss_mb": peak / 1024,
        "method": method,
    }


@contextmanager
def xfs_home() -> Iterator[Path]:
    base = Path(tempfile.mkdtemp(prefix="devdb-bench-xfs-", dir="/tmp"))
    image, mount = base / "image", base / "mnt"
    mount.mkdir()
    with open(image, "wb") as handle:
        handle.truncate(32 << 30)
    subprocess.run(["mkfs.xfs", "-q", "-m", "reflink=1", str(image)], check=True)
    subprocess.run(["mount", "-o", "loop", str(image), str(mount)], check=True)
    os.chmod(base, 0o755)
    os.chmod(mount, 0o755)
    try:
        yield mount / "home"
    finally:
        stop_servers_under(mount)
        subprocess.run(["umount", "-l", str(mount)], check=False)
        shutil.rmtree(base, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scales", type=int, nargs="+", default=[1, 12, 70])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--xfs", action="store_true", help="DEVDB_HOME on a loop-mounted XFS")
    args = parser.parse_args()
    results = []
    with xfs_home() if args.xfs else _plain_home() as home:
        for scale in args.scales:
            results.append(asyncio.run(bench_scale(home / f"s{scale}", scale, args.repeats)))
            stop_servers_under(home / f"s{scale}")
    print()
    print(
        f"{'scale':>5} {'data MB':>8} {'raw restore':>12} {'devdb refresh':>14} {'ratio':>6} "
        f"{'reset':>6} {'method':>8} {'peak RSS':>9}"
    )
    for r in results:
        print(
            f"{r['scale']:>5} {r['data_mb']:>8.0f} {r['raw_s']:>11.2f}s {r['devdb_s']:>13.2f}s "
            f"{r['devdb_s'] / r['raw_s']:>5.2f}x {r['reset_s']:>5.2f}s {r['method']!s:>8} "
            f"{r['peak_rss_mb']:>6.0f} MB"
        )
    times = [float(r["devdb_s"]) for r in results]  # type: ignore[arg-type]
    print(f"\nflatness: largest / smallest devdb refresh = {max(times) / min(times):.2f}")


@contextmanager
def _plain_home() -> Iterator[Path]:
    base = Path(tempfile.mkdtemp(prefix="devdb-bench-", dir="/tmp"))
    os.chmod(base, 0o755)  # the account that runs PostgreSQL must enter it
    try:
        yield base
    finally:
        stop_servers_under(base)
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
