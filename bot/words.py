"""How each front end names a command a sentence suggests (`provisioning.errors.Next`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from bot.grammar import verbs
from provisioning.errors import DevdbError, Next, Part


def terminal(step: Next) -> str:
    return f"`devdb {step.line}`"


def slack(step: Next) -> str:
    if step.verb.split()[0] not in verbs(slack=True):
        return f"`devdb {step.line}` in a terminal"  # Slack has no such command
    return f"`/devdb {step.line}`"


def in_terminal(exc: DevdbError) -> str:
    return exc.worded(terminal)


def in_slack(exc: DevdbError) -> str:
    return exc.worded(slack)


def said(parts: Sequence[Part], say: Callable[[Next], str] = terminal) -> str:
    """A notice's parts as one front end's sentence."""
    return "".join(part if isinstance(part, str) else say(part) for part in parts)
