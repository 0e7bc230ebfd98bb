"""One PostgreSQL cluster in a directory of its own: created, started, stopped and removed.

Layout of a cluster root (mode 0700, owned by the server account):
    data/        the data directory
    server.log   the server's log
    .s.PGSQL.*   its Unix socket (only the server account and root can reach it)

The superuser `devdb` logs in over that socket without a password; TCP, when enabled,
listens on 127.0.0.1 (or the given addresses, on a cloud instance behind its security
group) and requires scram-sha-256.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
from pathlib import Path

import asyncpg

from provisioning.errors import PortInUse, ProvisioningFailed
from provisioning.pg.clone import clone_tree
from provisioning.pg.programs import PgPrograms, ServerAccount, owner_of, run, server_env

SUPERUSER = "devdb"
# Unix socket paths are limited to 107 bytes; leave room for "/.s.PGSQL.65535".
_MAX_SOCKET_DIR = 90


class LocalCluster:
    """A PostgreSQL cluster under `root`, serving `port`."""

    def __init__(
        self,
        root: Path,
        port: int,
        *,
        programs: PgPrograms,
        account: ServerAccount | None,
        tcp: bool = True,
        durable: bool = True,
        listen: str = "127.0.0.1",
    ) -> None:
        self.root = root
        self.port = port
        self.programs = programs
        self.account = account
        self.tcp = tcp
        self.durable = durable
        self.listen = listen

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def log_file(self) -> Path:
        return self.root / "server.log"

    @property
    def socket_dir(self) -> Path:
        return self.root

    def exists(self) -> bool:
        return (self.data_dir / "PG_VERSION").is_file()

    def running_pid(self) -> int | None:
        """The postmaster's pid if it is alive, read from postmaster.pid."""
        try:
            first = (self.data_dir / "postmaster.pid").read_text().split("\n", 1)[0]
            pid = int(first)
        except (OSError, ValueError):
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            return pid
        return pid

    async def create(self) -> None:
        """Make the directory and run initdb; raise `ProvisioningFailed` with initdb's reason."""
        self._check_socket_path()
        initdb = self.programs.path("initdb")
        self.root.parent.mkdir(parents=True, exist_ok=True)
        self.root.mkdir(mode=0o700)
        if self.account:
            self.account.give(self.root)
        args = [
            initdb,
            "-D",
            str(self.data_dir),
            "-U",
            SUPERUSER,
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            "--encoding=UTF8",
            "--locale=C",
        ]
        if not self.durable:
            args.append("--no-sync")
        result = await run(args, account=self.account, env=server_env(), cwd=self.root)
        if result.returncode != 0:
            raise ProvisioningFailed(f"initdb failed: {_last_line(result.stderr)}")
        self.configure()

    async def adopt(self, data_dir: Path) -> str:
        """Make this cluster a copy of another's stopped data directory (a golden copy),
        configured for this root and port; return how it was copied ("reflink" or "copy")."""
        self._check_socket_path()
        self.root.parent.mkdir(parents=True, exist_ok=True)
        if not self.root.is_dir():  # a reset copies into the cluster it already has
            self.root.mkdir(mode=0o700)
            if self.account:
                self.account.give(self.root)
        owner = owner_of(self.account)
        method = await asyncio.to_thread(clone_tree, data_dir, self.data_dir, owner=owner)
        (self.data_dir / "postmaster.pid").unlink(missing_ok=True)
        self.configure()
        return method

    def _check_socket_path(self) -> None:
        if len(str(self.socket_dir)) > _MAX_SOCKET_DIR:
            raise ProvisioningFailed(
                f"the path {self.root} is too long for a PostgreSQL socket: "
                "choose a shorter DEVDB_HOME."
            )

    def configure(self) -> None:
        """Append this cluster's settings; later lines win, so a copy is reconfigured too."""
        settings = {
            "port": str(self.port),
            "listen_addresses": f"'{self.listen}'" if self.tcp else "''",
            "unix_socket_directories": f"'{self.socket_dir}'",
            "unix_socket_permissions": "0700",
            "password_encryption": "'scram-sha-256'",
            "timezone": "'UTC'",
            "log_timezone": "'UTC'",
        }
        if not self.durable:
            # Throw-away environments trade crash safety for restore speed: a crashed one is
            # refreshed, never repaired.
            settings.update(fsync="off", synchronous_commit="off", full_page_writes="off")
        conf = "\n# devdb\n" + "".join(f"{key} = {value}\n" for key, value in settings.items())
        with open(self.data_dir / "postgresql.conf", "a") as handle:
            handle.write(conf)
        if self.tcp and self.listen not in ("127.0.0.1", "localhost"):
            # initdb admits TCP from loopback only; the instance's firewall decides who else.
            with open(self.data_dir / "pg_hba.conf", "a") as handle:
                handle.write("\n# devdb: remote clients, password required\n")
                handle.write("host all all 0.0.0.0/0 scram-sha-256\n")
                handle.write("host all all ::/0 scram-sha-256\n")

    async def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        if self.running_pid() is not None:
            return
        pg_ctl = self.programs.path("pg_ctl")
        result = await run(
            [pg_ctl, "start", "-w", "-t", "60", "-D", str(self.data_dir), "-l", str(self.log_file)],
            account=self.account,
            env=server_env(),
            cwd=self.root,
        )
        if result.returncode == 0:
            return
        log = self.read_log()
        if "Address already in use" in log or "could not bind" in log:
            raise PortInUse(
                f"port {self.port} was taken by another program before the server could use it."
            )
        raise ProvisioningFailed(
            f"PostgreSQL did not start: {_last_line(log) or _last_line(result.stderr)}"
        )

    async def stop(self, *, immediate: bool = False) -> None:
        """Stop the server if it runs; escalate to signals if pg_ctl cannot."""
        pid = self.running_pid()
        if pid is None:
            return
        mode = "immediate" if immediate else "fast"
        with contextlib.suppress(Exception):
            await run(
                [
                    self.programs.path("pg_ctl"),
                    "stop",
                    "-w",
                    "-t",
                    "30",
                    "-m",
                    mode,
                    "-D",
                    str(self.data_dir),
                ],
                account=self.account,
                env=server_env(),
                cwd=self.root,
                timeout=40,
            )
        for sig in (signal.SIGQUIT, signal.SIGKILL):
            if self.running_pid() is None:
                return
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
            for _ in range(50):
                if self.running_pid() is None:
                    return
                await asyncio.sleep(0.1)

    async def remove(self) -> None:
        """Stop the server and delete the whole cluster directory; safe to repeat."""
        for _ in range(10):
            await self.stop(immediate=True)
            await asyncio.to_thread(shutil.rmtree, self.root, True)
            if not self.root.exists():
                return
            # A server that was still starting, or its last backends, wrote as it went.
            await asyncio.sleep(0.2)

    async def connect(self, database: str = "postgres") -> asyncpg.Connection:
        """A superuser connection over the private Unix socket."""
        return await asyncpg.connect(
            host=str(self.socket_dir), port=self.port, user=SUPERUSER, database=database
        )

    def read_log(self, limit: int = 20_000) -> str:
        try:
            with open(self.log_file, "rb") as handle:
                handle.seek(0, os.SEEK_END)
                handle.seek(max(0, handle.tell() - limit))
                return handle.read().decode(errors="replace")
        except OSError:
            return ""


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    for line in reversed(lines):
        if "FATAL" in line or "ERROR" in line or "error" in line:
            return line
    return lines[-1] if lines else "no output"
