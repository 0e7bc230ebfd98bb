"""AWS for the tests: one moto server per session, reached over HTTP like real AWS.

A server (not in-process mocking) because the EC2 agent runs in a separate process, as it
would on an instance, and must see the same buckets, parameters and instances as the bot.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import boto3
import requests
from moto.server import ThreadedMotoServer

REGION = "eu-west-1"
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
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield Moto(f"http://{host}:{port}")
    finally:
        server.stop()
