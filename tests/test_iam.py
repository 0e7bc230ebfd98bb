"""The IAM policies in docs/ grant exactly what the code calls: nothing missing, nothing spare.

Every boto3 call is found in the source: methods called (or passed to a thread) on a client,
operations named to the EC2 driver's `_call`, paginators, and what boto3's transfer manager
does on the store's behalf. Each is turned into the IAM action that authorises it.
"""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Which service a client is, by the name the code gives it, per file.
CLIENTS = {
    "provisioning/aws/fleet.py": {"ec2": "ec2"},
    "provisioning/drivers/ec2.py": {"ec2": "ec2"},
    "provisioning/aws/golden.py": {"ec2": "ec2"},
    "provisioning/aws/cleanup.py": {"ec2": "ec2"},
    "provisioning/aws/checks.py": {"ec2": "ec2", "ssm": "ssm", "iam": "iam"},
    "provisioning/aws/roles.py": {"iam": "iam"},
    "provisioning/aws/instances.py": {"ec2": "ec2"},
    "provisioning/aws/warnings.py": {"sqs": "sqs", "ec2": "ec2"},
    "provisioning/aws/ssm.py": {"client": "ssm"},
    "provisioning/snapshots/s3.py": {"client": "s3"},
    "provisioning/aws/agent.py": {"ssm": "ssm"},
    "provisioning/aws/resets.py": {"ssm": "ssm"},
    "provisioning/drivers/dynamodb.py": {"client": "dynamodb"},
    "provisioning/dynamo/tables.py": {"client": "dynamodb", "cloudwatch": "cloudwatch"},
    "provisioning/dynamo/parameters.py": {"ssm": "ssm"},
    "provisioning/dynamo/imports.py": {"client": "dynamodb"},
    "provisioning/dynamo/exports.py": {"client": "dynamodb", "s3": "s3"},
    "provisioning/dynamo/load.py": {"client": "dynamodb"},
    "provisioning/dynamo/source.py": {"client": "dynamodb"},
}
# What DynamoDB environments need (docs/dynamodb-policy.json), apart from the rest.
DYNAMODB_FILES = {
    "provisioning/drivers/dynamodb.py",
    "provisioning/dynamo/tables.py",
    "provisioning/dynamo/parameters.py",
    "provisioning/dynamo/imports.py",
    "provisioning/dynamo/exports.py",
    "provisioning/dynamo/load.py",
    "provisioning/dynamo/source.py",
}
# boto3's waiters poll this operation.
WAITERS = {"table_exists": "describe_table", "table_not_exists": "describe_table"}
# Code that runs on the instance, under the instance profile; the rest runs as the bot.
INSTANCE_FILES = {"provisioning/aws/agent.py", "provisioning/aws/resets.py"}
# The S3 store's operations the agent uses (it only reads a snapshot).
INSTANCE_S3 = {"get_object", "head_object"}
# What boto3's transfer manager calls for `upload` and `download`.
TRANSFER = {
    "upload": {
        "put_object",
        "create_multipart_upload",
        "upload_part",
        "complete_multipart_upload",
        "abort_multipart_upload",
    },
    "download": {"head_object", "get_object"},
}
S3_ACTIONS = {
    "get_object": "s3:GetObject",
    "head_object": "s3:GetObject",
    "put_object": "s3:PutObject",
    "create_multipart_upload": "s3:PutObject",
    "upload_part": "s3:PutObject",
    "complete_multipart_upload": "s3:PutObject",
    "abort_multipart_upload": "s3:AbortMultipartUpload",
    "list_objects_v2": "s3:ListBucket",
    "delete_object": "s3:DeleteObject",
    "delete_objects": "s3:DeleteObject",
}
# Granted for what the calls imply rather than name: passing the instance role to EC2,
# tagging at launch, EC2's spot and fleet service-linked roles, and KMS behind SSM and S3.
IMPLIED = {
    "iam:PassRole",
    "ec2:CreateTags",
    "iam:CreateServiceLinkedRole",
    "iam:TagRole",  # an instance's own role and profile are tagged as they are made
    "iam:TagInstanceProfile",
    "kms:Decrypt",
    "kms:Encrypt",
    "kms:GenerateDataKey",
    "sts:AssumeRole",  # botocore assumes DEVDB_DYNAMODB_ROLE_ARN when it is set
}
# What DynamoDB's ImportTable does with the caller's permissions: read (and decrypt) the
# snapshot, and log.
IMPORT_TABLE = {
    "s3:GetObject",
    "kms:Decrypt",
    "s3:ListBucket",
    "logs:CreateLogGroup",
    "logs:CreateLogStream",
    "logs:DescribeLogGroups",
    "logs:DescribeLogStreams",
    "logs:PutLogEvents",
    "logs:PutRetentionPolicy",
}
# Called by the SSM agent, not by devdb, so that `devdb connect` has Session Manager.
SESSION_MANAGER = {
    "ssm:UpdateInstanceInformation",
    "ssmmessages:CreateControlChannel",
    "ssmmessages:CreateDataChannel",
    "ssmmessages:OpenControlChannel",
    "ssmmessages:OpenDataChannel",
}
NOT_API = {"get_paginator", "get_waiter", "exceptions", "meta"}


def _camel(operation: str) -> str:
    return "".join(part.capitalize() for part in operation.split("_"))


