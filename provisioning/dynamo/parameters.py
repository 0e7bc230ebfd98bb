"""A DynamoDB environment's SSM parameters, `/devdb/<name>/dynamodb/<key>`: what an
application reads to find its tables (prefix, region, endpoint), and what devdb keeps to
know whose they are (installation, environment id, its tables once loaded, and tables an
import has not tagged yet). `environment` is written last and removed with the rest in one
call."""

from __future__ import annotations

from typing import Any

from botocore.exceptions import ClientError

KEYS = ("prefix", "region", "endpoint", "installation", "importing", "tables", "environment")


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

    def names(self) -> set[str]:
        """The environment names that have DynamoDB parameters. Listed by their parameters'
        names alone (DescribeParameters): no value outside `/devdb/*/dynamodb/` is read."""
        found = set()
        pages = self.ssm.get_paginator("describe_parameters").paginate(
            ParameterFilters=[{"Key": "Name", "Option": "BeginsWith", "Values": ["/devdb/"]}]
        )
        for page in pages:
            for parameter in page["Parameters"]:
                parts = parameter["Name"].split("/")  # '', devdb, NAME, dynamodb, key
                if len(parts) == 5 and parts[3] == "dynamodb" and parts[4] == "environment":
                    found.add(parts[2])
        return found
