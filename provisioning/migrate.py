"""The migrations hook: bring a restored snapshot up to the latest schema.

Either a directory of `.sql` files, applied in name order, each in its own transaction, or a
command run with the environment's connection in the usual libpq variables and DATABASE_URL.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import asyncpg

from provisioning.drivers.base import Progress
from provisioning.errors import MigrationFailed
from provisioning.models import Endpoint, ProgressEvent, Step


async def apply_migrations(
    endpoint: Endpoint,
    *,
    directory: Path | None,
    command: str | None,
    progress: Progress,
) -> list[str]:
    """Apply the configured migrations; return what was applied. `MigrationFailed` on error."""
    applied: list[str] = []
    if directory is not None:
        applied += await _apply_directory(endpoint, directory, progress)
    if command:
        await _run_command(endpoint, command, progress)
        applied.append(command)
    return applied


async def _apply_directory(endpoint: Endpoint, directory: Path, progress: Progress) -> list[str]:
    if not directory.is_dir():
        raise MigrationFailed(f"the migrations directory {directory} does not exist.")
    files = sorted(p for p in directory.iterdir() if p.suffix == ".sql" and p.is_file())
    if not files:
        return []
    conn = await asyncpg.connect(
        host=endpoint.host,
        port=endpoint.port,
        user=endpoint.user,
        password=endpoint.password,
        database=endpoint.database,
    )
    try:
        for index, path in enumerate(files):
            progress(
                ProgressEvent(
                    step=Step.MIGRATE,
                    message=f"applying {path.name}",
                    percent=100.0 * index / len(files),
                )
            )
            try:
                async with conn.transaction():
                    await conn.execute(path.read_text())
            except (asyncpg.PostgresError, UnicodeDecodeError) as exc:
                raise MigrationFailed(f"migration {path.name} failed: {exc}") from exc
    finally:
        await conn.close()
    return [p.name for p in files]


async def _run_command(endpoint: Endpoint, command: str, progress: Progress) -> None:
    progress(ProgressEvent(step=Step.MIGRATE, message=f"running {command}"))
    env = {
        **os.environ,
        "DATABASE_URL": endpoint.dsn,
        "PGHOST": endpoint.host,
        "PGPORT": str(endpoint.port),
        "PGUSER": endpoint.user,
        "PGPASSWORD": endpoint.password,
        "PGDATABASE": endpoint.database,
    }
    proc = await asyncio.create_subprocess_shell(
        command,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        out, _ = await proc.communicate()
    except asyncio.CancelledError:
        proc.kill()
        await proc.wait()
        raise
    if proc.returncode != 0:
        lines = out.decode(errors="replace").strip().splitlines()
        reason = lines[-1] if lines else f"exit status {proc.returncode}"
        raise MigrationFailed(f"the migrations command failed: {reason}")
