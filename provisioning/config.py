"""How devdb reads a setting: `DEVDB_<KEY>` from the environment, else `<key>` in devdb.toml,
else the default written beside the setting's declaration. pydantic-settings does the
reading; this module holds what devdb adds to it: the config file's place and rules, the
kinds of value people write ("4h", "a, b", "54330-54999") and one sentence for a bad one.

A setting's key is its field name, or its alias without the `devdb_` prefix where the field
is named otherwise in code. Secrets (and where the file itself is) come from the environment
only: such a key in devdb.toml is refused, as is a key devdb does not know.
"""

from __future__ import annotations

import ipaddress
import os
import tomllib
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, ClassVar, TypeVar

from pydantic import AfterValidator, BeforeValidator, Field, ValidationError
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from provisioning.durations import parse_duration
from provisioning.errors import InvalidInput


def env_only(*, alias: str | None = None, **kwargs: Any) -> Any:
    """A setting read from the environment only (a secret, or where the file is); None
    unless a `default_factory` is given."""
    if "default_factory" not in kwargs:
        kwargs["default"] = None
    return Field(validation_alias=alias, json_schema_extra={"env_only": True}, **kwargs)


def renamed(default: Any, key: str, **kwargs: Any) -> Any:
    """A setting whose key (`DEVDB_<KEY>`, `<key>` in the file) is not its field's name."""
    return Field(default, validation_alias=f"devdb_{key}", **kwargs)


def default_home() -> Path:
    if os.geteuid() == 0:
        # root's home is usually private (0700), so the unprivileged account that runs the
        # PostgreSQL servers could not enter it: keep state where system services keep theirs.
        return Path("/var/lib/devdb")
    data = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(data) / "devdb"


def config_path() -> Path:
    """`DEVDB_CONFIG`, else devdb.toml in `DEVDB_HOME` (or the default home)."""
    if named := os.environ.get("DEVDB_CONFIG"):
        return Path(named).expanduser()
    return Path(os.environ.get("DEVDB_HOME") or default_home()).expanduser() / "devdb.toml"


def env_name(name: str, field: FieldInfo) -> str:
    alias = field.validation_alias
    return alias.upper() if isinstance(alias, str) else f"DEVDB_{name.upper()}"


def file_key(name: str, field: FieldInfo) -> str:
    alias = field.validation_alias
    return alias.lower().removeprefix("devdb_") if isinstance(alias, str) else name


def _is_group(field: FieldInfo) -> bool:
    """A nested group of settings (`Settings.aws`), read by its own class."""
    kind = field.annotation
    return isinstance(kind, type) and issubclass(kind, DevdbSettings)


def _is_env_only(field: FieldInfo) -> bool:
    extra = field.json_schema_extra
    return isinstance(extra, dict) and bool(extra.get("env_only"))


class ConfigFile(PydanticBaseSettingsSource):
    """devdb.toml: the keys of one settings class, checked against every class's keys."""

    def __call__(self) -> dict[str, Any]:
        path = config_path()
        if not path.is_file():
            return {}
        try:
            values = tomllib.loads(path.read_text())
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise InvalidInput(f"{path} is not valid TOML: {exc}.") from exc
        known = {
            file_key(name, field): (cls, name, field)
            for cls in DevdbSettings.__subclasses__()
            for name, field in cls.model_fields.items()
            if not _is_group(field)
        }
        ours: dict[str, Any] = {}
        for key, value in values.items():
            if key not in known:
                raise InvalidInput(f"{path} has a setting devdb does not know: {key!r}.")
            cls, name, field = known[key]
            if _is_env_only(field):
                raise InvalidInput(
                    f"{path} may not hold {key!r}: set {env_name(name, field)} in the "
                    "environment instead (secrets and places stay out of files)."
                )
            if cls is self.settings_cls:
                ours[name] = value
        return ours

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # __call__ reads the whole file at once


