"""DynamoDB environments: a developer's own set of tables, `dev_<name>_<Table>`.

The tables are made from a DynamoDB snapshot with its keys, indexes and TTL attribute, on
demand or at a low provisioned capacity, and its items are loaded by parallel
BatchWriteItem calls (`provisioning.dynamo.load`). The prefix, region and endpoint are
published under `/devdb/<name>/dynamodb/` in SSM Parameter Store, where an application
finds its tables.

Each table is tagged with the environment's id, name and devdb installation, and the
driver only ever removes tables that carry its environment's id: env `a` with table
`b_Orders` and env `a_b` with table `Orders` would share a name, and the second to come
is refused instead. DynamoDB cannot rename a table, so a refresh of an existing name
replaces its tables in place: the old environment's tables are deleted before the new
ones are made (the old environment does not serve meanwhile, unlike PostgreSQL ones).

Where no AWS is set up the tables live in the embedded endpoint
(`provisioning.dynamo.endpoint`), which devdb starts with the first such environment and
stops when the last one is gone.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import urlsplit

from botocore.exceptions import BotoCoreError, ClientError

from provisioning.drivers.base import Activity, Driver, Handle, Placement, Progress
from provisioning.dynamo.endpoint import LocalEndpoint
from provisioning.dynamo.imports import KeyOf, import_tables, importable
from provisioning.dynamo.load import create_tables, load_items
from provisioning.dynamo.parameters import Parameters, parameters_path
from provisioning.dynamo.tables import (
    TAG_ENV,
    TAG_INSTALLATION,
    TAG_LOADED,
    TAG_NAME,
    consumed,
    delete_tables,
    tag,
    tagged,
)
from provisioning.errors import ProvisioningFailed
from provisioning.models import Connection, Environment, ProgressEvent, Step, TableSet
from provisioning.snapshots.base import SnapshotStore
from provisioning.snapshots.manifest import Manifest

PREFIX = "dev_"  # every environment's tables start so
Clients = Callable[[str], Any]  # a boto3 client for a service name


class DynamoDriver(Driver):
    kind: ClassVar[str] = "dynamodb"
    engine: ClassVar[str] = "dynamodb"
    # A table may be listed before the refresh that made it recorded its environment.
    orphan_grace: ClassVar[timedelta] = timedelta(minutes=10)

    def __init__(
        self,
        clients: Clients,
        *,
        region: str,
        url: str | None,
        installation: str,
        capacity: int | None = None,
        local: LocalEndpoint | None = None,
        workers: int = 8,
        imports: tuple[str, KeyOf] | None = None,
        import_above: int = 1 << 30,
    ) -> None:
        self.clients = clients
        self.region = region
        self.url = url  # None: AWS's own endpoint for the region
        self.installation = installation
        self.capacity = capacity  # None or 0: on demand
        self.local = local
        self.workers = workers
        self.imports = imports  # the S3 store's bucket and keys, when ImportTable can read it
        self.import_above = import_above  # bytes of items from which ImportTable is used

    @property
    def parameters(self) -> Parameters:
        return Parameters(self.clients("ssm"))

    def _down(self) -> bool:
        """Whether the embedded endpoint is stopped (its tables and parameters with it)."""
        return self.local is not None and not self.local.running()

    def _owned(self, handle: Handle) -> dict[str, dict[str, str]]:
        """The handle's environment's tables and their tags: those tagged with its id, and
        those an import of it is making (untagged until done)."""
        if not handle.get("prefix") or self._down():
            return {}
        importing: list[str] = []
        if self.parameters.owner(handle["name"]) == str(handle["env"]):
            importing = self.parameters.importing(handle["name"])
        return {
            name: tags
            for name, tags in tagged(self.clients("dynamodb"), handle["prefix"])
            if tags.get(TAG_ENV) == str(handle["env"]) or (name in importing and not tags)
        }

    async def preflight(self) -> None:
        if self.local is not None:
            self.local.check()
            return
        client = self.clients("dynamodb")
        try:
            await asyncio.to_thread(client.list_tables, Limit=1)
        except (ClientError, BotoCoreError) as exc:
            raise ProvisioningFailed(
                f"DynamoDB in {self.region} cannot be reached: {exc}."
            ) from exc

    async def place(self, env: Environment, avoid_ports: set[int]) -> Placement:
        parts = urlsplit(self.url or f"https://dynamodb.{self.region}.amazonaws.com")
        prefix = f"{PREFIX}{env.name}_"
        return Placement(
            handle={
                "env": env.id,
                "name": env.name,
                "prefix": prefix,
                "region": self.region,
                "url": self.url,
            },
            host=parts.hostname or "",
            port=parts.port or 443,
            database=prefix,  # what the record calls a database is the tables' prefix
            user=self.region,
        )

    async def stage(self, snapshots: SnapshotStore, manifest: Manifest) -> Path | None:
        """None when DynamoDB will import the snapshot from S3 itself; else a local copy."""
        if (
            self.imports is not None
            and manifest.data_bytes >= self.import_above
            and importable(manifest)
        ):
            return None
        return await snapshots.fetch(manifest)

    async def launch(self, placement: Placement, password: str, progress: Progress) -> Placement:
        if self.local is not None:
            progress(ProgressEvent(step=Step.LAUNCH, message="starting the DynamoDB endpoint"))
            await asyncio.to_thread(self.local.ensure)
        handle = placement.handle
        values = {
            "prefix": handle["prefix"],
            "region": self.region,
            "endpoint": self.url or f"https://dynamodb.{self.region}.amazonaws.com",
            "installation": self.installation,
            "environment": str(handle["env"]),  # last: what says the others are complete
        }
        try:
            await asyncio.to_thread(self.parameters.publish, handle["name"], values)
        except (ClientError, BotoCoreError) as exc:
            raise ProvisioningFailed(f"the parameters could not be put in SSM: {exc}.") from exc
        path = parameters_path(handle["name"])
        progress(ProgressEvent(step=Step.LAUNCH, message=f"parameters under {path}", percent=100))
        return placement

    async def restore(
        self,
        placement: Placement,
        dump_dir: Path | None,
        manifest: Manifest,
        jobs: int,
        progress: Progress,
    ) -> None:
        handle = placement.handle
        loop = asyncio.get_running_loop()
        total_bytes = manifest.data_bytes

        def emit(message: str, percent: float, done_bytes: int) -> None:
            event = ProgressEvent(
                step=Step.RESTORE,
                message=message,
                percent=percent,
                bytes_done=done_bytes,
                bytes_total=total_bytes,
            )
            loop.call_soon_threadsafe(progress, event)

        def run() -> None:
            client = self.clients("dynamodb")
            self._clear_the_way(client, handle, manifest)
            tags = {
                TAG_ENV: str(handle["env"]),
                TAG_NAME: handle["name"],
                TAG_INSTALLATION: self.installation,
            }
            shown = [0.0]

            def loaded(done: int, total: int) -> None:
                percent = 5.0 + 95.0 * done / max(total, 1)
                if percent - shown[0] >= 1.0 or done == total:
                    shown[0] = percent
                    emit(f"{done:,} of {total:,} {unit}", percent, total_bytes * done // total)

            prefix = handle["prefix"]
            if dump_dir is None:
                unit = "tables imported from S3"
                emit("importing the tables from S3", 2.0, 0)
                self._import(client, handle, manifest, tags, loaded)
            else:
                unit = "items"
                emit("making the tables", 2.0, 0)
                capacity = self.capacity or None
                create_tables(client, manifest, prefix, capacity=capacity, tags=tags)
                workers = max(self.workers, jobs)
                load_items(client, dump_dir, manifest, prefix, workers=workers, progress=loaded)
            stamp = {TAG_LOADED: datetime.now(UTC).isoformat()}
            for name in manifest.tables:
                tag(client, prefix + name, stamp)

        await asyncio.to_thread(run)
        emit(f"{len(manifest.tables)} table(s) loaded", 100.0, total_bytes)
        await asyncio.sleep(0)  # let the last event through before the step ends

    def _import(
        self,
        client: Any,
        handle: Handle,
        manifest: Manifest,
        tags: dict[str, str],
        progress: Callable[[int, int], None],
    ) -> None:
        """ImportTable per table; the tables are listed in SSM while untagged, so that an
        import cut short is still this environment's to remove."""
        assert self.imports is not None
        bucket, key_of = self.imports
        prefix, name = handle["prefix"], handle["name"]
        listed = ",".join(prefix + table for table in manifest.tables)
        self.parameters.publish(name, {"importing": listed})
        import_tables(
            client,
            manifest,
            prefix,
            bucket=bucket,
            key_of=key_of,
            capacity=self.capacity or None,
            token=f"{self.installation}/{handle['env']}",
            progress=progress,
        )
        for table, shape in manifest.extra["tables"].items():
            tag(client, prefix + table, tags)
            if shape.get("TimeToLiveAttribute"):
                client.update_time_to_live(
                    TableName=prefix + table,
                    TimeToLiveSpecification={
                        "Enabled": True,
                        "AttributeName": shape["TimeToLiveAttribute"],
                    },
                )
        self.parameters.imported(name)

    def _clear_the_way(self, client: Any, handle: Handle, manifest: Manifest) -> None:
        """Delete what stands where the tables go: an earlier environment of the same name
        (this one replaces it) or this one's own half-made tables; refuse anything else."""
        wanted = {handle["prefix"] + name for name in manifest.tables}
        doomed = []
        for name, tags in tagged(client, handle["prefix"]):
            mine = tags.get(TAG_NAME) == handle["name"] and tags.get(TAG_ENV)
            if mine and tags.get(TAG_INSTALLATION) == self.installation:
                doomed.append(name)
            elif name in wanted:
                owner = f"environment {tags[TAG_NAME]!r}" if TAG_NAME in tags else "nobody in devdb"
                raise ProvisioningFailed(
                    f"the table {name} already exists and belongs to {owner}: "
                    "choose another environment name."
                )
        delete_tables(client, doomed)

    async def endpoint(self, placement: Placement, password: str) -> Connection:
        handle = placement.handle
        tables = await asyncio.to_thread(self._owned, handle)
        return TableSet(
            prefix=handle["prefix"],
            region=handle["region"],
            url=handle.get("url"),
            parameters=parameters_path(handle["name"]),
            tables=tuple(sorted(tables)),
        )

    async def is_running(self, handle: Handle) -> bool:
        """Whether its tables exist, or (launched, not yet loaded) its parameters do."""
        if not handle.get("prefix"):
            return False

        def look() -> bool:
            if self._down():
                return False
            mine = self.parameters.owner(handle["name"]) == str(handle["env"])
            return mine or bool(self._owned(handle))

        try:
            return await asyncio.to_thread(look)
        except (ClientError, BotoCoreError):
            return False

    async def resume(self, handle: Handle) -> bool:
        # Nothing to start: tables serve as long as they exist. The embedded endpoint keeps
        # them in memory, so once it has stopped they are gone and cannot come back.
        return await self.is_running(handle)

    async def activity(self, handle: Handle) -> Activity:
        """`work`: the capacity the tables consumed since their items were loaded, by
        DynamoDB's own count in CloudWatch, a running total only clients move (devdb's probes
        consume none). There are no connections to count."""

        def look() -> Activity:
            now = datetime.now(UTC)
            work = 0.0
            for name, tags in self._owned(handle).items():
                if TAG_LOADED not in tags:
                    continue  # still loading
                # From the second after the load (AWS keeps consumption per minute, so there
                # the load's last minute counts too, the same in every look).
                loaded = datetime.fromisoformat(tags[TAG_LOADED]).replace(microsecond=0)
                since = loaded + timedelta(seconds=1)
                work += consumed(
                    self.clients("cloudwatch"), name, since, now + timedelta(minutes=1)
                )
            return Activity(connections=0, sessions=0, work=work)

        return await asyncio.to_thread(look)

    async def terminate(self, handle: Handle) -> None:
        if not handle.get("prefix"):
            return

        def remove() -> None:
            if self._down():
                return  # the tables and parameters went with the endpoint
            delete_tables(self.clients("dynamodb"), list(self._owned(handle)))
            # The parameters, unless a newer environment of the same name now owns them.
            if self.parameters.owner(handle["name"]) == str(handle["env"]):
                self.parameters.remove(handle["name"])
            if self.local is not None and not self._holds_any():
                self.local.stop()  # the last environment is gone

        await asyncio.to_thread(remove)

    def _holds_any(self) -> bool:
        """Whether any environment is in the endpoint, or being launched (its parameters
        come first)."""
        return bool(tagged(self.clients("dynamodb"), PREFIX)) or self.parameters.any()

    async def inventory(self) -> list[Handle]:
        def look() -> list[Handle]:
            if self._down():
                return []
            found: dict[str, Handle] = {}

            def add(env: str, name: str) -> None:
                handle = {
                    "env": int(env),
                    "name": name,
                    "prefix": f"{PREFIX}{name}_",
                    "region": self.region,
                    "url": self.url,
                }
                found.setdefault(env, handle)

            for _table, tags in tagged(self.clients("dynamodb"), PREFIX):
                if tags.get(TAG_INSTALLATION) == self.installation and TAG_ENV in tags:
                    add(tags[TAG_ENV], tags.get(TAG_NAME, ""))
            # Parameters are published first: an environment killed before its tables were
            # made has them alone.
            for name, given in self.parameters.listed().items():
                if given.get("installation") == self.installation and "environment" in given:
                    add(given["environment"], name)
            return list(found.values())

        return await asyncio.to_thread(look)

    def key(self, handle: Handle) -> str:
        return f"{handle.get('url')}|{handle.get('env')}"
