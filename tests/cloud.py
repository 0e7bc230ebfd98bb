"""AWS for the tests: one moto server per session, reached over HTTP like real AWS.

A server (not in-process mocking) because the EC2 agent runs in a separate process, as it
would on an instance, and must see the same buckets, parameters and instances as the bot.
"""

from __future__ import annotations

import base64
import logging
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import requests
from moto.backends import get_backend
from moto.ec2.models.instances import StateReason
from moto.server import ThreadedMotoServer

from provisioning.pg.programs import stop_servers_under
from tests.ec2_model import model_ec2
from tests.ports import BASE

REGION = "eu-west-1"
ACCOUNT = "123456789012"  # moto's default account
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": REGION,
}


@dataclass(frozen=True)
class Moto:
    url: str

    def client(self, service: str) -> Any:
        return boto3.session.Session(
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            region_name=REGION,
        ).client(service, endpoint_url=self.url)

    @property
    def env(self) -> dict[str, str]:
        """What a process needs in its environment to reach this server."""
        return {**CREDENTIALS, "AWS_ENDPOINT_URL": self.url}

    def reset(self) -> None:
        requests.post(f"{self.url}/moto-api/reset", timeout=10).raise_for_status()


def moto_server() -> Iterator[Moto]:
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    model_ec2()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield Moto(f"http://{host}:{port}")
    finally:
        server.stop()