def operations() -> dict[str, set[tuple[str, str]]]:
    """(service, operation) per file, found in the source."""
    found: dict[str, set[tuple[str, str]]] = {}
    for relative, clients in CLIENTS.items():
        tree = ast.parse((ROOT / relative).read_text())
        ops: set[tuple[str, str]] = set()
        calls: list[tuple[ast.Attribute, str]] = []
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute):
                receiver = node.value
                named = _named_client(receiver)
                name = (
                    receiver.attr
                    if isinstance(receiver, ast.Attribute)
                    else getattr(receiver, "id", None)
                )
                service = named or clients.get(str(name))
                if service and node.attr not in NOT_API:
                    ops.add((service, node.attr))
                if service and node.attr in ("get_paginator", "get_waiter"):
                    calls.append((node, service))
            if isinstance(node, ast.Call) and node.args:
                first = node.args[0]
                func = node.func
                called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
                if called == "_call" and isinstance(first, ast.Constant):
                    service = next(iter(clients.values()))
                    ops.add((service, str(first.value)))
                if called in TRANSFER and relative.endswith("s3.py"):
                    ops |= {("s3", op) for op in TRANSFER[called]}
        for node, service in calls:  # client.get_paginator("op") and client.get_waiter("w")
            parent = next(
                (
                    c
                    for c in ast.walk(tree)
                    if isinstance(c, ast.Call)
                    and c.func is node
                    and c.args
                    and isinstance(c.args[0], ast.Constant)
                ),
                None,
            )
            if parent is not None:
                operation = str(parent.args[0].value)  # type: ignore[attr-defined]
                ops.add((service, WAITERS.get(operation, operation)))
        found[relative] = ops
    return found


def _named_client(receiver: ast.expr) -> str | None:
    """The service of `self.clients("ssm")`, as the DynamoDB driver gets its clients."""
    if (
        isinstance(receiver, ast.Call)
        and isinstance(receiver.func, ast.Attribute)
        and receiver.func.attr == "clients"
        and receiver.args
        and isinstance(receiver.args[0], ast.Constant)
    ):
        return str(receiver.args[0].value)
    return None


def action(service: str, operation: str) -> str:
    if service == "s3":
        return S3_ACTIONS[operation]
    return f"{service}:{_camel(operation)}"


def policy_actions(name: str) -> set[str]:
    document = json.loads((ROOT / "docs" / name).read_text())
    actions: set[str] = set()
    for statement in document["Statement"]:
        assert statement["Effect"] == "Allow"
        listed = statement["Action"]
        actions |= {listed} if isinstance(listed, str) else set(listed)
    assert not any("*" in a for a in actions), "no wildcard actions"
    return actions


def test_the_scan_sees_the_calls_it_should() -> None:
    found = set().union(*operations().values())
    for expected in [
        ("ec2", "create_fleet"),
        ("ec2", "run_instances"),
        ("ec2", "terminate_instances"),
        ("ec2", "describe_instances"),
        ("ec2", "create_snapshot"),
        ("ec2", "delete_snapshot"),
        ("ssm", "put_parameter"),
        ("ssm", "get_parameter"),
        ("s3", "list_objects_v2"),
        ("s3", "upload_part"),
    ]:
        assert expected in found
    assert all(re.fullmatch(r"[a-z0-9_]+", op) for _, op in found)


def test_the_bot_policy_grants_exactly_what_the_bot_calls() -> None:
    needed = {
        action(service, op)
        for relative, ops in operations().items()
        if relative not in INSTANCE_FILES | DYNAMODB_FILES
        for service, op in ops
    }
    granted = policy_actions("iam-policy.json")
    assert needed - granted == set(), "missing from docs/iam-policy.json"
    assert granted - needed - IMPLIED == set(), "granted but never called"


def test_the_instance_policy_grants_exactly_what_the_agent_calls() -> None:
    needed = {
        action(service, op)
        for relative, ops in operations().items()
        if relative in INSTANCE_FILES
        for service, op in ops
    } | {S3_ACTIONS[op] for op in INSTANCE_S3}
    granted = policy_actions("instance-policy.json")
    assert needed - granted == set(), "missing from docs/instance-policy.json"
    assert granted >= SESSION_MANAGER, "devdb connect needs Session Manager"
    assert granted - needed - IMPLIED - SESSION_MANAGER == set(), "granted but never called"


def test_the_dynamodb_policy_grants_exactly_what_dynamodb_environments_call() -> None:
    found = operations()
    needed = {action(service, op) for relative in DYNAMODB_FILES for service, op in found[relative]}
    for expected in [
        "dynamodb:CreateTable",
        "dynamodb:BatchWriteItem",
        "dynamodb:TagResource",
        "dynamodb:DeleteTable",
        "dynamodb:Scan",
        "dynamodb:ListTables",
        "dynamodb:DescribeTable",
        "ssm:PutParameter",
        "ssm:DeleteParameters",
        "ssm:DescribeParameters",
        "cloudwatch:GetMetricStatistics",
    ]:
        assert expected in needed, expected
    if "dynamodb:ImportTable" in needed:
        needed |= IMPORT_TABLE
    granted = policy_actions("dynamodb-policy.json")
    assert needed - granted == set(), "missing from docs/dynamodb-policy.json"
    assert granted - needed - IMPLIED == set(), "granted but never called"
    document = json.loads((ROOT / "docs" / "dynamodb-policy.json").read_text())
    for statement in document["Statement"]:
        resources = statement["Resource"]
        resources = [resources] if isinstance(resources, str) else resources
        writes = {
            a
            for a in statement["Action"]
            if a.split(":")[0] in ("dynamodb", "ssm")
            and a.split(":")[1].startswith(
                ("Create", "Delete", "Put", "BatchWrite", "Tag", "Import")
            )
        }
        if writes:  # whatever makes, changes or removes tables or parameters: devdb's own
            assert all("table/dev_" in r or "parameter/devdb/" in r for r in resources), statement
