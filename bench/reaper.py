"""The scheduler's hot paths: one reaper sweep over many environments, and a warm handoff.

    python bench/reaper.py                  # 1,000 environments; 3 handoffs against 3 restores
    python bench/reaper.py --envs 300 --repeats 5

Sweep: 1,000 databases on one local PostgreSQL server stand in for 1,000 environments (a
driver whose handle names a database); each is a ready row in the state store. One
`reap_sweep` probes them all (32 at a time) and judges each. Goal: at most 5 s.

Handoff: the demo snapshot (scale 1); `Service.refresh` from the warm pool against a normal
restore of the same snapshot, alternating, in this process; then the same through the
`devdb refresh` command (a new process each time: start-up, recovery, handoff). Goal: at
most 1 s for the pooled refresh.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

from provisioning.demo import DEMO_DATABASE, demo_policy, generate
from provisioning.drivers.base import Activity, Handle
from provisioning.drivers.local import LocalDriver
from provisioning.pg.cluster import LocalCluster
from provisioning.pg.probe import probe
from provisioning.pg.programs import ServerAccount, stop_servers_under
from provisioning.runtime import Runtime, open_runtime
from provisioning.service import Service
from provisioning.settings import Settings
from provisioning.shrink.pipeline import shrink
from provisioning.sweeps import pool_sweep, reap_sweep

PORT = 56290


class DatabaseDriver(LocalDriver):
    """Environments that are databases on one server: only the probe differs."""

    kind = "benchdb"

    def __init__(self, cluster: LocalCluster, base: LocalDriver) -> None:
        super().__init__(
            base.clusters_dir,
            programs=base.programs,
            account=base.account,
            port_range=base.port_range,
        )
        self.server = cluster

    async def activity(self, handle: Handle) -> Activity:
        return await probe(
            [handle["db"]], host=str(self.server.socket_dir), port=self.server.port, user="devdb"
        )


async def sweep_bench(runtime: Runtime, work: Path, envs: int) -> None:
    base = runtime.service.drivers["local"]
    assert isinstance(base, LocalDriver)
    server = LocalCluster(
        work / "server",
        PORT,
        programs=runtime.programs,
        account=ServerAccount.for_current_process(None),
        tcp=False,
        durable=False,
    )
    await server.create()
    with open(server.data_dir / "postgresql.conf", "a") as conf:
        conf.write("max_connections = 200\n")
    await server.start()
    started = time.perf_counter()

    async def make(indexes: range) -> None:
        admin = await server.connect()
        try:
            for index in indexes:
                await admin.execute(f"create database bench{index}")
        finally:
            await admin.close()

    await asyncio.gather(*(make(range(i, envs, 4)) for i in range(4)))
    print(f"made {envs} databases in {time.perf_counter() - started:.1f} s")
    now = datetime.now(UTC)
    async with runtime.store.connection() as tx:
        await tx.conn.executemany(
            "insert into devdb.environments (name, owner, kind, state, handle, host, port,"
            " database, username, created_at, ready_at, expires_at)"
            " values ($1, $2, 'benchdb', 'ready', $3, 'local', $4, $1, 'dev', $5, $5, $6)",
            [
                (
                    f"bench{index}",
                    f"user{index % 50}",
                    {"db": f"bench{index}"},
                    PORT,
                    now - timedelta(minutes=index % 300),
                    now + timedelta(hours=8),
                )
                for index in range(envs)
            ],
        )
    service = Service(
        store=runtime.store,
        drivers={"benchdb": DatabaseDriver(server, base)},
        snapshots=runtime.snapshots,
        secrets=runtime.service.secrets,
        policy=runtime.service.policy,
        job_options=runtime.service.job_options,
    )
    times = []
    for round_ in range(3):
        started = time.perf_counter()
        report = await reap_sweep(service, now + timedelta(minutes=5 * round_), dry_run=True)
        times.append(time.perf_counter() - started)
        assert len(report.verdicts) == envs, (len(report.verdicts), report.unreachable[:3])
    print(
        f"one reaper sweep over {envs} environments: median {statistics.median(times):.2f} s "
        f"(runs {', '.join(f'{t:.2f}' for t in times)}; goal 5 s)"
    )
    async with runtime.store.connection() as tx:
        await tx.conn.execute("delete from devdb.environments where kind = 'benchdb'")
    await server.remove()


async def handoff_bench(runtime: Runtime, home: Path, repeats: int) -> None:
    await generate(runtime.server_dsn("postgres"), scale=1, progress=lambda _: None)
    manifest = await shrink(
        runtime.server_dsn(DEMO_DATABASE),
        demo_policy(),
        runtime.snapshots,
        runtime.programs,
        salt=b"bench",
    )
    service = runtime.service
    times: dict[str, list[float]] = {"warm": [], "restore": [], "cli warm": [], "cli restore": []}
    env = {
        **os.environ,
        "DEVDB_HOME": str(home),
        "DEVDB_USER": "bench",
        "DEVDB_PORT_RANGE": "56100-56199",
        "PGSERVICEFILE": str(home / "pg_service.conf"),
    }
    devdb = [sys.executable, "-m", "bot.cli"]
    for round_ in range(repeats):
        order = ["warm", "restore"] if round_ % 2 == 0 else ["restore", "warm"]
        for how in order:
            await pool_sweep(with_pool(service, how == "warm"), datetime.now(UTC))
            name = f"handoff-{round_}-{how}"
            started = time.perf_counter()
            view = await service.refresh("bench", name, snapshot=manifest.id)
            times[how].append(time.perf_counter() - started)
            await service.destroy("bench", view.env.name)
        for how in order:
            await pool_sweep(with_pool(service, how == "warm"), datetime.now(UTC))
            name = f"cli-{round_}-{how.replace(' ', '')}"
            started = time.perf_counter()
            result = subprocess.run(
                [*devdb, "refresh", name], env=env, capture_output=True, text=True, check=False
            )
            times[f"cli {how}"].append(time.perf_counter() - started)
            if result.returncode != 0:
                raise SystemExit(result.stderr)
            await service.destroy("bench", name)
    await pool_sweep(with_pool(service, False), datetime.now(UTC))
    medians = {how: statistics.median(values) for how, values in times.items()}
    for how, values in times.items():
        print(
            f"{how:>12}: median {medians[how]:.2f} s (runs {', '.join(f'{t:.2f}' for t in values)})"
        )
    print(f"warm handoff / normal restore, in process: {medians['warm'] / medians['restore']:.2f}")
    print(
        f"warm handoff / normal restore, devdb command: "
        f"{medians['cli warm'] / medians['cli restore']:.2f} (goal: warm at most 1 s)"
    )


def with_pool(service: Service, warm: bool) -> Service:
    """The service with a pool of one warm environment, or none."""
    return Service(
        store=service.store,
        drivers=service.drivers,
        snapshots=service.snapshots,
        secrets=service.secrets,
        policy=replace(service.policy, pool_size=1 if warm else 0),
        job_options=service.job_options,
    )


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--envs", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="devdb-bench-reaper-", dir="/tmp"))
    os.chmod(work, 0o755)
    home = work / "home"
    settings = Settings(
        home=home,
        user="bench",
        quota=100,
        port_range=(56100, 56199),
        pg_service_file=home / "pg_service.conf",
    )
    try:
        async with open_runtime(settings) as runtime:
            await sweep_bench(runtime, work, args.envs)
            await handoff_bench(runtime, home, args.repeats)
    finally:
        stop_servers_under(work)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(main())
