"""`devdb agent restore`: what an EC2 environment's instance runs at boot (from user data)."""

from __future__ import annotations

import os
import sys

from provisioning.aws.agent import FAILED_MARK, PRISTINE, AgentConfig, run_agent
from provisioning.aws.resets import serve_resets
from provisioning.errors import DevdbError
from provisioning.pg.programs import PgPrograms, ServerAccount
from provisioning.settings import Settings


async def agent_command(jobs: int | None, settings: Settings) -> int:
    """Restore (or start) the instance's environment; no state store, only this one.

    A failure is also one marked line on the console: before the agent's status exists
    (the password from SSM, the server's start), that is the only place devdb can read it.
    An environment made from a golden EBS snapshot then stays to serve resets."""
    try:
        config = AgentConfig.from_env(os.environ, jobs)
        programs = PgPrograms(settings.pg_bin)
        account = ServerAccount.for_current_process(settings.server_user)
        await run_agent(config, programs, account)
    except Exception as exc:
        reason = str(exc) if isinstance(exc, DevdbError) else f"unexpected error: {exc!r}"
        print(f"{FAILED_MARK}{reason}", file=sys.stderr, flush=True)
        return 1
    print("devdb agent: the environment is ready.", flush=True)
    if (config.root / PRISTINE).is_dir() and not config.golden:
        await serve_resets(config, programs, account)
    return 0
