"""The migrations hook: bring a restored snapshot up to the latest schema.

Either a directory of `.sql` files, applied in name order, each in its own transaction, or a
command run with the environment's connection in the usual libpq variables and DATABASE_URL.

The command sees only what it needs: those variables, PATH, HOME, LANG, and the variables
named in DEVDB_MIGRATIONS_ENV; never devdb's own settings (Slack tokens, the masking salt,
the shared server's admin URL, AWS credentials). What a failure printed goes to the
environment's owner alone (`MigrationFailed.output`).
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
    passed: tuple[str, ...] = (),
) -> list[str]:
    """Apply the configured migrations; return what was applied. `MigrationFailed` on error."""
    applied: list[str] = []
    if directory is not None:
        applied += await _apply_directory(endpoint, directory, progress)
    if command:
        await _run_command(endpoint, command, progress, passed)
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
                raise MigrationFailed(f"migration {path.name} failed.", str(exc)) from exc
    finally:
        await conn.close()
    return [p.name for p in files]


BASE_ENV = ("PATH", "HOME", "LANG")


def command_env(endpoint: Endpoint, passed: tuple[str, ...]) -> dict[str, str]:
    """The migrations command's whole environment."""
    env = {name: os.environ[name] for name in (*BASE_ENV, *passed) if name in os.environ}
    env.update(
        DATABASE_URL=endpoint.dsn,
        PGHOST=endpoint.host,
        PGPORT=str(endpoint.port),
        PGUSER=endpoint.user,
        PGPASSWORD=endpoint.password,
        PGDATABASE=endpoint.database,
    )
    return env


async def _run_command(
    endpoint: Endpoint, command: str, progress: Progress, passed: tuple[str, ...]
) -> None:
    progress(ProgressEvent(step=Step.MIGRATE, message="running the migrations command"))
    proc = await asyncio.create_subprocess_shell(
        command,
        env=command_env(endpoint, passed),
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
        raise MigrationFailed(
            f"the migrations command failed (exit status {proc.returncode}).",
            out.decode(errors="replace").strip(),
        )
