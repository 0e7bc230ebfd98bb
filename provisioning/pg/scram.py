"""SCRAM-SHA-256 verifiers, so a password reaches PostgreSQL only in the form it stores.

`CREATE ROLE … PASSWORD 'SCRAM-SHA-256$…'` stores a verifier as given, so the password itself
never appears in a statement, where a failed statement or `log_statement` would write it to
the server log. The format and the derivation are RFC 5802 and RFC 7677 as PostgreSQL
implements them (`scram_build_secret`): PBKDF2-HMAC-SHA-256 of the password, 4096 rounds, a
16-byte random salt; the client key's SHA-256 and the server key, each HMAC-SHA-256.

devdb's passwords are ASCII (`secrets.token_urlsafe`), for which SASLprep, which PostgreSQL
applies first, changes nothing; anything else is refused rather than stored wrongly.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os

ITERATIONS = 4096  # PostgreSQL's scram_iterations default
PREFIX = "SCRAM-SHA-256$"


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def scram_verifier(password: str, *, salt: bytes | None = None) -> str:
    """The verifier PostgreSQL would store for `password`."""
    if not password.isascii() or not password.isprintable():
        raise ValueError("only printable ASCII passwords are turned into verifiers here")
    salt = salt if salt is not None else os.urandom(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, ITERATIONS)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
    return f"{PREFIX}{ITERATIONS}:{_b64(salt)}${_b64(stored_key)}:{_b64(server_key)}"
