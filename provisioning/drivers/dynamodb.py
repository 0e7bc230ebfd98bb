"""DynamoDB environments: a developer's own set of tables, `dev_<name>_<Table>`.

The tables are made from a DynamoDB snapshot with its keys, indexes and TTL attribute, on
demand or at a low provisioned capacity, and its items are loaded by parallel
BatchWriteItem calls (`provisioning.dynamo.load`). The prefix, region and endpoint are
published under `/devdb/<name>/dynamodb/` in SSM Parameter Store, where an application
finds its tables.

Each table is tagged with the environment's id, name and devdb installation. The driver
removes only tables tagged with its environment's id and its installation, and, when a
refresh replaces an environment of the same name, that one's: env `a` with table
`b_Orders` and env `a_b` with table `Orders` would share a name, and the second to come is
refused instead. DynamoDB cannot rename a table, so a refresh of an existing name replaces
its tables in place: the old environment's tables are deleted before the new ones are made
(unlike PostgreSQL ones, the old environment does not serve meanwhile, and if the new one
fails the name has no tables until the next refresh). The parameters stay the old
environment's until then, so a refresh refused before it leaves them as they were.

Where no AWS is set up the tables live in the embedded endpoint
(`provisioning.dynamo.endpoint`), which devdb starts with the first such environment and
stops when the last one is gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import urlsplit

from botocore.exceptions import BotoCoreError, ClientError

from provisioning.drivers.base import Activity, Driver, Handle, Placement, Progress
from provisioning.dynamo.endpoint import LocalEndpoint
from provisioning.dynamo.imports import KeyOf, import_and_tag, importable
from provisioning.dynamo.load import create_tables, load_items
from provisioning.dynamo.parameters import Parameters, parameters_path
from provisioning.dynamo.tables import (
    TAG_ENV,
    TAG_INSTALLATION,
    TAG_LOADED,
    TAG_NAME,
    clear_the_way,
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
    def endpoint_url(self) -> str:
        """Where applications reach the tables: the embedded endpoint, or AWS's."""
        return self.url or f"https://dynamodb.{self.region}.amazonaws.com"

    @property
    def parameters(self) -> Parameters:
        return Parameters(self.clients("ssm"))

    def _down(self) -> bool:
        """Whether the embedded endpoint is stopped (its tables and parameters with it)."""
        return self.local is not None and not self.local.running()

    def _owned(
        self, handle: Handle, values: dict[str, str] | None = None
    ) -> dict[str, dict[str, str]]:
        """The handle's environment's tables and their tags: those tagged with its id and
        this installation, and those an import of it is making (untagged until done).
        `values`: its parameters, if already read."""
        if not handle.get("prefix") or self._down():
            return {}
        if values is None:
            values = self.parameters.read(handle["name"])
        importing = values.get("importing", "").split(",") if self._mine(handle, values) else []
        return {
            name: tags
            for name, tags in tagged(self.clients("dynamodb"), handle["prefix"])
            if (
                tags.get(TAG_ENV) == str(handle["env"])
                and tags.get(TAG_INSTALLATION) == self.installation
            )
            or (name in importing and not tags)
        }

    def _mine(self, handle: Handle, values: dict[str, str]) -> bool:
        """Whether the name's parameters are this environment's (this installation's)."""
        return (
            values.get("environment") == str(handle["env"])
            and values.get("installation") == self.installation
        )

    def _publish(self, handle: Handle) -> None:
        values = {
            "prefix": handle["prefix"],
            "region": self.region,
            "endpoint": self.endpoint_url,
            "installation": self.installation,
            "environment": str(handle["env"]),  # last: what says the others are complete
        }
        self.parameters.publish(handle["name"], values)

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
        parts = urlsplit(self.endpoint_url)
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
        """Start the embedded endpoint if need be, and publish the parameters, unless an
        environment of the same name still has them: the restore takes them over once it
        has replaced that one's tables (and a refresh refused before then leaves them)."""
        handle = placement.handle
        path = parameters_path(handle["name"])

        def run() -> None:
            if self.local is not None:
                self.local.ensure()
            values = self.parameters.read(handle["name"])
            owner = values.get("environment")
            if owner is not None and values.get("installation") != self.installation:
                raise ProvisioningFailed(
                    f"the parameters under {path} belong to another devdb installation: "
                    "choose another environment name."
                )
            if owner in (None, str(handle["env"])):
                self._publish(handle)

        if self.local is not None:
            progress(ProgressEvent(step=Step.LAUNCH, message="starting the DynamoDB endpoint"))
        with self._aws("publish its parameters in SSM"):
            await asyncio.to_thread(self._locked, run)
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

        stop = threading.Event()

        def run() -> None:
            client = self.clients("dynamodb")
            wanted = {handle["prefix"] + table for table in manifest.tables}
            clear_the_way(client, handle["prefix"], handle["name"], self.installation, wanted)
            self._publish(handle)  # the name is this environment's now
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
                assert self.imports is not None
                import_and_tag(
                    client,
                    self.parameters,
                    manifest,
                    handle,
                    imports=self.imports,
                    capacity=self.capacity or None,
                    token=f"{self.installation}/{handle['env']}",
                    tags=tags,
                    progress=loaded,
                    stop=stop,
                )
            else:
                unit = "items"
                emit("making the tables", 2.0, 0)
                capacity = self.capacity or None
                create_tables(client, manifest, prefix, capacity=capacity, tags=tags, stop=stop)
                workers = max(self.workers, jobs)
                load_items(
                    client,
                    dump_dir,
                    manifest,
                    prefix,
                    workers=workers,
                    progress=loaded,
                    stop=stop,
                )
            stamp = {TAG_LOADED: datetime.now(UTC).isoformat()}
            for name in manifest.tables:
                tag(client, prefix + name, stamp)
            tables = ",".join(prefix + name for name in manifest.tables)
            self.parameters.publish(handle["name"], {"tables": tables})

        work = asyncio.ensure_future(asyncio.to_thread(run))
        try:
            with self._aws("load the tables"):
                await asyncio.shield(work)
        except asyncio.CancelledError:
            stop.set()  # the thread stops between batches; it is done before cleanup starts
            await asyncio.wait([work])
            raise
        emit(f"{len(manifest.tables)} table(s) loaded", 100.0, total_bytes)
        await asyncio.sleep(0)  # let the last event through before the step ends

    async def endpoint(self, placement: Placement, password: str) -> Connection:
        handle = placement.handle
        with self._aws("list the environment's tables"):
            tables = await asyncio.to_thread(self._owned, handle)
        return TableSet(
            prefix=handle["prefix"],
            region=handle["region"],
            url=handle.get("url"),
            parameters=parameters_path(handle["name"]),
            tables=tuple(sorted(tables)),
        )

    async def is_running(self, handle: Handle) -> bool:
        """Whether every table it loaded is there; before its load ends, whether its
        parameters are. AWS out of reach is an error, not a no: a no gets it marked lost."""
        if not handle.get("prefix"):
            return False

        def look() -> bool:
            if self._down():
                return False
            values = self.parameters.read(handle["name"])
            if not self._mine(handle, values):
                return False
            loaded = values.get("tables")
            return loaded is None or set(loaded.split(",")) <= set(self._owned(handle, values))

        with self._aws("look at the environment's tables"):
            return await asyncio.to_thread(look)

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

        with self._aws("read its consumed capacity"):
            return await asyncio.to_thread(look)

    async def terminate(self, handle: Handle) -> None:
        if not handle.get("prefix"):
            return

        def remove() -> None:
            if self._down():
                return  # the tables and parameters went with the endpoint
            values = self.parameters.read(handle["name"])
            delete_tables(self.clients("dynamodb"), list(self._owned(handle, values)))
            # The parameters, unless a newer environment of the same name now owns them.
            if self._mine(handle, values):
                self.parameters.remove(handle["name"])
            if self.local is not None:

                def stop_if_unused() -> None:
                    if not self._holds_any():
                        assert self.local is not None
                        self.local.stop()  # the last environment is gone

                self._locked(stop_if_unused)

        with self._aws("remove the environment's tables"):
            await asyncio.to_thread(remove)

    def _locked(self, work: Callable[[], None]) -> None:
        """`work` under the embedded endpoint's lock (taken in the calling thread, never on
        the event loop, which must stay free to finish other launches)."""
        if self.local is None:
            work()
            return
        with self.local.lock():
            work()

    def _holds_any(self) -> bool:
        """Whether any environment is in the embedded endpoint, or being launched (its
        parameters come first)."""
        return bool(tagged(self.clients("dynamodb"), PREFIX) or self.parameters.names())

    @contextlib.contextmanager
    def _aws(self, what: str) -> Iterator[None]:
        """AWS's failures as one sentence."""
        try:
            yield
        except (ClientError, BotoCoreError) as exc:
            where = "the embedded DynamoDB endpoint" if self.local else f"AWS ({self.region})"
            raise ProvisioningFailed(f"devdb could not {what} in {where}: {exc}.") from exc

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
            # Parameters are published before the tables are made: an environment stopped
            # in between has them alone.
            for name in self.parameters.names():
                values = self.parameters.read(name)
                owner = values.get("environment")
                if owner and values.get("installation") == self.installation:
                    add(owner, name)
            return list(found.values())

        with self._aws("list devdb's tables"):
            return await asyncio.to_thread(look)

    def key(self, handle: Handle) -> str:
        return f"{handle.get('url')}|{handle.get('env')}"
