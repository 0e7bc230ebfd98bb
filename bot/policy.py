"""`devdb policy init|check`: only the source database is needed, not devdb's state."""

from __future__ import annotations

import json
from pathlib import Path

from bot import grammar, messages
from provisioning.dynamo.source import is_dynamo
from provisioning.dynamo.survey import (
    check_dynamo_source,
    draft_dynamo_source,
    render_dynamo_policy,
)
from provisioning.errors import InvalidInput, PolicyViolation
from provisioning.shrink.classify import draft_source, render_policy
from provisioning.shrink.detect import PiiDetector
from provisioning.shrink.pipeline import check_source
from provisioning.shrink.policy import load_policy


async def policy_command(
    command: grammar.PolicyInit | grammar.PolicyCheck, as_json: bool, detector: PiiDetector
) -> int:
    """`devdb policy init|check`: only the source database is needed, not devdb's state."""
    if is_dynamo(command.source):
        return await _dynamo(command, as_json, detector)
    if isinstance(command, grammar.PolicyInit):
        out = Path(command.out)
        if out.exists():
            raise InvalidInput(f"{out} already exists: remove it or choose another --out.")
        catalog, body = await draft_source(command.source, detector)
        out.write_text(render_policy(body))
        sensitive = sum(
            1
            for table in body["tables"].values()
            for spec in table["columns"].values()
            if isinstance(spec, dict)
        )
        print(
            json.dumps(
                {"policy": str(out), "tables": len(catalog.tables), "sensitive_columns": sensitive}
            )
            if as_json
            else messages.policy_drafted(str(out), len(catalog.tables), sensitive)
        )
        return 0
    policy = load_policy(Path(command.policy))
    catalog, problems = await check_source(command.source, policy)
    if problems:
        raise PolicyViolation(
            f"the policy does not match the database: {len(problems)} problem(s).",
            problems=problems,
        )
    print(
        json.dumps({"ok": True, "tables": len(catalog.tables)})
        if as_json
        else messages.policy_ok(len(catalog.tables))
    )
    return 0


async def _dynamo(
    command: grammar.PolicyInit | grammar.PolicyCheck, as_json: bool, detector: PiiDetector
) -> int:
    """The same two commands on a DynamoDB source, by sampling its tables' items."""
    if isinstance(command, grammar.PolicyInit):
        out = Path(command.out)
        if out.exists():
            raise InvalidInput(f"{out} already exists: remove it or choose another --out.")
        body = await draft_dynamo_source(command.source, detector)
        out.write_text(render_dynamo_policy(body))
        sensitive = sum(
            isinstance(spec, dict)
            for table in body["tables"].values()
            for spec in table["attributes"].values()
        )
        tables = len(body["tables"])
        print(
            json.dumps({"policy": str(out), "tables": tables, "sensitive_attributes": sensitive})
            if as_json
            else messages.policy_drafted(str(out), tables, sensitive)
        )
        return 0
    problems = await check_dynamo_source(command.source, Path(command.policy))
    if problems:
        raise PolicyViolation(
            f"the policy does not match the tables: {len(problems)} problem(s).", problems=problems
        )
    print(json.dumps({"ok": True}) if as_json else messages.policy_ok_dynamo())
    return 0
