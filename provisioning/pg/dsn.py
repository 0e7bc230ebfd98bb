"""Connection strings with their secrets taken out, for command lines and for display.

A libpq connection string may carry a password in the URL's userinfo, as `?password=`, or
as `password=` in the key=value form, and may point at a password file or a service entry.
None of that belongs on a command line, where `ps` shows it to every user, or in anything
devdb writes: it travels to pg_dump and pg_restore in their environment instead.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit

# Connection parameters that travel in the environment, and the variable each one takes.
SECRET_PARAMETERS = {
    "password": "PGPASSWORD",
    "passfile": "PGPASSFILE",
    "service": "PGSERVICE",
    "servicefile": "PGSERVICEFILE",
    "sslpassword": "",  # no variable: dropped
}
_PAIR = re.compile(r"\s*([A-Za-z_]+)\s*=\s*('(?:[^'\\]|\\.)*'|[^\s']*)")


def _is_url(dsn: str) -> bool:
    return dsn.startswith(("postgresql://", "postgres://"))


def _split_url(dsn: str) -> tuple[str, dict[str, str]]:
    parts = urlsplit(dsn)
    secrets: dict[str, str] = {}
    netloc = parts.netloc
    if "@" in netloc:
        login, host = netloc.rsplit("@", 1)
        user, sep, password = login.partition(":")
        if sep:
            secrets["password"] = unquote(password)
        netloc = f"{user}@{host}" if user else host
    query = []
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key in SECRET_PARAMETERS:
            secrets[key] = value
        else:
            query.append((key, value))
    rest = urlencode(query, quote_via=quote)
    # Built by hand: urlunsplit drops the `//` of a URL with no host (`postgres:///db`).
    bare = f"{parts.scheme}://{netloc}{parts.path}" + (f"?{rest}" if rest else "")
    return bare, secrets


def _split_pairs(dsn: str) -> tuple[str, dict[str, str]]:
    kept: list[str] = []
    secrets: dict[str, str] = {}
    position = 0
    while position < len(dsn.rstrip()):
        match = _PAIR.match(dsn, position)
        if not match:
            raise ValueError("the connection string is neither a URL nor key=value pairs")
        key, raw = match.groups()
        value = re.sub(r"\\(.)", r"\1", raw[1:-1]) if raw.startswith("'") else raw
        if key in SECRET_PARAMETERS:
            secrets[key] = value
        else:
            kept.append(f"{key}={raw}")
        position = match.end()
    return " ".join(kept), secrets


def split_secrets(dsn: str) -> tuple[str, dict[str, str]]:
    """(the connection string without secrets, the environment variables that carry them)."""
    bare, secrets = _split_url(dsn) if _is_url(dsn) else _split_pairs(dsn)
    env = {SECRET_PARAMETERS[k]: v for k, v in secrets.items() if SECRET_PARAMETERS[k] and v}
    return bare, env


def split_password(dsn: str) -> tuple[str, str | None]:
    """A URL without its secrets, and its password if it gave one."""
    bare, env = split_secrets(dsn)
    return bare, env.get("PGPASSWORD")


def redact(dsn: str) -> str:
    """A connection string fit to show anyone: no password, password file or service."""
    try:
        return split_secrets(dsn)[0]
    except ValueError:
        return "(a connection string devdb could not read)"
