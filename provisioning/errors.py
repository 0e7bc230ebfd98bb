"""Every failure devdb reports to a person is a `DevdbError` whose message is one clear sentence.

Errors from lower layers (asyncpg, subprocesses, the filesystem) are translated into these at
the boundary and raised `from` the original, so front ends never show a traceback.

A sentence that suggests a command names it as a `Next`, never in one front end's syntax:
each front end words it (`bot/words.py`: `devdb snapshots` in a terminal, `/devdb snapshots`
in Slack).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Next:
    """A command to suggest: its verb and arguments, as the grammar has them."""

    verb: str
    args: str = ""

    @property
    def line(self) -> str:
        return f"{self.verb} {self.args}".strip()


Part = str | Next


def _named(step: Next) -> str:
    return f"`{step.line}`"


class DevdbError(Exception):
    """Root of devdb's errors; `worded(...)` is the sentence a front end shows, and
    `str(error)` the same with commands named plainly (for logs and the state store)."""

    def __init__(self, *parts: Part) -> None:
        self.parts = parts
        super().__init__(self.worded(_named))

    def worded(self, say: Callable[[Next], str]) -> str:
        return "".join(part if isinstance(part, str) else say(part) for part in self.parts)


class InvalidInput(DevdbError):
    """A name, duration or option the user gave is malformed."""


class NotFound(DevdbError):
    """An environment or snapshot that does not exist."""


class Conflict(DevdbError):
    """The request clashes with work already under way (e.g. a refresh of the same name)."""


class QuotaExceeded(DevdbError):
    """The owner already has as many environments as allowed."""


class NotAllowed(DevdbError):
    """The actor may not act on this environment."""


class SnapshotInvalid(DevdbError):
    """A snapshot is missing files, or a file does not match its recorded checksum."""


class MissingBinary(DevdbError):
    """A PostgreSQL program devdb needs is not installed."""


class ProvisioningFailed(DevdbError):
    """A driver could not create, start or restore an environment."""


class PortInUse(ProvisioningFailed):
    """The port reserved for an environment was taken before the server could bind it."""


class MigrationFailed(ProvisioningFailed):
    """The migrations hook failed on the restored environment.

    The message says only that, and which step; `output` (the command's output, or the
    database's error) is for the environment's owner alone, never for a channel or a log."""

    def __init__(self, message: str, output: str = "") -> None:
        super().__init__(message)
        self.output = output


class StateStoreUnavailable(DevdbError):
    """The state store could not be reached or started."""


class PolicyViolation(DevdbError):
    """The masking policy and the database disagree, or the output holds personal data."""

    def __init__(self, *parts: Part, problems: list[str]) -> None:
        super().__init__(*parts)
        self.problems = problems
