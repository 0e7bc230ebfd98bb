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
from provisioning.errors import ProvisioningFailed
from provisioning.models import Connection, Environment, ProgressEvent, Step, TableSet
from provisioning.snapshots.base import SnapshotStore
from provisioning.snapshots.manifest import Manifest

TAG_ENV = "devdb:environment"
TAG_NAME = "devdb:name"
TAG_INSTALLATION = "devdb:installation"
TAG_LOADED = "devdb:loaded"  # when the items were loaded: the load itself is not use
PREFIX = "dev_"  # every environment's tables start so
Clients = Callable[[str], Any]  # a boto3 client for a service name


def parameters_path(name: str) -> str:
    return f"/devdb/{name}/dynamodb/"


def _code(exc: Exception) -> str:
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Code", "error"))
    return str(exc)


def _missing(exc: ClientError) -> bool:
    return _code(exc) in ("ResourceNotFoundException", "ParameterNotFound")


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

    # What the tables are and whose they are.

    def _owned(self, handle: Handle) -> dict[str, dict[str, str]]:
        """The tables that carry this handle's environment id, under its prefix, and their
        tags."""
        if not handle.get("prefix") or (self.local is not None and not self.local.running()):
            return {}
        client = self.clients("dynamodb")
        importing: list[str] = []
        if self._parameters_owner(handle) == str(handle["env"]):
            importing = self._importing(handle)
        return {
            name: tags
            for name, tags in self._tagged(client, handle["prefix"])
            if tags.get(TAG_ENV) == str(handle["env"]) or (name in importing and not tags)
        }

    def _importing(self, handle: Handle) -> list[str]:
        """Tables an import is making for the handle's environment: untagged until done."""
        try:
            answer = self.clients("ssm").get_parameter(
                Name=parameters_path(handle["name"]) + "importing"
            )
        except ClientError as exc:
            if _missing(exc):
                return []
            raise
        return str(answer["Parameter"]["Value"]).split(",")

    def _tagged(self, client: Any, prefix: str) -> list[tuple[str, dict[str, str]]]:
        """Each table under `prefix` and its devdb tags (tables gone meanwhile skipped)."""
        found = []
        for page in client.get_paginator("list_tables").paginate():
            for name in page["TableNames"]:
                if not name.startswith(prefix):
                    continue
                try:
                    arn = client.describe_table(TableName=name)["Table"]["TableArn"]
                    tags = client.list_tags_of_resource(ResourceArn=arn).get("Tags", [])
                except ClientError as exc:
                    if _missing(exc):
                        continue
                    raise
                found.append((name, {t["Key"]: t["Value"] for t in tags}))
        return found

    def _call(self, what: str, work: Callable[[], Any]) -> Any:
        try:
            return work()
        except (ClientError, BotoCoreError) as exc:
            raise ProvisioningFailed(f"DynamoDB could not {what} ({_code(exc)}).") from exc

    # The driver interface.

    async def preflight(self) -> None:
        if self.local is not None:
            self.local.check()
            return
        client = self.clients("dynamodb")
        await asyncio.to_thread(self._call, "be reached", lambda: client.list_tables(Limit=1))

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
        ssm = self.clients("ssm")
        path = parameters_path(handle["name"])
        for key, value in values.items():
            await asyncio.to_thread(
                self._call,
                "publish its parameters in SSM",
                lambda key=key, value=value: ssm.put_parameter(  # type: ignore[misc]
                    Name=path + key, Value=value, Type="String", Overwrite=True
                ),
            )
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

            if dump_dir is None:
                unit = "tables imported from S3"
                emit("importing the tables from S3", 2.0, 0)
                self._import(client, handle, manifest, tags, loaded)
            else:
                unit = "items"
                emit("making the tables", 2.0, 0)
                prefix = handle["prefix"]
                capacity = self.capacity or None
                create_tables(client, manifest, prefix, capacity=capacity, tags=tags)
                workers = max(self.workers, jobs)
                load_items(client, dump_dir, manifest, prefix, workers=workers, progress=loaded)
            stamp = [{"Key": TAG_LOADED, "Value": datetime.now(UTC).isoformat()}]
            for name in manifest.tables:
                arn = client.describe_table(TableName=handle["prefix"] + name)["Table"]["TableArn"]
                client.tag_resource(ResourceArn=arn, Tags=stamp)

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
        prefix = handle["prefix"]
        ssm = self.clients("ssm")
        names = [prefix + name for name in manifest.tables]
        listed = parameters_path(handle["name"]) + "importing"
        ssm.put_parameter(Name=listed, Value=",".join(names), Type="String", Overwrite=True)
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
        for name, shape in manifest.extra["tables"].items():
            table = client.describe_table(TableName=prefix + name)["Table"]
            client.tag_resource(
                ResourceArn=table["TableArn"],
                Tags=[{"Key": key, "Value": value} for key, value in tags.items()],
            )
            if shape.get("TimeToLiveAttribute"):
                client.update_time_to_live(
                    TableName=prefix + name,
                    TimeToLiveSpecification={
                        "Enabled": True,
                        "AttributeName": shape["TimeToLiveAttribute"],
                    },
                )
        ssm.delete_parameter(Name=listed)

    def _clear_the_way(self, client: Any, handle: Handle, manifest: Manifest) -> None:
        """Delete what stands where the tables go: an earlier environment of the same name
        (this one replaces it) or this one's own half-made tables; refuse anything else."""
        wanted = {handle["prefix"] + name for name in manifest.tables}
        doomed = []
        for name, tags in self._tagged(client, handle["prefix"]):
            mine = tags.get(TAG_NAME) == handle["name"] and tags.get(TAG_ENV)
            if mine and tags.get(TAG_INSTALLATION) == self.installation:
                doomed.append(name)
            elif name in wanted:
                owner = f"environment {tags[TAG_NAME]!r}" if TAG_NAME in tags else "nobody in devdb"
                raise ProvisioningFailed(
                    f"the table {name} already exists and belongs to {owner}: "
                    "choose another environment name."
                )
        self._delete_tables(client, doomed)

    def _delete_tables(self, client: Any, tables: list[str]) -> None:
        for name in tables:
            try:
                client.delete_table(TableName=name)
            except ClientError as exc:
                if not _missing(exc) and _code(exc) != "ResourceInUseException":
                    raise ProvisioningFailed(
                        f"DynamoDB could not delete the table {name} ({_code(exc)})."
                    ) from exc
        for name in tables:  # a name is free again only once its table is fully gone
            client.get_waiter("table_not_exists").wait(
                TableName=name, WaiterConfig={"Delay": 2, "MaxAttempts": 150}
            )

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
            if self.local is not None and not self.local.running():
                return False
            return bool(self._owned(handle)) or self._parameters_owner(handle) == str(handle["env"])

        try:
            return await asyncio.to_thread(look)
        except (ClientError, BotoCoreError):
            return False

    def _parameters_owner(self, handle: Handle) -> str | None:
        """The id of the environment the name's parameters are for, if there are any."""
        path = parameters_path(handle["name"])
        try:
            answer = self.clients("ssm").get_parameter(Name=path + "environment")
        except ClientError as exc:
            if _missing(exc):
                return None
            raise
        return str(answer["Parameter"]["Value"])

    async def resume(self, handle: Handle) -> bool:
        # Nothing to start: tables serve as long as they exist. The embedded endpoint keeps
        # them in memory, so once it has stopped they are gone and cannot come back.
        return await self.is_running(handle)

    async def activity(self, handle: Handle) -> Activity:
        """`work`: the capacity the tables consumed since their items were loaded, by
        DynamoDB's own count in CloudWatch, a running total only clients move (devdb's probes
        consume none). There are no connections to count."""

        def look() -> Activity:
            cloudwatch = self.clients("cloudwatch")
            now = datetime.now(UTC)
            work = 0.0
            for name, tags in self._owned(handle).items():
                if TAG_LOADED not in tags:
                    continue  # still loading
                # From the second after the load (AWS keeps consumption per minute, so there
                # the load's last minute counts too, the same in every look).
                loaded = datetime.fromisoformat(tags[TAG_LOADED]).replace(microsecond=0)
                for metric in ("ConsumedReadCapacityUnits", "ConsumedWriteCapacityUnits"):
                    points = cloudwatch.get_metric_statistics(
                        Namespace="AWS/DynamoDB",
                        MetricName=metric,
                        Dimensions=[{"Name": "TableName", "Value": name}],
                        StartTime=loaded + timedelta(seconds=1),
                        EndTime=now + timedelta(minutes=1),
                        Period=86400,  # a day per point: an environment lives a few
                        Statistics=["Sum"],
                    )["Datapoints"]
                    work += sum(point["Sum"] for point in points)
            return Activity(connections=0, sessions=0, work=work)

        return await asyncio.to_thread(look)

    async def terminate(self, handle: Handle) -> None:
        if not handle.get("prefix"):
            return

        def remove() -> None:
            if self.local is not None and not self.local.running():
                return  # the tables and parameters went with the endpoint
            self._delete_tables(self.clients("dynamodb"), list(self._owned(handle)))
            self._remove_parameters(handle)
            if self.local is not None and self._unused():
                self.local.stop()  # the last environment is gone

        await asyncio.to_thread(remove)

    def _unused(self) -> bool:
        """Whether the embedded endpoint holds no environment, nor one being launched (its
        parameters come first)."""
        if self._tagged(self.clients("dynamodb"), PREFIX):
            return False
        ssm = self.clients("ssm")
        return not ssm.get_parameters_by_path(Path="/devdb/", Recursive=True)["Parameters"]

    def _remove_parameters(self, handle: Handle) -> None:
        """The SSM parameters, unless a newer environment of the same name now owns them."""
        if self._parameters_owner(handle) != str(handle["env"]):
            return
        path = parameters_path(handle["name"])
        keys = ("prefix", "region", "endpoint", "installation", "importing", "environment")
        self.clients("ssm").delete_parameters(Names=[path + key for key in keys])

    async def inventory(self) -> list[Handle]:
        def look() -> list[Handle]:
            if self.local is not None and not self.local.running():
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

            for _table, tags in self._tagged(self.clients("dynamodb"), PREFIX):
                if tags.get(TAG_INSTALLATION) == self.installation and TAG_ENV in tags:
                    add(tags[TAG_ENV], tags.get(TAG_NAME, ""))
            # Parameters are published first: an environment killed before its tables were
            # made has them alone.
            values: dict[str, dict[str, str]] = {}
            pages = self.clients("ssm").get_paginator("get_parameters_by_path")
            for page in pages.paginate(Path="/devdb/", Recursive=True):
                for parameter in page["Parameters"]:
                    parts = parameter["Name"].split("/")  # '', devdb, NAME, dynamodb, key
                    if len(parts) == 5 and parts[3] == "dynamodb":
                        values.setdefault(parts[2], {})[parts[4]] = parameter["Value"]
            for name, given in values.items():
                if given.get("installation") == self.installation and "environment" in given:
                    add(given["environment"], name)
            return list(found.values())

        return await asyncio.to_thread(look)

    def key(self, handle: Handle) -> str:
        return f"{handle.get('url')}|{handle.get('env')}"
