"""Entries in the user's `~/.pg_service.conf`, so `psql service=devdb-NAME` always works,
and `psql service=devdb` reaches whichever environment `devdb use` chose last.

Only devdb's own sections are rewritten; everything else in the file is kept as it was.
The file holds passwords, so it is written with mode 0600.
"""

from __future__ import annotations

import os
from pathlib import Path

from provisioning.models import Connection, Endpoint, TableSet

STABLE = "devdb"  # the section `devdb use` points at an environment


def section_name(env_name: str) -> str:
    return f"{STABLE}-{env_name}"


def _without(lines: list[str], section: str) -> list[str]:
    kept: list[str] = []
    skipping = False
    for line in lines:
        stripped = line.strip()
        if stripped.startswith("[") and stripped.endswith("]"):
            skipping = stripped[1:-1].strip() == section
        if not skipping:
            kept.append(line)
    while kept and not kept[-1].strip():
        kept.pop()
    return kept


def _write(path: Path, lines: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".devdb-tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write("\n".join(lines) + ("\n" if lines else ""))
    tmp.replace(path)


def _read(path: Path) -> list[str]:
    try:
        return path.read_text().splitlines()
    except FileNotFoundError:
        return []


def snippet(env_name: str, endpoint: Endpoint, section: str | None = None) -> str:
    """The `[devdb-NAME]` section (or `section`) for an endpoint."""
    return "\n".join(
        [
            f"[{section or section_name(env_name)}]",
            f"host={endpoint.host}",
            f"port={endpoint.port}",
            f"dbname={endpoint.database}",
            f"user={endpoint.user}",
            f"password={endpoint.password}",
        ]
    )


def write_entry(
    path: Path, env_name: str, endpoint: Connection, section: str | None = None
) -> None:
    """Add or replace the environment's section (or `section`, pointed at it); DynamoDB
    tables have none."""
    if isinstance(endpoint, TableSet):
        return
    lines = _without(_read(path), section or section_name(env_name))
    if lines:
        lines.append("")
    lines.extend(snippet(env_name, endpoint, section).splitlines())
    _write(path, lines)


def remove_entry(path: Path, env_name: str) -> None:
    """Drop the environment's section, if the file has one."""
    lines = _read(path)
    kept = _without(lines, section_name(env_name))
    if kept != lines:
        _write(path, kept)
