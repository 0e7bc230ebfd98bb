"""The embedded DynamoDB endpoint: where DynamoDB environments live when no AWS is set up.

It is moto's server (DynamoDB, SSM and CloudWatch on one port), run by devdb in a process
of its own, bound to 127.0.0.1. Why moto: it is pure Python and already installed with
devdb, so the embedded default needs no Java (DynamoDB Local), no Node (dynalite) and no
container engine (LocalStack); and because it serves SSM and CloudWatch too, the driver
makes the very calls it makes against AWS. What it lacks: it keeps tables in memory, so a
stopped endpoint loses them, and its environments then show as lost (refresh makes them
again); and it does not report consumed capacity, which the wrapper below adds: every item
read or written through the endpoint is counted in its CloudWatch as AWS counts it, so the
reaper sees use the same way on both.

devdb starts it when a DynamoDB environment is launched and stops it when the last one is
gone. `python -m provisioning.dynamo.endpoint PORT` is the process itself.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from provisioning.errors import MissingBinary, ProvisioningFailed

REGION = "us-east-1"  # the region the embedded endpoint's tables are said to be in
CREDENTIALS = {"aws_access_key_id": "devdb", "aws_secret_access_key": "devdb"}  # any will do
_READS = {"GetItem", "Query", "Scan", "BatchGetItem", "TransactGetItems"}
_WRITES = {"PutItem", "UpdateItem", "DeleteItem", "BatchWriteItem", "TransactWriteItems"}
# PartiQL names its table inside the statement; counted as reads (they are use all the same).
_PARTIQL = {"ExecuteStatement", "BatchExecuteStatement", "ExecuteTransaction"}
_PARTIQL_TABLE = re.compile(r'\b(?:FROM|INTO|UPDATE)\s+"?([A-Za-z0-9_.-]+)"?', re.IGNORECASE)


def _tables_named(operation: str, body: dict[str, Any]) -> list[str]:
    if "TableName" in body:
        return [str(body["TableName"])]
    if "RequestItems" in body:
        return [str(name) for name in body["RequestItems"]]
    statements = [body, *body.get("Statements", []), *body.get("TransactStatements", [])]
    said = " ".join(str(part.get("Statement", "")) for part in statements)
    named = _PARTIQL_TABLE.findall(said)
    if named:
        return named
    if "TransactItems" in body:
        return [
            str(part.get("TableName"))
            for item in body["TransactItems"]
            for part in item.values()
            if isinstance(part, dict) and part.get("TableName")
        ]
    return []


class CapacityCounter:
    """WSGI middleware: each data call through it is one consumed capacity unit of its
    table in the endpoint's own CloudWatch (AWS/DynamoDB, as AWS publishes it)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        target = str(environ.get("HTTP_X_AMZ_TARGET", ""))
        service, _, operation = target.partition(".")
        if service.startswith("DynamoDB_") and operation in _READS | _WRITES | _PARTIQL:
            length = int(environ.get("CONTENT_LENGTH") or 0)
            raw = environ["wsgi.input"].read(length)
            environ["wsgi.input"] = io.BytesIO(raw)
            with contextlib.suppress(ValueError):
                body = json.loads(raw or b"{}")
                metric = (
                    "ConsumedReadCapacityUnits"
                    if operation in _READS
                    else "ConsumedWriteCapacityUnits"
                )
                self._count(environ, metric, _tables_named(operation, body))
        return self.app(environ, start_response)

    @staticmethod
    def _count(environ: dict[str, Any], metric: str, tables: list[str]) -> None:
        from moto.cloudwatch.models import cloudwatch_backends
        from moto.core.models import DEFAULT_ACCOUNT_ID

        scope = str(environ.get("HTTP_AUTHORIZATION", "")).split("Credential=")[-1].split("/")
        region = scope[2] if len(scope) > 3 else REGION
        backend = cloudwatch_backends[DEFAULT_ACCOUNT_ID][region]
        backend.put_metric_data(  # stamped now by moto
            "AWS/DynamoDB",
            [
                {
                    "MetricName": metric,
                    "Value": 1.0,
                    "Unit": "Count",
                    "Dimensions": [{"Name": "TableName", "Value": table}],
                }
                for table in tables
            ],
        )


def main(argv: list[str]) -> None:
    """Serve the endpoint on 127.0.0.1:PORT until stopped."""
    from moto.moto_server.werkzeug_app import (
        DomainDispatcherApplication,
        MotoRequestHandler,
        create_backend_app,
    )
    from werkzeug.serving import run_simple

    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    app = CapacityCounter(DomainDispatcherApplication(create_backend_app))
    run_simple("127.0.0.1", int(argv[0]), app, threaded=True, request_handler=MotoRequestHandler)


def _answers(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.5)
        return probe.connect_ex(("127.0.0.1", port)) == 0


class LocalEndpoint:
    """Starts, finds and stops the embedded endpoint; its pid and log live under `home`."""

    def __init__(self, home: Path, port: int) -> None:
        self.home = home
        self.port = port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def _pidfile(self) -> Path:
        return self.home / "endpoint.pid"

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Held while starting the endpoint, launching into it, or deciding to stop it:
        processes and threads take turns, so none stops it under another's launch."""
        self.home.mkdir(parents=True, exist_ok=True)
        with open(self.home / "endpoint.lock", "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def pid(self) -> int | None:
        """The endpoint's process if it runs (and is ours), else None."""
        try:
            pid = int(self._pidfile.read_text())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (OSError, ValueError):
            return None
        return pid if b"provisioning.dynamo.endpoint" in cmdline else None

    def running(self) -> bool:
        return self.pid() is not None and _answers(self.port)

    def check(self) -> None:
        """Raise a one-sentence error if the endpoint could not be started here."""
        try:
            import moto.server  # noqa: F401
        except ImportError as exc:
            raise MissingBinary(
                "the embedded DynamoDB endpoint needs moto's server: reinstall devdb with its "
                "dependencies (./scripts/bootstrap)."
            ) from exc

    def ensure(self, wait: float = 30.0) -> str:
        """The endpoint's URL, started first if it is not running (call it under `lock`)."""
        if self.running():
            return self.url
        self.check()
        if _answers(self.port):
            raise ProvisioningFailed(
                f"port {self.port} is taken by another program, so the embedded DynamoDB "
                "endpoint cannot start: set DEVDB_DYNAMODB_PORT to a free port."
            )
        self.home.mkdir(parents=True, exist_ok=True)
        with open(self.home / "endpoint.log", "ab") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "provisioning.dynamo.endpoint", str(self.port)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,  # not stopped with the command that started it
                env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
            )
        self._pidfile.write_text(str(process.pid))
        deadline = time.monotonic() + wait
        while not _answers(self.port):
            if process.poll() is not None or time.monotonic() > deadline:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                raise ProvisioningFailed(
                    "the embedded DynamoDB endpoint did not start: see "
                    f"{self.home / 'endpoint.log'}."
                )
            time.sleep(0.05)
        return self.url

    def stop(self) -> None:
        """Stop the endpoint (its tables go with it); nothing if it is not running (call it
        under `lock`)."""
        pid = self.pid()
        if pid is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
            for _ in range(100):
                if self.pid() is None:  # gone, or a zombie of the process that started it
                    break
                time.sleep(0.05)
            else:
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(OSError, ValueError):
            if int(self._pidfile.read_text()) == pid:  # not one started since
                self._pidfile.unlink()


if __name__ == "__main__":
    main(sys.argv[1:])
