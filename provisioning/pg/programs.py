"""Finding PostgreSQL's programs and running them, as an unprivileged account when devdb is root.

`initdb` and `pg_ctl` refuse to run as root, and containers often are root, so a root devdb
runs every server-side program as `DEVDB_SERVER_USER` (default: `postgres`).
"""

from __future__ import annotations

import asyncio
import os
import pwd
import re
import shutil
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from provisioning.errors import MissingBinary, ProvisioningFailed

_DEBIAN_ROOT = Path("/usr/lib/postgresql")


def _version_key(path: Path) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", path.name)) or (0,)


@dataclass(frozen=True)
class PgPrograms:
    """Where PostgreSQL's programs are; `path(name)` raises `MissingBinary` when one is absent."""

    bindir: Path | None = None

    def path(self, name: str) -> str:
        if self.bindir is not None:
            candidate = self.bindir / name
            if candidate.is_file() and os.access(candidate, os.X_OK):
                return str(candidate)
            raise MissingBinary(
                f"{name} was not found in DEVDB_PG_BIN ({self.bindir}): install the PostgreSQL "
                "server and client programs there or point DEVDB_PG_BIN at them."
            )
        found = shutil.which(name)
        if found:
            return found
        if _DEBIAN_ROOT.is_dir():
            for version_dir in sorted(_DEBIAN_ROOT.iterdir(), key=_version_key, reverse=True):
                candidate = version_dir / "bin" / name
                if candidate.is_file():
                    return str(candidate)
        raise MissingBinary(
            f"{name} was not found: install PostgreSQL (for example `apt-get install postgresql`) "
            "or set DEVDB_PG_BIN to the directory that holds its programs."
        )


@dataclass(frozen=True)
class ServerAccount:
    """The unprivileged account PostgreSQL servers run as when devdb itself is root."""

    name: str
    uid: int
    gid: int

    @classmethod
    def for_current_process(cls, configured: str | None) -> ServerAccount | None:
        """None when devdb is not root (servers run as the current user)."""
        if os.geteuid() != 0:
            return None
        name = configured or "postgres"
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            raise ProvisioningFailed(
                f"devdb is running as root, and PostgreSQL refuses to run as root, but the account "
                f"{name!r} that should run it does not exist: create it or set DEVDB_SERVER_USER."
            ) from None
        if entry.pw_uid == 0:
            raise ProvisioningFailed(
                f"DEVDB_SERVER_USER {name!r} is root; PostgreSQL needs an unprivileged account."
            )
        return cls(name=name, uid=entry.pw_uid, gid=entry.pw_gid)

    def popen_kwargs(self) -> dict[str, Any]:
        return {"user": self.uid, "group": self.gid, "extra_groups": []}

    def can_enter(self, path: Path) -> Path | None:
        """Return the first directory on `path` this account cannot traverse, or None."""
        groups = set(os.getgrouplist(self.name, self.gid))
        current = Path("/")
        for part in path.resolve().parts[1:]:
            current = current / part
            try:
                info = current.stat()
            except FileNotFoundError:
                return None
            if not stat.S_ISDIR(info.st_mode):
                return None
            if info.st_uid == self.uid:
                allowed = info.st_mode & stat.S_IXUSR
            elif info.st_gid in groups:
                allowed = info.st_mode & stat.S_IXGRP
            else:
                allowed = info.st_mode & stat.S_IXOTH
            if not allowed:
                return current
        return None

    def give(self, path: Path) -> None:
        """Hand a directory devdb created over to this account."""
        os.chown(path, self.uid, self.gid)


@dataclass(frozen=True)
class Completed:
    returncode: int
    stdout: str
    stderr: str


def owner_of(account: ServerAccount | None) -> tuple[int, int] | None:
    """Who files for a server must belong to: the server account, or None to keep them."""
    return (account.uid, account.gid) if account else None


async def run(
    argv: list[str],
    *,
    account: ServerAccount | None = None,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float | None = None,
) -> Completed:
    """Run a program to completion, as `account` when given, capturing its output."""
    kwargs: dict[str, Any] = account.popen_kwargs() if account else {}
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
            cwd=cwd,
            **kwargs,
        )
    except FileNotFoundError as exc:
        raise MissingBinary(f"{argv[0]} could not be started: {exc.strerror}.") from exc
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except (TimeoutError, asyncio.CancelledError):
        proc.kill()
        await proc.wait()
        raise
    return Completed(
        proc.returncode or 0, out.decode(errors="replace"), err.decode(errors="replace")
    )


def first_error(stderr: str, returncode: int) -> str:
    """The line of a PostgreSQL program's log that says what went wrong: the first ERROR
    with its DETAIL, rather than the last line, which is often only "a worker process died"."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    for marker in ("ERROR:", "FATAL:", "error:"):
        for index, line in enumerate(lines):
            if marker in line:
                reason = line[line.index(marker) + len(marker) :].strip()
                follow = lines[index + 1] if index + 1 < len(lines) else ""
                if follow.startswith("DETAIL:"):
                    reason += f" ({follow.removeprefix('DETAIL:').strip()})"
                return reason
    if lines:
        return lines[-1].split(": ", 1)[-1]
    return f"exit status {returncode}"


def server_env() -> dict[str, str]:
    """A small, predictable environment for server-side programs."""
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "LC_ALL": "C",
        "LANG": "C",
        "TZ": "UTC",
    }


def stop_servers_under(root: Path) -> None:
    """Stop, immediately, every server whose data directory lies under `root`.

    For throw-away trees (tests, benchmarks): blocking, and quiet about servers already down.
    """
    account = ServerAccount.for_current_process(None)
    pg_ctl = PgPrograms().path("pg_ctl")
    for pid_file in root.glob("**/data/postmaster.pid"):
        subprocess.run(
            [pg_ctl, "stop", "-m", "immediate", "-D", str(pid_file.parent)],
            capture_output=True,
            check=False,
            **(account.popen_kwargs() if account else {}),
        )
