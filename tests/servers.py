"""Stopping the PostgreSQL servers tests started, whoever started them."""

from __future__ import annotations

import subprocess
from pathlib import Path

from provisioning.postgres import PgPrograms, ServerAccount


def stop_servers(home: Path) -> None:
    """Stop every PostgreSQL server whose data directory lies under `home`."""
    account = ServerAccount.for_current_process(None)
    pg_ctl = PgPrograms().path("pg_ctl")
    for pid_file in home.glob("**/data/postmaster.pid"):
        subprocess.run(
            [pg_ctl, "stop", "-m", "immediate", "-D", str(pid_file.parent)],
            capture_output=True,
            check=False,
            **(account.popen_kwargs() if account else {}),
        )
