"""Restoring a snapshot into a running server with `pg_restore --jobs`, reporting progress.

Progress is measured, not guessed: while pg_restore runs, the server's
`pg_stat_progress_copy` says how many bytes each COPY has taken in, and the manifest says
how many bytes each table's data holds. A table is counted whole once pg_restore reports it
finished (or its COPY leaves the view). Index and constraint builds follow the data; they
show as the last few percent.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import asyncpg

from provisioning.errors import MissingBinary, ProvisioningFailed
from provisioning.models import ProgressEvent, Step
from provisioning.pg.programs import PgPrograms, first_error, run
from provisioning.snapshots.manifest import Manifest

POLL_SECONDS = 0.5
DATA_SHARE = 95.0  # percent of the bar for data; the rest is indexes and constraints
_FINISHED = re.compile(r"finished item (\d+) TABLE DATA")
_PROGRESS_SQL = """
select n.nspname || '.' || c.relname as rel, p.bytes_processed
from pg_stat_progress_copy p
join pg_class c on c.oid = p.relid
join pg_namespace n on n.oid = c.relnamespace
where p.datname = $1
"""


@dataclass(frozen=True, kw_only=True)
class Target:
    """Where to restore: a libpq host (or socket directory), port, user and database."""

    host: str
    port: int
    user: str
    database: str
    password: str | None = None
    role: str | None = None  # restore as this role (SET ROLE), so it owns what is made

    async def connect(self, *, app: str, called: str) -> asyncpg.Connection:
        """A connection to this place; `called` names it in the sentence if it fails."""
        try:
            return await asyncpg.connect(
                host=self.host,
                port=self.port,
                user=self.user,
                password=self.password,
                database=self.database,
                server_settings={"application_name": app},
            )
        except (OSError, asyncpg.PostgresError) as exc:
            raise ProvisioningFailed(f"{called} could not be reached: {exc}.") from exc

    @property
    def dsn(self) -> str:
        """The same place as a postgresql:// URL (the host may be a socket directory)."""
        login = quote(self.user, safe="")
        if self.password:
            login += ":" + quote(self.password, safe="")
        return (
            f"postgresql://{login}@/{quote(self.database, safe='')}"
            f"?host={quote(self.host, safe='')}&port={self.port}"
        )


class _Meter:
    """Turns observations into bytes done and an ETA."""

    def __init__(self, manifest: Manifest) -> None:
        self.total = manifest.data_bytes
        self.sizes = {name: entry.data_bytes for name, entry in manifest.tables.items()}
        self.by_dump_id = {
            entry.file.split(".", 1)[0]: name
            for name, entry in manifest.tables.items()
            if entry.file
        }
        self.finished: set[str] = set()
        self.active: dict[str, int] = {}
        self.started = time.monotonic()

    def finish_item(self, dump_id: str) -> None:
        if dump_id in self.by_dump_id:
            self.finished.add(self.by_dump_id[dump_id])

    def observe(self, rows: list[tuple[str, int]]) -> None:
        current = dict(rows)
        # A COPY that left the view has finished.
        self.finished.update(rel for rel in self.active if rel not in current)
        self.active = {rel: done for rel, done in current.items() if rel not in self.finished}

    def done(self) -> int:
        whole = sum(self.sizes.get(rel, 0) for rel in self.finished)
        partial = sum(min(b, self.sizes.get(rel, b)) for rel, b in self.active.items())
        return min(self.total, whole + partial)

    def event(self) -> ProgressEvent:
        done = self.done()
        total = self.total
        elapsed = time.monotonic() - self.started
        if total and done >= total:
            return ProgressEvent(
                step=Step.RESTORE,
                message="building indexes and constraints",
                percent=DATA_SHARE,
                bytes_done=done,
                bytes_total=total,
            )
        eta = elapsed * (total - done) / done if done else None
        percent = DATA_SHARE * done / total if total else 0.0
        return ProgressEvent(
            step=Step.RESTORE,
            message="loading data",
            percent=percent,
            bytes_done=done,
            bytes_total=total,
            eta_seconds=eta,
        )


