"""Spot interruption warnings routed by EventBridge to an SQS queue.

EC2 announces that it takes a spot instance back two minutes ahead, with the event
"EC2 Spot Instance Interruption Warning". With DEVDB_EC2_INTERRUPTION_QUEUE set (the stack
in deploy/ makes the queue and the rule that fills it), each interruption sweep drains the
queue instead of asking EC2 about every spot request.

A warning about an instance of this installation is kept and its message deleted; one about
another installation's instance is left in the queue for that installation; anything else
in the queue (a warning about an instance no devdb made, or not a warning) is deleted,
since nobody acts on it. Blocking boto3 calls, run in a thread.
"""

from __future__ import annotations

import json
from typing import Any

WARNING = "EC2 Spot Instance Interruption Warning"
ROUNDS = 10  # receives per sweep, at up to 10 messages each
HIDDEN_SECONDS = 30  # how long a message left for another installation stays out of sight


def _instance(body: str) -> tuple[str | None, str]:
    """The instance a warning is about, and its action; (None, "") for anything else."""
    try:
        event = json.loads(body)
    except ValueError:
        return None, ""
    if not isinstance(event, dict) or event.get("detail-type") != WARNING:
        return None, ""
    detail = event.get("detail")
    if not isinstance(detail, dict) or not isinstance(detail.get("instance-id"), str):
        return None, ""
    return detail["instance-id"], str(detail.get("instance-action") or "terminate")


def _owners(ec2: Any, instance_ids: list[str], tag: str) -> dict[str, str]:
    """The installation each of these instances belongs to ("" if none); instances EC2 no
    longer knows are left out."""
    reply = ec2.describe_instances(Filters=[{"Name": "instance-id", "Values": instance_ids}])
    return {
        instance["InstanceId"]: next(
            (t["Value"] for t in instance.get("Tags", []) if t["Key"] == tag), ""
        )
        for reservation in reply.get("Reservations", [])
        for instance in reservation.get("Instances", [])
    }


def drain(sqs: Any, ec2: Any, queue: str, installation: str, tag: str) -> dict[str, str]:
    """Why each of this installation's instances is going away, by instance id."""
    found: dict[str, str] = {}
    for _ in range(ROUNDS):
        messages = sqs.receive_message(
            QueueUrl=queue,
            MaxNumberOfMessages=10,
            WaitTimeSeconds=1,  # long polling: every server asked, not a sample
            VisibilityTimeout=HIDDEN_SECONDS,
        ).get("Messages", [])
        warned: dict[str, list[dict[str, Any]]] = {}
        actions: dict[str, str] = {}
        for message in messages:
            instance, action = _instance(message.get("Body", ""))
            if instance is None:
                sqs.delete_message(QueueUrl=queue, ReceiptHandle=message["ReceiptHandle"])
                continue
            warned.setdefault(instance, []).append(message)
            actions[instance] = action
        owners = _owners(ec2, list(warned), tag) if warned else {}
        for instance, messages_about in warned.items():
            owner = owners.get(instance, "")
            if owner and owner != installation:
                continue  # another installation's: left for it
            if owner == installation:
                found[instance] = (
                    f"AWS is reclaiming its spot instance {instance} "
                    f"(interruption warning: {actions[instance]} in two minutes)"
                )
            for message in messages_about:
                sqs.delete_message(QueueUrl=queue, ReceiptHandle=message["ReceiptHandle"])
        if not messages:
            break
    return found
