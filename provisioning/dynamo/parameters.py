"""A DynamoDB environment's SSM parameters, `/devdb/<name>/dynamodb/<key>`: what an
application reads to find its tables (prefix, region, endpoint), and what devdb keeps to
know whose they are (installation, environment id, its tables once loaded, and tables an
import has not tagged yet). `environment` is written last and removed with the rest in one
call."""

from __future__ import annotations

from typing import Any

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

    def read(self, name: str) -> dict[str, str]:
        """All of the name's parameters, by key, in one call (none: empty)."""
        answer = self.ssm.get_parameters(Names=[parameters_path(name) + key for key in KEYS])
        return {p["Name"].rsplit("/", 1)[1]: str(p["Value"]) for p in answer["Parameters"]}

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
