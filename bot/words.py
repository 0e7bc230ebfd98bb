"""How each front end names a command a sentence suggests (`provisioning.errors.Next`)."""

from __future__ import annotations

from provisioning.errors import DevdbError, Next


def terminal(step: Next) -> str:
    return f"`devdb {step.line}`"


def slack(step: Next) -> str:
    if step.terminal_only:
        return f"`devdb {step.line}` in a terminal"
    return f"`/devdb {step.line}`"


def in_terminal(exc: DevdbError) -> str:
    return exc.worded(terminal)


def in_slack(exc: DevdbError) -> str:
    return exc.worded(slack)
