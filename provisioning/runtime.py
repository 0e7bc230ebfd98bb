"""Wiring: build the service and its parts from `Settings`, once, at the edge."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

from provisioning.aws.wiring import aws_parts
from provisioning.drivers.base import Driver
from provisioning.drivers.golden import GoldenCopies
from provisioning.drivers.local import LocalDriver
from provisioning.drivers.shared import SharedDatabaseDriver
from provisioning.drivers.shared_schema import SharedSchemaDriver
from provisioning.dynamo.wiring import dynamo_driver
from provisioning.jobs import JobOptions
from provisioning.pg.programs import PgPrograms, ServerAccount
from provisioning.pg.volume import mount_clone_image
from provisioning.policy import Policy
from provisioning.recovery import RecoveryReport, recover
from provisioning.secrets import LocalSecrets, Passwords
from provisioning.service import Service
from provisioning.settings import Settings
from provisioning.shared.server import SharedServer
from provisioning.snapshots.base import SnapshotStore
from provisioning.snapshots.local import LocalSnapshotStore
from provisioning.state.control import ensure_control_cluster, prepare_home
from provisioning.state.store import StateStore


@dataclass(frozen=True, kw_only=True)
class Runtime:
    """Everything one devdb process uses, built from settings."""

    settings: Settings
    programs: PgPrograms
    service: Service
    store: StateStore
    snapshots: SnapshotStore
    recovery: RecoveryReport
    server: dict[str, Any]

    def server_dsn(self, database: str) -> str:
        """A URL for another database on the state store's server (used for demo data)."""
        if self.settings.database_url:
            parts = urlsplit(self.settings.database_url)
            return urlunsplit(parts._replace(path="/" + quote(database)))
        return (
            f"postgresql://{self.server['user']}@/{quote(database)}"
            f"?host={quote(self.server['host'])}&port={self.server['port']}"
        )


@asynccontextmanager
async def open_runtime(settings: Settings) -> AsyncIterator[Runtime]:
    """Start (or reach) the state store, recover interrupted work, and yield the service."""
    programs = PgPrograms(settings.pg_bin)
    account = ServerAccount.for_current_process(settings.server_user)
    prepare_home(settings.home, account)
    if settings.database_url:
        server: dict[str, Any] = {"dsn": settings.database_url}
    else:
        server = await ensure_control_cluster(settings.home, programs, account)
    store = await StateStore.open(**server)
    try:
        # Clusters and golden copies: on DEVDB_HOME, or on the opt-in XFS image inside it.
        clones = settings.home
        if settings.clone_image:
            clones = await mount_clone_image(settings.home, settings.clone_image)
        drivers: dict[str, Driver] = {
            "local": LocalDriver(
                clones / "clusters",
                programs=programs,
                account=account,
                port_range=settings.port_range,
                golden=GoldenCopies(
                    clones / "golden",
                    programs=programs,
                    account=account,
                    jobs=settings.restore_jobs,
                ),
            ),
        }

        async def audit_privileges(role: str, statements: list[str]) -> None:
            async with store.connection() as tx:
                await tx.audit("devdb", "privileges", role, "applied", {"statements": statements})

        shared = SharedServer(
            url=settings.shared_url,
            home=settings.home,
            programs=programs,
            account=account,
            port=settings.shared_port,
            audit=audit_privileges,
        )
        limit = settings.shared_connection_limit
        drivers["shared"] = SharedSchemaDriver(shared, connection_limit=limit)
        drivers["shared-db"] = SharedDatabaseDriver(shared, connection_limit=limit)
        installation = settings.aws.installation or await store.installation()
        aws = aws_parts(settings.aws, settings.cache_dir, installation)
        snapshots: SnapshotStore = aws.snapshots or LocalSnapshotStore(settings.snapshots_dir)
        drivers["dynamodb"] = dynamo_driver(
            settings.home,
            region=settings.dynamodb_region,
            role_arn=settings.dynamodb_role_arn,
            capacity=settings.dynamodb_capacity,
            port=settings.dynamodb_port,
            installation=installation,
            snapshots=snapshots,
            import_above_mb=settings.dynamodb_import_above_mb,
        )
        if aws.driver and aws.passwords:
            drivers["ec2"] = aws.driver
        secrets = Passwords(
            LocalSecrets(settings.secrets_dir), {"ec2": aws.passwords} if aws.passwords else {}
        )
        service = Service(
            store=store,
            drivers=drivers,
            snapshots=snapshots,
            secrets=secrets,
            policy=Policy(
                quota=settings.quota,
                admins=settings.admins,
                default_ttl=settings.default_ttl,
                max_lifetime=settings.max_lifetime,
                monthly_cap=settings.aws.monthly_cap,
                teams=settings.aws.teams,
                auto_replace=settings.aws.auto_replace,
                idle_ttl=settings.idle_ttl,
                reap_warning=settings.reap_warning,
                max_lease=settings.max_lease,
                save_before_reap=settings.save_before_reap,
                saved_retention=settings.saved_retention,
                pool_size=settings.pool_size,
            ),
            job_options=JobOptions(
                restore_jobs=settings.restore_jobs,
                migrations_dir=settings.migrations_dir,
                migrations_command=settings.migrations_command,
                migrations_env=settings.migrations_env,
            ),
            programs=programs,
        )
        report = await recover(store, drivers, secrets)
        yield Runtime(
            settings=settings,
            programs=programs,
            service=service,
            store=store,
            snapshots=snapshots,
            recovery=report,
            server=server,
        )
    finally:
        await store.close()