class DevdbSettings(BaseSettings):
    """A group of devdb's settings: the environment first, then devdb.toml, then defaults."""

    model_config: ClassVar[SettingsConfigDict] = SettingsConfigDict(
        env_prefix="DEVDB_",
        case_sensitive=False,
        env_ignore_empty=True,
        frozen=True,
        extra="forbid",
        validate_by_name=True,
        validate_by_alias=True,
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return init_settings, env_settings, ConfigFile(settings_cls)


Loaded = TypeVar("Loaded", bound=DevdbSettings)


def load(cls: type[Loaded]) -> Loaded:
    """Read the settings; a bad value is one sentence naming its variable."""
    try:
        return cls()
    except ValidationError as exc:
        raise InvalidInput(explain(exc)) from None


def explain(exc: ValidationError) -> str:
    error = exc.errors()[0]
    where = str(error["loc"][0]) if error["loc"] else ""
    names = {
        key.lower(): env_name(name, field)
        for cls in DevdbSettings.__subclasses__()
        for name, field in cls.model_fields.items()
        for key in (name, env_name(name, field))
    }
    variable = names.get(where.lower(), where.upper())
    message = str(error["msg"])
    if message.startswith("Value error, "):  # devdb's own sentence, which shows the value
        message = message.removeprefix("Value error, ").rstrip(".")
        if message.startswith(variable):
            return message + "."
        return (
            f"{variable} {message}." if message.startswith("must ") else f"{variable}: {message}."
        )
    shown = str(error.get("input", ""))[:40]
    return f"{variable}: {message[0].lower()}{message[1:]} (not {shown!r})."


# --- The kinds of value people write. --------------------------------------------------

Value = TypeVar("Value")


def parsed(parse: Callable[[str], Value]) -> BeforeValidator:
    """Parse text as people write it; values TOML already typed pass through."""

    def check(value: object) -> object:
        if isinstance(value, int | float) and not isinstance(value, bool):
            value = str(value)  # a number in devdb.toml is checked like the same digits
        if not isinstance(value, str):
            return value
        try:
            return parse(value.strip())
        except InvalidInput as exc:
            raise ValueError(str(exc).rstrip(".")) from None

    return BeforeValidator(check)


def _duration(raw: str) -> timedelta:
    try:
        return parse_duration(raw)
    except InvalidInput:
        raise ValueError(f"must be a duration like 30m, 4h or 2d, not {raw[:20]!r}") from None


def _whole(low: int, high: int | None = None) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        if not raw.isdigit() or int(raw) < low or (high is not None and int(raw) > high):
            upto = f" from {low} to {high}" if high is not None else f" of at least {low}"
            raise ValueError(f"must be a whole number{upto}, not {raw[:20]!r}")
        return int(raw)

    return parse


def _words(raw: str) -> tuple[str, ...]:
    """`a, b,c` → ("a", "b", "c")."""
    return tuple(part.strip() for part in raw.split(",") if part.strip())


def _port_range(raw: str) -> tuple[int, int]:
    low, sep, high = raw.partition("-")
    try:
        start, end = int(low), int(high)
    except ValueError:
        start = end = 0
    if not sep or not 1024 <= start <= end <= 65535:
        raise ValueError(f"must look like 54330-54999, not {raw[:20]!r}")
    return start, end


def _network(raw: str) -> str:
    try:
        return str(ipaddress.ip_network(raw, strict=False))
    except ValueError:
        raise ValueError(f"must be a network like 10.0.0.0/16, not {raw[:40]!r}") from None


def _dollars(raw: str) -> float:
    try:
        return float(raw)
    except ValueError:
        raise ValueError(f"must be an amount in dollars, like 250, not {raw[:20]!r}") from None


Duration = Annotated[timedelta, parsed(_duration)]
Place = Annotated[Path, AfterValidator(Path.expanduser)]  # `~/x` as the shell would
Count = Annotated[int, parsed(_whole(1))]  # one or more
Words = Annotated[tuple[str, ...], NoDecode, parsed(_words)]
Names = Annotated[frozenset[str], NoDecode, parsed(lambda raw: frozenset(_words(raw)))]
PortRange = Annotated[tuple[int, int], NoDecode, parsed(_port_range)]
Network = Annotated[str, parsed(_network)]
Dollars = Annotated[float, parsed(_dollars)]


def whole(low: int, high: int | None = None) -> BeforeValidator:
    """A whole number in a range, for an `Annotated[int, ...]` setting."""
    return parsed(_whole(low, high))
