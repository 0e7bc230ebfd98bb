"""A DynamoDB environment's SSM parameters, `/devdb/<name>/dynamodb/<key>`: what an
application reads to find its tables (prefix, region, endpoint), and what devdb keeps to
know whose they are (installation, environment id, tables an import has not tagged yet).
`environment` is written last and removed with the rest in one call."""

from __future__ import annotations

from typing import Any

from botocore.exceptions import ClientError

KEYS = ("prefix", "region", "endpoint", "installation", "importing", "environment")


def parameters_path(name: str) -> str:
    return f"/devdb/{name}/dynamodb/"


class Parameters:
    def __init__(self, ssm: Any) -> None:
        self.ssm = ssm

    def publish(self, name: str, values: dict[str, str]) -> None:
        for key, value in values.items():
            self.ssm.put_parameter(
                Name=parameters_path(name) + key, Value=value, Type="String", Overwrite=True
            )

    def get(self, name: str, key: str) -> str | None:
        try:
            answer = self.ssm.get_parameter(Name=parameters_path(name) + key)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "ParameterNotFound":
                return None
            raise
        return str(answer["Parameter"]["Value"])

    def owner(self, name: str) -> str | None:
        """The id of the environment the name's parameters are for, if there are any."""
        return self.get(name, "environment")

    def importing(self, name: str) -> list[str]:
        listed = self.get(name, "importing")
        return listed.split(",") if listed else []

    def imported(self, name: str) -> None:
        self.ssm.delete_parameters(Names=[parameters_path(name) + "importing"])

    def remove(self, name: str) -> None:
        self.ssm.delete_parameters(Names=[parameters_path(name) + key for key in KEYS])

    def listed(self) -> dict[str, dict[str, str]]:
        """Every environment's parameters, by environment name."""
        found: dict[str, dict[str, str]] = {}
        pages = self.ssm.get_paginator("get_parameters_by_path")
        for page in pages.paginate(Path="/devdb/", Recursive=True):
            for parameter in page["Parameters"]:
                parts = parameter["Name"].split("/")  # '', devdb, NAME, dynamodb, key
                if len(parts) == 5 and parts[3] == "dynamodb":
                    found.setdefault(parts[2], {})[parts[4]] = parameter["Value"]
        return found

    def any(self) -> bool:
        return bool(self.ssm.get_parameters_by_path(Path="/devdb/", Recursive=True)["Parameters"])
