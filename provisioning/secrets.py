"""Per-environment passwords, kept in the state directory with mode 0600.

Passwords never enter the state store, the audit log or a progress event.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from provisioning.errors import NotFound


def new_password() -> str:
    return secrets.token_urlsafe(24)


class LocalSecrets:
    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, env_id: int) -> Path:
        return self.root / f"env-{int(env_id)}.password"

    def put(self, env_id: int, password: str) -> None:
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        path = self._path(env_id)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(password)

    def get(self, env_id: int) -> str:
        try:
            return self._path(env_id).read_text()
        except FileNotFoundError:
            raise NotFound(f"the password of environment {env_id} is missing.") from None

    def delete(self, env_id: int) -> None:
        self._path(env_id).unlink(missing_ok=True)

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
