"""How each front end names a command a sentence suggests (`provisioning.errors.Next`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from provisioning.errors import DevdbError, Next, Part


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


def said(parts: Sequence[Part], say: Callable[[Next], str] = terminal) -> str:
    """A notice's parts as one front end's sentence."""
    return "".join(part if isinstance(part, str) else say(part) for part in parts)