def restored(message: str, total: int) -> ProgressEvent:
    """The restore step's last event: all `total` bytes in, however they got there."""
    return ProgressEvent(
        step=Step.RESTORE,
        message=message,
        percent=100.0,
        bytes_done=total,
        bytes_total=total,
        eta_seconds=0.0,
    )


def major(version: str) -> int | None:
    """15 from "15.8 (Debian 15.8-0+deb12u1)" or "pg_restore (PostgreSQL) 15.8 (Debian …)"."""
    text = version.split("PostgreSQL)")[-1]  # after pg_restore's own name, if it is there
    found = re.search(r"\d+", text)
    return int(found.group()) if found else None


async def check_versions(programs: PgPrograms, manifest: Manifest) -> None:
    """Refuse, in one sentence, a snapshot from a newer PostgreSQL than these programs: its
    schema may use what they cannot restore."""
    result = await run([programs.path("pg_restore"), "--version"])
    ours, theirs = major(result.stdout), major(manifest.pg_version)
    if ours is not None and theirs is not None and theirs > ours:
        raise ProvisioningFailed(
            f"snapshot {manifest.id} comes from PostgreSQL {theirs}, newer than the "
            f"PostgreSQL {ours} here: install PostgreSQL {theirs} or later (on EC2, in the image)."
        )


async def restore_dump(
    *,
    programs: PgPrograms,
    dump_dir: Path,
    manifest: Manifest,
    target: Target,
    jobs: int,
    monitor: Callable[[], Awaitable[asyncpg.Connection]],
    progress: Callable[[ProgressEvent], None],
    only: Path | None = None,
    clean: bool = False,
) -> None:
    """Run pg_restore into `target`, calling `progress` about twice a second.

    `only`: a pg_restore list file (`-L`) naming the archive entries to restore. `clean`:
    drop the archive's objects in the target first (`--clean --if-exists`)."""
    await check_versions(programs, manifest)
    argv = [
        programs.path("pg_restore"),
        "--format=directory",
        f"--jobs={max(1, jobs)}",
        "--no-owner",
        "--no-privileges",
        "--exit-on-error",
        "--verbose",
        "--host",
        target.host,
        "--port",
        str(target.port),
        "--username",
        target.user,
        "--dbname",
        target.database,
        *([f"--role={target.role}"] if target.role else []),
        *(["--use-list", str(only)] if only else []),
        *(["--clean", "--if-exists"] if clean else []),
        str(dump_dir),
    ]
    env = {**os.environ, "PGAPPNAME": "devdb-restore"}
    if target.password:
        env["PGPASSWORD"] = target.password
    meter = _Meter(manifest)
    errors: list[str] = []
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            env=env,
        )
    except OSError as exc:
        raise MissingBinary(f"pg_restore could not be started: {exc.strerror}.") from exc

    async def read_log() -> None:
        assert proc.stderr is not None
        async for raw in proc.stderr:
            line = raw.decode(errors="replace").rstrip()
            if match := _FINISHED.search(line):
                meter.finish_item(match.group(1))
            elif not line.startswith("pg_restore: ") or "error" in line or "FATAL" in line:
                errors.append(line)

    reader = asyncio.create_task(read_log())
    conn: asyncpg.Connection | None = None
    try:
        conn = await monitor()
        progress(meter.event())
        while True:
            try:
                await asyncio.wait_for(asyncio.shield(proc.wait()), POLL_SECONDS)
                break
            except TimeoutError:
                pass
            rows = await conn.fetch(_PROGRESS_SQL, target.database)
            meter.observe([(r["rel"], r["bytes_processed"]) for r in rows])
            progress(meter.event())
        await reader
    finally:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
        reader.cancel()
        if conn is not None:
            await conn.close()
    if proc.returncode != 0:
        reason = first_error("\n".join(errors), proc.returncode or 1)
        raise ProvisioningFailed(f"pg_restore failed: {reason}")
    progress(restored("restored", meter.total))
