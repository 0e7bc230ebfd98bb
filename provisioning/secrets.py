"""Per-environment passwords: where each kind of environment keeps them.

Local environments keep theirs in the state directory with mode 0600; cloud environments in
the cloud's secret store (SSM Parameter Store for EC2), where the instance can read it at
boot. Passwords never enter the state store, the audit log or a progress event.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Protocol

from provisioning.errors import NotFound
from provisioning.models import Environment


def new_password() -> str:
    return secrets.token_urlsafe(24)


class PasswordStore(Protocol):
    async def put(self, env: Environment, password: str) -> None: ...

    async def get(self, env: Environment) -> str: ...

    async def delete(self, env: Environment) -> None:
        """Remove the password; nothing happens if there is none."""


class Passwords:
    """The password store for each kind of environment; local files for the rest."""

    def __init__(self, local: LocalSecrets, by_kind: Mapping[str, PasswordStore]) -> None:
        self.local = local
        self.by_kind = by_kind

    def _store(self, env: Environment) -> PasswordStore:
        return self.by_kind.get(env.kind, self.local)

    async def put(self, env: Environment, password: str) -> None:
        await self._store(env).put(env, password)

    async def get(self, env: Environment) -> str:
        return await self._store(env).get(env)

    async def delete(self, env: Environment) -> None:
        await self._store(env).delete(env)


class LocalSecrets:
    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, env: Environment) -> Path:
        return self.root / f"env-{int(env.id)}.password"

    async def put(self, env: Environment, password: str) -> None:
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        path = self._path(env)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(password)

    async def get(self, env: Environment) -> str:
        try:
            return self._path(env).read_text()
        except FileNotFoundError:
            raise NotFound(f"the password of environment {env.name!r} is missing.") from None

    async def delete(self, env: Environment) -> None:
        self._path(env).unlink(missing_ok=True)

    def mask_salt(self, configured: str | None) -> bytes:
        """DEVDB_MASK_SALT if set, else a random salt made once and kept here (0600)."""
        if configured:
            return configured.encode()
        path = self.root / "mask.salt"
        try:
            return path.read_bytes()
        except FileNotFoundError:
            pass
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        salt = secrets.token_urlsafe(32).encode()
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another process made it first
            return path.read_bytes()
        with os.fdopen(fd, "wb") as handle:
            handle.write(salt)
        return salt
