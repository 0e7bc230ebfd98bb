"""`devdb policy init|check`: only the source database is needed, not devdb's state."""

from __future__ import annotations

import json
from pathlib import Path

import asyncpg

from bot import grammar, messages
from provisioning.errors import InvalidInput, PolicyViolation
from provisioning.shrink.classify import draft_policy, render_policy
from provisioning.shrink.detect import PiiDetector
from provisioning.shrink.pipeline import check_source
from provisioning.shrink.policy import load_policy


async def policy_command(
    command: grammar.PolicyInit | grammar.PolicyCheck, as_json: bool, detector: PiiDetector
) -> int:
    """`devdb policy init|check`: only the source database is needed, not devdb's state."""
    if isinstance(command, grammar.PolicyInit):
        out = Path(command.out)
        if out.exists():
            raise InvalidInput(f"{out} already exists: remove it or choose another --out.")
        conn = await asyncpg.connect(command.source)
        try:
            catalog, body = await draft_policy(conn, detector)
        finally:
            await conn.close()
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