class InstanceHost:
    """Plays EC2's part for devdb's instances: runs each one's user data on this machine.

    A thread watches the moto server. For every running instance tagged `devdb:managed` it
    runs the instance's user data with bash, as cloud-init would, with the agent's server on
    a free local port (which `address` reports in place of the private IP); when the
    instance is terminated, its server is stopped and its files removed.

    Data volumes are directories named by volume id. A volume moto made from an EBS snapshot
    starts as a copy of the snapshotted volume (which is kept once its instance stopped, as
    EBS keeps a snapshot's blocks). The user data's power-off stops the instance in moto.
    """

    def __init__(
        self, moto: Moto, root: Path, ports: range = range(BASE + 400, BASE + 500)
    ) -> None:
        self.moto = moto
        self.root = root
        self.ports = ports
        self.ec2 = moto.client("ec2")
        self.addresses: dict[str, tuple[str, int]] = {}
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.booted: list[str] = []
        self.volumes: dict[str, Path] = {}
        self.seen: dict[str, float] = {}
        self.kept: set[str] = set()  # volumes of stopped instances: their data is snapshotted
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._watch, name="instance-host", daemon=True)
        self._thread.start()

    def address(self, instance: dict[str, Any]) -> tuple[str, int] | None:
        with self._lock:
            return self.addresses.get(instance["InstanceId"])

    def _watch(self) -> None:
        while not self._stop.wait(0.2):
            try:
                reply = self.ec2.describe_instances(
                    Filters=[{"Name": "tag:devdb:managed", "Values": ["true"]}]
                )
            except Exception:  # the server is going away at the end of the session
                continue
            for reservation in reply.get("Reservations", []):
                for instance in reservation["Instances"]:
                    instance_id, state = instance["InstanceId"], instance["State"]["Name"]
                    if state == "running" and instance_id not in self.processes:
                        self._boot(instance)
                    elif state == "running" and (self.root / instance_id / "poweroff").exists():
                        self._power_off(instance_id)
                    elif state in ("terminated", "shutting-down") and instance_id in self.processes:
                        self._halt(instance_id)

    def _free_port(self) -> int:
        with self._lock:
            taken = {port for _, port in self.addresses.values()}
        for port in self.ports:
            if port in taken:
                continue
            with socket.socket() as probe:
                try:
                    probe.bind(("127.0.0.1", port))
                except OSError:
                    continue
            return port
        raise RuntimeError("no free port for a stand-in instance")

    def _volume(self, instance: dict[str, Any]) -> Path | None:
        """The instance's data volume as a directory, filled from its EBS snapshot if any.

        None while moto may still attach it: it can list an instance a moment before it
        attaches the volumes. Instances from moto's instant fleets never get the template's
        volumes; after a second, they get a directory of their own."""
        instance_id = instance["InstanceId"]
        first_seen = self.seen.setdefault(instance_id, time.monotonic())
        volume_id = next(
            (
                m["Ebs"]["VolumeId"]
                for m in instance.get("BlockDeviceMappings", [])
                if m["DeviceName"] == "/dev/sdf"
            ),
            None,
        )
        if volume_id is None:
            if time.monotonic() - first_seen < 1.0:
                return None
            volume_id = instance_id
        path = self.root / "volumes" / volume_id
        self.volumes[instance_id] = path
        if path.exists():
            return path
        path.parent.mkdir(parents=True, exist_ok=True)
        volumes = (
            self.ec2.describe_volumes(VolumeIds=[volume_id])["Volumes"]
            if volume_id.startswith("vol-")
            else []
        )
        source = volumes[0].get("SnapshotId") if volumes else None
        if source:
            snapshot = self.ec2.describe_snapshots(SnapshotIds=[source])["Snapshots"][0]
            # cp -a keeps the owners: the data directory belongs to the server's account.
            subprocess.run(
                ["cp", "-a", str(self.root / "volumes" / snapshot["VolumeId"]), str(path)],
                check=True,
            )
        return path

    def _power_off(self, instance_id: str) -> None:
        """The user data powered the instance off: EC2 stops it (its template says stop)."""
        process = self.processes[instance_id]
        process.wait()
        stop_servers_under(self.volumes[instance_id])
        self.kept.add(self.volumes[instance_id].name)
        self.ec2.stop_instances(InstanceIds=[instance_id])
        # What EC2 records when the operating system shut the instance down (moto's
        # stop_instances records a user's stop).
        instance = get_backend("ec2")[ACCOUNT][REGION].get_instance(instance_id)
        instance.state_reason = StateReason(
            "Client.InstanceInitiatedShutdown: Instance initiated shutdown",
            "Client.InstanceInitiatedShutdown",
        )
        (self.root / instance_id / "poweroff").unlink()

    def _boot(self, instance: dict[str, Any]) -> None:
        instance_id = instance["InstanceId"]
        volume = self._volume(instance)
        if volume is None:
            return  # booted at the next look
        raw = self.ec2.describe_instance_attribute(InstanceId=instance_id, Attribute="userData")
        script = base64.b64decode(raw["UserData"]["Value"]).decode()
        home = self.root / instance_id
        home.mkdir(parents=True, exist_ok=True)
        (home / "user-data.sh").write_text(script)
        port = self._free_port()
        env = {
            "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
            "HOME": os.environ.get("HOME", "/root"),
            **self.moto.env,
            "DEVDB_AGENT_ROOT": str(volume),
            "DEVDB_AGENT_PORT": str(port),
            "DEVDB_AGENT_LISTEN": "127.0.0.1",
            "DEVDB_AGENT_POWEROFF": f"touch {home / 'poweroff'}",
            "DEVDB_DATA_DEVICE": "none",  # a directory stands in for the EBS data volume
            "DEVDB_AGENT_EXPIRY_WATCH": "0",  # no instance metadata here to read the tag from
        }
        with open(home / "cloud-init.log", "wb") as log:
            self.processes[instance_id] = subprocess.Popen(
                ["bash", str(home / "user-data.sh")], env=env, stdout=log, stderr=log
            )
        with self._lock:
            self.addresses[instance_id] = ("127.0.0.1", port)
        self.booted.append(instance_id)

    def _halt(self, instance_id: str) -> None:
        process = self.processes.pop(instance_id)
        if process.poll() is None:
            process.kill()
            process.wait()
        with self._lock:
            self.addresses.pop(instance_id, None)
        volume = self.volumes.pop(instance_id, None)
        if volume is not None:
            stop_servers_under(volume)
            if volume.name not in self.kept:
                shutil.rmtree(volume, ignore_errors=True)
        stop_servers_under(self.root / instance_id)
        shutil.rmtree(self.root / instance_id, ignore_errors=True)

    def log(self, instance_id: str) -> str:
        path = self.root / instance_id / "cloud-init.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        for instance_id in list(self.processes):
            self._halt(instance_id)
